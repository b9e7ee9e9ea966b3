"""The hardened edge over real sockets: allow-lists, body limits, bombs, slow clients."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import io
import zlib
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from gateway import jsonutil
from gateway.client_address import client_ip, forwarded_origin
from gateway.edge import (
    check_json_depth,
    read_body_limited,
    server_kwargs,
)
from gateway.errors import BadRequest, ConfigError
from gateway.http_errors import error_middleware
from gateway.settings import ListenerSettings
from tests.edge_app import edge_middleware
from tests.test_tls import serve

LIMIT = 1024 * 1024


def make_app(get_listener: Callable[[], ListenerSettings]) -> web.Application:
    """An app with the edge middlewares; handlers echo what the edge let through."""

    async def echo(request: web.Request) -> web.Response:
        body = await read_body_limited(request, get_listener().max_body_bytes)
        again = await read_body_limited(request, get_listener().max_body_bytes)
        assert again is body  # kept for a second reader (e.g. signature, then parse)
        return web.json_response({"size": len(body), "head": body[:16].decode("latin-1")})

    async def whoami(request: web.Request) -> web.Response:
        return web.json_response({"ip": str(client_ip(request, get_listener().trusted_proxies))})

    async def origin(request: web.Request) -> web.Response:
        found = forwarded_origin(request, get_listener().trusted_proxies)
        return web.json_response({"origin": found})

    app = web.Application(middlewares=[error_middleware, edge_middleware(get_listener)])
    app.router.add_post("/echo", echo)
    app.router.add_get("/whoami", whoami)
    app.router.add_get("/origin", origin)
    return app


@pytest.fixture
async def edge() -> AsyncIterator[tuple[list[ListenerSettings], str]]:
    """A running edge whose listener settings the test may swap (like a reload)."""
    current = [ListenerSettings(max_body_bytes=LIMIT, read_timeout=0.5)]
    async with serve(make_app(lambda: current[0]), listener=current[0]) as port:
        yield current, f"http://127.0.0.1:{port}"


async def post(
    url: str, data: object, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, object]]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            url, data=data, headers=headers, timeout=aiohttp.ClientTimeout(total=10)
        ) as resp,
    ):
        return resp.status, await resp.json()


async def raw_exchange(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


# --- bodies -----------------------------------------------------------------------------


async def test_gzip_bomb_is_stopped_at_the_limit(edge: tuple[list[ListenerSettings], str]) -> None:
    _, base = edge
    bomb = gzip.compress(b"\0" * (64 * LIMIT), compresslevel=9)  # ~64 KB -> 64 MB
    assert len(bomb) < LIMIT // 8
    status, body = await asyncio.wait_for(
        post(f"{base}/echo", bomb, {"Content-Encoding": "gzip"}), 10
    )
    assert (status, body["error"]) == (413, "payload_too_large")

    deflate_bomb = zlib.compress(b"A" * (8 * LIMIT), 9)
    status, _ = await post(f"{base}/echo", deflate_bomb, {"Content-Encoding": "deflate"})
    assert status == 413


async def test_compressed_bodies_within_the_limit(edge: tuple[list[ListenerSettings], str]) -> None:
    _, base = edge
    text = b'{"hello": "world"}' * 1000
    for encoding, data in [
        ("gzip", gzip.compress(text)),
        ("x-gzip", gzip.compress(text)),
        ("deflate", zlib.compress(text)),
        ("deflate", zlib.compress(text, wbits=-15)),  # raw deflate, as some clients send
        ("identity", text),
    ]:
        status, body = await post(f"{base}/echo", data, {"Content-Encoding": encoding})
        assert (status, body["size"]) == (200, len(text)), encoding

    exact = gzip.compress(b"x" * LIMIT)  # decompressed size == the limit: accepted
    assert (await post(f"{base}/echo", exact, {"Content-Encoding": "gzip"}))[1]["size"] == LIMIT


async def test_bad_bodies(edge: tuple[list[ListenerSettings], str]) -> None:
    _, base = edge
    status, body = await post(f"{base}/echo", b"\xff" * 10, {"Content-Encoding": "br"})
    assert (status, body["error"]) == (415, "unsupported_encoding")
    assert "br" not in str(body["message"])  # never echo the input
    status, _ = await post(f"{base}/echo", b"x", {"Content-Encoding": "gzip, gzip"})
    assert status == 415
    status, body = await post(f"{base}/echo", b"not gzip at all", {"Content-Encoding": "gzip"})
    assert (status, body["error"]) == (400, "bad_encoding")
    truncated = gzip.compress(b"x" * 1000)[:-10]
    assert (await post(f"{base}/echo", truncated, {"Content-Encoding": "gzip"}))[0] == 400
    trailing = gzip.compress(b"one") + b"junk"
    assert (await post(f"{base}/echo", trailing, {"Content-Encoding": "gzip"}))[0] == 400


async def test_plain_bodies_over_the_limit(edge: tuple[list[ListenerSettings], str]) -> None:
    _, base = edge
    status, body = await post(f"{base}/echo", io.BytesIO(b"x" * (LIMIT + 1)))  # Content-Length
    assert (status, body["error"]) == (413, "payload_too_large")

    async def chunks() -> AsyncIterator[bytes]:  # chunked: only counting can tell
        for _ in range(40):
            yield b"y" * 65536

    status, _ = await post(f"{base}/echo", chunks())
    assert status == 413


async def test_a_body_that_arrived_whole_is_held_to_the_same_limit(
    edge: tuple[list[ListenerSettings], str],
) -> None:
    # one write: the body is all there when the handler reads it (no chunk loop then)
    current, base = edge
    current[0] = ListenerSettings(max_body_bytes=16, read_timeout=0.5)
    port = int(base.rsplit(":", 1)[1])

    def chunked(body: bytes) -> bytes:
        head = b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        return head + b"Connection: close\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)

    over = await raw_exchange(port, chunked(b"z" * 17))
    assert over.startswith(b"HTTP/1.1 413")
    within = await raw_exchange(port, chunked(b"z" * 16))
    assert within.startswith(b"HTTP/1.1 200")
    assert b'"size": 16' in within or b'"size":16' in within


async def test_slow_drip_body_gets_408(edge: tuple[list[ListenerSettings], str]) -> None:
    _, base = edge
    port = int(base.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")

    async def trickle() -> None:
        # the attacker's pace, not a synchronisation: one byte at a time keeps the
        # connection busy, which an idle timeout alone would never stop
        while True:
            writer.write(b"a")
            await asyncio.sleep(0.05)

    dripping = asyncio.create_task(trickle())
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    finally:
        dripping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await dripping
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    assert head.startswith(b"HTTP/1.1 408")


async def test_slow_headers_are_cut_off(edge: tuple[list[ListenerSettings], str]) -> None:
    _, base = edge
    port = int(base.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /whoami HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # never finishes the head
    try:
        assert await asyncio.wait_for(reader.read(), 10) == b""  # closed by keepalive_timeout
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def test_oversized_headers_are_refused(edge: tuple[list[ListenerSettings], str]) -> None:
    _, base = edge
    port = int(base.rsplit(":", 1)[1])
    big = b"GET /whoami HTTP/1.1\r\nHost: x\r\nX-Big: " + b"A" * 20000 + b"\r\n\r\n"
    answer = await raw_exchange(port, big)
    assert answer.split(b" ", 2)[1] in (b"400", b"431")
    many = b"GET /whoami HTTP/1.1\r\nHost: x\r\n" + b"".join(
        b"X-H%d: v\r\n" % i for i in range(500)
    )
    answer = await raw_exchange(port, many + b"\r\n")
    assert answer.split(b" ", 2)[1] in (b"400", b"431")
    ok = await raw_exchange(port, b"GET /whoami HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert ok.startswith(b"HTTP/1.1 200")  # and the server is still serving


# --- client address --------------------------------------------------------------------


async def test_ip_allow_list_and_trusted_proxies(edge: tuple[list[ListenerSettings], str]) -> None:
    current, base = edge

    async def whoami(xff: str | None = None) -> tuple[int, dict[str, object]]:
        headers = {"X-Forwarded-For": xff} if xff is not None else {}
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{base}/whoami", headers=headers) as resp,
        ):
            return resp.status, await resp.json()

    def use(**kw: object) -> None:  # what a reload does: the same app sees new settings
        current[0] = ListenerSettings(**kw)  # type: ignore[arg-type]

    assert await whoami() == (200, {"ip": "127.0.0.1"})  # no allow-list: everyone

    use(allow=("10.0.0.0/8",))
    status, body = await whoami()
    assert (status, body["error"]) == (403, "forbidden")
    assert "127.0.0.1" not in str(body["message"])
    use(allow=("127.0.0.0/8", "::1"))
    assert (await whoami())[0] == 200

    # X-Forwarded-For from an untrusted peer is ignored
    use(allow=("203.0.113.0/24",))
    assert (await whoami("203.0.113.5"))[0] == 403

    # ... and honoured from a trusted proxy: the right-most untrusted hop is the client
    use(allow=("203.0.113.0/24",), trusted_proxies=("127.0.0.1", "10.0.0.0/8"))
    assert await whoami("203.0.113.5") == (200, {"ip": "203.0.113.5"})
    assert await whoami("198.51.100.1, 203.0.113.5, 10.1.2.3") == (200, {"ip": "203.0.113.5"})
    assert (await whoami("203.0.113.5, 198.51.100.7"))[0] == 403  # a spoofed left entry
    assert (await whoami("203.0.113.5, not-an-ip"))[0] == 403  # junk: fail closed
    assert (await whoami())[0] == 403  # no header: the proxy itself is the caller
    assert await whoami("[203.0.113.9]:4711") == (200, {"ip": "203.0.113.9"})


async def test_forwarded_origin_is_read_only_from_trusted_proxies(
    edge: tuple[list[ListenerSettings], str],
) -> None:
    current, base = edge

    async def origin(headers: dict[str, str]) -> object:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{base}/origin", headers=headers) as resp,
        ):
            return (await resp.json())["origin"]

    both = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "hooks.example.com"}
    assert await origin(both) is None  # from anyone else: ignored
    current[0] = ListenerSettings(trusted_proxies=("127.0.0.1",))
    assert await origin(both) == "https://hooks.example.com"
    assert await origin({}) is None  # nothing forwarded: the request's own URL applies
    # several values: the right-most is the one the trusted proxy wrote
    many = {"X-Forwarded-Host": "evil.example, hooks.example.com:8443"}
    assert await origin(many) == "http://hooks.example.com:8443"
    assert await origin({"X-Forwarded-Proto": "http, https"}) == f"https://{base[7:]}"
    assert await origin({"X-Forwarded-Host": "[2001:db8::1]:8080"}) == "http://[2001:db8::1]:8080"
    for junk in ("user@evil.example", "evil.example/x", "a b", "-evil.example", "h:99999x"):
        assert await origin({"X-Forwarded-Host": junk}) is None, junk
    assert await origin({"X-Forwarded-Proto": "gopher"}) is None


def test_bad_cidr_fails_at_start() -> None:
    with pytest.raises(ConfigError, match="not an IP network"):
        edge_middleware(ListenerSettings(allow=("10.0.0.0/33",)))
    with pytest.raises(ConfigError, match="trusted_proxies"):
        edge_middleware(ListenerSettings(allow=("10.0.0.0/8",), trusted_proxies=("proxy.x",)))


# --- JSON depth and server knobs ----------------------------------------------------------


_json = st.recursive(
    st.none() | st.integers() | st.text(alphabet='{[]}a\\"', max_size=6),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=40,
)


@given(_json, st.integers(min_value=0, max_value=12))
def test_check_json_depth_with_the_raw_text_decides_the_same(value: object, limit: int) -> None:
    """Counting brackets in the raw text first never lets a too-deep body through."""
    raw = jsonutil.dumps(value)

    def verdict(raw: bytes | None = None) -> bool:
        try:
            check_json_depth(value, limit, raw)
        except BadRequest:
            return False
        return True

    assert verdict(raw) == verdict()


def _nesting(value: object) -> int:
    """The depth by definition: a container is one level deeper than its deepest child."""
    if isinstance(value, dict):
        return 1 + max((_nesting(v) for v in value.values()), default=0)
    if isinstance(value, list | tuple):
        return 1 + max((_nesting(v) for v in value), default=0)
    return 0


@given(_json, st.integers(min_value=0, max_value=12))
def test_check_json_depth_refuses_exactly_what_nests_too_deep(value: object, limit: int) -> None:
    try:
        check_json_depth(value, limit)
    except BadRequest as exc:
        assert exc.code == "too_deep"
        assert _nesting(value) > limit
    else:
        assert _nesting(value) <= limit


def test_check_json_depth() -> None:
    check_json_depth({"a": [1, {"b": 2}]}, 3)
    with pytest.raises(BadRequest, match="deeper than 2"):
        check_json_depth({"a": [1, {"b": 2}]}, 2)
    check_json_depth("scalar", 0)
    deep: object = 1
    for _ in range(100_000):  # far beyond the recursion limit: checked without recursing
        deep = [deep]
    with pytest.raises(BadRequest) as exc:
        check_json_depth(deep, 64)
    assert exc.value.code == "too_deep"


def test_server_kwargs_hardening() -> None:
    kw = server_kwargs(ListenerSettings(read_timeout=7.0))
    assert kw["keepalive_timeout"] == 7.0
    assert kw["auto_decompress"] is False  # read_body_limited does it, under the limit
    assert kw["handler_cancellation"] is True
    assert kw["max_field_size"] <= 8190 and kw["max_line_size"] <= 8190
