"""Files between the platform and CXone: the media proxy, and attachments for uploads.

Inbound, a mapping's `media_url(...)` becomes
`{listeners.platform.public_url}/media/<mapping>/<token>`, where token is
`base64url(JSON {"f": fields, "x": expiry})` "." `base64url(HMAC-SHA256)`. The key is
derived per mapping from the `token_signing_key` of the (first) integration serving
the mapping, so every instance derives the same key, nothing is stored, and rotating
that key ends every outstanding media URL. A GET checks the MAC (403 for any change),
then the expiry (410), renders the mapping's `media.request` with the fields and streams
the platform's answer: Content-Type (and length, disposition) passed through, at most
`media.max_bytes`, nothing written to disk. Redirects are followed (a few hops), and the
platform's credentials never follow one to another origin.

Outbound, `ReplyUploads` fetches CXone's short-lived attachment URLs at once (in memory,
size-limited) and sends a route's uploads through the platform client.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import logging
import math
import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web
from yarl import URL

from gateway import jsonutil
from gateway.errors import (
    BadGateway,
    BadRequest,
    Forbidden,
    Gone,
    NotFound,
    UnprocessableEntity,
    UpstreamRejected,
    UpstreamUnavailable,
)
from gateway.http import read_body
from gateway.keys import GATEWAY
from gateway.mapping import CompiledMapping, FetchedFile, PlatformRequest, PlatformResponse
from gateway.mapping.request import origin_of
from gateway.mapping.values import guess_content_type
from gateway.settings import Settings
from gateway.websession import derive_key

if TYPE_CHECKING:
    from gateway.runtime import Gateway

log = logging.getLogger("gateway.media")

MEDIA_ROUTE = "/media/{mapping}/{token}"
_MAX_TOKEN = 8192
_REDIRECTS = 3
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_CHUNK = 65_536
CXONE_FILES = "cxone-attachment"


class _TooLarge(Exception):
    pass


def media_key(settings: Settings, mapping: str) -> bytes | None:
    """The key media URLs of `mapping` are signed with, or None when nothing serves it."""
    for integration in settings.integrations:
        if any(ch.mapping == mapping for ch in integration.channels):
            return derive_key(f"media-url/{mapping}", [integration.token_signing_key.reveal()])
    return None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, mapping: str, body: str) -> str:
    return _b64(hmac.new(key, f"{mapping}.{body}".encode(), hashlib.sha256).digest())


def sign_media_url(gw: Gateway, mapping: str, fields: Mapping[str, Any]) -> str:
    """A signed URL for one platform file (ValueError names what is not configured)."""
    settings = gw.settings
    base = settings.platform_listener.public_url
    if not base:
        raise ValueError(
            "media_url() needs listeners.platform.public_url: the address CXone fetches files from"
        )
    key = media_key(settings, mapping)
    spec = gw.routing.mappings[mapping].media
    if key is None or spec is None:
        raise ValueError(f"media_url(): no integration serves the mapping {mapping!r}")
    body = _b64(jsonutil.dumps({"f": dict(fields), "x": math.ceil(gw.clock() + spec.ttl)}))
    return f"{base.rstrip('/')}/media/{mapping}/{body}.{_mac(key, mapping, body)}"


def read_token(key: bytes, mapping: str, token: str, now: float) -> dict[str, Any]:
    """The fields a token carries: Forbidden when it was not signed so, Gone when expired."""
    body, _, mac = token.partition(".")
    invalid = Forbidden("this media link is not valid", code="invalid_media_url")
    if (
        not mac
        or len(token) > _MAX_TOKEN
        or not hmac.compare_digest(mac.encode(), _mac(key, mapping, body).encode())
    ):
        raise invalid
    try:
        payload = jsonutil.loads(_unb64(body))
    except (BadRequest, binascii.Error, ValueError):
        raise invalid from None
    if not isinstance(payload, dict) or not isinstance(payload.get("f"), dict):
        raise invalid
    if not isinstance(payload.get("x"), int) or payload["x"] < now:
        raise Gone("this media link has expired")
    fields: dict[str, Any] = payload["f"]
    return fields


def routes() -> list[web.RouteDef]:
    """GET /media/<mapping>/<token> on the platform listener."""
    return [web.get(MEDIA_ROUTE, handle_media)]


async def handle_media(request: web.Request) -> web.StreamResponse:
    """Stream one platform file to whoever holds a valid media URL."""
    gw = request.app[GATEWAY]
    routing = gw.routing
    name = request.match_info["mapping"]
    mapping = routing.mappings.get(name)
    key = media_key(routing.settings, name) if mapping and mapping.media else None
    outcome = "invalid"
    try:
        if key is None or mapping is None:
            raise Forbidden("this media link is not valid", code="invalid_media_url")
        fields = read_token(key, name, request.match_info["token"], gw.clock())
        outcome = "failed"  # a valid link, from here on the platform's file is at stake
        response = await gw.media.stream(
            request, mapping, mapping.media_request(fields), gw.platform_tls.get(name)
        )
        outcome = "served"
        return response
    except Gone:
        outcome = "expired"
        raise
    finally:
        gw.metrics.media.labels(name if mapping else "?", outcome).inc()


class MediaClient:
    """Platform files streamed to CXone, and CXone's attachments fetched for uploads."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    async def stream(
        self,
        request: web.Request,
        mapping: CompiledMapping,
        source: PlatformRequest,
        ssl_context: ssl.SSLContext | None,
    ) -> web.StreamResponse:
        """Stream the platform's answer to `source`; abort the connection when it breaks."""
        spec = mapping.media
        assert spec is not None
        timeouts = mapping.platform.timeouts
        timeout = aiohttp.ClientTimeout(
            total=None, connect=timeouts.connect, sock_read=timeouts.read
        )
        out: web.StreamResponse | None = None
        try:
            async with (
                asyncio.timeout(spec.timeout),
                self._open(source, timeout, ssl_context) as upstream,
            ):
                headers = _passed_headers(upstream, spec.max_bytes)
                out = web.StreamResponse(status=200, headers=headers)
                await out.prepare(request)
                sent = 0
                async for chunk in upstream.content.iter_chunked(_CHUNK):
                    sent += len(chunk)
                    if sent > spec.max_bytes:
                        raise _TooLarge
                    await out.write(chunk)
                await out.write_eof()
                return out
        except (TimeoutError, aiohttp.ClientError, ConnectionError, _TooLarge) as exc:
            if out is None:
                raise BadGateway(f"the platform did not give the file ({_why(exc)})") from None
            # the status line is gone: only a cut connection tells the client it failed
            log.warning("media stream of %s cut: %s", mapping.name, _why(exc))
            if request.transport is not None:
                request.transport.abort()
            return out

    @contextlib.asynccontextmanager
    async def _open(
        self, source: PlatformRequest, phases: aiohttp.ClientTimeout, ssl_context: Any
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        url, method, body = source.url, source.method, source.body
        headers = dict(source.headers)
        secret = {n.lower() for n in source.masked} | {"authorization"}
        for hop in range(_REDIRECTS + 1):
            response = await self._session.request(
                method,
                url,
                headers=headers,
                data=body,
                timeout=phases,
                ssl=ssl_context if ssl_context is not None else True,
                allow_redirects=False,
            )
            location = response.headers.get("Location")
            if response.status in _REDIRECT_STATUSES and location and hop < _REDIRECTS:
                target = str(response.url.join(URL(location)))
                response.release()
                if origin_of(target) != origin_of(url):  # credentials stay with the platform
                    headers = {k: v for k, v in headers.items() if k.lower() not in secret}
                url, method, body = target, "GET", None
                continue
            try:
                if response.status in (404, 410):
                    raise NotFound("the platform no longer has this file", code="media_not_found")
                if not 200 <= response.status < 300:
                    raise BadGateway(f"the platform answered HTTP {response.status} for this file")
                yield response
            finally:
                response.release()
            return

    async def fetch(self, url: str, max_bytes: int, within: float) -> FetchedFile:
        """Read one of CXone's attachment URLs into memory (no credentials are sent)."""
        try:
            async with self._session.get(url, timeout=aiohttp.ClientTimeout(total=within)) as resp:
                if resp.status >= 400:
                    cls = UpstreamUnavailable if resp.status >= 500 else UpstreamRejected
                    raise cls(
                        CXONE_FILES,
                        f"the attachment URL answered HTTP {resp.status} (it may have expired)",
                        status=resp.status,
                    )
                content = await read_body(resp, max_bytes, CXONE_FILES)
                kind = resp.headers.get("Content-Type", "").split(";")[0].strip()
                disposition = resp.content_disposition
                filename = disposition.filename if disposition is not None else None
        except UpstreamRejected as exc:
            if exc.code == "response_too_large":
                raise UnprocessableEntity(
                    f"an attachment is larger than {max_bytes} bytes",
                    code="attachment_not_allowed",
                ) from None
            raise
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise UpstreamUnavailable(
                CXONE_FILES, f"the attachment could not be fetched ({_why(exc)})"
            ) from None
        kind = kind or guess_content_type(filename, url) or "application/octet-stream"
        return FetchedFile(content, kind, filename)


def _passed_headers(upstream: aiohttp.ClientResponse, limit: int) -> dict[str, str]:
    length = upstream.content_length
    if length is not None and length > limit:
        raise BadGateway(f"the file is larger than {limit} bytes", code="media_too_large")
    headers = {
        "Content-Type": upstream.headers.get("Content-Type", "application/octet-stream"),
        "Cache-Control": "private, no-store",
        "X-Content-Type-Options": "nosniff",
    }
    if length is not None and "Content-Encoding" not in upstream.headers:
        headers["Content-Length"] = str(length)
    if "Content-Disposition" in upstream.headers:
        headers["Content-Disposition"] = upstream.headers["Content-Disposition"]
    return headers


def _why(exc: BaseException) -> str:
    if isinstance(exc, _TooLarge):
        return "larger than media.max_bytes"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return type(exc).__name__


class ReplyUploads:
    """UploadIO for one CXone reply: CXone's files fetched, uploads sent to the platform."""

    def __init__(self, gw: Gateway, mapping: CompiledMapping, key: str) -> None:
        self._gw = gw
        self._mapping = mapping
        self._key = key  # the reply's idempotency key; each upload gets its own from it

    async def fetch(self, url: str, max_bytes: int, within: float) -> FetchedFile:
        return await self._gw.media.fetch(url, max_bytes, within)

    async def send(self, request: PlatformRequest, index: int, within: float) -> PlatformResponse:
        mapping = self._mapping
        header = mapping.platform.idempotency_header
        timeouts = mapping.platform.timeouts
        return await self._gw.platform.send(
            request,
            upstream=mapping.name,
            timeouts=replace(timeouts, total=min(timeouts.total, within)),
            deadline=within,
            idempotency=(header, f"{self._key}.upload{index}") if header else None,
            ssl_context=self._gw.platform_tls.get(mapping.name),
            error_of=mapping.platform_error,
        )
