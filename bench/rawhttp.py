"""A minimal HTTP/1.1 keep-alive server and client on asyncio protocols.

The sinks and the load generator are not what is measured, so they must cost as little
CPU as possible: no framework, no per-request objects beyond a few bytes. Enough of
HTTP/1.1 for talking to aiohttp: Content-Length or chunked bodies, keep-alive,
`Connection: close`. Not a general-purpose implementation.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import cast

Handler = Callable[[bytes, bytes, bytes, float], bytes]  # (method, target, body, t) -> response

_REASONS = {200: b"OK", 201: b"Created", 204: b"No Content", 404: b"Not Found", 503: b"Unavailable"}


def response(status: int, body: bytes = b"", content_type: bytes = b"application/json") -> bytes:
    """Serialise a complete response with Content-Length."""
    head = b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"X"))
    if status == 204:
        return head + b"\r\n"
    return head + b"Content-Type: %s\r\nContent-Length: %d\r\n\r\n%s" % (
        content_type,
        len(body),
        body,
    )


def _parse_head(head: bytes) -> tuple[bytes, int, bool, bool]:
    """(first line, content length, chunked, keep alive) of a message head."""
    lines = head.split(b"\r\n")
    length = 0
    chunked = False
    keep_alive = True
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"connection":
            keep_alive = value.strip().lower() != b"close"
    return lines[0], length, chunked, keep_alive


def _chunked(buf: bytearray, start: int) -> tuple[bytes, int] | None:
    """Decode a chunked body starting at `start`: (body, end offset) or None if incomplete."""
    out = bytearray()
    pos = start
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        size = int(bytes(buf[pos:eol]).split(b";", 1)[0], 16)
        pos = eol + 2
        if size == 0:
            end = buf.find(b"\r\n\r\n", pos - 2)
            if end < 0:
                return None
            return bytes(out), end + 4
        if len(buf) < pos + size + 2:
            return None
        out += buf[pos : pos + size]
        pos += size + 2


def _take_message(buf: bytearray) -> tuple[bytes, bytes, bool] | None:
    """Remove one complete message from `buf`: (first line, body, keep alive)."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    first, length, chunked, keep_alive = _parse_head(bytes(buf[:end]))
    if chunked:
        found = _chunked(buf, end + 4)
        if found is None:
            return None
        body, stop = found
    else:
        stop = end + 4 + length
        if len(buf) < stop:
            return None
        body = bytes(buf[end + 4 : stop])
    del buf[:stop]
    return first, body, keep_alive


class ServerProtocol(asyncio.Protocol):
    """Answer each request with `handler(method, target, body, arrival time)`."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._buf = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self._buf += data
        transport = self._transport
        assert transport is not None
        while True:
            message = _take_message(self._buf)
            if message is None:
                return
            first, body, keep_alive = message
            arrived = time.monotonic()
            method, target, _ = first.split(b" ", 2)
            transport.write(self._handler(method, target, body, arrived))
            if not keep_alive:
                transport.close()
                return


async def serve(handler: Handler, host: str, port: int) -> asyncio.Server:
    """Listen on host:port (port 0: any free port)."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: ServerProtocol(handler), host, port, backlog=1024)


class ClientConnection(asyncio.Protocol):
    """One keep-alive connection; one request at a time."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.transport: asyncio.Transport | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._buf += data
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        message = _take_message(self._buf)
        if message is None:
            return
        first, body, keep_alive = message
        if not keep_alive:
            self.closed = True
            if self.transport is not None:
                self.transport.close()
        waiter.set_result((int(first.split(b" ", 2)[1]), body))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionError("connection lost"))

    async def request(self, data: bytes) -> tuple[int, bytes]:
        assert self.transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return await self._waiter


class Pool:
    """Keep-alive connections to one host:port, opened on demand and reused."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._idle: list[ClientConnection] = []
        self.opened = 0

    async def request(self, data: bytes) -> tuple[int, bytes]:
        """Send one serialised request; return (status, body)."""
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed:
                break
        else:
            _, conn = await asyncio.get_running_loop().create_connection(
                ClientConnection, self.host, self.port
            )
            self.opened += 1
        try:
            result = await conn.request(data)
        except BaseException:
            if conn.transport is not None:
                conn.transport.close()
            raise
        if not conn.closed:
            self._idle.append(conn)
        return result

    def close(self) -> None:
        for conn in self._idle:
            if conn.transport is not None:
                with contextlib.suppress(Exception):
                    conn.transport.close()
        self._idle.clear()


def request_bytes(
    method: str, host: str, path: str, body: bytes, headers: dict[str, str] | None = None
) -> bytes:
    """Serialise a request with Content-Length."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed (the load side must be cheap), else asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop
