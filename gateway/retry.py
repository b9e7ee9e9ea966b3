"""When to retry a call to an upstream, and how long to wait before the next attempt.

The policy is pure (no I/O, no clock of its own), so the queue worker, which retries
over minutes through the store, and `call_with_retries`, which retries inside the
few seconds of a synchronous reply, share one definition of "retryable".
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Awaitable, Callable
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Literal, TypeVar

import aiohttp

from gateway.clock import Clock
from gateway.errors import UpstreamError, UpstreamRejected, UpstreamUnavailable
from gateway.settings import RetrySettings

Verdict = Literal["ok", "retry", "final"]
T = TypeVar("T")

# Failures where the request may never have reached the upstream, or its answer was
# lost on the way back: trying again is the only way to find out. ServerDisconnectedError
# and ClientOSError are ClientConnectionErrors; aiohttp's timeouts are TimeoutErrors
# (asyncio.TimeoutError is TimeoutError since Python 3.11).
_TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    aiohttp.ClientConnectionError,
    aiohttp.ClientPayloadError,
    TimeoutError,
    ConnectionError,
)
_DELTA_SECONDS = re.compile(r"[0-9]{1,10}(?:\.[0-9]{1,6})?")
_MAX_EXPONENT = 62  # 2**62 * any sane base is far above every max_delay


class RetryPolicy:
    """Classify outcomes and compute backoff delays from `RetrySettings`."""

    def __init__(self, settings: RetrySettings, rng: random.Random | None = None) -> None:
        self.settings = settings
        self._rng = rng if rng is not None else random.Random()  # jitter, not crypto
        self._retry_statuses = frozenset(settings.retry_statuses)

    def classify(self, status: int | None, exc: BaseException | None) -> Verdict:
        """Say whether an HTTP status or an exception is success, retryable or final."""
        if exc is not None:
            if isinstance(exc, UpstreamUnavailable):
                return "retry"
            if isinstance(exc, UpstreamRejected):
                return "final"
            if isinstance(exc, _TRANSIENT_ERRORS):
                return "retry"
            return "final"
        if status is None:
            raise ValueError("classify() needs a status or an exception")
        if 200 <= status < 300:
            return "ok"
        if status in self._retry_statuses:
            return "retry"
        return "final"

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based).

        Full jitter (uniform between 0 and base * 2**(attempt-1), capped at max_delay)
        spreads retries of many senders apart. A Retry-After from the upstream wins,
        capped at max_retry_after so a hostile or buggy header cannot park a job forever.
        """
        s = self.settings
        if retry_after is not None and retry_after >= 0:
            return min(retry_after, s.max_retry_after)
        exponent = min(max(attempt, 1) - 1, _MAX_EXPONENT)
        ceiling = min(s.max_delay, s.base_delay * float(2**exponent))
        return self._rng.uniform(0.0, max(ceiling, 0.0))

    def attempts_left(self, attempt: int) -> bool:
        """Tell whether another attempt is allowed after attempt number `attempt`."""
        return attempt < self.settings.max_attempts


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Parse a Retry-After header (RFC 9110 10.2.3) into seconds from `now`.

    Accepts delay-seconds (leniently also with a fraction) or an HTTP-date; a date in
    the past means "now" (0.0). Negative numbers and anything unparseable give None.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if _DELTA_SECONDS.fullmatch(text):
        return float(text)
    if text[0] in "+-" or text[0].isdigit():
        return None  # a signed or malformed number, not a date
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # asctime dates carry no zone; HTTP dates are always GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


async def call_with_retries(
    fn: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    deadline: float,
    clock: Clock,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    upstream: str = "upstream",
) -> T:
    """Await `fn()` until it succeeds, fails for good, or the next wait would pass `deadline`.

    `deadline` is an absolute time on `clock` (e.g. `clock() + settings.deadline`), so
    several calls can share one budget. `fn` signals failure by raising: an
    `UpstreamUnavailable` (its `retry_after` is honoured), a connection error or a
    timeout is retried; anything else propagates at once. The attempt in flight is
    bounded by the caller's own request timeout, not by this function. When retrying
    stops, the last error is raised; a raw connection error or timeout becomes an
    `UpstreamUnavailable` so callers only ever see the gateway's exception tree.
    """
    attempt = 0
    while True:
        attempt += 1
        try:
            return await fn()
        except Exception as exc:
            if policy.classify(None, exc) != "retry":
                raise
            retry_after = exc.retry_after if isinstance(exc, UpstreamError) else None
            wait = policy.delay(attempt, retry_after)
            if not policy.attempts_left(attempt) or clock() + wait >= deadline:
                if isinstance(exc, UpstreamError):
                    raise
                raise _as_unavailable(upstream, exc, retry_after) from exc
        await sleep(wait)


def _as_unavailable(
    upstream: str, exc: BaseException, retry_after: float | None
) -> UpstreamUnavailable:
    if isinstance(exc, TimeoutError):
        return UpstreamUnavailable(upstream, "timed out", code="timeout", retry_after=retry_after)
    return UpstreamUnavailable(
        upstream,
        f"connection failed ({type(exc).__name__})",
        code="connection_error",
        retry_after=retry_after,
    )
