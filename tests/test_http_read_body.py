"""`gateway.http.read_body`: the size limit on upstream answers, over real sockets.

An answer with a declared length and no encoding is read in one go; every other shape
(chunked, compressed) is counted as it arrives, so neither a lying peer nor a small
gzip bomb gets more than the limit into memory.
"""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.errors import UpstreamRejected
from gateway.http import make_session, read_body
from gateway.settings import Timeouts

LIMIT = 1_000
AiohttpServer = Callable[[web.Application], Awaitable[TestServer]]


async def declared(request: web.Request) -> web.Response:
    size = int(request.query["size"])
    return web.Response(body=b"x" * size, content_type="application/octet-stream")


async def chunked(request: web.Request) -> web.StreamResponse:
    size = int(request.query["size"])
    resp = web.StreamResponse()
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    for _ in range(size // 100):
        await resp.write(b"y" * 100)
    await resp.write_eof()
    return resp


async def gzipped(request: web.Request) -> web.Response:
    size = int(request.query["size"])
    body = gzip.compress(b"z" * size)
    return web.Response(body=body, headers={"Content-Encoding": "gzip"})


@pytest.fixture
async def base(aiohttp_server: AiohttpServer) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/declared", declared)
    app.router.add_get("/chunked", chunked)
    app.router.add_get("/gzip", gzipped)
    server = await aiohttp_server(app)
    yield str(server.make_url("/"))


async def _read(url: str) -> bytes:
    session = make_session(Timeouts(connect=2, read=5, total=5))
    async with session, session.get(url) as resp:
        return await read_body(resp, LIMIT, "test upstream")


@pytest.mark.parametrize("kind", ["declared", "chunked", "gzip"])
async def test_answers_up_to_the_limit_are_read_whole(base: str, kind: str) -> None:
    body = await _read(f"{base}{kind}?size={LIMIT}")
    assert len(body) == LIMIT
    assert len(set(body)) == 1


@pytest.mark.parametrize("kind", ["declared", "chunked", "gzip"])
async def test_answers_past_the_limit_are_refused(base: str, kind: str) -> None:
    with pytest.raises(UpstreamRejected) as caught:
        await _read(f"{base}{kind}?size={LIMIT + 100}")
    assert caught.value.code == "response_too_large"
    assert f"larger than {LIMIT} bytes" in caught.value.message


async def test_a_small_compressed_answer_that_inflates_past_the_limit_is_refused(
    base: str,
) -> None:
    # 200 kB of one byte compress to a few hundred bytes: the declared length is small
    with pytest.raises(UpstreamRejected) as caught:
        await _read(f"{base}gzip?size=200000")
    assert caught.value.code == "response_too_large"
