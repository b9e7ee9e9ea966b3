"""Calls to a platform's API: the mapping's rendered requests, sent with retries inside a deadline.

The same Idempotency-Key goes with every attempt, so a retried request never posts twice.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable

from gateway import jsonutil
from gateway.clock import Clock, system_clock
from gateway.errors import UpstreamError, UpstreamRejected, UpstreamUnavailable
from gateway.http_pool import MAX_ANSWER_BYTES, HttpPool
from gateway.mapping import PlatformRequest, PlatformResponse
from gateway.retry import RetryPolicy, call_with_retries, parse_retry_after
from gateway.settings import RetrySettings, Timeouts

log = logging.getLogger("gateway.platform")


class PlatformClient:
    """Send PlatformRequests over pooled keep-alive connections."""

    def __init__(
        self,
        http: HttpPool,
        *,
        retry: RetrySettings,
        clock: Clock = system_clock,
    ) -> None:
        self._http = http
        self._policy = RetryPolicy(retry)
        self._clock = clock

    async def send(
        self,
        request: PlatformRequest,
        *,
        upstream: str,
        timeouts: Timeouts,
        deadline: float,  # seconds from now
        idempotency: tuple[str, str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        error_of: Callable[[PlatformResponse], UpstreamError] | None = None,
        check: Callable[[PlatformResponse], None] | None = None,
        retry: bool = True,
    ) -> PlatformResponse:
        """Send one request; retry transient failures while the deadline allows.

        `retry=False` makes exactly one attempt, bounded by `timeouts` alone (a lookup,
        whose fallback is better than waiting).
        """
        headers = dict(request.headers)
        method = request.method.upper()
        if idempotency is not None and method == "POST":
            headers[idempotency[0]] = idempotency[1]

        async def attempt() -> PlatformResponse:
            try:
                answer = await self._http.request(
                    method,
                    request.url,
                    headers=headers,
                    body=request.body,
                    timeouts=timeouts,
                    max_body=MAX_ANSWER_BYTES,  # more is refused, not read
                    upstream=upstream,
                    ssl_context=ssl_context,
                )
            except (TimeoutError, ConnectionError) as exc:
                raise UpstreamUnavailable(upstream, f"no answer ({type(exc).__name__})") from None
            except ValueError as exc:  # a rendered URL or header HTTP cannot carry
                raise UpstreamRejected(
                    upstream, f"cannot send: {exc}", code="bad_request"
                ) from None
            body = _parse(answer.body, answer.headers.get("Content-Type", ""))
            result = PlatformResponse(status=answer.status, headers=dict(answer.headers), body=body)
            if self._policy.classify(result.status, None) != "retry":
                if check is not None:
                    check(result)  # the mapping's verdict: raises to retry or to stop
                return result
            if error_of is not None:
                error = error_of(result)
                if isinstance(error, UpstreamUnavailable):
                    raise error
            raise UpstreamUnavailable(
                upstream,
                f"answered {result.status}",
                status=result.status,
                retry_after=parse_retry_after(result.headers.get("Retry-After"), self._clock()),
            )

        if not retry:
            return await attempt()
        return await call_with_retries(
            attempt,
            self._policy,
            deadline=self._clock() + deadline,
            clock=self._clock,
            upstream=upstream,
        )


def _parse(raw: bytes, content_type: str) -> object:
    if not raw:
        return None
    if "json" in content_type or raw[:1] in (b"{", b"["):
        try:
            return jsonutil.loads(raw)
        except Exception:
            return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


__all__ = ["PlatformClient"]
