"""The benchmark: the gateway against a hand-written bridge, on both paths, same run, same sinks.

For every repetition it starts the sinks, the bridge and a gateway (fresh store), then for
each path (inbound single events, inbound batches, outbound replies):

1. maximum throughput: a closed loop of `--concurrency` connections sends for
   `--max-duration` s; throughput = messages that reached the sink / (last arrival -
   first send), so a backlog the gateway's queue still holds counts against it;
2. latency: an open loop at half of the *bridge's* maximum of this repetition for
   `--duration` s; latency = sink arrival - scheduled send, p50/p95/p99.

CPU seconds (utime + stime from /proc, all threads) per 1,000 messages and peak RSS (VmHWM)
are read for the gateway and the bridge. With `--pin` (default on a machine with 2+
cores) the system under test runs on the last core and the load side (sinks, load
generator) on the others, so the two never compete for a core. Results: medians over
`--reps` repetitions, in `<out>/results.json` and `<out>/chart.png`.

    python -m bench.run                      # the full run (a few minutes)
    python -m bench.run --quick              # a quick look (~30 s)
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench.common import (
    ROOT,
    Child,
    Interference,
    bench_env,
    children,
    collect_arrivals,
    cpu_seconds,
    cpu_sets,
    exit_on_sigterm,
    machine,
    median,
    memory,
    percentiles,
    settle,
    split_system,
    start,
    start_sinks,
    system_command,
    wait_http,
    wait_quiet,
)
from tests.ports import free_port

PATHS = {
    # name: (kind, events per delivery)
    "inbound": ("inbound", 1),
    "inbound-batch": ("inbound", 10),
    "outbound": ("outbound", 1),
}


@dataclass
class System:
    """One system under test: the bridge, or a gateway with a given store."""

    name: str
    kind: str  # "bridge" | "gateway"
    store: str = "sqlite"
    root: Path = ROOT  # the checkout whose code runs (`gateway@DIR`: another one)
    workers: int = 64
    log_level: str = "WARNING"
    platform_url: str = ""
    cxone_url: str = ""
    child: Child | None = None

    def url(self, path: str) -> str:
        return self.platform_url if PATHS[path][0] == "inbound" else self.cxone_url


@dataclass
class Bench:
    args: argparse.Namespace
    out: Path
    sinks_url: str = ""
    platform_api: str = ""
    load_cpus: set[int] | None = None
    sut_cpus: set[int] | None = None
    systems: list[System] = field(default_factory=list)
    load_pids: list[int] = field(default_factory=list)
    phases: list[dict[str, Any]] = field(default_factory=list)
    memory: list[dict[str, Any]] = field(default_factory=list)
    seq: int = 0

    # -- processes ---------------------------------------------------------------------

    def start_sinks(self, started: list[Child]) -> None:
        sinks = start_sinks(self.out, self.load_cpus)
        started.append(sinks.child)
        self.load_pids.append(sinks.child.pid)
        self.sinks_url = sinks.cxone_url
        self.platform_api = sinks.platform_api

    def start_system(self, system: System, rep: int, started: list[Child]) -> None:
        pp, cp = free_port(), free_port()
        env = bench_env(self.platform_api, self.sinks_url)
        name = f"{_file_name(system.name)}-rep{rep}"
        directory = self.out / name
        if system.kind != "bridge":
            shutil.rmtree(directory, ignore_errors=True)
        cmd = system_command(
            system.kind,
            directory,
            platform_port=pp,
            cxone_port=cp,
            loop=self.args.loop,
            store=system.store,
            workers=system.workers,
            log_level=system.log_level,
        )
        child = start(name, cmd, self.out, env=env, cpus=self.sut_cpus, root=system.root)
        started.append(child)
        system.child = child
        system.platform_url = f"http://127.0.0.1:{pp}"
        system.cxone_url = f"http://127.0.0.1:{cp}"
        wait_http(system.cxone_url + "/healthz", child)
        wait_http(system.platform_url + "/healthz", child)

    # -- one phase ---------------------------------------------------------------------

    def loadgen(self, system: System, path: str, extra: list[str]) -> dict[str, Any]:
        kind, batch = PATHS[path]
        self.seq += 1
        tag = f"{system.name[:2]}{self.seq}"
        out = self.out / "loadgen.json"
        cmd = [sys.executable, "-m", "bench.loadgen", "--target", system.url(path)]
        cmd += ["--kind", kind, "--batch", str(batch), "--tag", tag, "--out", str(out), *extra]
        cmd += ["--threads", str(self.args.threads)]
        log = self.out / "loadgen.log"
        with log.open("ab") as f:
            subprocess.run(
                cmd,
                check=True,
                stdout=f,
                stderr=subprocess.STDOUT,
                preexec_fn=_pinner(self.load_cpus),
            )
        result: dict[str, Any] = orjson.loads(out.read_bytes())
        return result

    def drain(self, sent: dict[str, float], timeout: float = 120.0) -> dict[str, float]:
        """Collect sink arrivals until every accepted message arrived (or nothing moves)."""
        return collect_arrivals(self.sinks_url, sent, timeout)

    def phase(
        self, system: System, path: str, rep: int, mode: str, rate: float | None
    ) -> dict[str, Any]:
        assert system.child is not None
        pid = system.child.pid
        if mode == "max":
            extra = ["--mode", "closed", "--duration", str(self.args.max_duration)]
            extra += ["--concurrency", str(self.args.concurrency)]
        else:
            assert rate is not None
            extra = ["--mode", "open", "--rate", f"{rate:.1f}"]
            extra += ["--duration", str(self.args.duration)]
        others = [s.child.pid for s in self.systems if s is not system and s.child]
        idle0 = sum(cpu_seconds(p) for p in others)
        settle()
        ours = [pid, *others, *self.load_pids]
        before = wait_quiet(ours, timeout=self.args.quiet_timeout)
        interference = Interference(ours)
        cpu0 = cpu_seconds(pid)
        result = self.loadgen(system, path, extra)
        sent: dict[str, float] = result["sent"]
        arrivals = self.drain(sent)
        cpu1 = cpu_seconds(pid)
        foreign = interference.cores()
        idle_cpu = sum(cpu_seconds(p) for p in others) - idle0
        delivered = len(arrivals)
        first = min(sent.values()) if sent else 0.0
        last = max(arrivals.values()) if arrivals else first
        span = max(last - first, 1e-9)
        latencies = [(arrivals[k] - sent[k]) * 1000 for k in arrivals]
        p50, p95, p99 = percentiles(latencies)
        r50, r99 = percentiles([x * 1000 for x in result["rtt"]], (50, 99))
        record = {
            "system": system.name,
            "path": path,
            "rep": rep,
            "mode": mode,
            "target_rate": rate,
            "sent": result["messages"],
            "accepted": result["ok_messages"],
            "delivered": delivered,
            "lost": result["ok_messages"] - delivered,
            "statuses": result["statuses"],
            "errors": result["errors"],
            "throughput": delivered / span,
            "offered_rate": result["ok_messages"] / max(result["end"] - result["start"], 1e-9),
            "latency_ms": {"p50": p50, "p95": p95, "p99": p99},
            "response_ms": {"p50": r50, "p99": r99},
            "cpu_s": cpu1 - cpu0,
            "cpu_per_1000": (cpu1 - cpu0) / max(delivered, 1) * 1000,
            "cpu_utilisation": (cpu1 - cpu0) / span,
            "other_systems_cpu_s": idle_cpu,  # what the idle system(s) took meanwhile
            # cores busy with other jobs of the machine before / during the phase
            "foreign_cores_before": before,
            "foreign_cores": foreign,
            **memory(pid),
        }
        self.phases.append(record)
        print(_line(record), flush=True)
        return record

    def warm_up(self, system: System, path: str) -> None:
        count = str(self.args.warmup_count)
        result = self.loadgen(system, path, ["--mode", "closed", "--count", count])
        self.drain(result["sent"], timeout=60)

    # -- the whole run -----------------------------------------------------------------

    def run(self, systems: list[System]) -> None:
        self.sut_cpus, self.load_cpus = cpu_sets(self.args.pin)
        self.systems = systems
        with children() as started:
            self.start_sinks(started)
            for rep in range(1, self.args.reps + 1):
                for system in systems:
                    self.start_system(system, rep, started)
                for path in self.args.paths:
                    for system in systems:
                        self.warm_up(system, path)
                    # the baseline first, the others in turn forwards and backwards, so
                    # that none is always measured right after the baseline
                    order = systems[:1] + (systems[1:] if rep % 2 else systems[:0:-1])
                    maxima = {s.name: self.phase(s, path, rep, "max", None) for s in order}
                    rate = self.args.latency_rate or maxima[systems[0].name]["throughput"] * 0.5
                    for system in order:
                        self.phase(system, path, rep, "latency", rate)
                    if self.args.own_latency:  # context: each at half of its own max
                        for system in order[1:]:
                            own = maxima[system.name]["throughput"] * 0.5
                            self.phase(system, path, rep, "latency-own", own)
                for system in systems:
                    assert system.child is not None
                    self.memory.append(
                        {"system": system.name, "rep": rep, **memory(system.child.pid)}
                    )
                    system.child.stop()
                    started.remove(system.child)


def _pinner(cpus: set[int] | None) -> Any:
    from bench.common import pin

    return pin(cpus)


def _line(r: dict[str, Any]) -> str:
    lat = r["latency_ms"]
    return (
        f"{r['system']:<16} {r['path']:<14} rep{r['rep']} {r['mode']:<7} "
        f"rate={r['target_rate'] or 0:7.0f} thr={r['throughput']:7.0f}/s "
        f"p50={lat['p50']:7.1f} p95={lat['p95']:7.1f} p99={lat['p99']:7.1f} ms "
        f"cpu/1k={r['cpu_per_1000']:.3f}s util={r['cpu_utilisation']:.2f} "
        f"rss={r['rss_mb']:.0f}MB foreign={r['foreign_cores']:.2f}cores "
        f"lost={r['lost']} {r['statuses']} {r['errors'] or ''}"
    )


def summarise(phases: list[dict[str, Any]], mem: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over repetitions, per system and path."""
    out: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in phases:
        key = (r["system"], r["path"], r["mode"])
        out.setdefault(key, []).append(r)
    summary: dict[str, Any] = {}
    for (system, path, mode), runs in out.items():
        entry = summary.setdefault(system, {}).setdefault(path, {})
        entry[mode] = {
            "runs": len(runs),
            "throughput": median([r["throughput"] for r in runs]),
            "target_rate": median([r["target_rate"] or 0 for r in runs]),
            "latency_ms": {
                p: median([r["latency_ms"][p] for r in runs]) for p in ("p50", "p95", "p99")
            },
            "response_ms": {p: median([r["response_ms"][p] for r in runs]) for p in ("p50", "p99")},
            "cpu_per_1000": median([r["cpu_per_1000"] for r in runs]),
            "cpu_utilisation": median([r["cpu_utilisation"] for r in runs]),
            "lost": sum(r["lost"] for r in runs),
            "foreign_cores": median([r.get("foreign_cores", float("nan")) for r in runs]),
        }
    for system in summary:
        peaks = [m["peak_rss_mb"] for m in mem if m["system"] == system]
        summary[system]["peak_rss_mb"] = max(peaks) if peaks else None
    return summary


def compare(summary: dict[str, Any], baseline: str) -> dict[str, Any]:
    """The targets: throughput >= the bridge's; p99 at half its maximum <= 1.2x the bridge's."""
    verdicts: dict[str, Any] = {}
    for system, paths in summary.items():
        if system == baseline:
            continue
        for path, entry in paths.items():
            if not isinstance(entry, dict) or path not in summary[baseline]:
                continue
            base = summary[baseline][path]
            thr = entry["max"]["throughput"] / base["max"]["throughput"]
            p99 = entry["latency"]["latency_ms"]["p99"] / base["latency"]["latency_ms"]["p99"]
            verdicts.setdefault(system, {})[path] = {
                "throughput_ratio": thr,
                "p99_ratio": p99,
                "throughput_ok": thr >= 1.0,
                "p99_ok": p99 <= 1.2,
            }
    return verdicts


def systems_from(names: list[str], args: argparse.Namespace) -> list[System]:
    out = []
    for name in names:
        if name == "bridge":
            out.append(System("bridge", "bridge"))
        elif name.startswith("gateway"):
            _, store, root = split_system(name)
            store = store or "sqlite"
            out.append(System(name, "gateway", store, root, args.workers, args.log_level))
        else:
            raise SystemExit(f"unknown system {name!r}")
    return out


def _file_name(system: str) -> str:
    """A system's name as part of a file name (`gateway@/tmp/base`: `gateway@_tmp_base`)."""
    return re.sub(r"[^A-Za-z0-9@._-]", "_", system)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--paths", default=",".join(PATHS), help="comma-separated: " + ", ".join(PATHS))
    p.add_argument(
        "--systems",
        default="bridge,gateway",
        help="bridge first; gateway[-sqlite|-memory|-redis][@DIR], DIR another checkout "
        "(a worktree of an earlier commit) whose gateway runs beside this one's",
    )
    p.add_argument(
        "--max-duration",
        type=float,
        default=3.0,
        help="seconds of sending per max-throughput phase (then it drains)",
    )
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--duration", type=float, default=5.0, help="seconds per latency phase")
    p.add_argument("--threads", type=int, default=500, help="distinct conversations")
    p.add_argument("--workers", type=int, default=64, help="gateway delivery workers")
    p.add_argument("--log-level", default="WARNING", help="gateway log level")
    p.add_argument(
        "--loop",
        choices=["auto", "uvloop", "asyncio"],
        default="auto",
        help="event loop of both the gateway and the bridge",
    )
    p.add_argument("--pin", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument(
        "--quiet-timeout",
        type=float,
        default=10.0,
        help="wait this long at most for other jobs to calm down before a phase",
    )
    p.add_argument(
        "--latency-rate",
        type=float,
        default=None,
        help="messages/s of the latency phases (default: half the bridge's max)",
    )
    p.add_argument(
        "--own-latency",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure each gateway's latency at half of its own max",
    )
    p.add_argument("--warmup-count", type=int, default=500, help="messages per warm-up")
    p.add_argument("--quick", action="store_true", help="1 rep, short phases (~1 min)")
    p.add_argument(
        "--smoke",
        action="store_true",
        help="prove it works: 1 rep, ~2 s per path, low rate (the test suite)",
    )
    p.add_argument("--out", type=Path, default=None, help="default bench/results/run-<time>")
    p.add_argument("--no-chart", action="store_true")
    args = p.parse_args(argv)
    args.paths = [x for x in args.paths.split(",") if x]
    if args.quick:
        args.reps, args.max_duration, args.duration = 1, 1.5, 2.0
    if args.smoke:
        args.reps, args.max_duration, args.duration, args.concurrency = 1, 1.0, 1.0, 2
        args.latency_rate = args.latency_rate or 50.0
        args.quiet_timeout = 0.0
        args.own_latency = False
        args.warmup_count = 20
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    exit_on_sigterm()
    out = args.out or Path("bench/results") / time.strftime("run-%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    systems = systems_from(args.systems.split(","), args)
    bench = Bench(args, out)
    started = time.time()
    bench.run(systems)
    summary = summarise(bench.phases, bench.memory)
    result = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "duration_s": round(time.time() - started, 1),
        "machine": machine(),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "placement": {
            "sut_cpus": sorted(bench.sut_cpus or []),
            "load_cpus": sorted(bench.load_cpus or []),
        },
        "summary": summary,
        "verdicts": compare(summary, systems[0].name),
        "phases": bench.phases,
        "memory": bench.memory,
    }
    (out / "results.json").write_text(json.dumps(result, indent=1))
    if not args.no_chart:
        try:
            from bench.chart import chart

            chart(result, out / "chart.png")
        except ImportError as exc:  # matplotlib is in the `bench` extra
            print(f"no chart: {exc}")
    print(json.dumps({"summary": summary, "verdicts": result["verdicts"]}, indent=1))
    print(f"results: {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
