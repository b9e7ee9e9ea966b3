"""The two upstreams of the benchmark, answering instantly and recording arrivals.

CXone sink (one port): `POST /token` (access-key token), `POST /dfo/3.0/channels/{id}/messages`
(records `idOnExternalPlatform`), other DFO calls answer 200 `{}`.
Platform sink (another port): `POST /v1/conversations/{id}/messages` (records the reply id,
the first word of the text), `.../typing` 204, anything else 201 `{}`.

Control, on the CXone port: `GET /_bench/health`, `GET /_bench/dump` (arrivals since the
last dump: `{"cxone": {id: t}, "platform": {id: t}, "duplicates": n, "refused": n}`, times
from `time.monotonic()`, which is one clock for every process of the machine), `POST
/_bench/cxone/down` (DFO answers 503 until `.../up`).

    python -m bench.sinks --cxone-port 9001 --platform-port 9002
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time

import orjson

from bench.rawhttp import new_event_loop, response, serve

TOKEN = response(
    200,
    orjson.dumps(
        {"access_token": "bench-cxone-token", "token_type": "Bearer", "expires_in": 86400}
    ),
)
CREATED = response(
    200,
    orjson.dumps(
        {
            "consumerContact": {"id": "bench-contact-1", "status": "new"},
            "message": {"id": "bench-message"},
        }
    ),
)
DOWN = response(503, b'{"error":"unavailable","message":"CXone is down (benchmark)"}')
EMPTY = response(200, b"{}")
NOT_FOUND = response(404, b'{"error":"not_found"}')
TYPING = response(204)


class Sinks:
    """State of both sinks: arrivals per id, and whether CXone is down."""

    def __init__(self) -> None:
        self.cxone: dict[str, float] = {}
        self.platform: dict[str, float] = {}
        self.duplicates = 0
        self.refused = 0
        self.down = False
        self._reply_seq = 0

    # -- CXone -------------------------------------------------------------------------
    def cxone_handler(self, method: bytes, target: bytes, body: bytes, t: float) -> bytes:
        if target.startswith(b"/dfo/3.0/channels/") and target.endswith(b"/messages"):
            if self.down:
                self.refused += 1
                return DOWN
            key = orjson.loads(body)["idOnExternalPlatform"]
            if key in self.cxone:
                self.duplicates += 1
            else:
                self.cxone[key] = t
            return CREATED
        if target == b"/token":
            return TOKEN
        if target.startswith(b"/_bench/"):
            return self._control(method, target)
        if target.startswith(b"/dfo/"):
            return DOWN if self.down else EMPTY
        return NOT_FOUND

    def _control(self, method: bytes, target: bytes) -> bytes:
        if target == b"/_bench/health":
            return EMPTY
        if target == b"/_bench/dump":
            out = {
                "cxone": self.cxone,
                "platform": self.platform,
                "duplicates": self.duplicates,
                "refused": self.refused,
                "now": time.monotonic(),
            }
            self.cxone, self.platform = {}, {}
            self.duplicates = self.refused = 0
            return response(200, orjson.dumps(out))
        if target == b"/_bench/cxone/down" and method == b"POST":
            self.down = True
            return EMPTY
        if target == b"/_bench/cxone/up" and method == b"POST":
            self.down = False
            return EMPTY
        return NOT_FOUND

    # -- platform ----------------------------------------------------------------------
    def platform_handler(self, method: bytes, target: bytes, body: bytes, t: float) -> bytes:
        if target.startswith(b"/v1/conversations/") and target.endswith(b"/messages"):
            text = orjson.loads(body)["text"]
            key = text.split(" ", 1)[0]
            if key in self.platform:
                self.duplicates += 1
            else:
                self.platform[key] = t
            self._reply_seq += 1
            conversation = target.split(b"/")[3].decode()
            mid = f"msg_out_{self._reply_seq}"
            return response(
                201,
                orjson.dumps(
                    {
                        "message": {
                            "id": mid,
                            "conversation_id": conversation,
                            "created_at_ms": int(time.time() * 1000),
                            "permalink": f"https://wateringhole.example/c/{conversation}#{mid}",
                        }
                    }
                ),
            )
        if target.endswith(b"/typing"):
            return TYPING
        return response(201, b"{}")


async def main(host: str, cxone_port: int, platform_port: int) -> None:
    sinks = Sinks()
    servers = [
        await serve(sinks.cxone_handler, host, cxone_port),
        await serve(sinks.platform_handler, host, platform_port),
    ]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"sinks: CXone on {host}:{cxone_port}, platform on {host}:{platform_port}", flush=True)
    await stop.wait()
    for server in servers:
        server.close()  # connections close with the process: no wait_closed()


def cli() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--cxone-port", type=int, required=True)
    p.add_argument("--platform-port", type=int, required=True)
    args = p.parse_args()
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(main(args.host, args.cxone_port, args.platform_port))


if __name__ == "__main__":
    cli()
