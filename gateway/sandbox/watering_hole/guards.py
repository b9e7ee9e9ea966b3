"""In front of the REST API: request records, fault injection, rate limit, idempotency."""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from gateway.clock import Clock


@dataclass
class ApiCall:
    """One request the REST API received, and how it was answered."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    json: Any  # the parsed body, or None when absent or not JSON
    at: float
    status: int | None = None  # None while in flight, or when the connection was reset
    outcome: Literal["pending", "answered", "injected", "reset", "replayed"] = "pending"

    @property
    def idempotency_key(self) -> str | None:
        return next((v for k, v in self.headers.items() if k.lower() == "idempotency-key"), None)

    def as_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "idempotency_key": self.idempotency_key,
            "json": self.json,
            "at": self.at,
            "status": self.status,
            "outcome": self.outcome,
        }


class Hold:
    """A request parked until the test releases it (for client timeout tests)."""

    def __init__(self) -> None:
        self.arrived = asyncio.Event()
        self.released = asyncio.Event()
        self.call: ApiCall | None = None

    def release(self) -> None:
        self.released.set()


@dataclass
class Fault:
    """An injected misbehaviour for the next `remaining` matching API calls."""

    kind: Literal["fail", "reset", "hold"]
    remaining: int
    path_contains: str | None = None
    status: int = 503
    code: str = "unavailable"
    message: str = "injected failure"
    retry_after: float | None = None
    hold: Hold | None = None
    after: bool = False  # reset/hold only after the request was carried out


_DEFAULT_CODES = {
    400: "invalid_request",
    401: "invalid_token",
    404: "not_found",
    409: "conversation_closed",
    422: "unprocessable",
    429: "rate_limited",
    500: "internal_error",
    502: "bad_gateway",
    503: "unavailable",
    504: "gateway_timeout",
}


def default_code(status: int) -> str:
    return _DEFAULT_CODES.get(status, "error")


@dataclass
class Faults:
    """The queue of injected faults; the first one matching a path is used."""

    pending: list[Fault] = field(default_factory=list)
    holds: list[Hold] = field(default_factory=list)

    def add(self, fault: Fault) -> None:
        if fault.remaining > 0:
            self.pending.append(fault)
        if fault.hold is not None:
            self.holds.append(fault.hold)

    def take(self, path: str) -> Fault | None:
        """Consume one use of the first fault matching `path`."""
        for fault in self.pending:
            if fault.path_contains is None or fault.path_contains in path:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self.pending.remove(fault)
                return fault
        return None

    def release_all(self) -> None:
        for hold in self.holds:
            hold.release()


class TokenBucket:
    """`rate` requests per second per token, with a burst of `rate`, on the injected clock."""

    def __init__(self, rate: int, clock: Clock) -> None:
        self.rate = rate
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # token -> (tokens, last refill)

    def take(self, token: str) -> int | None:
        """Spend one request; return None if allowed, else the whole seconds to wait."""
        now = self.clock()
        tokens, last = self._buckets.get(token, (float(self.rate), now))
        tokens = min(float(self.rate), tokens + max(0.0, now - last) * self.rate)
        if tokens >= 1.0:
            self._buckets[token] = (tokens - 1.0, now)
            return None
        self._buckets[token] = (tokens, now)
        return max(1, math.ceil((1.0 - tokens) / self.rate))


@dataclass(frozen=True)
class Remembered:
    """A response kept for an Idempotency-Key."""

    status: int
    body: bytes
    content_type: str | None
    expires_at: float


class IdempotencyCache:
    """Original responses by (token, key), kept for `ttl` seconds of the injected clock."""

    def __init__(self, ttl: float, clock: Clock) -> None:
        self.ttl = ttl
        self.clock = clock
        self._entries: dict[tuple[str, str], Remembered] = {}

    def get(self, token: str, key: str) -> Remembered | None:
        now = self.clock()
        for k in [k for k, v in self._entries.items() if v.expires_at <= now]:
            del self._entries[k]
        return self._entries.get((token, key))

    def put(self, token: str, key: str, status: int, body: bytes, content_type: str | None) -> None:
        expires = self.clock() + self.ttl
        self._entries[(token, key)] = Remembered(status, body, content_type, expires)

    def __len__(self) -> int:
        return len(self._entries)
