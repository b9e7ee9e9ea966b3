"""Webhook deliveries: batching, signing, sending, retrying on the clock, the handshake."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp

from gateway import jsonutil
from gateway.sandbox.watering_hole.config import WateringHoleConfig
from gateway.sandbox.watering_hole.records import SimError, new_id
from gateway.sandbox.watering_hole.state import Event

SIGNATURE_HEADER = "WH-Signature"


def signature_header(raw_body: bytes, secrets_: Sequence[str], t: int) -> str:
    """Return `t=<t>,v1=<hex>[,v1=<hex>...]`, one v1 per secret, over `<t>.<raw body>`."""
    signed = f"{t}.".encode() + raw_body
    parts = [f"t={t}"]
    for secret in secrets_:
        parts.append("v1=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest())
    return ",".join(parts)


@dataclass
class Delivery:
    """One batch of events; it keeps its id and events across attempts."""

    id: str
    events: list[Event]
    attempt: int = 0  # the last attempt made
    state: Literal["new", "retrying", "delivered", "dropped"] = "new"
    next_at: float | None = None  # clock time of the next retry

    @property
    def event_ids(self) -> list[str]:
        return [e["id"] for e in self.events]

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "attempt": self.attempt,
            "state": self.state,
            "next_at": self.next_at,
            "event_ids": self.event_ids,
        }


@dataclass
class DeliveryAttempt:
    """The record of one POST of a delivery, for tests and the sandbox page."""

    delivery_id: str
    attempt: int
    events: list[Event]
    url: str
    at: float
    body: bytes
    headers: dict[str, str]
    status: int | None = None  # the receiver's HTTP status; None when it never answered
    error: str | None = None  # why it failed without a status (timeout, connection reset)
    outcome: Literal["delivered", "retrying", "dropped"] = "retrying"

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def event_ids(self) -> list[str]:
        return [e["id"] for e in self.events]

    def as_json(self) -> dict[str, Any]:
        return {
            "delivery_id": self.delivery_id,
            "attempt": self.attempt,
            "event_ids": self.event_ids,
            "url": self.url,
            "at": self.at,
            "status": self.status,
            "error": self.error,
            "outcome": self.outcome,
        }


@dataclass
class HandshakeResult:
    """The record of one subscription handshake."""

    url: str
    challenge: str
    ok: bool
    status: int | None
    error: str | None = None
    at: float = 0.0


class Dispatcher:
    """Queue events, send them in signed batches, retry failures on the configured schedule."""

    def __init__(self, config: WateringHoleConfig, changed: Callable[[], None]) -> None:
        self.config = config
        self.clock = config.clock
        self._changed = changed
        self.webhook_url: str | None = config.webhook_url
        self.webhook_secrets: tuple[str, ...] = tuple(config.webhook_secrets)
        self.queue: list[Event] = []
        self.deliveries: dict[str, Delivery] = {}
        self.attempts: list[DeliveryAttempt] = []
        self.handshakes: list[HandshakeResult] = []
        self.events_created = 0
        self.session: aiohttp.ClientSession | None = None
        self._send_lock = asyncio.Lock()

    def enqueue(self, event: Event) -> None:
        self.queue.append(event)
        self.events_created += 1
        self._changed()

    def build(
        self,
        events: Sequence[Event],
        *,
        delivery_id: str | None = None,
        attempt: int = 1,
        t: int | None = None,
    ) -> tuple[bytes, dict[str, str]]:
        """Serialise and sign a delivery without sending it."""
        body = jsonutil.dumps(
            {
                "delivery": {"id": delivery_id or new_id("dlv_"), "attempt": attempt},
                "account_id": self.config.account_id,
                "events": list(events),
            }
        )
        stamp = int(self.clock()) if t is None else t
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "WateringHole-Webhooks/1.0",
            SIGNATURE_HEADER: signature_header(body, self.webhook_secrets, stamp),
        }
        return body, headers

    def _session(self) -> aiohttp.ClientSession:
        if self.session is None:
            raise RuntimeError("the simulator is not started (serve sim.app or await sim.start())")
        return self.session

    async def flush(self) -> list[DeliveryAttempt]:
        """Send every queued event, in batches of at most `batch_max`; keep them if no URL."""
        async with self._send_lock:
            if not self.webhook_url or not self.queue:
                return []
            events, self.queue = self.queue, []
            made = []
            size = self.config.batch_max
            for start in range(0, len(events), size):
                delivery = Delivery(new_id("dlv_"), events[start : start + size])
                self.deliveries[delivery.id] = delivery
                made.append(await self._send(delivery, self.webhook_url))
            return made

    def due(self) -> list[Delivery]:
        """Return the deliveries whose retry time has come, oldest first."""
        now = self.clock()
        waiting = [d for d in self.deliveries.values() if d.state == "retrying"]
        return sorted(
            (d for d in waiting if d.next_at is not None and d.next_at <= now),
            key=lambda d: d.next_at or 0.0,
        )

    def next_retry_at(self) -> float | None:
        times = [d.next_at for d in self.deliveries.values() if d.state == "retrying"]
        return min((t for t in times if t is not None), default=None)

    async def run_due_retries(self) -> list[DeliveryAttempt]:
        """Send again every delivery whose retry is due by the clock."""
        async with self._send_lock:
            if not self.webhook_url:
                return []
            return [await self._send(d, self.webhook_url) for d in self.due()]

    async def _send(self, delivery: Delivery, url: str) -> DeliveryAttempt:
        delivery.attempt += 1
        body, headers = self.build(
            delivery.events, delivery_id=delivery.id, attempt=delivery.attempt
        )
        record = DeliveryAttempt(
            delivery.id, delivery.attempt, delivery.events, url, self.clock(), body, headers
        )
        timeout = aiohttp.ClientTimeout(total=self.config.delivery_timeout)
        try:
            async with self._session().post(url, data=body, headers=headers, timeout=timeout) as r:
                record.status = r.status
                await r.read()
        except TimeoutError:
            record.error = "timeout"
        except aiohttp.ClientError as exc:
            record.error = type(exc).__name__
        schedule = self.config.retry_schedule
        delivery.next_at = None
        if record.ok:
            delivery.state = record.outcome = "delivered"
        elif delivery.attempt <= len(schedule):
            delivery.state = record.outcome = "retrying"
            delivery.next_at = self.clock() + schedule[delivery.attempt - 1]
        else:
            delivery.state = record.outcome = "dropped"
        self.attempts.append(record)
        self._changed()
        return record

    async def subscribe(self, url: str | None = None) -> bool:
        """Run the handshake against `url` (default: the current one); adopt `url` on success."""
        target = url or self.webhook_url
        if not target:
            raise SimError(400, "invalid_request", "no webhook url to subscribe")
        challenge = secrets.token_urlsafe(16)
        params = {
            "wh.mode": "subscribe",
            "wh.challenge": challenge,
            "wh.verify_token": self.config.verify_token,
        }
        result = HandshakeResult(target, challenge, False, None, at=self.clock())
        timeout = aiohttp.ClientTimeout(total=self.config.delivery_timeout)
        try:
            async with self._session().get(target, params=params, timeout=timeout) as r:
                result.status = r.status
                echoed = await r.read()
                result.ok = r.status == 200 and hmac.compare_digest(echoed, challenge.encode())
        except TimeoutError:
            result.error = "timeout"
        except aiohttp.ClientError as exc:
            result.error = type(exc).__name__
        if result.ok:
            self.webhook_url = target
        self.handshakes.append(result)
        self._changed()
        return result.ok

    def stats(self) -> dict[str, int]:
        states = [d.state for d in self.deliveries.values()]
        return {
            "events": self.events_created,
            "queued_events": len(self.queue),
            "attempts": len(self.attempts),
            "delivered": states.count("delivered"),
            "retrying": states.count("retrying"),
            "dropped": states.count("dropped"),
        }
