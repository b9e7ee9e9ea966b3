"""Keep-alive HTTP/1.1 connections for the gateway's hot upstream calls.

Every message costs one call upstream: a DFO call to CXone for an inbound event, a
platform API call for a reply. aiohttp's client spends about 50 µs of CPU on such a
call (on Python 3.11 it starts a task per request body, and builds a request, a
response, a timer and a payload object each time); this pool spends about 10: it
writes the request in one `write`, feeds the answer to `httptools`' C parser (llhttp,
the parser of Node.js) and wakes the caller once. See docs/performance.md.

What it does, and what it deliberately does not:
- HTTP/1.1 with keep-alive; one request at a time per connection (no pipelining);
  at most `limit` requests in flight, the rest wait for a slot. Idle connections are
  reused newest first and closed after `idle_seconds`.
- TLS with the caller's `ssl.SSLContext` (custom CAs, client certificates: mTLS),
  verification never off; connections are pooled per origin *and* context.
- Timeouts: connect, read (no byte from the server for that long) and total; one
  timer checks every exchange each `TICK_SECONDS` (0.1 s) rather than one timer per call.
- Bodies: Content-Length, chunked, or until the server closes; gzip/deflate
  answers are inflated. The answer is refused past `max_body` bytes, inflated or not.
- Header names and values are checked: a CR, LF or NUL in them (rendered from a
  mapping, hence possibly from a customer's text) refuses the request before anything
  is sent, so nothing can be smuggled into the request.
- No redirects (a bearer token must never follow one), no proxies, no cookies, no
  request streaming: what the gateway's API calls need. Downloads of media, token
  requests and other rare calls keep using aiohttp's `ClientSession`.

Errors: connection failures (refused, reset, DNS, TLS) raise `UpstreamConnectError`,
a `ConnectionError`; timeouts raise `TimeoutError`; a malformed answer raises
`UpstreamProtocolError` (also a `ConnectionError`: the call may be retried); a body
over the limit raises `UpstreamRejected`. All are caught and classified by the callers.
"""

from __future__ import annotations

import asyncio
import ssl
import zlib
from collections import deque
from collections.abc import Mapping
from typing import NamedTuple, cast

import httptools
import yarl
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.errors import UpstreamRejected
from gateway.http import USER_AGENT, decompress_wbits
from gateway.settings import Timeouts

MAX_HEAD_BYTES = 65_536  # an answer's header fields, all together
MAX_ANSWER_BYTES = 8 * 1_048_576  # an API answer's body, for the callers' `max_body`
TICK_SECONDS = 0.1  # how often timeouts are checked: they fire up to this much late
_BODYLESS_METHODS = frozenset({"HEAD", "CONNECT"})
_IDEMPOTENT_METHODS = frozenset({"GET", "PUT", "DELETE", "OPTIONS", "TRACE"})
_IDEMPOTENCY_HEADERS = frozenset({"idempotency-key", "x-idempotency-key"})


class UpstreamConnectError(ConnectionError):
    """No connection to the upstream: refused, reset, unknown host, TLS failure."""


class UpstreamProtocolError(ConnectionError):
    """The upstream's answer was not valid HTTP/1.1, or the connection closed mid-answer."""


class _ClosedUnanswered(UpstreamProtocolError):
    """The connection closed before a single byte of the answer arrived."""


class Answer(NamedTuple):
    """A complete HTTP answer: status, headers (case-insensitive) and the whole body."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes


class _Origin(NamedTuple):
    """Where a connection goes, TLS context included; the key of the pool's idle lists."""

    scheme: str
    host: str
    port: int
    ssl: ssl.SSLContext | None
    host_header: str


class _Connection(asyncio.Protocol):
    """One keep-alive connection; `httptools` calls the `on_*` methods while parsing."""

    def __init__(self, pool: HttpPool, key: _Origin) -> None:
        self._pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self.last_io = 0.0
        self.received = False  # a byte of the current answer arrived
        self.total_at = 0.0  # the current exchange's deadline (loop time)
        self.read_for = 0.0  # ... and how long it may wait for the next byte
        self._loop = pool.loop
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[Answer] | None = None
        self._max_body = 0
        self._upstream = ""
        self._reset_message()

    def _reset_message(self) -> None:
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_size = 0
        self._body: list[bytes] = []
        self._size = 0
        self._status = 0
        self._framed = False  # Content-Length or chunked: the end is known without EOF

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done():
            self.abort()  # bytes nobody asked for: this connection cannot be trusted
            return
        self.last_io = self._loop.time()
        self.received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            refused = exc.__context__  # what a callback below raised, if one did
            if isinstance(refused, _Refused):
                self.fail(refused.error)
            else:
                self.fail(UpstreamProtocolError(f"invalid HTTP answer: {exc}"))

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost finishes the answer

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._pool._forget(self)
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self._status and not self._framed:  # an answer delimited by the close
            self._complete()
            return
        reason = f" ({exc})" if exc else ""
        error = _ClosedUnanswered if not self.received else UpstreamProtocolError
        waiter.set_exception(error(f"the server closed the connection before answering{reason}"))

    # -- httptools callbacks ------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._waiter is None:  # a second answer to one request: the stream is broken
            raise _Refused(UpstreamProtocolError("the server sent an answer nobody asked for"))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4
        if self._head_size > MAX_HEAD_BYTES:
            raise _Refused(UpstreamProtocolError(f"answer headers over {MAX_HEAD_BYTES} bytes"))
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()
        for name, value in self._headers:
            lower = name.lower()
            if lower == b"content-length" or (
                lower == b"transfer-encoding" and b"chunked" in value.lower()
            ):
                self._framed = True
            declared = lower == b"content-length" and value.strip().isdigit()
            if declared and int(value) > self._max_body:
                raise _Refused(self._too_large())

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > self._max_body:
            raise _Refused(self._too_large())
        self._body.append(body)

    def on_message_complete(self) -> None:
        if 100 <= self._status < 200:  # 100 Continue and friends: the answer follows
            self._reset_message()
            return
        self._complete()

    # -- one exchange -------------------------------------------------------------------

    def send(self, request: bytes, max_body: int, upstream: str) -> asyncio.Future[Answer]:
        assert self.transport is not None
        self._reset_message()
        self._max_body = max_body
        self._upstream = upstream
        self.received = False
        self._waiter = waiter = self._loop.create_future()
        self.last_io = self._loop.time()
        self.transport.write(request)
        return waiter

    def _complete(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is None or waiter.done():
            return
        headers = CIMultiDict((n.decode("latin-1"), v.decode("latin-1")) for n, v in self._headers)
        body = b"".join(self._body)
        encoding = headers.get("Content-Encoding", "").strip().lower()
        if encoding not in ("", "identity"):
            try:
                body = _inflate(body, encoding, self._max_body)
            except _TooLarge:
                self.abort()
                waiter.set_exception(self._too_large())
                return
            except UpstreamProtocolError as exc:
                self.abort()
                waiter.set_exception(exc)
                return
        answer = Answer(self._status, CIMultiDictProxy(headers), body)
        if not self.closed and not self._parser.should_keep_alive():
            self.abort()
        waiter.set_result(answer)

    def _too_large(self) -> UpstreamRejected:
        return UpstreamRejected(
            self._upstream,
            f"response larger than {self._max_body} bytes",
            status=self._status,
            code="response_too_large",
        )

    def fail(self, error: BaseException) -> None:
        """End the current exchange with `error` and drop the connection."""
        waiter, self._waiter = self._waiter, None
        self.abort()
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)

    def abort(self) -> None:
        """Drop the connection at once (its state is unknown or unwanted)."""
        self.closed = True
        self._pool._forget(self)
        if self.transport is not None:
            self.transport.abort()


class _Refused(Exception):
    """Raised inside a parser callback to stop parsing with `error` for the caller."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


class _TooLarge(Exception):
    """The inflated body went past the limit."""


def _inflate(body: bytes, encoding: str, limit: int) -> bytes:
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise UpstreamProtocolError(f"unsupported Content-Encoding {encoding!r}")
    inflater = zlib.decompressobj(decompress_wbits(encoding != "deflate", body))
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise UpstreamProtocolError(f"corrupt {encoding} body: {exc}") from None
    if len(out) > limit:
        raise _TooLarge
    if not inflater.eof:
        raise UpstreamProtocolError(f"truncated {encoding} body")
    return out


class _Slots:
    """How many requests may be in flight; the others wait their turn (first come first).

    What `asyncio.Semaphore` does, without its cost on Python 3.11: an `async with` on it
    runs two coroutines and builds a generator (`locked()`) per request, 1.3 µs against
    0.15 here while a slot is free, which it nearly always is.
    """

    __slots__ = ("_free", "_loop", "_waiting")

    def __init__(self, limit: int, loop: asyncio.AbstractEventLoop) -> None:
        self._free = limit
        self._loop = loop
        self._waiting: deque[asyncio.Future[None]] = deque()

    def take(self) -> bool:
        """Take a free slot at once; False when the caller must `wait` for one."""
        if self._free > 0 and not self._waiting:
            self._free -= 1
            return True
        return False

    async def wait(self) -> None:
        """Wait for a slot (`release` hands it over); cancelled, the slot goes on."""
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._waiting.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed over as this waiter was cancelled: pass it on
            elif waiter in self._waiting:  # (`release` drops cancelled waiters it meets)
                self._waiting.remove(waiter)
            raise

    def release(self) -> None:
        """Give a slot back: to the first waiter still waiting, else to the free ones."""
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1


class HttpPool:
    """Pooled keep-alive connections to any number of origins; create it in a cleanup context."""

    def __init__(
        self,
        *,
        limit: int = 100,
        idle_seconds: float = 15.0,
        user_agent: str = USER_AGENT,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self._slots = _Slots(limit, self.loop)
        self._idle: dict[_Origin, list[_Connection]] = {}  # per origin and TLS context
        self._open: set[_Connection] = set()
        self._idle_seconds = idle_seconds
        self._user_agent = user_agent
        self._sweeper: asyncio.TimerHandle | None = None
        self._busy: set[_Connection] = set()  # waiting for an answer
        self._ticker: asyncio.TimerHandle | None = None
        self._closed = False

    async def request(
        self,
        method: str,
        url: str | yarl.URL,
        *,
        headers: Mapping[str, str],
        body: bytes | None,
        timeouts: Timeouts,
        max_body: int,
        upstream: str,
        ssl_context: ssl.SSLContext | None = None,
    ) -> Answer:
        """Send one request and return the whole answer (no redirects followed).

        `upstream` names the other side in errors (UpstreamRejected for a body over
        `max_body`).
        """
        if self._closed:
            raise RuntimeError("HttpPool is closed")
        if method in _BODYLESS_METHODS:
            raise ValueError(f"HttpPool does not send {method} requests")
        target = yarl.URL(url) if isinstance(url, str) else url
        origin = _origin(target, ssl_context)
        request = self._serialise(method, target, origin, headers, body)
        start = self.loop.time()
        deadline = start + timeouts.total
        slots = self._slots
        if not slots.take():
            await slots.wait()
        try:
            conn = self._reuse(origin)
            if conn is not None:
                try:
                    return await self._exchange(
                        conn, request, max_body, upstream, deadline, timeouts
                    )
                except _ClosedUnanswered:
                    # the server closed the idle connection as the request went out
                    # (its keep-alive timeout): it read none of it, or the request is
                    # safe to send twice. Anything else goes back to the caller.
                    if not _replayable(method, headers):
                        raise
            conn = await self._connect(origin, timeouts, start)
            return await self._exchange(conn, request, max_body, upstream, deadline, timeouts)
        finally:
            slots.release()

    async def _exchange(
        self,
        conn: _Connection,
        request: bytes,
        max_body: int,
        upstream: str,
        deadline: float,
        timeouts: Timeouts,
    ) -> Answer:
        waiter = conn.send(request, max_body, upstream)
        conn.total_at, conn.read_for = deadline, timeouts.read
        self._busy.add(conn)
        if self._ticker is None:
            self._ticker = self.loop.call_later(TICK_SECONDS, self._tick)
        try:
            answer = await waiter
        except BaseException:  # timeout, cancellation, failure: the state is unknown
            conn.abort()
            raise
        finally:
            self._busy.discard(conn)
        if not conn.closed:
            self._release(conn)
        return answer

    def _serialise(
        self,
        method: str,
        url: yarl.URL,
        origin: _Origin,
        headers: Mapping[str, str],
        body: bytes | None,
    ) -> bytes:
        lines = [f"{method} {url.raw_path_qs} HTTP/1.1\r\nHost: {origin.host_header}\r\n"]
        given = set()
        for name, value in headers.items():
            if _splits(name) or _splits(value) or ":" in name:
                raise ValueError(f"invalid character in the request header {name!r}")
            given.add(name.lower())
            lines.append(f"{name}: {value}\r\n")
        if "user-agent" not in given:
            lines.append(f"User-Agent: {self._user_agent}\r\n")
        if "accept-encoding" not in given:
            lines.append("Accept-Encoding: gzip, deflate\r\n")
        if body is not None or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body) if body else 0}\r\n")
        lines.append("\r\n")
        head = "".join(lines).encode("latin-1")
        return head + body if body else head

    # -- connections --------------------------------------------------------------------

    def _reuse(self, origin: _Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        while idle:
            conn = idle.pop()
            if not idle:
                del self._idle[origin]
            if not conn.closed and conn.transport is not None and not conn.transport.is_closing():
                return conn
        return None

    async def _connect(self, origin: _Origin, timeouts: Timeouts, start: float) -> _Connection:
        conn = _Connection(self, origin)
        within = max(0.0, min(timeouts.connect, start + timeouts.total - self.loop.time()))
        try:
            await asyncio.wait_for(
                self.loop.create_connection(
                    lambda: conn,
                    origin.host,
                    origin.port,
                    ssl=origin.ssl,
                    server_hostname=origin.host if origin.ssl is not None else None,
                    ssl_handshake_timeout=(within or None) if origin.ssl is not None else None,
                ),
                within,
            )
        except TimeoutError:
            raise TimeoutError(
                f"no connection to {origin.host_header} within {within:g} s"
            ) from None
        except (OSError, ssl.SSLError) as exc:
            raise UpstreamConnectError(
                f"cannot connect to {origin.host_header}: {type(exc).__name__}: {exc}"
            ) from exc
        self._open.add(conn)
        return conn

    def _release(self, conn: _Connection) -> None:
        conn.idle_since = self.loop.time()
        self._idle.setdefault(conn.key, []).append(conn)
        if self._sweeper is None:
            self._sweeper = self.loop.call_later(self._idle_seconds, self._sweep)

    def _tick(self) -> None:
        """Fail the exchanges past their deadline (one timer for all, not one per call)."""
        now = self.loop.time()
        for conn in [c for c in self._busy if now >= min(c.total_at, c.last_io + c.read_for)]:
            self._busy.discard(conn)
            what = "total" if now >= conn.total_at else "read"
            conn.fail(TimeoutError(f"no answer in time ({what} timeout)"))
        self._ticker = self.loop.call_later(TICK_SECONDS, self._tick) if self._busy else None

    def _sweep(self) -> None:
        """Close connections idle for `idle_seconds`; come back while any stay idle."""
        self._sweeper = None
        horizon = self.loop.time() - self._idle_seconds
        for idle in list(self._idle.values()):
            for conn in [c for c in idle if c.idle_since <= horizon]:
                conn.abort()  # and _forget drops the origin's entry once it is empty
        if self._idle:
            self._sweeper = self.loop.call_later(self._idle_seconds, self._sweep)

    def _forget(self, conn: _Connection) -> None:
        self._open.discard(conn)
        idle = self._idle.get(conn.key)
        if idle is not None and conn in idle:
            idle.remove(conn)
            if not idle:  # no entry per past origin: a key holds its TLS context alive
                del self._idle[conn.key]

    @property
    def open_connections(self) -> int:
        """Connections open now, idle or busy."""
        return len(self._open)

    async def close(self) -> None:
        """Close every connection; requests still running fail."""
        self._closed = True
        for timer in (self._sweeper, self._ticker):
            if timer is not None:
                timer.cancel()
        self._sweeper = self._ticker = None
        for conn in list(self._open):
            if conn.transport is not None:
                conn.transport.close()
            conn.closed = True
        self._open.clear()
        self._idle.clear()


def _splits(text: str) -> bool:
    """Whether `text` has a CR, LF or NUL (three `in` tests: 50x faster than a set's)."""
    return "\r" in text or "\n" in text or "\x00" in text


def _replayable(method: str, headers: Mapping[str, str]) -> bool:
    """Whether sending the request twice is harmless: idempotent, or it carries a key."""
    if method in _IDEMPOTENT_METHODS:
        return True
    return any(name.lower() in _IDEMPOTENCY_HEADERS for name in headers)


def _origin(url: yarl.URL, context: ssl.SSLContext | None) -> _Origin:
    scheme = url.scheme
    if scheme not in ("http", "https") or not url.raw_host:
        raise ValueError(f"not an http(s) URL: {url}")
    port = url.port or (443 if scheme == "https" else 80)
    host = url.raw_host
    default = (scheme == "https" and port == 443) or (scheme == "http" and port == 80)
    shown = f"[{host}]" if ":" in host else host
    host_header = shown if default else f"{shown}:{port}"
    if scheme == "https":
        context = context if context is not None else _default_context()
    else:
        context = None
    return _Origin(scheme, host, port, context, host_header)


_DEFAULT_CONTEXT: ssl.SSLContext | None = None


def _default_context() -> ssl.SSLContext:
    """The system trust store, verification on: built once, on first use (no I/O at import)."""
    global _DEFAULT_CONTEXT
    if _DEFAULT_CONTEXT is None:
        _DEFAULT_CONTEXT = ssl.create_default_context()
    return _DEFAULT_CONTEXT


__all__ = [
    "MAX_ANSWER_BYTES",
    "Answer",
    "HttpPool",
    "UpstreamConnectError",
    "UpstreamProtocolError",
]
