"""Where a message's CPU goes: each step of both paths timed in-process, no network.

The steps are the gateway's own functions, called the way the handlers and the queue
worker call them, on the payloads the load generator sends. Store operations run on
a real store (sqlite in a temporary directory, or redis), through the event loop, as
in the gateway. CPU is `time.process_time()` (every thread of the process, so the
sqlite thread is included), per call, in microseconds.

    python -m bench.hotpath [--store sqlite|redis|memory] [--n 3000] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.common import (
    CHAT_CHANNEL,
    SECRETS,
    bench_env,
    delivery,
    reply,
    sign,
    write_gateway_yaml,
)
from tests.ports import free_port


def timed(fn: Callable[[], Any], n: int) -> float:
    """CPU microseconds per call of a synchronous step."""
    for _ in range(min(n // 10, 200)):
        fn()
    t0 = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - t0) / n * 1e6


async def atimed(fn: Callable[[], Awaitable[Any]], n: int) -> tuple[float, float]:
    """(CPU µs, wall µs) per call of an async step, awaited one after the other."""
    for _ in range(min(n // 10, 100)):
        await fn()
    t0, w0 = time.process_time(), time.perf_counter()
    for _ in range(n):
        await fn()
    return (time.process_time() - t0) / n * 1e6, (time.perf_counter() - w0) / n * 1e6


def steps(n: int, store_kind: str) -> dict[str, Any]:
    from gateway import jsonutil
    from gateway.cxone.tokens import TokenIssuer
    from gateway.delivery.jobs import InboundJob
    from gateway.delivery.store import NewJob, open_store
    from gateway.edge import check_json_depth
    from gateway.mapping import OutboundContext, PlatformResponse
    from gateway.metrics import create_metrics
    from gateway.routing import load_routing
    from gateway.settings_loader import load_settings

    tmp = Path(tempfile.mkdtemp(prefix="bench-hotpath-"))
    cfg = write_gateway_yaml(
        tmp, platform_port=free_port(), cxone_port=free_port(), backend=store_kind
    )
    settings = load_settings(cfg, env=bench_env("http://127.0.0.1:1/v1", "http://127.0.0.1:2"))
    routing = load_routing(settings, 1, reread_settings=False)
    mapping = routing.mappings["watering-hole"]
    verifier = routing.verifiers["watering-hole"]
    out: dict[str, Any] = {"inbound": {}, "outbound": {}, "store": {}}
    ib, ob, st = out["inbound"], out["outbound"], out["store"]

    # ---- inbound, one event per delivery
    body, _ = delivery("hp", 0, 1, 500)
    headers = {"wh-signature": sign(body), "content-type": "application/json"}
    ib["verify signature"] = timed(lambda: verifier.verify(body, headers, "", None), n)
    ib["json parse (jsonutil.loads)"] = timed(lambda: jsonutil.loads(body), n)
    payload = jsonutil.loads(body)
    ib["check_json_depth"] = timed(lambda: check_json_depth(payload, raw=body), n)
    ib["split (foreach)"] = timed(lambda: mapping.split(payload, headers=headers, query={}), n)
    item = mapping.split(payload, headers=headers, query={})[0]
    ib["route + extract + render"] = timed(lambda: mapping.route_inbound(item), n)
    call = mapping.route_inbound(item)
    job = InboundJob.accept(mapping, item, time.time(), call)  # type: ignore[arg-type]
    ib["job encode"] = timed(job.encode, n)
    raw = job.encode()
    ib["job decode (worker)"] = timed(lambda: InboundJob.decode(raw), n)
    ib["CXone body dumps (client)"] = timed(lambda: jsonutil.dumps(call.body), n)  # type: ignore[union-attr]
    metrics = create_metrics()
    ib["metrics: 1 counter inc"] = timed(
        lambda: metrics.messages.labels("watering-hole", "chat", "dm", "inbound", "x").inc(), n
    )
    ib["metrics: histogram observe"] = timed(
        lambda: metrics.delivery_latency.labels("watering-hole", "create_message").observe(0.01),
        n,
    )

    # ---- outbound
    issuer = TokenIssuer(settings.integrations)
    grant = issuer.issue(SECRETS.byoc_client_id, SECRETS.byoc_client_secret)
    auth = f"Bearer {grant.access_token}"
    ob["bearer verify (JWT)"] = timed(lambda: issuer.verify(auth), n)
    rbody, _ = reply("hp", 1, 500)
    ob["json parse"] = timed(lambda: jsonutil.loads(rbody), n)
    parsed = jsonutil.loads(rbody)
    ob["check_json_depth"] = timed(lambda: check_json_depth(parsed, raw=rbody), n)
    ctx = OutboundContext(
        "reply", "outbound", "chat", CHAT_CHANNEL, {"channelId": CHAT_CHANNEL}, parsed
    )
    ob["route + extract + render request"] = timed(lambda: mapping.route_outbound(ctx), n)
    plan = mapping.route_outbound(ctx)
    ob["fingerprint (dumps + sha256)"] = timed(
        lambda: hashlib.sha256(b"c\0o\0" + jsonutil.dumps(parsed)).hexdigest(), n
    )
    answer = PlatformResponse(
        201,
        {"Content-Type": "application/json"},
        {
            "message": {
                "id": "msg_out_1",
                "conversation_id": "cnv_1",
                "created_at_ms": 1764158410042,
                "permalink": "https://wateringhole.example/c/cnv_1#msg_out_1",
            }
        },
    )
    ob["complete (result + CXone response)"] = timed(
        lambda: mapping.complete_outbound(plan, [answer]), n
    )
    result = mapping.complete_outbound(plan, [answer])
    ob["response dumps"] = timed(lambda: jsonutil.dumps(result), n)

    # ---- the store, through the event loop as the gateway uses it
    async def store_steps() -> None:
        store = open_store(settings.store)
        await store.open()
        counter = iter(range(10**9))

        async def enqueue() -> None:
            i = next(counter)
            await store.enqueue([NewJob(f"t\x1f{i % 500}", raw, f"k{i}")], 3600)

        st["enqueue (1 job)"] = await atimed(enqueue, n)
        owner = "bench"
        claimed: list[Any] = []

        async def claim() -> None:
            claimed.extend(await store.claim(owner, 1, 30))

        st["claim (1 job)"] = await atimed(claim, min(n, 400))
        jobs = iter(list(claimed))

        async def complete() -> None:
            await store.complete(next(jobs), owner)

        st["complete"] = await atimed(complete, min(len(claimed), 400) - 50)
        st["kv_get (miss)"] = await atimed(lambda: store.kv_get("ns", "absent"), n)
        st["kv_set"] = await atimed(lambda: store.kv_set("ns", "k", b"value", 60), n)
        st["kv_get (hit)"] = await atimed(lambda: store.kv_get("ns", "k"), n)
        await store.close()

    try:
        import uvloop

        factory: Any = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(store_steps())
    out["store_backend"] = store_kind
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--store", default="sqlite", choices=["sqlite", "redis", "memory"])
    p.add_argument("--n", type=int, default=3000)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    out = steps(args.n, args.store)
    for section in ("inbound", "outbound"):
        print(f"{section}:")
        for name, us in out[section].items():
            print(f"  {name:<40} {us:8.1f} µs CPU")
    print(f"store ({args.store}):")
    for name, (cpu, wall) in out["store"].items():
        print(f"  {name:<40} {cpu:8.1f} µs CPU {wall:8.1f} µs wall")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
