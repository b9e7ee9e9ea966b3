"""Issue 8: the media proxy's streaming, over real sockets: size limit, redirects, credentials.

A front app streams files with gateway.media.MediaClient the way GET /media/... does,
from a platform app and a second host (another origin). The signed URLs themselves are
tested through the whole gateway in tests/test_reach_quetzal.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from gateway.http import make_session
from gateway.http_errors import error_middleware
from gateway.mapping import CompiledMapping, load_mapping
from gateway.media import MediaClient
from gateway.settings import Timeouts
from tests.harness import serve_app

LIMIT = 1000


@dataclass
class Hosts:
    front: str
    platform: str
    other: str
    seen: dict[str, str | None] = field(default_factory=dict)  # path -> Authorization


def mapping_for(tmp_path: Path, platform: str) -> CompiledMapping:
    path = tmp_path / "files.yaml"
    path.write_text(
        f"""\
name: files
platform: {{base_url: "{platform}", auth: {{bearer: s3cret}}}}
channels: {{chat: {{name: Chat}}}}
webhook: {{path: /webhooks/files, signature: {{scheme: none, allow_unsigned: true}}}}
media: {{request: {{url: "{{{{ url | unquoted }}}}"}}, ttl: 60, max_bytes: {LIMIT}, timeout: 5}}
""",
        encoding="utf-8",
    )
    return load_mapping(path)


@pytest.fixture
async def hosts(tmp_path: Path) -> AsyncIterator[Hosts]:
    runners: list[web.AppRunner] = []
    seen: dict[str, str | None] = {}

    async def file(request: web.Request) -> web.Response:
        seen[request.host + request.path] = request.headers.get("Authorization")
        return web.Response(body=b"a file", content_type="application/pdf")

    other = web.Application()
    other.router.add_get("/file", file)
    runner, other_url = await serve_app(other)
    runners.append(runner)

    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "image/png"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(3):
            await response.write(b"x" * 600)  # 1800 bytes, no length announced
        return response

    async def declared(request: web.Request) -> web.Response:
        return web.Response(body=b"y" * (LIMIT + 1), content_type="image/png")

    async def away(request: web.Request) -> web.Response:
        raise web.HTTPFound(other_url + "/file")

    async def here(request: web.Request) -> web.Response:
        raise web.HTTPFound("/file")

    platform = web.Application()
    for path, handler in (
        ("/chunked", chunked),
        ("/declared", declared),
        ("/away", away),
        ("/here", here),
        ("/file", file),
    ):
        platform.router.add_get(path, handler)
    runner, platform_url = await serve_app(platform)
    runners.append(runner)

    m = mapping_for(tmp_path, platform_url)
    session = make_session(Timeouts(connect=2, read=2, total=5))
    media = MediaClient(session)

    async def front_handler(request: web.Request) -> web.StreamResponse:
        source = m.media_request({"url": platform_url + request.query["path"]})
        return await media.stream(request, m, source, None)

    front = web.Application(middlewares=[error_middleware])  # the gateway's error bodies
    front.router.add_get("/get", front_handler)
    runner, front_url = await serve_app(front)
    runners.append(runner)
    try:
        yield Hosts(front_url, platform_url, other_url, seen)
    finally:
        await session.close()
        for r in reversed(runners):
            await r.cleanup()


async def test_a_file_longer_than_the_limit_is_cut_off(hosts: Hosts) -> None:
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientPayloadError):
            async with http.get(hosts.front + "/get", params={"path": "/chunked"}) as r:
                assert r.status == 200  # streaming had begun: only a cut connection can tell
                await r.read()
        async with http.get(hosts.front + "/get", params={"path": "/declared"}) as r:
            # announced too large: refused before anything is sent
            assert (r.status, (await r.json())["error"]) == (502, "media_too_large")


async def test_credentials_follow_a_redirect_only_within_the_platform(hosts: Hosts) -> None:
    async with aiohttp.ClientSession() as http:
        for path in ("/here", "/away"):
            async with http.get(hosts.front + "/get", params={"path": path}) as r:
                assert (r.status, await r.read()) == (200, b"a file")
                assert r.headers["Content-Type"] == "application/pdf"
    platform_host = hosts.platform.split("://")[1]
    other_host = hosts.other.split("://")[1]
    assert hosts.seen == {f"{platform_host}/file": "Bearer s3cret", f"{other_host}/file": None}
