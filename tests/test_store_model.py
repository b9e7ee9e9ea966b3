"""Hypothesis state machine: every backend behaves like a tiny reference model."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from gateway.clock import FakeClock
from gateway.delivery.memory import MemoryStore
from gateway.delivery.redis_store import RedisStore
from gateway.delivery.sqlite import SqliteStore
from gateway.delivery.store import Job, NewJob, Store
from tests.test_store_contract import REDIS_URL, cleanup_redis, redis_available

LEASE = 30.0
DEDUPE_TTL = 20.0
THREADS = ("a", "b", "c")
OWNERS = ("o1", "o2")


@dataclass
class MJob:
    payload: bytes
    attempts: int = 0


@dataclass
class Lease:
    owner: str
    payload: bytes
    until: float


@dataclass
class Model:
    now: float
    threads: dict[str, list[MJob]] = field(default_factory=dict)
    ready_at: dict[str, float] = field(default_factory=dict)
    leases: dict[str, Lease] = field(default_factory=dict)
    dedupe: dict[str, float] = field(default_factory=dict)
    dead: dict[bytes, tuple[str, int]] = field(default_factory=dict)  # payload -> thread, tries

    def push(self, thread: str, job: MJob) -> None:
        if not self.threads.get(thread):
            self.threads[thread] = []
            self.ready_at[thread] = self.now
        self.threads[thread].append(job)

    def claimable(self) -> dict[str, MJob]:
        return {
            t: jobs[0]
            for t, jobs in self.threads.items()
            if jobs
            and self.ready_at[t] <= self.now
            and (t not in self.leases or self.leases[t].until <= self.now)
        }

    def holds(self, job: Job, owner: str) -> bool:
        lease = self.leases.get(job.thread_key)
        return lease is not None and lease.owner == owner and lease.payload == job.payload

    def pop(self, thread: str) -> MJob:
        head = self.threads[thread].pop(0)
        del self.leases[thread]
        self.ready_at[thread] = self.now
        return head


def make_machine(backend: str) -> type[RuleBasedStateMachine]:
    class StoreMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.loop = asyncio.new_event_loop()
            self.clock = FakeClock()
            self.model = Model(now=self.clock.now)
            self.claimed: list[Job] = []
            self.ids: dict[bytes, str] = {}
            self.counter = 0
            self.tmp: str | None = None
            self.prefix = f"test-{uuid.uuid4().hex}"
            self.store: Store
            if backend == "memory":
                self.store = MemoryStore(clock=self.clock)
            elif backend == "sqlite":
                self.tmp = tempfile.mkdtemp()
                self.store = SqliteStore(Path(self.tmp) / "m.db", clock=self.clock)
            else:
                self.store = RedisStore(REDIS_URL, prefix=self.prefix, clock=self.clock)
            self.run(self.store.open())

        def run(self, aw: Any) -> Any:
            return self.loop.run_until_complete(aw)

        def teardown(self) -> None:
            self.run(self.store.close())
            self.loop.close()
            if self.tmp:
                shutil.rmtree(self.tmp, ignore_errors=True)
            if backend == "redis":
                cleanup_redis(self.prefix)

        @rule(
            batch=st.lists(
                st.tuples(st.sampled_from(THREADS), st.sampled_from([None, "k1", "k2", "k3"])),
                min_size=1,
                max_size=4,
            )
        )
        def enqueue(self, batch: list[tuple[str, str | None]]) -> None:
            new = []
            expected = []
            for thread, key in batch:
                self.counter += 1
                payload = f"{thread}{self.counter}".encode()
                new.append(NewJob(thread, payload, key))
                m = self.model
                ok = key is None or m.dedupe.get(key, float("-inf")) <= m.now
                if ok:
                    if key is not None:
                        m.dedupe[key] = m.now + DEDUPE_TTL
                    m.push(thread, MJob(payload))
                expected.append(ok)
            assert self.run(self.store.enqueue(new, DEDUPE_TTL)) == expected

        @rule(owner=st.sampled_from(OWNERS))
        def claim(self, owner: str) -> None:
            expected = self.model.claimable()
            got = self.run(self.store.claim(owner, 10, LEASE))
            assert {j.thread_key: (j.payload, j.attempts) for j in got} == {
                t: (j.payload, j.attempts) for t, j in expected.items()
            }
            for job in got:
                self.model.leases[job.thread_key] = Lease(
                    owner, job.payload, self.model.now + LEASE
                )
                self.ids[job.payload] = job.id
                self.claimed.append(job)

        def pick(self, data: st.DataObject) -> tuple[Job, str] | None:
            if not self.claimed:
                return None
            job = data.draw(st.sampled_from(self.claimed))
            return job, data.draw(st.sampled_from(OWNERS))

        @rule(data=st.data())
        def complete(self, data: st.DataObject) -> None:
            picked = self.pick(data)
            if picked is None:
                return
            job, owner = picked
            expected = self.model.holds(job, owner)
            if expected:
                self.model.pop(job.thread_key)
            assert self.run(self.store.complete(job, owner)) == expected

        @rule(data=st.data(), delay=st.sampled_from([0.0, 1.0, 10.0]))
        def retry_later(self, data: st.DataObject, delay: float) -> None:
            picked = self.pick(data)
            if picked is None:
                return
            job, owner = picked
            m = self.model
            expected = m.holds(job, owner)
            if expected:
                m.threads[job.thread_key][0].attempts += 1
                del m.leases[job.thread_key]
                m.ready_at[job.thread_key] = m.now + delay
            result = self.store.retry_later(job, owner, m.now + delay, {"t": m.now})
            assert self.run(result) == expected

        @rule(data=st.data())
        def dead_letter(self, data: st.DataObject) -> None:
            picked = self.pick(data)
            if picked is None:
                return
            job, owner = picked
            expected = self.model.holds(job, owner)
            if expected:
                head = self.model.pop(job.thread_key)
                self.model.dead[head.payload] = (job.thread_key, head.attempts + 1)
            assert self.run(self.store.dead_letter(job, owner, "final", {"x": 1})) == expected

        @rule(data=st.data())
        def replay(self, data: st.DataObject) -> None:
            if not self.model.dead:
                return
            payload = data.draw(st.sampled_from(sorted(self.model.dead)))
            dead = self.run(self.store.get_dead(self.ids[payload]))
            thread, tries = self.model.dead.pop(payload)
            assert dead is not None and dead.payload == payload and len(dead.attempts) == tries
            assert self.run(self.store.replay_dead(self.ids[payload]))
            self.model.push(thread, MJob(payload))

        @rule(seconds=st.sampled_from([1.0, 5.0, 15.0, 31.0]))
        def advance(self, seconds: float) -> None:
            self.clock.advance(seconds)
            self.model.now = self.clock.now

        @invariant()
        def counts_agree(self) -> None:
            assert self.run(self.store.depth()) == sum(len(j) for j in self.model.threads.values())
            assert self.run(self.store.dead_count()) == len(self.model.dead)

    return StoreMachine


@pytest.mark.parametrize(
    "backend", ["memory", "sqlite", pytest.param("redis", marks=pytest.mark.redis)]
)
def test_store_matches_model(backend: str) -> None:
    if backend == "redis" and not redis_available():
        pytest.skip(f"no Redis server answers at {REDIS_URL} (set REDIS_URL or start one)")
    run_state_machine_as_test(  # type: ignore[no-untyped-call]  # hypothesis: no annotations
        make_machine(backend),
        settings=settings(
            max_examples=60,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
