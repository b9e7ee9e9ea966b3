"""Queue workers: deliver queued inbound events to CXone, in order per thread.

Retryable failures (connection errors, timeouts, 429, 502-504) wait with backoff and
jitter (Retry-After honoured) while the thread's later messages wait behind them; final
failures and exhausted retries become dead letters, which unblocks the thread. When the
gateway cannot get a CXone token at all (bad or rotated access key, token endpoint
down), the message is not at fault: that is retried like an outage, not dead-lettered.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from gateway import lookups, thread_state
from gateway.cxone import threads
from gateway.delivery.jobs import InboundJob, thread_key
from gateway.delivery.store import Job
from gateway.errors import (
    GatewayError,
    MappingRuntimeError,
    UpstreamError,
    UpstreamRejected,
    UpstreamUnavailable,
)
from gateway.mapping import Ignored, InboundCall
from gateway.retry import RetryPolicy

if TYPE_CHECKING:
    from gateway.runtime import Gateway

log = logging.getLogger("gateway.delivery")


class Workers:
    """A pool of delivery tasks sharing one store."""

    def __init__(self, gateway: Gateway) -> None:
        self._gw = gateway
        self._owner = f"{uuid.uuid4().hex[:12]}"
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self._policy = RetryPolicy(gateway.settings.delivery.retry)
        self._direct: deque[tuple[Job, InboundJob | None]] = deque()
        self._idle: deque[asyncio.Future[bool]] = deque()  # one per waiting worker
        # a wake-up found no idle worker: the next worker to finish claims (see `_run`)
        self._missed = False
        self._dispatcher: asyncio.Task[None] | None = None
        # cleared when a look at the store finds a job waiting; set when one finds none
        # or a worker goes idle (`behind`, `paced`)
        self._caught_up = asyncio.Event()
        self._caught_up.set()
        self._holding = 0  # webhooks waiting in `paced`
        self._running = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.delivered = 0

    @property
    def owner(self) -> str:
        return self._owner

    @property
    def direct_owner(self) -> str:
        """The lease owner of jobs handed over at intake (`offer`)."""
        return f"{self._owner}-direct"

    def can_take(self) -> bool:
        """Whether intake may lease new jobs to this process and `offer` them.

        Bounded so that an offered job waits for a free worker far less than its lease:
        one that waited half of it is left to expire and be claimed (see `_run`).
        """
        return self._running and len(self._direct) < 2 * len(self._tasks)

    @property
    def behind(self) -> bool:
        """Whether the workers are draining a queue: every one is busy, and the last look
        at the store (a claim, or the claim of a completion) found a job waiting."""
        return not self._caught_up.is_set() and not self._idle

    async def paced(self, limit: float) -> float:
        """Wait while the workers drain a queue, `limit` seconds at most; the time waited.

        Intake calls this before writing a delivery's events. Past its maximum the
        gateway would otherwise accept deliveries faster than it delivers them, and the
        events that find every worker busy are queued, claimed, read back and decoded
        later, at about a third more CPU each (batches, docs/performance.md); held
        briefly instead, they are written when the workers catch up and mostly handed
        over. Nothing is at risk meanwhile: the platform has no answer yet, and the
        events are written anyway once `limit` has passed. It waits only while every
        worker is busy and a look at the store found a job waiting (`behind`), and ends
        as soon as a look finds none or a worker goes idle: at moderate load, or with
        jobs that wait for a retry, nothing is held back. At most as many webhooks wait
        as there are workers; the next ones are written at once: a platform sending
        faster than the gateway delivers, on ever more connections, would otherwise
        have thousands waiting (at 4,300 single events/s, past the maximum, holding
        them all cost 15 % more CPU per event than not holding at all).
        """
        if limit <= 0 or not self.behind or self._holding >= len(self._tasks):
            return 0.0
        metrics = self._gw.metrics
        metrics.intake_holding.inc()
        self._holding += 1
        loop = self._loop or asyncio.get_running_loop()
        started = loop.time()
        try:
            async with asyncio.timeout(limit):
                await self._caught_up.wait()
        except TimeoutError:
            pass
        finally:
            self._holding -= 1
            metrics.intake_holding.dec()
        waited = loop.time() - started
        metrics.intake_hold.observe(waited)
        return waited

    def _saw_queue(self, found: bool) -> None:
        """Record whether a look at the store found queued work (`behind`)."""
        if found:
            self._caught_up.clear()
        else:
            self._caught_up.set()

    def offer(self, job: Job, record: InboundJob | None = None) -> None:
        """Hand over a job leased to `direct_owner` at intake (no claim, no decoding)."""
        self._direct.append((job, record))
        self._wake_one()

    def start(self) -> None:
        settings = self._gw.settings
        if settings.delivery.lease_seconds <= settings.cxone.timeouts.total:
            # a lease running out mid-call lets another worker send the same message
            log.warning(
                "delivery.lease_seconds (%s) should exceed cxone.timeouts.total (%s)",
                settings.delivery.lease_seconds,
                settings.cxone.timeouts.total,
            )
        n = settings.delivery.workers
        self._loop = asyncio.get_running_loop()  # once: on 3.11 each call costs a getpid()
        self._running = True
        for i in range(n):
            self._tasks.append(
                asyncio.create_task(self._run(f"{self._owner}-{i}"), name=f"worker-{i}")
            )
        self._dispatcher = asyncio.create_task(self._dispatch(), name="worker-dispatch")

    async def stop(self) -> None:
        """Finish the jobs in hand, then stop (unfinished leases expire for other instances)."""
        self._stopping.set()
        self._running = False  # intake stops handing over; what was handed over is delivered
        self._caught_up.set()  # and holds nothing back
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._dispatcher
            self._dispatcher = None
        while self._idle:
            self._wake_one()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks.clear()

    async def _run(self, owner: str) -> None:
        store = self._gw.store
        settings = self._gw.settings.delivery
        claimed: list[Job] = []  # the next job, claimed as the last one completed
        look = True  # ask the store for work: at start, after a claimed job, when told to
        while not self._stopping.is_set() or self._direct or claimed:
            if self._direct and not claimed:  # a job claimed already goes first
                job, record = self._direct.popleft()
                if self._gw.clock() - job.enqueued_at < settings.lease_seconds / 2:
                    await self._deliver(job, self.direct_owner, record)
                else:  # waited too long: let the lease expire and the job be claimed
                    log.warning("job %s waited too long for a worker; left to the queue", job.id)
                # no claim after a job handed over at intake: every store notification
                # and poll woke an idle worker to claim, or set `_missed` (with SQLite a
                # claim is a transaction, and at this point it would almost always find
                # nothing)
                continue
            if claimed:
                jobs, claimed = claimed, []
            elif look or self._missed:
                look = self._missed = False
                try:
                    jobs = await store.claim(owner, 1, settings.lease_seconds)
                except GatewayError as exc:
                    log.warning("store unavailable while claiming: %s", exc)
                    await self._pause(settings.poll_interval * 4)
                    look = True
                    continue
                self._saw_queue(bool(jobs))
                if not jobs:
                    look = await self._wait_idle()
                    continue
            else:
                look = await self._wait_idle()
                continue
            self._announce()  # there may be more: another idle worker looks
            looked = False  # a completion looked for the next job
            for job in jobs:
                # while a backlog drains, a delivered job is completed and the next one
                # claimed in one store operation (one transaction with SQLite)
                next_too = not claimed and not self._stopping.is_set()
                looked |= next_too
                claimed += await self._deliver(job, owner, claim_next=next_too)
            if looked:
                self._saw_queue(bool(claimed))
            look = True

    async def _dispatch(self) -> None:
        """Wake one idle worker per store notification and per poll interval.

        Waking every idle worker on each new job made all of them claim at once and all
        but one find nothing; one is woken instead, and a worker that claimed a job
        wakes the next. The poll interval finds retries whose wait ended and jobs other
        instances queued or left. When no worker is idle, the first to finish claims
        (`_missed`); otherwise a worker that delivered a job handed over at intake
        waits without asking the store (with SQLite a claim is a transaction).
        """
        store = self._gw.store
        interval = self._gw.settings.delivery.poll_interval
        while not self._stopping.is_set():  # stop() also cancels; this ends it regardless
            await store.wait_for_work(interval)
            self._announce()

    async def _wait_idle(self) -> bool:
        """Wait to be woken; True when told to claim, False for a handed-over job or stop."""
        self._caught_up.set()  # a free worker: intake need not wait (`paced`)
        if self._stopping.is_set():  # stop() has woken the idle ones already
            return False
        waiter: asyncio.Future[bool] = (self._loop or asyncio.get_running_loop()).create_future()
        self._idle.append(waiter)
        try:
            return await waiter
        finally:
            if not waiter.done():  # cancelled
                self._idle.remove(waiter)

    def _wake_one(self, look: bool = False) -> bool:
        """Wake one idle worker (`look`: to claim); False when every worker is busy."""
        while self._idle:
            waiter = self._idle.popleft()
            if not waiter.done():
                waiter.set_result(look)
                return True
        return False

    def _announce(self) -> None:
        """There may be queued work: wake an idle worker to claim it, or the next to finish."""
        if not self._wake_one(look=True):
            self._missed = True

    async def _deliver(
        self, job: Job, owner: str, record: InboundJob | None = None, *, claim_next: bool = False
    ) -> list[Job]:
        try:
            return await self.process(job, owner, record, claim_next=claim_next)
        except GatewayError as exc:  # e.g. the store went away mid-job
            # the job stays leased; when the lease runs out it is tried again
            log.warning("job %s left for a later attempt: %s", job.id, exc)
        except Exception:  # never let one job kill the worker
            log.exception("worker failed on job %s", job.id)
        return []

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopping.wait()

    async def process(
        self, job: Job, owner: str, record: InboundJob | None = None, *, claim_next: bool = False
    ) -> list[Job]:
        """Deliver one job and record the outcome in the store.

        `record`: the job's payload already decoded (a job handed over at intake).
        `claim_next`: once delivered, complete the job and claim the next for `owner` in
        one store operation; the claimed jobs are returned (else nothing is claimed).
        """
        gw = self._gw
        started = time.monotonic()
        if record is None:
            try:
                record = InboundJob.decode(job.payload)
            except Exception:
                await gw.store.dead_letter(
                    job, owner, "undecodable job payload", _attempt(gw, "decode")
                )
                return []
        routing = gw.routing
        mapping = routing.mappings.get(record.mapping)
        if mapping is None:
            reason = f"mapping {record.mapping!r} is no longer loaded"
            await self._dead(job, owner, record, reason, kind="mapping_unloaded")
            return []
        call = record.call
        if call is None or record.version != mapping.version:
            # rendered here, not at intake: lookups may call the platform, media URLs are
            # signed for CXone's fetch, thread state is kept (CompiledMapping.render_inbound)
            try:
                io = lookups.WorkerIO(gw, mapping)
                routed = await mapping.render_inbound(record.as_item(), io)
            except MappingRuntimeError as exc:
                await self._dead(job, owner, record, str(exc), kind="mapping_error")
                return []
            if isinstance(routed, Ignored):
                await gw.store.complete(job, owner)
                return []
            call = routed
            lookups.count(gw, mapping.name, call.lookups)
        channel_id = routing.channel_id(mapping.name, call.channel)
        if channel_id is None:
            await self._dead(
                job,
                owner,
                record,
                f"no CXone channel is bound to {mapping.name}/{call.channel} in gateway.yaml",
                kind="no_channel",
            )
            return []
        tkey = thread_key(mapping.name, call.channel, call.thread_id)
        path = call.path.replace("{channel_id}", _quote(channel_id))
        if "{contact_id}" in path:
            contact = await threads.contact_of(gw.store, tkey)
            if contact is None:
                log.warning(
                    "no CXone contact known for thread; %s not sent",
                    call.action,
                    extra={"mapping": mapping.name, "route": call.route, "outcome": "skipped"},
                )
                gw.metrics.messages.labels(
                    mapping.name, call.channel, call.route, "inbound", "skipped"
                ).inc()
                await gw.store.complete(job, owner)
                return []
            path = path.replace("{contact_id}", _quote(contact))
        try:
            if gw.cxone.auth.cached() is None:
                await gw.cxone.auth.token()
        except UpstreamError as exc:  # no token: an outage of ours, not the message's fault
            await self._retry(job, owner, record, call, exc, "CXone authentication failed: ")
            return []
        body = await threads.for_cxone(gw.store, call)  # proactive: on CXone's thread
        try:
            result = await gw.cxone.call(call.method, path, body)
        except UpstreamUnavailable as exc:
            await self._retry(job, owner, record, call, exc)
            return []
        except UpstreamRejected as exc:
            await self._dead(
                job,
                owner,
                record,
                _describe("CXone refused", exc),
                call,
                status=exc.status,
                kind="cxone_refused",
            )
            return []
        if call.state:
            await thread_state.save(
                gw.store, mapping.name, call.channel, call.thread_id, call.state, gw.clock()
            )
        if call.action == "create_message":
            await threads.remember_contact(gw.store, tkey, result.body)
            await threads.remember_channel(gw.store, mapping.name, call.thread_id, channel_id)
        if claim_next:
            lease = gw.settings.delivery.lease_seconds
            done, claimed = await gw.store.complete_and_claim(job, owner, lease)
        else:
            done, claimed = await gw.store.complete(job, owner), []
        if not done:
            # our lease ran out during the call and another worker took the job: it will
            # be sent again (CXone drops the repeat by idOnExternalPlatform)
            log.warning(
                "delivered after losing the lease; the job may be delivered again",
                extra={"mapping": mapping.name, "route": call.route, "outcome": "lease_lost"},
            )
            return claimed
        self.delivered += 1
        gw.metrics.messages.labels(
            mapping.name, call.channel, call.route, "inbound", "delivered"
        ).inc()
        gw.metrics.delivery_latency.labels(mapping.name, call.action).observe(
            max(0.0, gw.clock() - record.received_at)
        )
        if log.isEnabledFor(logging.INFO):  # the record's fields cost more than the check
            log.info(
                "delivered to CXone",
                extra={
                    "mapping": mapping.name,
                    "channel": channel_id,
                    "route": call.route,
                    "platform_id": call.message_id,
                    "outcome": "delivered",
                    "duration_ms": round((time.monotonic() - started) * 1000, 1),
                },
            )
        return claimed

    async def _retry(
        self,
        job: Job,
        owner: str,
        record: InboundJob,
        call: InboundCall,
        exc: UpstreamError,
        what: str = "",
    ) -> None:
        gw = self._gw
        attempt = job.attempts + 1  # this attempt's number (1-based)
        if not self._policy.attempts_left(attempt):
            await self._dead(
                job,
                owner,
                record,
                _describe(f"out of retries after {attempt} attempts, last", exc, what),
                call,
                status=exc.status,
                kind="out_of_retries",
            )
            return
        delay = self._policy.delay(attempt, exc.retry_after)
        gw.metrics.retries.labels("cxone", str(exc.status or exc.code or "connection")).inc()
        await gw.store.retry_later(
            job,
            owner,
            gw.clock() + delay,
            _attempt(gw, _describe("", exc, what), status=exc.status),
        )

    async def _dead(
        self,
        job: Job,
        owner: str,
        record: InboundJob,
        reason: str,
        call: InboundCall | None = None,
        *,
        status: int | None = None,
        kind: str,
    ) -> None:
        gw = self._gw
        if not await gw.store.dead_letter(job, owner, reason, _attempt(gw, reason, status)):
            return  # lease lost: another worker owns the job now
        gw.metrics.dead_letters.labels(record.mapping, kind).inc()  # few, stable label values
        log.error(
            "moved to dead letters: %s",
            reason,
            extra={
                "mapping": record.mapping,
                "route": call.route if call else None,
                "outcome": "dead",
            },
        )


def _attempt(gw: Gateway, outcome: str, status: int | None = None) -> dict[str, Any]:
    return {"at": gw.clock(), "outcome": outcome[:500], "status": status}


def _describe(prefix: str, exc: UpstreamError, what: str = "") -> str:
    """Say what went wrong, most telling part first (tables cut long reasons)."""
    head = f"HTTP {exc.status}" if exc.status is not None else (exc.code or "error")
    text = f"{what}{exc.message}"
    return f"{prefix} ({head}): {text}" if prefix else f"{head}: {text}"


@functools.lru_cache(maxsize=4096)  # channel ids are few, contact ids repeat per thread
def _quote(value: str) -> str:
    return quote(value, safe="")


Factory = Callable[["Gateway"], Workers]
