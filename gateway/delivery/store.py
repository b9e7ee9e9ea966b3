"""The durable state interface: job queue, dedupe keys, dead letters, key-value, locks.

One abstract `Store`, three backends with identical semantics:

- `MemoryStore` (gateway.delivery.memory): one process, nothing survives a restart; tests.
- `SqliteStore` (gateway.delivery.sqlite): embedded default, one file, WAL.
- `RedisStore` (gateway.delivery.redis_store): shared by several gateway instances.

Queue semantics (every backend):

- `enqueue` is atomic per call. A job whose `dedupe_key` was seen within `dedupe_ttl`
  (also earlier in the same call, or by another instance) is skipped (False); jobs
  without a key always enqueue. When it returns, the jobs are durable (per backend).
- Jobs form FIFO queues per `thread_key`. `claim` hands out only the head job of each
  thread whose `not_before` has passed and whose head is not under a live lease, and
  leases it to `owner` until now + lease. Threads are handed out in parallel (also to
  other instances and processes); one thread is strictly in order.
- A lease that expires (its owner died) makes the head claimable again: delivery is
  at-least-once. `Job.attempts` counts the attempts recorded with `retry_later`, not
  redeliveries after a lost lease.
- `complete`, `retry_later` and `dead_letter` act only while `owner` is still the lease
  holder of that job (the lease may have run out as long as nobody claimed the job
  since); otherwise they change nothing, log, and return False.
- Owners must be unique per worker (e.g. "host:pid:worker-3").

Times come from the injected clock (`gateway.clock`), so tests move time by hand.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import secrets
from collections.abc import Generator, Sequence
from contextlib import AbstractAsyncContextManager, suppress
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple, Self

from gateway.clock import Clock, system_clock
from gateway.errors import GatewayError, StoreError
from gateway.ids import unique_id

if TYPE_CHECKING:
    from gateway.settings import StoreSettings

log = logging.getLogger("gateway.delivery.store")

REFRESH_MEMO_SIZE = 50_000  # records kv_refresh remembers (about 10 MB at most)

__all__ = ["DeadLetter", "Job", "LockHandle", "NewJob", "Store", "open_store"]


class Job(NamedTuple):
    """A claimed job: the head of its thread, leased to one owner."""

    id: str
    thread_key: str
    payload: bytes
    attempts: int
    enqueued_at: float


class NewJob(NamedTuple):
    """A job to enqueue."""

    thread_key: str
    payload: bytes
    dedupe_key: str | None = None


@dataclass(frozen=True)
class DeadLetter:
    """A job that failed for good, with every attempt record; replayable."""

    id: str
    thread_key: str
    payload: bytes
    reason: str
    attempts: list[dict[str, Any]] = field(default_factory=list)
    failed_at: float = 0.0


def new_job_id() -> str:
    """Return a fresh job id (32 hex characters, unique across processes and instances)."""
    return unique_id(32)


class Store(abc.ABC):
    """Durable state behind one interface; see the module docstring for the semantics."""

    backend: str = "abstract"

    def __init__(self, clock: Clock = system_clock) -> None:
        self._clock = clock
        self._work = asyncio.Event()
        self._released = asyncio.Event()
        self._opened = False
        self._refreshed: dict[tuple[str, str], tuple[bytes, float]] = {}  # kv_refresh
        self._later: set[asyncio.Future[Any]] = set()  # kv_set_later writes still running

    # -- lifecycle -------------------------------------------------------------------

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect / create the schema; raise StoreError when the backend is unusable."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections; idempotent."""

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise StoreError when the backend does not answer."""

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _check_open(self) -> None:
        if not self._opened:
            raise StoreError(f"{self.backend} store is not open")

    # -- queue -----------------------------------------------------------------------

    @abc.abstractmethod
    async def enqueue(self, jobs: Sequence[NewJob], dedupe_ttl: float) -> list[bool]:
        """Store every job whose dedupe key is unseen (or None); False for duplicates."""

    async def enqueue_and_claim(
        self, jobs: Sequence[NewJob], dedupe_ttl: float, owner: str, lease: float
    ) -> list[bool | Job]:
        """`enqueue`, leasing to `owner` every new job that found its thread empty.

        Such a job is its thread's head and nobody else has it, so a worker of this
        process can deliver it at once, without a `claim` round trip. Per job: False
        (a duplicate), True (queued behind its thread, for `claim`), or the leased Job.
        Backends that cannot do it in the same transaction lease nothing.
        """
        return list(await self.enqueue(jobs, dedupe_ttl))

    @abc.abstractmethod
    async def claim(self, owner: str, limit: int, lease: float) -> list[Job]:
        """Lease up to `limit` claimable thread heads to `owner` for `lease` seconds."""

    @abc.abstractmethod
    async def complete(self, job: Job, owner: str) -> bool:
        """Remove a finished job; False (nothing changed) if `owner` lost the lease."""

    async def complete_and_claim(
        self, job: Job, owner: str, lease: float
    ) -> tuple[bool, list[Job]]:
        """`complete`, then `claim(owner, 1, lease)`: what a worker does between two jobs.

        (completed, claimed). Backends that can do both in one transaction do (SQLite:
        one commit per message fewer while a backlog drains); the claim finds the
        thread's next job too, now that its head is gone. A failed claim after a done
        completion claims nothing.
        """
        done = await self.complete(job, owner)
        try:
            return done, await self.claim(owner, 1, lease)
        except GatewayError as exc:
            log.warning("store unavailable while claiming: %s", exc)
            return done, []

    @abc.abstractmethod
    async def retry_later(
        self, job: Job, owner: str, not_before: float, attempt: dict[str, Any]
    ) -> bool:
        """Keep the job at its thread's head until `not_before`; record the attempt."""

    @abc.abstractmethod
    async def dead_letter(self, job: Job, owner: str, reason: str, attempt: dict[str, Any]) -> bool:
        """Move the job to the dead letters; the next job of its thread may proceed."""

    @abc.abstractmethod
    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """Return dead letters, most recent first."""

    @abc.abstractmethod
    async def get_dead(self, id: str) -> DeadLetter | None:
        """Return one dead letter."""

    @abc.abstractmethod
    async def replay_dead(self, id: str) -> bool:
        """Re-enqueue a dead letter at the tail of its thread, attempts reset, no dedupe."""

    @abc.abstractmethod
    async def drop_dead(self, id: str) -> bool:
        """Delete a dead letter."""

    @abc.abstractmethod
    async def depth(self) -> int:
        """Return the number of unfinished jobs (leased ones included)."""

    @abc.abstractmethod
    async def dead_count(self) -> int:
        """Return the number of dead letters."""

    async def wait_for_work(self, timeout: float) -> None:  # noqa: ASYNC109 (contract)
        """Return when this process enqueues or frees work, or after `timeout` seconds."""
        if not self._work.is_set():
            try:  # not asyncio.wait_for: on 3.11 it can swallow a cancel racing the event
                async with asyncio.timeout(timeout):
                    await self._work.wait()
            except TimeoutError:
                return
        self._work.clear()

    def notify_work(self) -> None:
        """Wake this process's workers waiting in `wait_for_work`."""
        self._work.set()

    # -- key-value -------------------------------------------------------------------

    @abc.abstractmethod
    async def kv_get(self, ns: str, key: str) -> bytes | None:
        """Return the live value, or None."""

    @abc.abstractmethod
    async def kv_set(self, ns: str, key: str, value: bytes, ttl: float | None) -> None:
        """Set a value; `ttl` None keeps it forever."""

    @abc.abstractmethod
    async def kv_add(self, ns: str, key: str, value: bytes, ttl: float | None) -> bool:
        """Set a value only if no live value exists; True when set."""

    @abc.abstractmethod
    async def kv_delete(self, ns: str, key: str) -> None:
        """Delete a value (absent is fine)."""

    def kv_set_later(self, ns: str, key: str, value: bytes, ttl: float | None) -> None:
        """`kv_set` without waiting for it, for a record whose loss costs a repeat only.

        A reply's answer, kept for CXone's repeats of that reply: the response does not
        wait for its write, and SQLite adds it to the next transaction instead of
        committing it alone (`SqliteStore`). Reads issued after this see the value. It
        never raises: a failed write (a closed store too) is logged. `close` finishes
        the writes still running.
        """
        try:
            write = self._set_later(ns, key, value, ttl)
        except StoreError as exc:
            log.warning("a write made without waiting failed: %s", exc)
            return
        if write is not None:
            self._later.add(write)
            write.add_done_callback(self._later_done)

    def _set_later(
        self, ns: str, key: str, value: bytes, ttl: float | None
    ) -> asyncio.Future[Any] | None:
        """Start a `kv_set_later` write: its future, or None when it is done already."""
        self._check_open()
        return asyncio.ensure_future(self.kv_set(ns, key, value, ttl))

    def _later_done(self, write: asyncio.Future[Any]) -> None:
        self._later.discard(write)
        if not write.cancelled() and (exc := write.exception()) is not None:
            log.warning("a write made without waiting failed: %s", exc)

    async def _finish_later(self) -> None:
        """Wait for the `kv_set_later` writes still running (a backend's `close`)."""
        while self._later:
            await asyncio.gather(*self._later, return_exceptions=True)

    async def kv_refresh(
        self, ns: str, key: str, value: bytes, ttl: float, every: float | None = None
    ) -> None:
        """`kv_set` for records confirmed again and again (a thread's channel, its contact).

        The write is left out when this store object wrote the same value less than
        `every` seconds (default: a tenth of `ttl`) ago, so the record still lives at
        least `ttl - every` seconds past its last confirmation. Another instance that
        writes a different value meanwhile is overwritten again only when this one
        sees a different value or `every` has passed.
        """
        now = self._clock()
        slot = (ns, key)
        memo = self._refreshed
        last = memo.get(slot)
        if last is not None and last[0] == value and now - last[1] < (every or ttl / 10):
            return
        await self.kv_set(ns, key, value, ttl)
        memo.pop(slot, None)  # re-insert: the dict stays ordered oldest first
        memo[slot] = (value, now)
        if len(memo) > REFRESH_MEMO_SIZE:
            del memo[next(iter(memo))]

    # -- locks -----------------------------------------------------------------------

    def lock(self, name: str, ttl: float) -> LockHandle:
        """Return a cross-instance mutex context manager yielding True when acquired.

        Acquisition waits up to `ttl` seconds (real time); the lock itself expires
        `ttl` seconds (injected clock) after it was taken, so a dead holder cannot
        block others for long. Both `async with store.lock(n, t) as ok` and
        `async with await store.lock(n, t) as ok` work.
        """
        return LockHandle(self, name, ttl)

    @abc.abstractmethod
    async def _lock_try(self, name: str, token: str, ttl: float) -> bool:
        """Take the lock if free or expired."""

    @abc.abstractmethod
    async def _lock_release(self, name: str, token: str) -> None:
        """Release the lock if `token` still holds it."""

    def _notify_released(self) -> None:
        event, self._released = self._released, asyncio.Event()
        event.set()


class LockHandle(AbstractAsyncContextManager[bool]):
    """The context manager returned by `Store.lock`."""

    def __init__(self, store: Store, name: str, ttl: float) -> None:
        self._store = store
        self._name = name
        self._ttl = ttl
        self._token: str | None = None

    def __await__(self) -> Generator[Any, None, LockHandle]:
        return self._self().__await__()

    async def _self(self) -> LockHandle:
        return self

    async def __aenter__(self) -> bool:
        store = self._store
        token = secrets.token_hex(16)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._ttl
        pause = 0.01
        while True:
            released = store._released  # taken before trying: no lost wake-up
            if await store._lock_try(self._name, token, self._ttl):
                self._token = token
                return True
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            # Local releases wake us at once; other processes' releases are polled.
            with suppress(TimeoutError):
                async with asyncio.timeout(min(pause, remaining)):
                    await released.wait()
            pause = min(pause * 2, 0.25)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        token, self._token = self._token, None
        if token is None:
            return
        try:
            await self._store._lock_release(self._name, token)
        except StoreError as err:  # the lock expires on its own; do not mask the body
            log.warning("could not release lock %r: %s", self._name, err)
        finally:
            self._store._notify_released()


def open_store(settings: StoreSettings, clock: Clock = system_clock) -> Store:
    """Build the configured backend (not yet opened: `await store.open()`)."""
    if settings.backend == "memory":
        from gateway.delivery.memory import MemoryStore

        return MemoryStore(clock=clock)
    if settings.backend == "sqlite":
        from gateway.delivery.sqlite import SqliteStore

        return SqliteStore(settings.path, clock=clock)
    if settings.backend == "redis":
        from gateway.delivery.redis_store import RedisStore

        if settings.url is None:
            raise StoreError("store backend 'redis' needs store.url (redis://...)")
        return RedisStore(settings.url, prefix=settings.prefix, clock=clock)
    raise StoreError(f"unknown store backend {settings.backend!r}")
