"""Issue 9: Kestrel (a signature over the full public URL, the gateway behind a reverse proxy).

The platform signs `<url><body>` with the URL it called. The test puts a small reverse
proxy in front of the gateway, like a load balancer that terminates TLS and serves the
gateway under a path prefix: it connects to the gateway from 127.0.0.2, the only trusted
proxy, and adds X-Forwarded-For / -Proto / -Host. Clients that reach the gateway directly
come from 127.0.0.1, so their X-Forwarded-* headers must change nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from gateway import jsonutil
from gateway.clock import FakeClock
from tests.harness import serve_app
from tests.reach_world import Reach, start_reach

ENV = {"KESTREL_SIGNATURE_KEY": "kestrel-signature-key", "KESTREL_TOKEN": "kestrel-token"}
PROXY_ADDRESS = "127.0.0.2"  # where the proxy connects from: the trusted one
PUBLIC = "https://hooks.kestrel-gw.example/gw"  # what the platform calls, behind the proxy
PATH = "/webhooks/kestrel?tenant=acme&v=2"
_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "host", "content-length"}


class ReverseProxy:
    """Forward every request to `upstream`, minus `prefix`, with X-Forwarded-* appended."""

    def __init__(self, upstream: str, session: aiohttp.ClientSession, prefix: str = "") -> None:
        self.upstream = upstream
        self.session = session
        self.prefix = prefix
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self.forward)

    async def forward(self, request: web.Request) -> web.Response:
        path = request.raw_path
        if not path.startswith(self.prefix + "/"):
            return web.Response(status=404)
        headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in _HOP)
        for name, value in (
            ("X-Forwarded-For", request.remote or ""),
            ("X-Forwarded-Host", request.host),
            ("X-Forwarded-Proto", "https"),  # as if TLS ended here
        ):
            headers[name] = ", ".join([*request.headers.getall(name, ()), value])
        target = URL(self.upstream + path[len(self.prefix) :], encoded=True)
        async with self.session.request(
            request.method, target, data=await request.read(), headers=headers
        ) as answer:
            return web.Response(
                status=answer.status, body=await answer.read(), content_type=answer.content_type
            )


@contextlib.asynccontextmanager
async def proxy_for(reach: Reach, prefix: str = "") -> AsyncIterator[str]:
    """Run a reverse proxy in front of the gateway's platform listener; yield its URL."""
    connector = aiohttp.TCPConnector(local_addr=(PROXY_ADDRESS, 0))
    async with aiohttp.ClientSession(connector=connector) as session:
        proxy = ReverseProxy(reach.running.urls["platform"], session, prefix)
        runner, url = await serve_app(proxy.app)
        try:
            yield url
        finally:
            await runner.cleanup()


@contextlib.asynccontextmanager
async def kestrel_world(
    directory: Path, clock: FakeClock, *, env: Mapping[str, str] = {}, **listener: Any
) -> AsyncIterator[Reach]:
    listener.setdefault("trusted_proxies", [f"{PROXY_ADDRESS}/32"])
    async with start_reach(
        directory,
        "kestrel",
        env={**ENV, **env},
        api_env="KESTREL_API",
        clock=clock,
        overrides={"listeners": {"platform": listener}},
    ) as reach:
        yield reach


def event(n: int) -> bytes:
    return jsonutil.dumps(
        {
            "event_id": f"ev_{n}",
            "type": "message.created",
            "data": {
                "conversation_id": "kc_1",
                "message": {
                    "id": f"km_{n}",
                    "text": f"message {n}",
                    "created_at": "2025-11-26T12:00:00Z",
                    "author": {"id": "ku_1", "name": "Kit"},
                },
            },
        }
    )


async def send(url: str, raw: bytes, headers: Mapping[str, str]) -> int:
    """POST `raw` to `url` (the proxy or the gateway itself); the status."""
    sent = {"Content-Type": "application/json", **headers}
    async with (
        aiohttp.ClientSession() as s,
        s.post(URL(url, encoded=True), data=raw, headers=sent) as r,
    ):
        return r.status


async def test_behind_a_proxy_the_listener_public_url_is_the_signed_url(
    tmp_path: Path, clock: FakeClock
) -> None:
    async with (
        kestrel_world(tmp_path, clock, public_url=PUBLIC) as kestrel,
        proxy_for(kestrel, "/gw") as proxy,
    ):
        via_proxy = proxy + "/gw" + PATH
        host = {"Host": "hooks.kestrel-gw.example"}
        raw = event(1)
        assert await send(via_proxy, raw, {**host, **kestrel.sign(raw, url=PUBLIC + PATH)}) == 200
        got = await kestrel.delivered("chat", "km_1")
        assert got.body["messageContent"]["payload"]["text"] == "message 1"
        # what the gateway itself sees is not what Kestrel signed
        internal = kestrel.running.urls["platform"] + PATH
        assert (
            await send(via_proxy, event(2), {**host, **kestrel.sign(event(2), url=internal)}) == 401
        )
        # the query is part of the signed URL
        other = PUBLIC + PATH.replace("acme", "umbrella")
        assert await send(via_proxy, event(2), {**host, **kestrel.sign(event(2), url=other)}) == 401
        # a client's forged X-Forwarded-Host travels through the proxy and changes nothing
        forged = {**host, "X-Forwarded-Host": "evil.example"}
        evil = "https://evil.example/gw" + PATH
        assert (
            await send(via_proxy, event(3), {**forged, **kestrel.sign(event(3), url=evil)}) == 401
        )
        good = kestrel.sign(event(3), url=PUBLIC + PATH)
        assert await send(via_proxy, event(3), {**forged, **good}) == 200
        await kestrel.delivered("chat", "km_3")
        assert [m.message_id for m in kestrel.cxone.messages] == ["km_1", "km_3"]


async def test_a_mapping_public_url_overrides_the_listener_one(
    tmp_path: Path, clock: FakeClock
) -> None:
    partner = "https://kestrel-in.partner.example/hooks"
    async with (
        kestrel_world(tmp_path, clock, env={"KESTREL_PUBLIC_URL": partner}, public_url=PUBLIC) as k,
        proxy_for(k, "/gw") as proxy,
    ):
        assert k.mapping.webhook.public_url == partner
        via_proxy = proxy + "/gw" + PATH
        assert await send(via_proxy, event(1), k.sign(event(1), url=PUBLIC + PATH)) == 401
        assert await send(via_proxy, event(1), k.sign(event(1), url=partner + PATH)) == 200
        await k.delivered("chat", "km_1")


async def test_without_public_url_only_a_trusted_proxy_says_which_url_was_called(
    tmp_path: Path, clock: FakeClock
) -> None:
    async with kestrel_world(tmp_path, clock) as kestrel, proxy_for(kestrel) as proxy:
        public = "https://hooks.kestrel.example" + PATH
        host = {"Host": "hooks.kestrel.example"}
        raw = event(1)
        # through the trusted proxy: X-Forwarded-Proto and -Host rebuild the public URL
        assert await send(proxy + PATH, raw, {**host, **kestrel.sign(raw, url=public)}) == 200
        await kestrel.delivered("chat", "km_1")
        # a direct caller (127.0.0.1, not a trusted proxy) claiming the same is not believed
        direct = kestrel.running.urls["platform"] + PATH
        claims = {"X-Forwarded-Host": "hooks.kestrel.example", "X-Forwarded-Proto": "https"}
        assert await send(direct, event(2), {**claims, **kestrel.sign(event(2), url=public)}) == 401
        # its signature must cover the URL it really called
        assert await send(direct, event(2), {**claims, **kestrel.sign(event(2), url=direct)}) == 200
        await kestrel.delivered("chat", "km_2")
        # through the proxy, only the value the proxy wrote counts, not the client's before it
        forged = {**host, "X-Forwarded-Host": "evil.example"}
        evil = "https://evil.example" + PATH
        assert (
            await send(proxy + PATH, event(3), {**forged, **kestrel.sign(event(3), url=evil)})
            == 401
        )
        good = kestrel.sign(event(3), url=public)
        assert await send(proxy + PATH, event(3), {**forged, **good}) == 200
        await kestrel.delivered("chat", "km_3")


async def test_a_reply_goes_to_the_platform(tmp_path: Path, clock: FakeClock) -> None:
    async with kestrel_world(tmp_path, clock, public_url=PUBLIC) as kestrel:
        kestrel.api.on("POST", "/v1/conversations/kc_1/messages", json={"message": {"id": "km_9"}})
        result = await kestrel.reply("chat", "kc_1", "hello")
        assert result.status == 200, result.body
        assert result.body["message"]["idOnExternalPlatform"] == "km_9"
