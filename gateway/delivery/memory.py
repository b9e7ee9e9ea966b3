"""In-process store for tests and single-shot tools: same semantics, nothing durable.

Claimable threads are found through a heap of (ready_at, order, thread) entries, one
pushed whenever a thread's ready_at or order changes; an entry that no longer matches
its thread is dropped when it reaches the top. A claim therefore costs O(log n), not a
scan and sort of every thread with jobs (the backlog of a benchmark: 500 threads).
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.clock import Clock, system_clock
from gateway.delivery.store import DeadLetter, Job, NewJob, Store, log, new_job_id


@dataclass
class _Rec:
    id: str
    thread_key: str
    payload: bytes
    enqueued_at: float
    attempts: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Thread:
    jobs: deque[_Rec]
    ready_at: float  # not_before of the head, or the end of its lease
    order: int  # tie-breaker: when the thread last became ready
    owner: str | None = None
    leased_id: str | None = None


class MemoryStore(Store):
    """Everything in dicts; every method runs without awaiting, hence atomically."""

    backend = "memory"

    def __init__(self, clock: Clock = system_clock) -> None:
        super().__init__(clock)
        self._threads: dict[str, _Thread] = {}
        self._ready: list[tuple[float, int, str]] = []  # heap; see the module docstring
        self._dedupe: dict[str, float] = {}
        self._dead: dict[str, tuple[int, DeadLetter]] = {}
        self._kv: dict[tuple[str, str], tuple[bytes, float | None]] = {}
        self._locks: dict[str, tuple[str, float]] = {}
        self._seq = 0
        self._last_purge = float("-inf")

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    def _schedule(self, key: str, thread: _Thread) -> None:
        """Record the thread's new (ready_at, order); older entries become stale."""
        if len(self._ready) > 4 * len(self._threads) + 64:  # mostly stale: rebuild
            self._ready = [(t.ready_at, t.order, k) for k, t in self._threads.items()]
            heapq.heapify(self._ready)
        heapq.heappush(self._ready, (thread.ready_at, thread.order, key))

    async def open(self) -> None:
        self._opened = True

    async def close(self) -> None:
        self._opened = False

    async def ping(self) -> None:
        self._check_open()

    # -- queue -----------------------------------------------------------------------

    def _push(self, rec: _Rec, now: float, lease: tuple[str, float] | None = None) -> bool:
        """Append to the thread; True when `lease` was given and the thread was empty."""
        thread = self._threads.get(rec.thread_key)
        if thread is None:
            thread = _Thread(deque([rec]), now, self._next())
            self._threads[rec.thread_key] = thread
            if lease is not None:
                thread.owner, thread.leased_id = lease[0], rec.id
                thread.ready_at = now + lease[1]
            self._schedule(rec.thread_key, thread)
            return lease is not None
        else:
            thread.jobs.append(rec)
        return False

    async def enqueue(self, jobs: Sequence[NewJob], dedupe_ttl: float) -> list[bool]:
        return [r is not False for r in self._enqueue(jobs, dedupe_ttl, None)]

    async def enqueue_and_claim(
        self, jobs: Sequence[NewJob], dedupe_ttl: float, owner: str, lease: float
    ) -> list[bool | Job]:
        return self._enqueue(jobs, dedupe_ttl, (owner, lease))

    def _enqueue(
        self, jobs: Sequence[NewJob], dedupe_ttl: float, lease: tuple[str, float] | None
    ) -> list[bool | Job]:
        self._check_open()
        now = self._clock()
        results: list[bool | Job] = []
        for job in jobs:
            if job.dedupe_key is not None:
                expires = self._dedupe.get(job.dedupe_key)
                if expires is not None and expires > now:
                    results.append(False)
                    continue
                self._dedupe[job.dedupe_key] = now + dedupe_ttl
            rec = _Rec(new_job_id(), job.thread_key, job.payload, now)
            if self._push(rec, now, lease):
                results.append(Job(rec.id, rec.thread_key, rec.payload, 0, now))
            else:
                results.append(True)
        if now - self._last_purge >= 60.0:
            self._last_purge = now
            self._dedupe = {k: v for k, v in self._dedupe.items() if v > now}
        if any(r is True for r in results):
            self.notify_work()
        return results

    async def claim(self, owner: str, limit: int, lease: float) -> list[Job]:
        self._check_open()
        now = self._clock()
        out: list[Job] = []
        ready = self._ready
        while ready and len(out) < limit and ready[0][0] <= now:
            ready_at, order, key = heapq.heappop(ready)
            thread = self._threads.get(key)
            if thread is None or thread.ready_at != ready_at or thread.order != order:
                continue  # stale: the thread changed since this entry was pushed
            head = thread.jobs[0]
            thread.ready_at = now + lease
            thread.owner = owner
            thread.leased_id = head.id
            self._schedule(key, thread)  # claimable again when the lease runs out
            out.append(Job(head.id, key, head.payload, len(head.attempts), head.enqueued_at))
        return out

    def _held(self, job: Job, owner: str, op: str) -> _Thread | None:
        thread = self._threads.get(job.thread_key)
        if thread is None or thread.owner != owner or thread.leased_id != job.id:
            log.warning("%s ignored: %s no longer holds the lease on job %s", op, owner, job.id)
            return None
        return thread

    def _pop_head(self, key: str, thread: _Thread, now: float) -> _Rec:
        rec = thread.jobs.popleft()
        if thread.jobs:
            thread.ready_at, thread.order = now, self._next()
            thread.owner = thread.leased_id = None
            self._schedule(key, thread)
            self.notify_work()
        else:
            del self._threads[key]
        return rec

    async def complete(self, job: Job, owner: str) -> bool:
        self._check_open()
        thread = self._held(job, owner, "complete")
        if thread is None:
            return False
        self._pop_head(job.thread_key, thread, self._clock())
        return True

    async def retry_later(
        self, job: Job, owner: str, not_before: float, attempt: dict[str, Any]
    ) -> bool:
        self._check_open()
        thread = self._held(job, owner, "retry_later")
        if thread is None:
            return False
        thread.jobs[0].attempts.append(dict(attempt))
        thread.ready_at, thread.order = not_before, self._next()
        thread.owner = thread.leased_id = None
        self._schedule(job.thread_key, thread)
        return True

    async def dead_letter(self, job: Job, owner: str, reason: str, attempt: dict[str, Any]) -> bool:
        self._check_open()
        thread = self._held(job, owner, "dead_letter")
        if thread is None:
            return False
        now = self._clock()
        rec = self._pop_head(job.thread_key, thread, now)
        attempts = [*rec.attempts, dict(attempt)]
        dead = DeadLetter(rec.id, rec.thread_key, rec.payload, reason, attempts, now)
        self._dead[rec.id] = (self._next(), dead)
        return True

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        self._check_open()
        ordered = sorted(self._dead.values(), key=lambda item: item[0], reverse=True)
        return [_copy(d) for _, d in ordered[: max(limit, 0)]]

    async def get_dead(self, id: str) -> DeadLetter | None:
        self._check_open()
        item = self._dead.get(id)
        return None if item is None else _copy(item[1])

    async def replay_dead(self, id: str) -> bool:
        self._check_open()
        item = self._dead.pop(id, None)
        if item is None:
            return False
        dead, now = item[1], self._clock()
        self._push(_Rec(dead.id, dead.thread_key, dead.payload, now), now)
        self.notify_work()
        return True

    async def drop_dead(self, id: str) -> bool:
        self._check_open()
        return self._dead.pop(id, None) is not None

    async def depth(self) -> int:
        self._check_open()
        return sum(len(t.jobs) for t in self._threads.values())

    async def dead_count(self) -> int:
        self._check_open()
        return len(self._dead)

    # -- key-value and locks -----------------------------------------------------------

    def _live(self, ns: str, key: str) -> bytes | None:
        item = self._kv.get((ns, key))
        if item is None:
            return None
        value, expires = item
        if expires is not None and expires <= self._clock():
            del self._kv[(ns, key)]
            return None
        return value

    async def kv_get(self, ns: str, key: str) -> bytes | None:
        self._check_open()
        return self._live(ns, key)

    def _set(self, ns: str, key: str, value: bytes, ttl: float | None) -> None:
        self._check_open()
        expires = None if ttl is None else self._clock() + ttl
        self._kv[(ns, key)] = (bytes(value), expires)

    async def kv_set(self, ns: str, key: str, value: bytes, ttl: float | None) -> None:
        self._set(ns, key, value, ttl)

    def _set_later(self, ns: str, key: str, value: bytes, ttl: float | None) -> None:
        self._set(ns, key, value, ttl)  # nothing to wait for: set at once

    async def kv_add(self, ns: str, key: str, value: bytes, ttl: float | None) -> bool:
        self._check_open()
        if self._live(ns, key) is not None:
            return False
        self._set(ns, key, value, ttl)
        return True

    async def kv_delete(self, ns: str, key: str) -> None:
        self._check_open()
        self._kv.pop((ns, key), None)

    async def _lock_try(self, name: str, token: str, ttl: float) -> bool:
        self._check_open()
        now = self._clock()
        held = self._locks.get(name)
        if held is not None and held[1] > now:
            return False
        self._locks[name] = (token, now + ttl)
        return True

    async def _lock_release(self, name: str, token: str) -> None:
        held = self._locks.get(name)
        if held is not None and held[0] == token:
            del self._locks[name]


def _copy(dead: DeadLetter) -> DeadLetter:
    return DeadLetter(
        dead.id,
        dead.thread_key,
        dead.payload,
        dead.reason,
        [dict(a) for a in dead.attempts],
        dead.failed_at,
    )
