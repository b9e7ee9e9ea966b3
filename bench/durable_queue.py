"""The durable queue when CXone is down, and while it drains after CXone comes back.

(Not named `queue.py`: run as a script, that name would shadow the standard library's
`queue` module for everything asyncio imports.)

1. CXone down (the DFO sink answers 503): a closed loop sends signed deliveries for
   `--duration` s; the accept rate is messages acknowledged 2xx per second, i.e. persisted
   in the store (the webhook answers only after that). Meanwhile the workers keep
   retrying the head of every thread with backoff, as they would in an outage.
2. CXone back: the rate at which the backlog reaches the sink, from the moment CXone
   answers again to the last message (retry backoff is capped at 2 s in this config, so
   every thread is retried within 2 s of the recovery).

    python -m bench.durable_queue [--stores sqlite,redis] [--duration 10]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
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
    pin,
    settle,
    start,
    start_sinks,
    wait_http,
    write_gateway_yaml,
)
from tests.ports import free_port


def loadgen(
    target: str, batch: int, duration: float, tag: str, out: Path, cpus: set[int] | None
) -> dict[str, Any]:
    cmd = [
        sys.executable,
        "-m",
        "bench.loadgen",
        "--target",
        target,
        "--kind",
        "inbound",
        "--batch",
        str(batch),
        "--mode",
        "closed",
        "--duration",
        str(duration),
        "--concurrency",
        "32",
        "--tag",
        tag,
        "--out",
        str(out),
    ]
    subprocess.run(cmd, check=True, preexec_fn=pin(cpus))
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def cleanup_redis(url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match=f"{{{prefix}}}:*", count=1000))
    for i in range(0, len(keys), 1000):
        client.delete(*keys[i : i + 1000])
    client.close()


def one(store: str, batch: int, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    sut, load = cpu_sets(args.pin)
    admin = {"Authorization": f"Bearer {SECRETS.admin_token}"}
    name = f"{store}-b{batch}"
    with children() as started:
        started_sinks = start_sinks(out, load)
        started.append(started_sinks.child)
        sinks = started_sinks.cxone_url
        pl_api = started_sinks.platform_api
        pp, cp = free_port(), free_port()
        directory = out / name
        shutil.rmtree(directory, ignore_errors=True)
        config = write_gateway_yaml(
            directory, platform_port=pp, cxone_port=cp, backend=store, redis_url=args.redis_url
        )
        prefix = (
            next(
                line.split(":", 1)[1].strip()
                for line in config.read_text().splitlines()
                if line.strip().startswith("prefix:")
            )
            if store == "redis"
            else ""
        )
        gateway = start(
            f"gateway-{name}",
            gateway_command(config, args.loop),
            out,
            env=bench_env(pl_api, sinks),
            cpus=sut,
        )
        started.append(gateway)
        try:
            wait_http(f"http://127.0.0.1:{cp}/healthz", gateway)
            target = f"http://127.0.0.1:{pp}"
            # warm up with CXone up: token fetched, connections open
            loadgen(target, batch, 1.0, f"w{name}", out / "warm.json", load)
            status = f"http://127.0.0.1:{cp}/status.json"
            while http_json(status, headers=admin)["queue_depth"]:  # the warm-up delivered
                time.sleep(0.2)
            http_json(sinks + "/_bench/dump")
            http_json(sinks + "/_bench/cxone/down", data={})
            settle()
            cpu0 = cpu_seconds(gateway.pid)
            down = loadgen(target, batch, args.duration, f"d{name}", out / "down.json", load)
            cpu1 = cpu_seconds(gateway.pid)
            accepted = down["ok_messages"]
            accept_rate = accepted / (down["end"] - down["start"])
            depth = http_json(status, headers=admin)["queue_depth"]
            rss_down = memory(gateway.pid)
            refused = http_json(sinks + "/_bench/dump")["refused"]
            settle()
            up_at = time.monotonic()
            http_json(sinks + "/_bench/cxone/up", data={})
            wanted = set(down["sent"])
            arrivals: dict[str, float] = {}
            quiet_since = time.monotonic()
            while len(arrivals) < len(wanted) and time.monotonic() - quiet_since < 15:
                time.sleep(0.25)
                dump = http_json(sinks + "/_bench/dump")
                if dump["cxone"]:
                    quiet_since = time.monotonic()
                arrivals.update((k, t) for k, t in dump["cxone"].items() if k in wanted)
            cpu2 = cpu_seconds(gateway.pid)
            got = list(arrivals.values())
            first, last = (min(got), max(got)) if got else (up_at, up_at)
            row = {
                "store": store,
                "batch": batch,
                "accepted": accepted,
                "accept_rate": accept_rate,
                "accept_statuses": down["statuses"],
                "cpu_per_1000_accept": (cpu1 - cpu0) / max(accepted, 1) * 1000,
                "retries_refused_while_down": refused,
                "queue_depth_after": depth,
                "rss_with_backlog_mb": rss_down["rss_mb"],
                "delivered": len(got),
                "lost": accepted - len(got),
                "first_delivery_after_up_s": first - up_at,
                "drain_s": last - up_at,
                "drain_rate": len(got) / max(last - up_at, 1e-9),
                "drain_rate_after_first": len(got) / max(last - first, 1e-9),
                "cpu_per_1000_drain": (cpu2 - cpu1) / max(len(got), 1) * 1000,
                "peak_rss_mb": memory(gateway.pid)["peak_rss_mb"],
            }
        finally:
            if prefix:
                gateway.stop()
                cleanup_redis(args.redis_url, prefix)
    print(
        f"{store:<6} batch {batch:>2}: accepts {row['accept_rate']:7.0f} msg/s with CXone "
        f"down ({accepted} queued), drains {row['drain_rate']:6.0f} msg/s after recovery "
        f"(first after {row['first_delivery_after_up_s']:.2f} s), lost {row['lost']}",
        flush=True,
    )
    return row


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--stores", default="sqlite,redis")
    p.add_argument("--batches", default="1,10", help="events per delivery")
    p.add_argument("--duration", type=float, default=10.0, help="seconds of load while down")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    p.add_argument("--loop", default="auto", choices=["auto", "uvloop", "asyncio"])
    p.add_argument("--pin", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--out", type=Path, default=Path("bench/results/queue"))
    args = p.parse_args()
    exit_on_sigterm()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = [
        one(store, int(batch), args, args.out)
        for store in args.stores.split(",")
        for batch in args.batches.split(",")
    ]
    (args.out / "queue.json").write_text(
        json.dumps(
            {
                "machine": machine(),
                "config": {"duration_s": args.duration, "retry_max_delay_s": 2.0},
                "results": rows,
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
