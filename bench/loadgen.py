"""The load generator: signed Watering Hole deliveries, or CXone replies with a bearer token.

Two modes:
- `closed`: `--concurrency` connections each send the next request as soon as the last
  one is answered, for `--duration` s or `--count` messages (the maximum throughput);
- `open`: requests start on a fixed schedule of `--rate` messages per second for
  `--duration` seconds, whatever the answers do (latency without coordinated omission:
  each message's time is its *scheduled* start, so a stalled server cannot hide queueing).

It records, per message id, the time the request started (`time.monotonic()`, the same
clock as the sinks'), the HTTP statuses and the round-trip times, and writes them as JSON.

    python -m bench.loadgen --target http://127.0.0.1:8080 --kind inbound --batch 10 \
        --mode open --rate 500 --duration 5 --tag run1 --out sent.json
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

from bench.common import OUTBOUND_PATH, SECRETS, TOKEN_PATH, WEBHOOK_PATH, delivery, reply, sign
from bench.rawhttp import Pool, new_event_loop, request_bytes


@dataclass
class Recorder:
    """What happened: per accepted message its start time, per request status and RTT."""

    record: bool = True
    sent: dict[str, float] = field(default_factory=dict)
    rtt: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    messages: int = 0
    ok_messages: int = 0

    def done(self, ids: list[str], started: float, status: int, ended: float) -> None:
        self.statuses[status] += 1
        self.messages += len(ids)
        if not 200 <= status < 300:
            return
        self.ok_messages += len(ids)
        if self.record:
            self.rtt.append(ended - started)
            for key in ids:
                self.sent[key] = started


class Generator:
    """Builds and sends the requests of one run."""

    def __init__(self, args: argparse.Namespace) -> None:
        url = urlsplit(args.target)
        self.host = url.hostname or "127.0.0.1"
        self.port = url.port or 80
        self.hostport = f"{self.host}:{self.port}"
        self.kind: str = args.kind
        self.batch: int = args.batch if self.kind == "inbound" else 1
        self.tag: str = args.tag
        self.threads: int = args.threads
        self.pool = Pool(self.host, self.port)
        self.token: str | None = None
        self.rec = Recorder(record=not args.no_record)

    async def fetch_token(self, token_url: str) -> None:
        url = urlsplit(token_url)
        pool = Pool(url.hostname or "127.0.0.1", url.port or 80)
        body = orjson.dumps(
            {
                "grant_type": "client_credentials",
                "client_id": SECRETS.byoc_client_id,
                "client_secret": SECRETS.byoc_client_secret,
            }
        )
        status, raw = await pool.request(
            request_bytes(
                "POST", self.hostport, url.path, body, {"Content-Type": "application/json"}
            )
        )
        pool.close()
        if status != 200:
            raise SystemExit(f"token endpoint answered {status}: {raw[:200]!r}")
        self.token = orjson.loads(raw)["access_token"]

    def build(self, i: int) -> tuple[bytes, list[str]]:
        """Request number i: (serialised request, the message ids it carries)."""
        if self.kind == "inbound":
            body, ids = delivery(self.tag, i * self.batch, self.batch, self.threads)
            headers = {"Content-Type": "application/json", "WH-Signature": sign(body)}
            return request_bytes("POST", self.hostport, WEBHOOK_PATH, body, headers), ids
        body, rid = reply(self.tag, i, self.threads)
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {self.token}"}
        return request_bytes("POST", self.hostport, OUTBOUND_PATH, body, headers), [rid]

    async def send(self, i: int, scheduled: float | None = None) -> None:
        data, ids = self.build(i)
        started = time.monotonic() if scheduled is None else scheduled
        try:
            status, _ = await self.pool.request(data)
        except Exception as exc:
            self.rec.errors[type(exc).__name__] += 1
            return
        self.rec.done(ids, started, status, time.monotonic())

    async def closed(self, count: int | None, duration: float, concurrency: int) -> None:
        requests = -(-count // self.batch) if count else 1 << 62
        stop_at = time.monotonic() + duration if not count else float("inf")
        next_index = 0

        async def worker() -> None:
            nonlocal next_index
            while next_index < requests and time.monotonic() < stop_at:
                i = next_index
                next_index += 1
                await self.send(i)

        await asyncio.gather(*(worker() for _ in range(concurrency)))

    async def open(self, rate: float, duration: float, report_every: float | None) -> None:
        per_request = self.batch / rate  # seconds between requests
        requests = int(duration * rate / self.batch)
        tasks: set[asyncio.Task[None]] = set()
        start = time.monotonic() + 0.05
        last_report = start
        reported = 0
        for i in range(requests):
            due = start + i * per_request
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(self.send(i, due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            if report_every and due - last_report >= report_every:
                done = self.rec.ok_messages
                print(
                    orjson.dumps(
                        {
                            "t": round(due - start, 1),
                            "ok_messages": done,
                            "rate": round((done - reported) / (due - last_report), 1),
                            "in_flight": len(tasks),
                            "errors": sum(self.rec.errors.values()),
                            "statuses": {str(k): v for k, v in self.rec.statuses.items()},
                        }
                    ).decode(),
                    flush=True,
                )
                last_report, reported = due, done
        if tasks:
            await asyncio.wait(tasks, timeout=30)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    gen = Generator(args)
    if gen.kind == "outbound":
        await gen.fetch_token(args.token_url or args.target.rstrip("/") + TOKEN_PATH)
    t0 = time.monotonic()
    if args.mode == "closed":
        await gen.closed(args.count, args.duration, args.concurrency)
    else:
        await gen.open(args.rate, args.duration, args.report_every)
    t1 = time.monotonic()
    gen.pool.close()
    rec = gen.rec
    return {
        "kind": gen.kind,
        "batch": gen.batch,
        "mode": args.mode,
        "tag": gen.tag,
        "start": t0,
        "end": t1,
        "requests": sum(rec.statuses.values()),
        "messages": rec.messages,
        "ok_messages": rec.ok_messages,
        "statuses": {str(k): v for k, v in sorted(rec.statuses.items())},
        "errors": dict(rec.errors),
        "connections": gen.pool.opened,
        "rtt": rec.rtt,
        "sent": rec.sent,
    }


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--target", required=True, help="base URL of the gateway/bridge listener")
    p.add_argument("--token-url", default=None, help="outbound: the BYOC token endpoint")
    p.add_argument("--kind", choices=["inbound", "outbound"], required=True)
    p.add_argument("--batch", type=int, default=1, help="inbound: events per delivery")
    p.add_argument("--mode", choices=["closed", "open"], default="closed")
    p.add_argument("--count", type=int, default=None, help="closed: messages (else --duration)")
    p.add_argument("--concurrency", type=int, default=32, help="closed: connections")
    p.add_argument("--rate", type=float, default=200.0, help="open: messages per second")
    p.add_argument("--duration", type=float, default=5.0, help="seconds of sending")
    p.add_argument("--threads", type=int, default=500, help="distinct conversations")
    p.add_argument("--tag", default=f"t{int(time.time())}", help="unique prefix of the ids")
    p.add_argument("--no-record", action="store_true", help="keep counts only (long runs)")
    p.add_argument("--report-every", type=float, default=None, help="open: progress lines")
    p.add_argument("--out", type=Path, default=None)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        result = runner.run(run(args))
    data = orjson.dumps(result)
    if args.out is None:
        sys.stdout.buffer.write(data + b"\n")
    else:
        args.out.write_bytes(data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
