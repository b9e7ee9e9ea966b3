"""The soak: a gateway under steady mixed load for a long time, memory sampled throughout.

Open-loop load on both paths (single events, batches of 10, replies) at rates well
under the gateway's maximum, for `--duration` s (default 600). Every `--sample` s it
records the gateway's RSS, CPU and queue depth and what reached the sinks. Memory is
flat when the RSS of the last part of the run grows by no more than noise: the result
gives the least-squares slope (MB per minute) over the run after a warm-up.

    python -m bench.soak --duration 600 --out bench/results/soak
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import (
    SECRETS,
    bench_env,
    children,
    cpu_seconds,
    cpu_sets,
    exit_on_sigterm,
    gateway_command,
    http_json,
    machine,
    memory,
    start,
    start_sinks,
    wait_http,
    write_gateway_yaml,
)
from tests.ports import free_port

LOADS = (
    # name, kind, batch, share of the rate
    ("inbound", "inbound", 1, 0.5),
    ("inbound-batch", "inbound", 10, 0.25),
    ("outbound", "outbound", 1, 0.25),
)


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y over x (per unit of x)."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    var = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / var if var else 0.0


def run(args: argparse.Namespace) -> dict[str, Any]:
    out: Path = args.out
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    sut, load = cpu_sets(args.pin)
    samples: list[dict[str, Any]] = []
    with children() as started:
        started_sinks = start_sinks(out, load)
        started.append(started_sinks.child)
        sinks = started_sinks.cxone_url
        pl_api = started_sinks.platform_api
        pp, cp = free_port(), free_port()
        config = write_gateway_yaml(
            out / "gateway",
            platform_port=pp,
            cxone_port=cp,
            backend=args.store,
            log_level=args.log_level,
        )
        gateway = start(
            "gateway",
            gateway_command(config, args.loop),
            out,
            env=bench_env(pl_api, sinks),
            cpus=sut,
        )
        started.append(gateway)
        wait_http(f"http://127.0.0.1:{cp}/healthz", gateway)
        wait_http(f"http://127.0.0.1:{pp}/healthz", gateway)
        for name, kind, batch, share in LOADS:
            target = f"http://127.0.0.1:{pp if kind == 'inbound' else cp}"
            cmd = [
                sys.executable,
                "-m",
                "bench.loadgen",
                "--target",
                target,
                "--kind",
                kind,
                "--batch",
                str(batch),
                "--mode",
                "open",
                "--rate",
                str(args.rate * share),
                "--duration",
                str(args.duration),
                "--tag",
                f"soak-{name}",
                "--no-record",
                "--report-every",
                "30",
                "--out",
                str(out / f"loadgen-{name}.json"),
            ]
            started.append(start(f"loadgen-{name}", cmd, out, cpus=load))
        loadgens = started[-len(LOADS) :]
        t0 = time.monotonic()
        delivered = duplicates = 0
        admin = {"Authorization": f"Bearer {SECRETS.admin_token}"}
        while any(g.alive() for g in loadgens) or time.monotonic() - t0 < 5:
            time.sleep(args.sample)
            dump = http_json(sinks + "/_bench/dump")
            delivered += len(dump["cxone"]) + len(dump["platform"])
            duplicates += dump["duplicates"]
            try:
                depth = http_json(f"http://127.0.0.1:{cp}/status.json", headers=admin)
                queue = depth.get("queue_depth")
            except Exception:
                queue = None
            sample = {
                "t": round(time.monotonic() - t0, 1),
                **memory(gateway.pid),
                "cpu_s": cpu_seconds(gateway.pid),
                "delivered": delivered,
                "duplicates": duplicates,
                "queue_depth": queue,
            }
            samples.append(sample)
            print(json.dumps(sample), flush=True)
        time.sleep(2)
        dump = http_json(sinks + "/_bench/dump")
        delivered += len(dump["cxone"]) + len(dump["platform"])
        loadgen = {}
        for name, *_ in LOADS:
            path = out / f"loadgen-{name}.json"
            if path.exists():
                data = json.loads(path.read_text())
                loadgen[name] = {
                    k: data[k] for k in ("messages", "ok_messages", "statuses", "errors")
                }
    warm = [s for s in samples if s["t"] >= args.warmup]
    accepted = sum(v["ok_messages"] for v in loadgen.values())
    rss = [s["rss_mb"] for s in warm] or [0.0]
    return {
        "machine": machine(),
        "config": {
            "duration_s": args.duration,
            "rate": args.rate,
            "store": args.store,
            "loop": args.loop,
            "log_level": args.log_level,
            "warmup_s": args.warmup,
        },
        "summary": {
            "accepted": accepted,
            "delivered": delivered,
            "lost": accepted - delivered,
            "rss_after_warmup_mb": rss[0],
            "rss_end_mb": rss[-1],
            "rss_max_mb": max(rss),
            "rss_slope_mb_per_min": slope([(s["t"] / 60, s["rss_mb"]) for s in warm]),
            "rss_slope_last_half_mb_per_min": slope(
                [(s["t"] / 60, s["rss_mb"]) for s in warm[len(warm) // 2 :]]
            ),
            "cpu_s": samples[-1]["cpu_s"] if samples else None,
        },
        "loadgen": loadgen,
        "samples": samples,
    }


def chart(result: dict[str, Any], target: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = result["samples"]
    ts = [s["t"] / 60 for s in samples]
    fig, ax = plt.subplots(figsize=(8, 3.6))
    ax.plot(ts, [s["rss_mb"] for s in samples], color="#e07a1f", label="RSS (MB)")
    ax.set_xlabel("minutes")
    ax.set_ylabel("RSS MB")
    ax.set_ylim(0, max(s["rss_mb"] for s in samples) * 1.3)
    rate = ax.twinx()
    pairs = list(itertools.pairwise(samples))
    rate.plot(
        ts[1:],
        [(b["delivered"] - a["delivered"]) / max(b["t"] - a["t"], 1e-9) for a, b in pairs],
        color="#6b7b8c",
        alpha=0.6,
        label="delivered/s",
    )
    rate.set_ylabel("messages delivered / s")
    s = result["summary"]
    ax.set_title(
        f"soak: {result['config']['rate']:.0f} msg/s for "
        f"{result['config']['duration_s'] / 60:.0f} min - RSS {s['rss_after_warmup_mb']:.1f} -> "
        f"{s['rss_end_mb']:.1f} MB, slope over the last half "
        f"{s.get('rss_slope_last_half_mb_per_min', float('nan')):+.2f} MB/min, lost {s['lost']}",
        fontsize=9,
    )
    fig.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(target, dpi=110)
    plt.close(fig)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--duration", type=float, default=600.0)
    p.add_argument("--rate", type=float, default=400.0, help="messages per second, all paths")
    p.add_argument("--sample", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=60.0, help="seconds left out of the slope")
    p.add_argument("--store", default="sqlite", choices=["sqlite", "redis", "memory"])
    p.add_argument("--loop", default="auto", choices=["auto", "uvloop", "asyncio"])
    p.add_argument("--log-level", default="WARNING")
    p.add_argument("--pin", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--out", type=Path, default=Path("bench/results/soak"))
    args = p.parse_args()
    exit_on_sigterm()
    result = run(args)
    (args.out / "soak.json").write_text(json.dumps(result, indent=1))
    chart(result, args.out / "soak.png")
    print(json.dumps(result["summary"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
