"""The hardened HTTP edge: who may call, how much they may send, and how slowly.

Limits, from the socket inwards (each listener has its own `ListenerSettings`):

1. aiohttp's protocol layer (`server_kwargs`): request line and header sizes, header
   count, and `keepalive_timeout`, which closes a connection that has not delivered a
   complete request head in time (idle keep-alive and slow-header drips alike).
   `harden_server` makes its answer to a malformed head a JSON 400 without an echo.
2. `Edge` (two calls in each request's context, `gateway.request_context`), doing in
   order: the allow-list (the caller's address from `gateway.client_address`), mTLS
   names (a verified certificate with an accepted name), and the deadline for reading
   the body.
   It answers with JSON errors itself.
3. Handlers read bodies with `read_body_limited`: size limit on the wire and after
   decompression, the deadline above (slow drip -> 408), gzip/deflate only (-> 415).
   `check_json_depth` bounds nesting after parsing (MAX_JSON_DEPTH).

Every factory takes either a value or a zero-argument callable returning the current
value, so a reload that swaps settings takes effect without rebuilding the app.
Error bodies are `{"error": code, "message": ...}` and never echo the input.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Callable
from typing import Any, TypeAlias, TypeVar

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from gateway.client_address import client_ip, parse_networks, within
from gateway.errors import (
    BadRequest,
    Forbidden,
    PayloadTooLarge,
    RequestTimeout,
    UnsupportedEncoding,
)
from gateway.http import decompress_wbits
from gateway.http_errors import json_error
from gateway.settings import ListenerSettings
from gateway.tls_peers import keep_open, require_peer, wants_close

log = logging.getLogger("gateway.edge")


# Protocol limits (aiohttp's own defaults, made explicit): a longer request line or
# header line gives 400, and so do more headers than MAX_HEADERS.
MAX_LINE_SIZE = 8190
MAX_FIELD_SIZE = 8190
MAX_HEADERS = 100
# After an early error response, read and drop the rest of a body this long at most, so
# the caller sees the response instead of a reset.
LINGERING_TIME = 2.0
# Bound on a body read when no listener deadline is set (`Edge.admit` sets one).
DEFAULT_READ_TIMEOUT = 10.0
# Deepest nesting of objects/arrays a JSON body may have (check_json_depth); BYOC and
# webhook payloads nest a handful of levels, so this only stops pathological input.
MAX_JSON_DEPTH = 32

# None until read. `Edge.admit` sets both keys on every request: a key missing from the
# request costs `request.get` a KeyError raised and caught (2 µs, the body's and the
# close flag's of every message: 0.6 % of an inbound event's instructions).
_BODY: web.RequestKey[bytes | None] = web.RequestKey("edge_body")
_DEADLINE = web.RequestKey("edge_body_deadline", float)

T = TypeVar("T")
Provider: TypeAlias = T | Callable[[], T]  # a value, or how to get the current one


def _getter(value: Provider[T]) -> Callable[[], T]:
    if callable(value):
        return value
    return lambda: value


class Edge:
    """The edge of one listener: allow-list, mTLS names, body deadline, around a handler.

    1. Callers outside `allow` get 403 (an empty list lets everyone in; the address is
       `client_address.client_ip`, X-Forwarded-For only from trusted proxies).
    2. mTLS per request, only when every handshake must carry a certificate (with
       optional certificates the integrations that want one check it, see
       gateway.cxone.endpoints): a verified client certificate whose CN or DNS/URI SAN
       is in `client_subjects` (empty: any), else 403. A connection accepted before the
       listener asked for certificates is served once and then closed
       (`tls_peers.require_peer`).
    3. The body read (`read_body_limited`) gets its deadline, `read_timeout` from now.
    A response whose connection must close says so in its headers (`finish`). It runs
    on every request, so it is two plain calls in the request context
    (`gateway.request_context`), not a middleware; each check is skipped when not
    configured, and the settings are read per request, so a reload applies at once.
    """

    def __init__(self, listener: Provider[ListenerSettings]) -> None:
        self._get = get = _getter(listener)
        parse_networks(tuple(get().allow))  # a typo fails at start, not on the first request
        parse_networks(tuple(get().trusted_proxies), "trusted_proxies")
        self._loop: asyncio.AbstractEventLoop | None = None  # on 3.11 each lookup: a getpid()

    def admit(self, request: web.Request) -> web.Response | None:
        """None when the request may go on; else the error response to send instead."""
        request[_BODY] = None
        keep_open(request)  # first: the mTLS check below may ask for the close
        settings = self._get()
        if settings.allow:
            addr = client_ip(request, settings.trusted_proxies)
            if addr is None or not within(addr, parse_networks(tuple(settings.allow))):
                return json_error(403, "forbidden", "this client address is not allowed")
        tls = settings.tls
        if tls is not None and tls.client_ca is not None and tls.client_certificate == "required":
            try:
                require_peer(request, tls.client_subjects)
            except Forbidden as exc:
                return json_error(exc.status, exc.code, exc.message)
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        request[_DEADLINE] = loop.time() + settings.read_timeout
        return None

    @staticmethod
    def finish(request: web.Request, response: web.StreamResponse) -> None:
        """After the handler: close the connection if `tls_peers.close_after_response` asked."""
        if wants_close(request):
            response.force_close()


# --- bodies ----------------------------------------------------------------------------


class _Inflater:
    """Incremental gzip/deflate decoding that never produces more than the limit (+1)."""

    def __init__(self, encoding: str) -> None:
        self._gzip = encoding == "gzip"
        self._z: Any = None
        self._head = b""

    def _start(self, data: bytes) -> None:
        self._z = zlib.decompressobj(decompress_wbits(self._gzip, data))

    def feed(self, data: bytes, out: bytearray, limit: int) -> None:
        if self._z is None:
            self._head += data
            if len(self._head) < 2:
                return
            self._start(self._head)
            data, self._head = self._head, b""
        while data:
            if self._z.eof:
                raise BadRequest("data follows the end of the compressed body", code="bad_body")
            try:
                out += self._z.decompress(data, limit - len(out) + 1)
            except zlib.error:
                raise BadRequest("the compressed body is corrupt", code="bad_encoding") from None
            if len(out) > limit:
                raise PayloadTooLarge(f"the decompressed body is larger than {limit} bytes")
            data = self._z.unconsumed_tail or self._z.unused_data

    def finish(self) -> None:
        if self._z is None or not self._z.eof:
            raise BadRequest("the compressed body is truncated", code="bad_encoding")


def _inflater(header: str | None) -> _Inflater | None:
    if not header:  # nearly every request: no parsing
        return None
    codings = [c.strip().lower() for c in header.split(",")]
    codings = [c for c in codings if c and c != "identity"]
    if not codings:
        return None
    if len(codings) == 1 and codings[0] in ("gzip", "x-gzip", "deflate"):
        return _Inflater("deflate" if codings[0] == "deflate" else "gzip")
    raise UnsupportedEncoding("only gzip or deflate content encoding is accepted")


async def _stream(request: web.BaseRequest, max_bytes: int, inflater: _Inflater | None) -> bytes:
    out = bytearray()
    wire = 0
    async for chunk in request.content.iter_any():
        wire += len(chunk)
        if wire > max_bytes:
            raise PayloadTooLarge(f"the body is larger than {max_bytes} bytes")
        if inflater is None:
            out += chunk
        else:
            inflater.feed(chunk, out, max_bytes)
    if inflater is not None and wire:
        inflater.finish()
    return bytes(out)


async def read_body_limited(request: web.BaseRequest, max_bytes: int) -> bytes:
    """Read the whole body, decompressed, refusing more than `max_bytes` (413).

    The read must end by the deadline `Edge.admit` set (without it, within
    DEFAULT_READ_TIMEOUT seconds): a slow drip gets 408. Expects the
    server to run with `auto_decompress=False` (see `server_kwargs`). The body is kept,
    so a second call returns it again.
    """
    kept: bytes | None = request.get(_BODY)
    if kept is not None:
        if len(kept) > max_bytes:
            raise PayloadTooLarge(f"the body is larger than {max_bytes} bytes")
        return kept
    inflater = _inflater(request.headers.get("Content-Encoding"))
    if request.content_length is not None and request.content_length > max_bytes:
        raise PayloadTooLarge(f"the body is larger than {max_bytes} bytes")
    content = request.content
    if inflater is None and content.is_eof() and not content.exception():
        # the whole body has arrived (most webhooks fit in a packet or two): no deadline,
        # no chunk loop
        body = content.read_nowait()
        if len(body) > max_bytes:
            raise PayloadTooLarge(f"the body is larger than {max_bytes} bytes")
        request[_BODY] = body
        return body
    deadline = request.get(_DEADLINE)
    if deadline is None:
        deadline = asyncio.get_running_loop().time() + DEFAULT_READ_TIMEOUT
    try:
        async with asyncio.timeout_at(deadline):
            body = await _stream(request, max_bytes, inflater)
    except TimeoutError:
        raise RequestTimeout("the request body did not arrive in time") from None
    except web.RequestPayloadError:
        raise BadRequest("the request body is malformed", code="bad_body") from None
    request[_BODY] = body
    return body


_CONTAINERS = (dict, list, tuple)


def check_json_depth(value: Any, max_depth: int = MAX_JSON_DEPTH, raw: bytes | None = None) -> None:
    """Raise BadRequest when objects/arrays nest deeper than `max_depth` (top level is 1).

    `raw`: the JSON text `value` was parsed from. Nesting needs one `{` or `[` per level,
    so a text with no more of them than `max_depth` cannot be too deep and is not walked
    (a counting pass in C instead of a walk in Python for nearly every request).
    """
    if raw is not None and raw.count(b"{") + raw.count(b"[") <= max_depth:
        return
    # level by level, keeping only the containers (scalars are most of a body's values):
    # a batch of ten webhook events took 41 µs walked item by item, 13 µs this way
    level = [value] if isinstance(value, _CONTAINERS) else []
    depth = 1
    while level:
        if depth > max_depth:
            raise BadRequest(f"the JSON body nests deeper than {max_depth}", code="too_deep")
        below: list[Any] = []
        for item in level:
            for child in item.values() if isinstance(item, dict) else item:
                if isinstance(child, _CONTAINERS):
                    below.append(child)
        level = below
        depth += 1


# --- server --------------------------------------------------------------------------


class _EdgeRequestHandler(RequestHandler):
    """aiohttp's connection handler, answering malformed requests without echoing them.

    aiohttp answers a request line or header it cannot parse (too long, too many, junk)
    itself, before any middleware, with plain text quoting the offending bytes, and logs
    them with a traceback. This answers the gateway's JSON error instead and logs one
    line without the caller's bytes (they may hold a credential).
    """

    __slots__ = ()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500 or request.writer.output_size > 0:
            return super().handle_error(request, status, exc, message)
        log.info(
            "refused a malformed request from %s (%s)",
            request.remote,
            type(exc).__name__ if exc is not None else status,
        )
        response = json_error(
            status, "bad_request", "the request line or headers are malformed or too large"
        )
        response.force_close()
        return response


class _EdgeServer(web.Server):
    def __call__(self) -> RequestHandler:
        handler = super().__call__()
        handler.__class__ = _EdgeRequestHandler  # same slots, one method differs
        return handler


def harden_server(server: web.Server | None) -> None:
    """Make a set-up runner's server answer malformed requests without echoing them.

    Call it with `runner.server` between `runner.setup()` and starting the sites.
    """
    if server is None:
        raise RuntimeError("set the runner up before hardening its server")
    server.__class__ = _EdgeServer


def server_kwargs(listener: ListenerSettings) -> dict[str, Any]:
    """Keyword arguments for `web.AppRunner` / `web.Server` hardening one listener."""
    return {
        # a caller that hangs up cancels its handler instead of leaving work behind
        "handler_cancellation": True,
        # idle keep-alive connections, and connections that have not sent a complete
        # request head (slow headers), are closed after this long
        "keepalive_timeout": listener.read_timeout,
        "max_line_size": MAX_LINE_SIZE,
        "max_field_size": MAX_FIELD_SIZE,
        "max_headers": MAX_HEADERS,
        "lingering_time": LINGERING_TIME,
        # bodies are decompressed by read_body_limited, under its size limit
        "auto_decompress": False,
    }
