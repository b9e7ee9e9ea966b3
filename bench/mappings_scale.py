"""Load and reload time, and RSS, of a gateway with 1, 50 and 200 mapping files.

The mappings are copies of `mappings/watering-hole.yaml` (each with its own name,
webhook path and inline tests, both channels bound in gateway.yaml), so every one is
read, schema-checked, compiled and has its inline tests run, as in production.

For each count it measures, in a fresh process each time:
- load: `load_routing()` (what startup and every reload do off the event loop), with the
  share of it spent running inline tests;
- a real `byoc-gateway serve`: RSS once it serves, the wall time of a SIGHUP reload
  (until /status.json shows the new generation) and RSS after the reloads.

    python -m bench.mappings_scale [--counts 1,50,200] [--reloads 3]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import (
    MAPPINGS,
    SECRETS,
    bench_env,
    children,
    cpu_sets,
    exit_on_sigterm,
    gateway_command,
    http_json,
    machine,
    median,
    memory,
    start,
    wait_http,
    write_gateway_yaml,
)
from tests.ports import free_port

ENV = bench_env("http://127.0.0.1:9/v1", "http://127.0.0.1:9")


def generate(directory: Path, count: int) -> list[str]:
    """Write `count` mappings into `directory`; return their names."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    source = (MAPPINGS / "watering-hole.yaml").read_text(encoding="utf-8")
    names = []
    for i in range(count):
        name = "watering-hole" if i == 0 else f"watering-hole-{i:03d}"
        text = re.sub(r"(?m)^name: watering-hole$", f"name: {name}", source)
        text = text.replace("path: /webhooks/watering-hole", f"path: /webhooks/{name}")
        text = text.replace("watering-hole:evt_", f"{name}:evt_")  # dedupe keys in tests
        (directory / f"{name}.yaml").write_text(text, encoding="utf-8")
        names.append(name)
    return names


LOAD_SCRIPT = """
import json, resource, sys, time
from pathlib import Path
from gateway.settings_loader import load_settings
from gateway.mapping import load_mapping_dir, run_inline_tests
from gateway.routing import load_routing
env = json.loads(sys.argv[2])
settings = load_settings(Path(sys.argv[1]), env=env)
t0 = time.perf_counter()
routing = load_routing(settings, 1, reread_settings=False)
t1 = time.perf_counter()
mappings = load_mapping_dir(settings.mappings_dir, env=env)
t2 = time.perf_counter()
failures = [f for m in mappings.values() for f in run_inline_tests(m)]
t3 = time.perf_counter()
tests = sum(len(m.tests) for m in mappings.values())
print(json.dumps({"load_s": t1 - t0, "compile_s": t2 - t1, "inline_tests_s": t3 - t2,
                  "inline_tests": tests, "failures": len(failures),
                  "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def measure_load(config: Path) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", LOAD_SCRIPT, str(config), json.dumps(ENV)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(Path.cwd())},
    )
    if out.returncode:
        raise RuntimeError(f"loading {config} failed:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def measure_serve(
    config: Path, cp: int, reloads: int, log_dir: Path, loop: str, cpus: set[int] | None
) -> dict[str, Any]:
    admin = {"Authorization": f"Bearer {SECRETS.admin_token}"}
    with children() as started:
        t0 = time.monotonic()
        gateway = start("gateway", gateway_command(config, loop), log_dir, env=ENV, cpus=cpus)
        started.append(gateway)
        wait_http(f"http://127.0.0.1:{cp}/healthz", gateway, timeout=300)
        startup = time.monotonic() - t0
        time.sleep(0.5)
        rss_start = memory(gateway.pid)
        times = []
        rss_each = []
        for generation in range(2, reloads + 2):
            t0 = time.monotonic()
            os.kill(gateway.pid, signal.SIGHUP)
            while True:
                status = http_json(f"http://127.0.0.1:{cp}/status.json", headers=admin)
                last = status.get("last_reload") or {}
                if last.get("generation", 0) >= generation:
                    break
                if time.monotonic() - t0 > 300:
                    raise RuntimeError("reload did not finish in 300 s")
                time.sleep(0.005)
            times.append(time.monotonic() - t0)
            rss_each.append(memory(gateway.pid)["rss_mb"])
            if not last.get("ok"):
                raise RuntimeError(f"reload failed: {last.get('errors')}")
        rss_end = memory(gateway.pid)
    return {
        "startup_s": startup,
        "reload_s": median(times),
        "reload_runs_s": times,
        "rss_serving_mb": rss_start["rss_mb"],
        "rss_after_reloads_mb": rss_end["rss_mb"],
        "rss_after_each_reload_mb": rss_each,
        "peak_rss_mb": rss_end["peak_rss_mb"],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--counts", default="1,50,200")
    p.add_argument("--reloads", type=int, default=3)
    p.add_argument("--loop", default="auto", choices=["auto", "uvloop", "asyncio"])
    p.add_argument("--pin", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--out", type=Path, default=Path("bench/results/mappings_scale.json"))
    args = p.parse_args()
    exit_on_sigterm()
    sut, _ = cpu_sets(args.pin)
    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    results = []
    for count in [int(c) for c in args.counts.split(",")]:
        names = generate(work / f"m{count}", count)
        pp, cp = free_port(), free_port()
        config = write_gateway_yaml(
            work / f"g{count}",
            platform_port=pp,
            cxone_port=cp,
            mappings_dir=work / f"m{count}",
            mapping_names=names,
        )
        load = measure_load(config)
        serve = measure_serve(config, cp, args.reloads, work / f"g{count}", args.loop, sut)
        row = {"mappings": count, **load, **serve}
        results.append(row)
        print(
            f"{count:4d} mappings: load {load['load_s']:.3f} s (inline tests "
            f"{load['inline_tests_s']:.3f} s), reload {serve['reload_s']:.3f} s, "
            f"RSS serving {serve['rss_serving_mb']:.1f} MB, after reloads "
            f"{serve['rss_after_reloads_mb']:.1f} MB",
            flush=True,
        )
    shutil.rmtree(work, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine(), "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
