"""HttpPool against a real socket server whose every byte the test writes.

The server reads each request (head and Content-Length body) and hands it to the test's
`answer` coroutine, which writes whatever bytes the case needs: chunked, gzip, too
large, nothing at all, garbage, a close in the middle.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import gzip
import ssl
import weakref
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gateway.certs import create_ca, issue_client_cert, issue_server_cert
from gateway.errors import UpstreamRejected
from gateway.http_pool import (
    MAX_ANSWER_BYTES,
    Answer,
    HttpPool,
    UpstreamConnectError,
    UpstreamProtocolError,
    _Slots,
)
from gateway.mapping import PlatformRequest, PlatformResponse
from gateway.platform.client import PlatformClient
from gateway.settings import RetrySettings, Timeouts, TlsClientSettings
from gateway.tls import client_context

Responder = Callable[["Seen", asyncio.StreamWriter], Awaitable[None]]
Serve = Callable[..., Awaitable["Server"]]
QUICK = Timeouts(connect=2.0, read=0.3, total=5.0)


@dataclass
class Seen:
    """One request as the server read it."""

    head: bytes
    body: bytes
    connection: int

    @property
    def line(self) -> bytes:
        return self.head.split(b"\r\n", 1)[0]

    def header(self, name: str) -> str | None:
        for line in self.head.split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            if key.strip().lower() == name.lower().encode():
                return value.strip().decode()
        return None


@dataclass
class Server:
    answer: Responder
    requests: list[Seen] = field(default_factory=list)
    connections: int = 0
    closed: asyncio.Queue[int] = field(default_factory=asyncio.Queue)
    url: str = ""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                seen = Seen(head, b"", number)
                length = seen.header("Content-Length")
                if length:
                    seen.body = await reader.readexactly(int(length))
                self.requests.append(seen)
                await self.answer(seen, writer)
                if writer.is_closing():
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()
            self.closed.put_nowait(number)


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    servers: list[asyncio.Server] = []

    async def start(answer: Responder, ssl_context: ssl.SSLContext | None = None) -> Server:
        server = Server(answer)
        srv = await asyncio.start_server(server.handle, "127.0.0.1", 0, ssl=ssl_context)
        servers.append(srv)
        port = srv.sockets[0].getsockname()[1]
        server.url = f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"
        return server

    yield start
    for srv in servers:
        srv.close()


@pytest.fixture
async def pool() -> AsyncIterator[HttpPool]:
    p = HttpPool(limit=4)
    yield p
    await p.close()


def ok(body: bytes = b'{"ok":true}', *extra: str) -> bytes:
    head = ["HTTP/1.1 200 OK", "Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join([*head, *extra]) + "\r\n\r\n").encode() + body


async def reply_ok(seen: Seen, writer: asyncio.StreamWriter) -> None:
    writer.write(ok(b'{"echo":"' + seen.line.split(b" ")[1] + b'"}'))


async def call(pool: HttpPool, url: str, **kw: Any) -> Answer:
    method = kw.pop("method", "GET")
    args: dict[str, Any] = {
        "headers": {"Accept": "application/json"},
        "body": None,
        "timeouts": QUICK,
        "max_body": 1000,
        "upstream": "test-upstream",
    }
    args.update(kw)
    return await pool.request(method, url, **args)


# ---------------------------------------------------------------- the ordinary case


async def test_requests_reuse_one_keep_alive_connection(serve: Serve, pool: HttpPool) -> None:
    server = await serve(reply_ok)
    for path in ("/a", "/b?x=1", "/c%2Fd"):
        answer = await pool.request(
            "POST",
            server.url + path,
            headers={"Authorization": "Bearer t", "Content-Type": "application/json"},
            body=b'{"n":1}',
            timeouts=QUICK,
            max_body=1000,
            upstream="x",
        )
        assert answer.status == 200
        assert answer.headers["content-type"] == "application/json"  # case-insensitive
    assert server.connections == 1
    assert [s.line for s in server.requests] == [
        b"POST /a HTTP/1.1",
        b"POST /b?x=1 HTTP/1.1",
        b"POST /c%2Fd HTTP/1.1",
    ]
    first = server.requests[0]
    assert first.body == b'{"n":1}'
    assert first.header("Host") == server.url.removeprefix("http://")
    assert first.header("Authorization") == "Bearer t"
    assert (first.header("User-Agent") or "").startswith("byoc-gateway/")
    assert pool.open_connections == 1


async def test_a_url_is_encoded_as_aiohttp_would(serve: Serve, pool: HttpPool) -> None:
    server = await serve(reply_ok)
    await pool.request(
        "GET",
        server.url + "/a b/ü?q=x y",
        headers={},
        body=None,
        timeouts=QUICK,
        max_body=1000,
        upstream="x",
    )
    assert server.requests[0].line == b"GET /a%20b/%C3%BC?q=x+y HTTP/1.1"


async def test_concurrent_requests_get_their_own_answers(serve: Serve, pool: HttpPool) -> None:
    server = await serve(reply_ok)
    answers = await asyncio.gather(*(call(pool, f"{server.url}/n{i}") for i in range(20)))
    assert [a.body for a in answers] == [f'{{"echo":"/n{i}"}}'.encode() for i in range(20)]
    assert server.connections <= 4  # the pool's limit: the rest waited for a slot


# ---------------------------------------------------------------- bodies


async def test_chunked_gzip_and_close_delimited_bodies(serve: Serve, pool: HttpPool) -> None:
    async def answer(seen: Seen, writer: asyncio.StreamWriter) -> None:
        path = seen.line.split(b" ")[1]
        if path == b"/chunked":
            writer.write(
                b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
            )
        elif path == b"/gzip":
            writer.write(ok(gzip.compress(b"inflated " * 10), "Content-Encoding: gzip"))
        else:  # HTTP/1.0 style: the body ends where the connection does
            writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")
            await writer.drain()
            writer.close()

    server = await serve(answer)
    chunked = await call(pool, server.url + "/chunked")
    assert (chunked.status, chunked.body) == (201, b"hello world")
    inflated = await call(pool, server.url + "/gzip")
    assert inflated.body == b"inflated " * 10
    closing = await call(pool, server.url + "/close")
    assert closing.body == b"until the end"
    again = await call(pool, server.url + "/chunked")  # a new connection after the close
    assert again.body == b"hello world"
    assert server.connections == 2


@pytest.mark.parametrize("how", ["declared", "chunked", "gzip bomb"])
async def test_a_body_over_the_limit_is_refused_and_the_connection_dropped(
    serve: Serve, pool: HttpPool, how: str
) -> None:
    big = b"x" * 5000

    async def answer(seen: Seen, writer: asyncio.StreamWriter) -> None:
        if how == "declared":
            writer.write(ok(big))
        elif how == "chunked":
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for _ in range(5):
                writer.write(b"3e8\r\n" + b"x" * 1000 + b"\r\n")
            writer.write(b"0\r\n\r\n")
        else:
            writer.write(ok(gzip.compress(b"\0" * 1_000_000), "Content-Encoding: gzip"))

    server = await serve(answer)
    with pytest.raises(UpstreamRejected) as refused:
        await call(pool, server.url + "/big")
    assert refused.value.code == "response_too_large"
    assert refused.value.upstream == "test-upstream"
    assert "1000 bytes" in str(refused.value)
    await server.closed.get()  # the pool hung up rather than read the rest
    assert pool.open_connections == 0


# ---------------------------------------------------------------- failures


async def test_no_answer_within_the_read_timeout(serve: Serve, pool: HttpPool) -> None:
    async def silent(seen: Seen, writer: asyncio.StreamWriter) -> None:
        return None

    server = await serve(silent)
    with pytest.raises(TimeoutError, match="read timeout"):
        await call(pool, server.url + "/slow")
    await server.closed.get()
    assert pool.open_connections == 0


async def test_a_trickle_of_bytes_is_still_bounded_by_the_total_timeout(
    serve: Serve, pool: HttpPool
) -> None:
    async def trickle(seen: Seen, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        with contextlib.suppress(ConnectionError):
            while not writer.is_closing():
                writer.write(b"1\r\nx\r\n")
                await writer.drain()
                await asyncio.sleep(0.05)  # the server's pace, not a synchronisation

    server = await serve(trickle)
    timeouts = Timeouts(connect=1.0, read=0.3, total=0.6)
    with pytest.raises(TimeoutError, match="total timeout"):
        await call(pool, server.url + "/trickle", timeouts=timeouts, max_body=100_000)


async def test_refused_connection_and_unknown_host(pool: HttpPool) -> None:
    with pytest.raises(UpstreamConnectError, match=r"cannot connect to 127\.0\.0\.1:9"):
        await call(pool, "http://127.0.0.1:9/x")
    with pytest.raises(UpstreamConnectError, match="cannot connect"):
        await call(pool, "http://no-such-host.invalid/x")
    assert isinstance(UpstreamConnectError("x"), ConnectionError)  # retried by the callers


@pytest.mark.parametrize(
    ("wire", "says"),
    [
        (b"NOT HTTP AT ALL\r\n\r\n", "invalid HTTP answer"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "closed the connection"),
        (b"", "closed the connection before answering"),
        (b"HTTP/1.1 200 OK\r\n" + b"X-More: zzzzzzzzzz\r\n" * 5000, "headers over 65536 bytes"),
    ],
    ids=["garbage", "short body", "nothing", "endless headers"],
)
async def test_a_broken_answer_is_a_protocol_error(
    serve: Serve, pool: HttpPool, wire: bytes, says: str
) -> None:
    async def broken(seen: Seen, writer: asyncio.StreamWriter) -> None:
        writer.write(wire)
        await writer.drain()
        writer.close()

    server = await serve(broken)
    with pytest.raises(UpstreamProtocolError, match=says):
        await call(pool, server.url + "/x")
    assert pool.open_connections == 0


async def test_an_extra_answer_drops_the_connection(serve: Serve, pool: HttpPool) -> None:
    async def twice(seen: Seen, writer: asyncio.StreamWriter) -> None:
        writer.write(ok() + ok(b'{"smuggled":1}'))

    server = await serve(twice)
    first = await call(pool, server.url + "/x")
    assert first.body == b'{"ok":true}'
    await server.closed.get()  # the pool hung up on the answer nobody asked for
    second = await call(pool, server.url + "/y")  # a fresh connection, a clean answer
    assert second.body == b'{"ok":true}'
    assert server.connections == 2


@pytest.mark.parametrize(
    ("method", "headers", "retried"),
    [
        ("GET", {}, True),
        ("PUT", {}, True),
        ("POST", {"Idempotency-Key": "k1"}, True),
        ("POST", {}, False),  # not safe to send twice: the caller's retry policy decides
    ],
)
async def test_a_keep_alive_connection_closed_by_the_server_as_the_request_goes_out(
    serve: Serve, pool: HttpPool, method: str, headers: dict[str, str], retried: bool
) -> None:
    async def once(seen: Seen, writer: asyncio.StreamWriter) -> None:
        writer.write(ok())
        await writer.drain()
        writer.close()  # the server's keep-alive timeout, right after answering

    server = await serve(once)
    await call(pool, server.url + "/a")
    await server.closed.get()  # closed; the pool has not read the close yet
    if retried:
        answer = await call(pool, server.url + "/b", method=method, headers=headers)
        assert answer.status == 200
        assert server.connections == 2
    else:
        with pytest.raises(UpstreamProtocolError, match="closed the connection before"):
            await call(pool, server.url + "/b", method=method, headers=headers)
        assert server.connections == 1
    assert [s.line.split(b" ")[1] for s in server.requests] == [b"/a", b"/b"][: 1 + retried]


async def test_interim_100_continue_is_skipped(serve: Serve, pool: HttpPool) -> None:
    async def answer(seen: Seen, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n" + ok())

    server = await serve(answer)
    answer_ = await call(pool, server.url + "/x")
    assert (answer_.status, answer_.body) == (200, b'{"ok":true}')


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Evil": "a\r\nX-Injected: 1"},
        {"X-Evil": "a\nb"},
        {"X-Evil\r\nX-Injected": "1"},
        {"X-Nul": "a\x00b"},
        {"Bad:Name": "1"},
    ],
)
async def test_a_header_that_would_split_the_request_is_refused_before_sending(
    serve: Serve, pool: HttpPool, headers: dict[str, str]
) -> None:
    server = await serve(reply_ok)
    with pytest.raises(ValueError, match="invalid character"):
        await call(pool, server.url + "/x", headers=headers)
    assert server.connections == 0


async def test_a_cancelled_call_does_not_leave_its_connection_in_the_pool(
    serve: Serve, pool: HttpPool
) -> None:
    arrived = asyncio.Event()

    async def hold(seen: Seen, writer: asyncio.StreamWriter) -> None:
        arrived.set()

    server = await serve(hold)
    task = asyncio.ensure_future(call(pool, server.url + "/x", timeouts=Timeouts(1, 30, 30)))
    await arrived.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await server.closed.get()
    assert pool.open_connections == 0


async def test_idle_connections_are_closed_after_idle_seconds(serve: Serve) -> None:
    server = await serve(reply_ok)
    pool = HttpPool(idle_seconds=0.05)
    try:
        await call(pool, server.url + "/x")
        assert pool.open_connections == 1
        assert await server.closed.get() == 1  # the pool's sweep hung up
        assert pool.open_connections == 0
    finally:
        await pool.close()


async def test_a_closed_pool_refuses_requests(serve: Serve) -> None:
    server = await serve(reply_ok)
    pool = HttpPool()
    await call(pool, server.url + "/x")
    await pool.close()
    assert await server.closed.get() == 1
    with pytest.raises(RuntimeError, match="closed"):
        await call(pool, server.url + "/x")


# ---------------------------------------------------------------- TLS


async def test_tls_with_a_client_certificate_and_verification(
    serve: Serve, pool: HttpPool, tmp_path: Path
) -> None:
    ca = create_ca(tmp_path, "pool test CA", 30, key_type="ec")
    other = create_ca(tmp_path / "other", "another CA", 30, key_type="ec")
    cert = issue_server_cert(ca, ["127.0.0.1"], 30, key_type="ec")
    client = issue_client_cert(ca, "gateway", 30, name="gateway", key_type="ec")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert.cert, cert.key)
    server_ctx.load_verify_locations(ca.cert_path)
    server_ctx.verify_mode = ssl.CERT_REQUIRED  # mTLS: no client certificate, no answer
    server = await serve(reply_ok, server_ctx)

    trusting = client_context(
        TlsClientSettings(ca_file=ca.cert_path, cert_file=client.cert, key_file=client.key)
    )
    answer = await call(pool, server.url + "/secure", ssl_context=trusting)
    assert answer.status == 200
    await call(pool, server.url + "/again", ssl_context=trusting)
    assert server.connections == 1  # TLS connections are pooled too

    stranger = client_context(TlsClientSettings(ca_file=other.cert_path))
    with pytest.raises(UpstreamConnectError, match=r"SSL|certificate"):
        await call(pool, server.url + "/x", ssl_context=stranger)
    no_cert = client_context(TlsClientSettings(ca_file=ca.cert_path))
    with pytest.raises((UpstreamConnectError, UpstreamProtocolError)):
        await call(pool, server.url + "/x", ssl_context=no_cert)


# ---------------------------------------------------------------- through the platform client


async def test_the_platform_client_turns_pool_failures_into_upstream_errors(
    serve: Serve, pool: HttpPool
) -> None:
    async def answer(seen: Seen, writer: asyncio.StreamWriter) -> None:
        if seen.line.startswith(b"POST /big"):
            writer.write(ok(b"x" * (MAX_ANSWER_BYTES + 1)))
        else:
            writer.write(ok(b'{"id":"msg_1"}'))

    server = await serve(answer)
    client = PlatformClient(pool, retry=RetrySettings(max_attempts=1))

    def send(path: str, headers: dict[str, str] | None = None) -> Awaitable[PlatformResponse]:
        request = PlatformRequest("POST", server.url + path, headers or {}, b"{}")
        return client.send(request, upstream="watering-hole", timeouts=QUICK, deadline=5.0)

    sent = await send("/ok", {"Content-Type": "application/json"})
    assert (sent.status, sent.body) == (200, {"id": "msg_1"})
    with pytest.raises(UpstreamRejected) as big:
        await send("/big")  # a platform cannot make the gateway hold more than 8 MiB
    assert (big.value.upstream, big.value.code) == ("watering-hole", "response_too_large")
    with pytest.raises(UpstreamRejected) as split:
        await send("/ok", {"X-Customer-Text": "hi\r\nX-Admin: yes"})
    assert split.value.code == "bad_request"
    assert "invalid character" in str(split.value)


async def test_a_replaced_tls_context_is_not_kept_alive_by_the_pool(
    serve: Serve, tmp_path: Path
) -> None:
    """A reload builds new contexts; the pool must let the old ones go with their connections."""
    ca = create_ca(tmp_path, "pool test CA", 30, key_type="ec")
    cert = issue_server_cert(ca, ["127.0.0.1"], 30, key_type="ec")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert.cert, cert.key)
    server = await serve(reply_ok, server_ctx)
    pool = HttpPool(idle_seconds=0.05)
    try:
        old = client_context(TlsClientSettings(ca_file=ca.cert_path))
        await call(pool, server.url + "/x", ssl_context=old)
        gone = weakref.ref(old)
        del old
        assert await server.closed.get() == 1  # the idle connection was swept
        gc.collect()
        assert gone() is None
        new = client_context(TlsClientSettings(ca_file=ca.cert_path))
        assert (await call(pool, server.url + "/y", ssl_context=new)).status == 200
    finally:
        await pool.close()


@pytest.mark.parametrize("wrapped", [True, False], ids=["zlib-wrapped", "raw"])
async def test_deflate_answers_wrapped_or_raw(serve: Serve, pool: HttpPool, wrapped: bool) -> None:
    text = b"deflated " * 20
    packer = zlib.compressobj(wbits=zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
    packed = packer.compress(text) + packer.flush()

    async def answer(seen: Seen, writer: asyncio.StreamWriter) -> None:
        writer.write(ok(packed, "Content-Encoding: deflate"))

    server = await serve(answer)
    assert (await call(pool, server.url + "/x")).body == text


async def test_requests_cancelled_while_queued_for_a_slot_lose_no_slot(serve: Serve) -> None:
    started = asyncio.Event()
    release = asyncio.Event()

    async def slow(seen: Seen, writer: asyncio.StreamWriter) -> None:
        started.set()
        await release.wait()
        await reply_ok(seen, writer)

    server = await serve(slow)
    pool = HttpPool(limit=1)
    try:
        first = asyncio.create_task(call(pool, server.url + "/first"))
        await started.wait()  # the only slot is taken
        queued = [asyncio.create_task(call(pool, f"{server.url}/q{i}")) for i in range(3)]
        await asyncio.sleep(0)  # all three wait for the slot
        queued[0].cancel()  # cancelled while waiting
        release.set()
        await first
        queued[1].cancel()  # cancelled as its turn comes (waiting, or already sending)
        assert (await queued[2]).body == b'{"echo":"/q2"}'
        for task in queued[:2]:
            with pytest.raises(asyncio.CancelledError):
                await task
        answers = await asyncio.gather(*(call(pool, f"{server.url}/n{i}") for i in range(3)))
        assert [a.status for a in answers] == [200, 200, 200]  # the slot is still there
    finally:
        await pool.close()


async def test_slots_hand_on_what_a_cancelled_waiter_was_given() -> None:
    slots = _Slots(1, asyncio.get_running_loop())
    assert slots.take() and not slots.take()
    given = asyncio.create_task(slots.wait())
    gone = asyncio.create_task(slots.wait())
    after = asyncio.create_task(slots.wait())
    await asyncio.sleep(0)  # all three wait, in this order
    gone.cancel()  # cancelled before its turn: `release` skips it
    slots.release()  # the slot goes to `given` ...
    given.cancel()  # ... cancelled before it resumed: it hands the slot on
    await asyncio.gather(given, gone, return_exceptions=True)
    await asyncio.wait_for(after, 5)  # `after` holds the only slot now
    assert not slots.take()
    slots.release()
    assert slots.take()  # and it came back
