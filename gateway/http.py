"""Shared helpers for outgoing HTTP: phase-split timeouts and pooled client sessions."""

from __future__ import annotations

import functools
import ssl
import zlib

import aiohttp

from gateway import __version__, jsonutil
from gateway.errors import UpstreamRejected
from gateway.settings import Timeouts

USER_AGENT = f"byoc-gateway/{__version__}"


def decompress_wbits(gzip: bool, head: bytes) -> int:
    """zlib's `wbits` for a gzip or an HTTP "deflate" body starting with `head` (2+ bytes).

    "deflate" is zlib-wrapped by the standard, but some peers send raw deflate: a zlib
    header is method 8 with a check value making the first two bytes a multiple of 31.
    Used for request bodies (`gateway.edge`) and upstream answers (`gateway.http_pool`).
    """
    if gzip:
        return 16 + zlib.MAX_WBITS
    zlib_wrapped = len(head) >= 2 and head[0] & 0x0F == 8 and (head[0] << 8 | head[1]) % 31 == 0
    return zlib.MAX_WBITS if zlib_wrapped else -zlib.MAX_WBITS


@functools.lru_cache(maxsize=64)
def client_timeout(t: Timeouts) -> aiohttp.ClientTimeout:
    """Turn per-phase settings into an aiohttp timeout (connect, socket read, total).

    Cached: the platform client asks for one per request, and both types are frozen.
    """
    return aiohttp.ClientTimeout(total=t.total, connect=t.connect, sock_read=t.read)


def make_session(
    timeouts: Timeouts,
    ssl_context: ssl.SSLContext | None = None,
    limit: int = 100,
) -> aiohttp.ClientSession:
    """Create a pooled client session; call it inside a cleanup context, never at import.

    The connector keeps connections alive across calls (pooling, at most `limit` open)
    and caches DNS answers for a minute, so a burst of deliveries does not pay a
    resolver round trip and a TLS handshake per request. `ssl_context` (from
    `gateway.tls.client_context`) carries custom CAs and client certificates; without
    it the system trust store is used, and verification is never switched off.
    """
    connector = aiohttp.TCPConnector(
        limit=limit,
        use_dns_cache=True,
        ttl_dns_cache=60,
        ssl=ssl_context if ssl_context is not None else True,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=client_timeout(timeouts),
        json_serialize=jsonutil.dumps_str,
        headers={"User-Agent": USER_AGENT},
        raise_for_status=False,
        trust_env=False,
    )


async def read_body(resp: aiohttp.ClientResponse, limit: int, upstream: str) -> bytes:
    """Read a whole response body, refusing more than `limit` bytes (UpstreamRejected)."""
    declared = resp.content_length
    if declared is not None and declared > limit:
        raise UpstreamRejected(
            upstream,
            f"response larger than {limit} bytes",
            status=resp.status,
            code="response_too_large",
        )
    if declared is not None and "Content-Encoding" not in resp.headers:
        # the length is known and nothing is inflated: it cannot grow past `declared`
        return await resp.read()
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(65_536):
        size += len(chunk)
        if size > limit:
            raise UpstreamRejected(
                upstream,
                f"response larger than {limit} bytes",
                status=resp.status,
                code="response_too_large",
            )
        chunks.append(chunk)
    return b"".join(chunks)
