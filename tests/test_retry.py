"""The retry policy: classification, backoff bounds, Retry-After, and deadline-bound retries."""

from __future__ import annotations

import random
from email.utils import formatdate

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.clock import FakeClock
from gateway.errors import UpstreamRejected, UpstreamUnavailable
from gateway.retry import RetryPolicy, call_with_retries, parse_retry_after
from gateway.settings import RetrySettings

NOW = 1_764_158_400.0


class TopRandom(random.Random):
    """Always draws the upper bound, to observe the backoff ceiling."""

    def uniform(self, a: float, b: float) -> float:
        return b


class FakeSleep:
    """Records the waits and moves the fake clock instead of sleeping."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.clock.advance(seconds)


# ---------------------------------------------------------------- classify


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_2xx_is_ok(status: int) -> None:
    assert RetryPolicy(RetrySettings()).classify(status, None) == "ok"


@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_default_retry_statuses(status: int) -> None:
    assert RetryPolicy(RetrySettings()).classify(status, None) == "retry"


@pytest.mark.parametrize("status", [301, 400, 401, 403, 404, 409, 413, 422, 500, 501, 505])
def test_other_statuses_are_final(status: int) -> None:
    assert RetryPolicy(RetrySettings()).classify(status, None) == "final"


def test_retry_statuses_follow_settings() -> None:
    policy = RetryPolicy(RetrySettings(retry_statuses=(500, 503)))
    assert policy.classify(500, None) == "retry"
    assert policy.classify(429, None) == "final"


@pytest.mark.parametrize(
    "exc",
    [
        aiohttp.ClientConnectionError(),
        aiohttp.ServerDisconnectedError(),
        aiohttp.ClientOSError(104, "Connection reset by peer"),
        aiohttp.ServerTimeoutError(),
        aiohttp.ClientPayloadError("truncated"),
        TimeoutError(),
        ConnectionResetError(),
        UpstreamUnavailable("cxone", "503", status=503),
    ],
)
def test_transient_errors_are_retried(exc: BaseException) -> None:
    assert RetryPolicy(RetrySettings()).classify(None, exc) == "retry"


@pytest.mark.parametrize(
    "exc",
    [ValueError("bug"), KeyError("x"), UpstreamRejected("cxone", "400", status=400)],
)
def test_other_errors_are_final(exc: BaseException) -> None:
    assert RetryPolicy(RetrySettings()).classify(None, exc) == "final"


def test_classify_needs_something() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(RetrySettings()).classify(None, None)


# ---------------------------------------------------------------- delay


@given(
    attempt=st.integers(min_value=-5, max_value=10_000),
    base=st.floats(min_value=0.001, max_value=10.0),
    cap=st.floats(min_value=0.01, max_value=3600.0),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_backoff_stays_within_full_jitter_bounds(
    attempt: int, base: float, cap: float, seed: int
) -> None:
    policy = RetryPolicy(RetrySettings(base_delay=base, max_delay=cap), random.Random(seed))
    ceiling = min(cap, base * 2.0 ** min(max(attempt, 1) - 1, 62))
    delay = policy.delay(attempt, None)
    assert 0.0 <= delay <= ceiling


def test_backoff_ceiling_doubles_then_caps() -> None:
    policy = RetryPolicy(RetrySettings(base_delay=0.5, max_delay=6.0), TopRandom())
    assert [policy.delay(n, None) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 6.0, 6.0]
    assert policy.delay(10**6, None) == 6.0  # no overflow on absurd attempt numbers


def test_jitter_spreads_delays() -> None:
    policy = RetryPolicy(RetrySettings(base_delay=1.0, max_delay=60.0), random.Random(7))
    delays = {round(policy.delay(5, None), 6) for _ in range(50)}
    assert len(delays) > 40
    assert all(0.0 <= d <= 16.0 for d in delays)


def test_retry_after_wins_and_is_capped() -> None:
    policy = RetryPolicy(RetrySettings(max_delay=2.0, max_retry_after=120.0), TopRandom())
    assert policy.delay(1, 30.0) == 30.0  # above max_delay: the server knows best
    assert policy.delay(3, 0.0) == 0.0
    assert policy.delay(1, 10_000.0) == 120.0
    assert policy.delay(1, -5.0) == policy.delay(1, None)  # nonsense: plain backoff


# ---------------------------------------------------------------- parse_retry_after


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        ("  5 ", 5.0),
        ("0", 0.0),
        ("1.5", 1.5),
        (None, None),
        ("", None),
        ("-1", None),
        ("+5", None),
        ("1e3", None),
        ("soon", None),
        ("12 seconds", None),
        ("99999999999999999999", None),
    ],
)
def test_parse_retry_after_seconds(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, NOW) == expected


def test_parse_retry_after_http_dates() -> None:
    imf = formatdate(NOW + 30, usegmt=True)  # e.g. "Wed, 26 Nov 2025 12:00:30 GMT"
    assert parse_retry_after(imf, NOW) == pytest.approx(30.0)
    assert parse_retry_after(formatdate(NOW - 300, usegmt=True), NOW) == 0.0
    # the two obsolete formats RFC 9110 still requires recipients to accept
    rfc850 = parse_retry_after("Sunday, 06-Nov-94 08:49:37 GMT", 784_111_777.0 - 10)
    asctime = parse_retry_after("Sun Nov  6 08:49:37 1994", 784_111_777.0 - 10)
    assert rfc850 == pytest.approx(10.0)
    assert asctime == pytest.approx(10.0)


@given(st.text(max_size=60))
def test_parse_retry_after_never_raises(value: str) -> None:
    result = parse_retry_after(value, NOW)
    assert result is None or result >= 0.0


# ---------------------------------------------------------------- call_with_retries


async def test_call_with_retries_retries_until_success() -> None:
    clock = FakeClock(NOW)
    sleep = FakeSleep(clock)
    policy = RetryPolicy(RetrySettings(base_delay=0.5, max_delay=4.0), TopRandom())
    outcomes: list[Exception | str] = [
        aiohttp.ServerDisconnectedError(),
        UpstreamUnavailable("wh", "HTTP 503", status=503),
        "done",
    ]

    async def fn() -> str:
        item = outcomes.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    result = await call_with_retries(fn, policy, deadline=NOW + 10, clock=clock, sleep=sleep)
    assert result == "done"
    assert sleep.waits == [0.5, 1.0]


async def test_call_with_retries_stops_before_the_deadline() -> None:
    clock = FakeClock(NOW)
    sleep = FakeSleep(clock)
    policy = RetryPolicy(RetrySettings(base_delay=1.0, max_delay=60.0), TopRandom())
    calls = 0

    async def fn() -> None:
        nonlocal calls
        calls += 1
        raise UpstreamUnavailable("wh", f"attempt {calls}", status=503)

    with pytest.raises(UpstreamUnavailable, match="attempt 3"):
        await call_with_retries(fn, policy, deadline=NOW + 5, clock=clock, sleep=sleep)
    # waits 1 and 2 fit (t=3); the next one (4) would end at t=7, past the deadline
    assert sleep.waits == [1.0, 2.0]
    assert calls == 3
    assert clock() <= NOW + 5


async def test_call_with_retries_honours_retry_after_within_deadline() -> None:
    clock = FakeClock(NOW)
    sleep = FakeSleep(clock)
    policy = RetryPolicy(RetrySettings(base_delay=0.1))
    calls = 0

    async def fn() -> None:
        nonlocal calls
        calls += 1
        raise UpstreamUnavailable("wh", "HTTP 429", status=429, retry_after=30.0)

    with pytest.raises(UpstreamUnavailable) as info:
        await call_with_retries(fn, policy, deadline=NOW + 10, clock=clock, sleep=sleep)
    assert calls == 1  # waiting 30 s cannot fit in 10 s: fail fast, keep retry_after
    assert sleep.waits == []
    assert info.value.retry_after == 30.0


async def test_call_with_retries_respects_max_attempts() -> None:
    clock = FakeClock(NOW)
    sleep = FakeSleep(clock)
    policy = RetryPolicy(RetrySettings(max_attempts=3, base_delay=0.01), random.Random(1))
    calls = 0

    async def fn() -> None:
        nonlocal calls
        calls += 1
        raise TimeoutError

    with pytest.raises(UpstreamUnavailable) as info:
        await call_with_retries(
            fn, policy, deadline=NOW + 1000, clock=clock, sleep=sleep, upstream="wh"
        )
    assert calls == 3
    assert len(sleep.waits) == 2
    assert info.value.code == "timeout"  # a raw timeout surfaces as the gateway's error
    assert info.value.upstream == "wh"


async def test_call_with_retries_does_not_retry_final_errors() -> None:
    clock = FakeClock(NOW)
    sleep = FakeSleep(clock)
    policy = RetryPolicy(RetrySettings())
    calls = 0

    async def rejected() -> None:
        nonlocal calls
        calls += 1
        raise UpstreamRejected("wh", "HTTP 400", status=400)

    async def bug() -> None:
        raise ValueError("a bug stays a bug")

    with pytest.raises(UpstreamRejected):
        await call_with_retries(rejected, policy, deadline=NOW + 10, clock=clock, sleep=sleep)
    with pytest.raises(ValueError):
        await call_with_retries(bug, policy, deadline=NOW + 10, clock=clock, sleep=sleep)
    assert calls == 1
    assert sleep.waits == []


async def test_call_with_retries_wraps_raw_connection_errors() -> None:
    clock = FakeClock(NOW)
    policy = RetryPolicy(RetrySettings(max_attempts=1))

    async def fn() -> None:
        raise aiohttp.ClientOSError(104, "Connection reset by peer")

    with pytest.raises(UpstreamUnavailable) as info:
        await call_with_retries(
            fn, policy, deadline=NOW + 10, clock=clock, sleep=FakeSleep(clock), upstream="wh"
        )
    assert info.value.code == "connection_error"
    assert isinstance(info.value.__cause__, aiohttp.ClientOSError)
