"""One contract, three backends: every test here runs against memory, sqlite and redis."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import redis

from gateway.clock import FakeClock
from gateway.delivery.memory import MemoryStore
from gateway.delivery.redis_store import RedisStore
from gateway.delivery.sqlite import SqliteStore
from gateway.delivery.store import Job, NewJob, Store, open_store
from gateway.errors import StoreError
from gateway.secrets import Secret
from gateway.settings import StoreSettings

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")
TTL = 3600.0
LEASE = 30.0

_redis_ok: bool | None = None


def redis_available() -> bool:
    global _redis_ok
    if _redis_ok is None:
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
        try:
            _redis_ok = bool(client.ping())
        except redis.RedisError:
            _redis_ok = False
        finally:
            client.close()
    return _redis_ok


def cleanup_redis(prefix: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{{{prefix}}}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


MakeStore = Callable[[], Awaitable[Store]]


@pytest.fixture(params=["memory", "sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "redis" and not redis_available():
        pytest.skip(f"no Redis server answers at {REDIS_URL} (set REDIS_URL or start one)")
    return str(request.param)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def make_store(backend: str, tmp_path: Path, clock: FakeClock) -> AsyncIterator[MakeStore]:
    """Open store instances sharing one backend (memory: the same instance)."""
    created: list[Store] = []
    prefix = f"test-{uuid.uuid4().hex}"

    async def make() -> Store:
        store: Store
        if backend == "memory":
            if created:
                return created[0]
            store = MemoryStore(clock=clock)
        elif backend == "sqlite":
            store = SqliteStore(tmp_path / "db" / "gateway.sqlite3", clock=clock)
        else:
            store = RedisStore(REDIS_URL, prefix=prefix, clock=clock)
        await store.open()
        created.append(store)
        return store

    yield make
    for store in created:
        await store.close()
    if backend == "redis":
        cleanup_redis(prefix)


@pytest.fixture
async def store(make_store: MakeStore) -> Store:
    return await make_store()


def jobs(*specs: tuple[str, str] | tuple[str, str, str | None]) -> list[NewJob]:
    """Build NewJobs from (thread, payload[, dedupe_key]) tuples."""
    return [
        NewJob(thread, payload.encode(), key[0] if key else None) for thread, payload, *key in specs
    ]


async def drain(store: Store, owner: str = "w", limit: int = 100) -> list[list[Job]]:
    """Claim and complete until empty; return the claimed batches."""
    rounds: list[list[Job]] = []
    while batch := await store.claim(owner, limit, LEASE):
        rounds.append(batch)
        for job in batch:
            assert await store.complete(job, owner)
    return rounds


# -- FIFO and parallelism ------------------------------------------------------------


async def test_fifo_per_thread_with_interleaved_threads(store: Store) -> None:
    await store.enqueue(jobs(("a", "a1"), ("b", "b1")), TTL)
    await store.enqueue(jobs(("a", "a2")), TTL)
    await store.enqueue(jobs(("c", "c1"), ("b", "b2"), ("a", "a3"), ("c", "c2")), TTL)
    assert await store.depth() == 7
    rounds = await drain(store)
    seen: dict[str, list[str]] = {}
    for batch in rounds:
        threads = [j.thread_key for j in batch]
        assert len(threads) == len(set(threads)), "one job per thread per claim"
        for job in batch:
            seen.setdefault(job.thread_key, []).append(job.payload.decode())
    assert seen == {"a": ["a1", "a2", "a3"], "b": ["b1", "b2"], "c": ["c1", "c2"]}
    assert [len(b) for b in rounds] == [3, 3, 1]
    assert await store.depth() == 0


async def test_claim_hands_out_only_unleased_heads(store: Store, clock: FakeClock) -> None:
    await store.enqueue(jobs(("a", "a1"), ("a", "a2"), ("b", "b1")), TTL)
    first = await store.claim("w1", 1, LEASE)
    assert len(first) == 1
    rest = await store.claim("w2", 10, LEASE)
    assert [j.thread_key for j in rest] == [("b" if first[0].thread_key == "a" else "a")]
    assert await store.claim("w3", 10, LEASE) == []
    job = next(j for j in [*first, *rest] if j.thread_key == "a")
    assert job.payload == b"a1"
    assert job.attempts == 0
    assert job.enqueued_at == clock.now
    owner = "w1" if job in first else "w2"
    assert await store.complete(job, owner)
    [nxt] = await store.claim("w3", 10, LEASE)
    assert nxt.payload == b"a2"


async def test_parallel_threads_are_claimed_together(store: Store) -> None:
    await store.enqueue([NewJob(f"t{i}", f"m{i}".encode(), None) for i in range(6)], TTL)
    one = await store.claim("w1", 4, LEASE)
    two = await store.claim("w2", 4, LEASE)
    assert len(one) == 4
    assert len(two) == 2
    assert {j.thread_key for j in one} | {j.thread_key for j in two} == {f"t{i}" for i in range(6)}
    assert await store.claim("w3", 4, LEASE) == []
    assert await store.claim("w3", 0, LEASE) == []


async def test_concurrent_claims_across_instances_never_share_a_job(make_store: MakeStore) -> None:
    a, b = await make_store(), await make_store()
    await a.enqueue([NewJob(f"t{i % 10}", f"{i}".encode(), None) for i in range(30)], TTL)
    batches = await asyncio.gather(
        *[(a if i % 2 else b).claim(f"w{i}", 3, LEASE) for i in range(8)]
    )
    claimed = [job for batch in batches for job in batch]
    assert len(claimed) == 10
    assert len({j.thread_key for j in claimed}) == 10
    assert sorted(int(j.payload) for j in claimed) == list(range(10))


async def test_expired_lease_redelivers_and_stale_owner_is_ignored(
    store: Store, clock: FakeClock
) -> None:
    await store.enqueue(jobs(("a", "a1"), ("a", "a2")), TTL)
    [job] = await store.claim("dead-worker", 5, LEASE)
    clock.advance(LEASE - 1)
    assert await store.claim("w2", 5, LEASE) == []
    clock.advance(1)
    [again] = await store.claim("w2", 5, LEASE)
    assert again.id == job.id and again.payload == b"a1"
    # the first owner comes back from the dead: every operation is ignored
    assert not await store.complete(job, "dead-worker")
    assert not await store.retry_later(job, "dead-worker", clock.now + 99, {"n": 1})
    assert not await store.dead_letter(job, "dead-worker", "late", {"n": 1})
    assert await store.depth() == 2
    assert await store.dead_count() == 0
    assert await store.complete(again, "w2")
    [nxt] = await store.claim("w2", 5, LEASE)
    assert nxt.payload == b"a2"


async def test_owner_may_finish_after_lease_ran_out_if_nobody_took_it(
    store: Store, clock: FakeClock
) -> None:
    await store.enqueue(jobs(("a", "a1")), TTL)
    [job] = await store.claim("w", 1, LEASE)
    clock.advance(LEASE * 3)
    assert await store.complete(job, "w")
    assert await store.depth() == 0


async def test_wrong_owner_or_wrong_job_is_ignored(store: Store) -> None:
    await store.enqueue(jobs(("a", "a1"), ("a", "a2")), TTL)
    [job] = await store.claim("w", 1, LEASE)
    assert not await store.complete(job, "intruder")
    fake = Job("not-a-job", "a", b"", 0, 0.0)
    assert not await store.complete(fake, "w")
    other_thread = Job(job.id, "zzz", job.payload, 0, job.enqueued_at)
    assert not await store.complete(other_thread, "w")
    assert await store.depth() == 2
    assert await store.complete(job, "w")
    assert not await store.complete(job, "w"), "completing twice is a no-op"
    assert await store.depth() == 1


async def test_complete_and_claim_completes_then_leases_the_next_head(
    store: Store, clock: FakeClock
) -> None:
    await store.enqueue(jobs(("a", "a1"), ("a", "a2")), TTL)
    [a1] = await store.claim("w", 1, LEASE)
    # the thread's next job is claimable in the same step, now that its head is gone
    done, [a2] = await store.complete_and_claim(a1, "w", LEASE)
    assert done
    assert a2.payload == b"a2"
    assert await store.claim("other", 5, LEASE) == [], "a2 is leased to w"
    assert await store.complete_and_claim(a2, "w", LEASE) == (True, [])
    assert await store.depth() == 0
    # another thread's head is claimed as well
    await store.enqueue(jobs(("b", "b1"), ("c", "c1")), TTL)
    [one] = await store.claim("w", 1, LEASE)
    done, [two] = await store.complete_and_claim(one, "w", LEASE)
    assert done
    assert {one.payload, two.payload} == {b"b1", b"c1"}
    assert await store.complete(two, "w")


async def test_complete_and_claim_after_a_lost_lease_completes_nothing(
    store: Store, clock: FakeClock
) -> None:
    await store.enqueue(jobs(("a", "a1"), ("a", "a2")), TTL)
    [job] = await store.claim("slow", 1, LEASE)
    clock.advance(LEASE)
    [again] = await store.claim("w", 1, LEASE)
    assert again.id == job.id
    assert await store.complete_and_claim(job, "slow", LEASE) == (False, [])
    assert await store.depth() == 2
    done, [a2] = await store.complete_and_claim(again, "w", LEASE)
    assert done
    assert a2.payload == b"a2"


# -- dedupe ----------------------------------------------------------------------------


async def test_dedupe_within_one_call_and_across_calls(store: Store) -> None:
    result = await store.enqueue(
        jobs(("a", "1", "k1"), ("a", "2", "k1"), ("b", "3", None), ("b", "4", None)), TTL
    )
    assert result == [True, False, True, True]
    assert await store.enqueue(jobs(("c", "5", "k1"), ("c", "6", "k2")), TTL) == [False, True]
    assert await store.depth() == 4
    assert await store.enqueue([], TTL) == []


async def test_dedupe_key_expires_after_ttl(store: Store, clock: FakeClock) -> None:
    assert await store.enqueue(jobs(("a", "1", "k")), 60) == [True]
    clock.advance(59.9)
    assert await store.enqueue(jobs(("a", "2", "k")), 60) == [False]
    clock.advance(0.1)
    assert await store.enqueue(jobs(("a", "3", "k")), 60) == [True]
    assert await store.enqueue(jobs(("a", "4", "k")), 60) == [False]
    assert await store.depth() == 2


async def test_concurrent_enqueues_of_one_key_across_instances(make_store: MakeStore) -> None:
    a, b = await make_store(), await make_store()
    calls = [(a if i % 2 else b).enqueue(jobs(("t", str(i), "same")), TTL) for i in range(40)]
    results = await asyncio.gather(*calls)
    assert sum(r[0] for r in results) == 1
    assert await a.depth() == 1
    assert await b.depth() == 1


async def test_big_batch_is_one_atomic_enqueue(store: Store) -> None:
    batch = [NewJob(f"t{i % 50}", b"x" * 200, f"id-{i}") for i in range(1000)]
    assert await store.enqueue(batch, TTL) == [True] * 1000
    assert await store.enqueue(batch[:10], TTL) == [False] * 10
    assert await store.depth() == 1000


# -- retry and dead letters ------------------------------------------------------------


async def test_retry_later_blocks_its_thread_only(store: Store, clock: FakeClock) -> None:
    await store.enqueue(jobs(("a", "a1"), ("a", "a2"), ("b", "b1"), ("b", "b2")), TTL)
    claimed = {j.thread_key: j for j in await store.claim("w", 10, LEASE)}
    a1 = claimed["a"]
    assert await store.retry_later(a1, "w", clock.now + 10, {"status": 503})
    assert not await store.complete(a1, "w"), "the lease ended with retry_later"
    assert await store.complete(claimed["b"], "w")
    assert [j.payload for j in await store.claim("w", 10, LEASE)] == [b"b2"]
    clock.advance(9.5)
    assert await store.claim("w", 10, LEASE) == []
    clock.advance(0.5)
    [again] = await store.claim("w", 10, LEASE)
    assert (again.id, again.payload, again.attempts) == (a1.id, b"a1", 1)
    assert await store.retry_later(again, "w", clock.now, {"status": 429})
    [third] = await store.claim("w", 10, LEASE)
    assert third.attempts == 2
    assert await store.complete(third, "w")
    [a2] = await store.claim("w", 10, LEASE)
    assert a2.payload == b"a2"


async def test_dead_letter_replay_and_drop(store: Store, clock: FakeClock) -> None:
    await store.enqueue(jobs(("a", "a1"), ("a", "a2")), TTL)
    [a1] = await store.claim("w", 10, LEASE)
    assert await store.retry_later(a1, "w", clock.now, {"n": 1, "status": 502})
    [a1] = await store.claim("w", 10, LEASE)
    clock.advance(5)
    assert await store.dead_letter(a1, "w", "400 bad request", {"n": 2, "status": 400})
    assert await store.dead_count() == 1
    assert await store.depth() == 1
    [dead] = await store.dead_letters()
    assert dead.id == a1.id and dead.thread_key == "a" and dead.payload == b"a1"
    assert dead.reason == "400 bad request"
    assert dead.attempts == [{"n": 1, "status": 502}, {"n": 2, "status": 400}]
    assert dead.failed_at == clock.now
    assert await store.get_dead(a1.id) == dead
    assert await store.get_dead("nope") is None
    # the next job of the thread proceeds; a later job queues behind it
    [a2] = await store.claim("w", 10, LEASE)
    assert a2.payload == b"a2"
    await store.enqueue(jobs(("a", "a3")), TTL)
    assert await store.replay_dead(a1.id)
    assert not await store.replay_dead(a1.id)
    assert await store.dead_count() == 0
    assert await store.depth() == 3
    assert await store.complete(a2, "w")
    order = [j.payload for batch in await drain(store) for j in batch]
    assert order == [b"a3", b"a1"], "replay goes to the tail of its thread"
    # dead again (attempts reset), then dropped
    await store.enqueue(jobs(("z", "z1")), TTL)
    [z1] = await store.claim("w", 10, LEASE)
    assert z1.attempts == 0
    assert await store.dead_letter(z1, "w", "gone", {"n": 1})
    assert await store.drop_dead(z1.id)
    assert not await store.drop_dead(z1.id)
    assert not await store.replay_dead(z1.id)
    assert await store.dead_letters() == []


async def test_dead_letters_newest_first_and_limited(store: Store, clock: FakeClock) -> None:
    await store.enqueue([NewJob(f"t{i}", str(i).encode(), None) for i in range(5)], TTL)
    for job in sorted(await store.claim("w", 10, LEASE), key=lambda j: j.payload):
        clock.advance(1)
        assert await store.dead_letter(job, "w", f"r{job.payload.decode()}", {})
    assert [d.reason for d in await store.dead_letters(3)] == ["r4", "r3", "r2"]
    assert len(await store.dead_letters()) == 5
    assert await store.dead_letters(0) == []


async def test_replay_of_a_replayed_job_keeps_its_id(store: Store) -> None:
    await store.enqueue(jobs(("a", "a1", "k")), TTL)
    [job] = await store.claim("w", 1, LEASE)
    await store.dead_letter(job, "w", "x", {})
    assert await store.replay_dead(job.id)  # no dedupe check even though k is live
    [again] = await store.claim("w", 1, LEASE)
    assert again.id == job.id and again.attempts == 0
    await store.dead_letter(again, "w", "y", {})
    dead = await store.get_dead(job.id)
    assert dead is not None and dead.reason == "y" and dead.attempts == [{}]


# -- wake-ups -------------------------------------------------------------------------


async def test_wait_for_work_wakes_on_enqueue(store: Store) -> None:
    await store.wait_for_work(0.001)  # consume a wake-up left by nothing / time out
    waiter = asyncio.create_task(store.wait_for_work(60))
    await asyncio.sleep(0)  # let the waiter start waiting
    assert not waiter.done()
    await store.enqueue(jobs(("a", "a1")), TTL)
    await asyncio.wait_for(waiter, 5)


async def test_wait_for_work_returns_after_timeout(store: Store) -> None:
    await store.wait_for_work(0.001)
    await asyncio.wait_for(store.wait_for_work(0.01), 5)


async def test_wait_for_work_sees_enqueue_that_came_first(store: Store) -> None:
    await store.enqueue(jobs(("a", "a1")), TTL)
    await asyncio.wait_for(store.wait_for_work(60), 5)


# -- key-value and locks ----------------------------------------------------------------


async def test_wait_for_work_honours_a_cancel_that_comes_with_a_notification(
    store: Store,
) -> None:
    """A worker pool stopping while work arrives must not have its cancel swallowed.

    (Python 3.11's asyncio.wait_for returned normally in that race; a dispatcher looping
    on it never stopped, and neither did the process on SIGTERM.)
    """
    for turns in range(3):
        await store.wait_for_work(0.001)
        waiter = asyncio.create_task(store.wait_for_work(60))
        for _ in range(turns):
            await asyncio.sleep(0)  # let it park (or not) before the race
        store.notify_work()
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter


async def test_kv_ttl_add_delete_and_namespaces(store: Store, clock: FakeClock) -> None:
    assert await store.kv_get("ns", "k") is None
    await store.kv_set("ns", "k", b"v1", 10)
    await store.kv_set("ns2", "k", b"other", None)
    await store.kv_set("a:b", "c", b"x", None)
    assert await store.kv_get("a", "b:c") is None
    assert await store.kv_get("ns", "k") == b"v1"
    assert not await store.kv_add("ns", "k", b"v2", 10)
    clock.advance(10)
    assert await store.kv_get("ns", "k") is None
    assert await store.kv_add("ns", "k", b"v3\n\x00bin", 10)
    assert await store.kv_get("ns", "k") == b"v3\n\x00bin"
    await store.kv_set("ns", "k", b"v4", None)
    clock.advance(1e6)
    assert await store.kv_get("ns", "k") == b"v4"
    assert not await store.kv_add("ns", "k", b"v5", None)
    await store.kv_delete("ns", "k")
    await store.kv_delete("ns", "k")
    assert await store.kv_get("ns", "k") is None
    assert await store.kv_add("ns", "k", b"v6", None)
    assert await store.kv_get("ns2", "k") == b"other"


async def test_kv_set_later_is_read_back_and_finished_by_close(
    make_store: MakeStore, backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = await make_store()
    store.kv_set_later("ns", "k", b"v", 60)  # not awaited: the next read still sees it
    assert await store.kv_get("ns", "k") == b"v"
    store.kv_set_later("ns", "last", b"w", None)
    await store.close()  # finishes it
    store.kv_set_later("ns", "k", b"v", 60)  # closed: logged, not raised (a reply was sent)
    assert "a write made without waiting failed" in caplog.text
    if backend != "memory":  # another instance on the same file / Redis
        assert await (await make_store()).kv_get("ns", "last") == b"w"


async def test_enqueue_and_claim_leases_the_heads_of_idle_threads(
    make_store: MakeStore, backend: str, clock: FakeClock
) -> None:
    a, b = await make_store(), await make_store()
    await a.enqueue(jobs(("busy", "b1")), TTL)
    results = await a.enqueue_and_claim(
        jobs(("busy", "b2"), ("idle", "i1", "k1"), ("idle", "i2"), ("new", "n1", "k1")),
        TTL,
        "intake",
        LEASE,
    )
    assert results[0] is True  # behind b1: left for claim
    assert results[2] is True  # behind i1
    assert results[3] is False  # a duplicate dedupe key
    head = results[1]
    if backend == "redis":  # leases nothing: the job is queued as by enqueue
        assert head is True
        return
    assert isinstance(head, Job) and head.payload == b"i1" and head.attempts == 0
    # nobody else gets the leased head; the other thread's head is claimable
    (b1,) = await b.claim("other", 10, LEASE)
    assert b1.payload == b"b1"
    assert await b.depth() == 4
    assert await a.complete(head, "intake")
    (i2,) = await b.claim("other", 10, LEASE)
    assert i2.payload == b"i2"
    assert await b.complete(b1, "other") and await b.complete(i2, "other")
    (b2,) = await b.claim("other", 10, LEASE)
    assert await b.complete(b2, "other")
    # a handed-over job whose owner died is claimed once its lease runs out
    (lost,) = await a.enqueue_and_claim(jobs(("third", "t1")), TTL, "intake", LEASE)
    assert isinstance(lost, Job)
    assert await b.claim("other", 10, LEASE) == []
    clock.advance(LEASE)
    assert [j.payload for j in await b.claim("other", 10, LEASE)] == [b"t1"]
    assert not await a.complete(lost, "intake")  # the lease moved on


async def test_kv_refresh_leaves_out_recent_identical_writes(
    make_store: MakeStore, clock: FakeClock
) -> None:
    a, b = await make_store(), await make_store()
    await a.kv_refresh("ns", "k", b"v", 100)
    assert await b.kv_get("ns", "k") == b"v"
    await b.kv_set("ns", "k", b"theirs", 100)  # another instance (or a plain kv_set)
    clock.advance(9)
    await a.kv_refresh("ns", "k", b"v", 100)  # same value within ttl/10: left out
    assert await b.kv_get("ns", "k") == b"theirs"
    await a.kv_refresh("ns", "k", b"new", 100)  # a different value is written at once
    assert await b.kv_get("ns", "k") == b"new"
    clock.advance(10)
    await a.kv_refresh("ns", "k", b"new", 100)  # ttl/10 passed: written again, ttl renewed
    clock.advance(95)
    assert await b.kv_get("ns", "k") == b"new"
    await a.kv_refresh("ns", "k", b"new", 100, every=1000)  # an explicit `every`
    clock.advance(6)
    assert await b.kv_get("ns", "k") is None  # 101 s after the last write


async def test_lock_is_mutually_exclusive_across_instances(make_store: MakeStore) -> None:
    a, b = await make_store(), await make_store()
    async with a.lock("refresh", 30) as got:
        assert got
        async with b.lock("refresh", 0.05) as other:
            assert not other
        waiter = asyncio.create_task(_hold(b, "refresh"))
        await asyncio.sleep(0)
        assert not waiter.done()
        async with b.lock("another", 1) as independent:
            assert independent
    assert await asyncio.wait_for(waiter, 10)


async def _hold(store: Store, name: str) -> bool:
    async with await store.lock(name, 10) as got:
        return got


async def test_expired_lock_is_taken_and_old_holder_cannot_release_it(
    make_store: MakeStore, clock: FakeClock
) -> None:
    a, b = await make_store(), await make_store()
    held_by_a = a.lock("l", 10)
    assert await held_by_a.__aenter__()
    clock.advance(10)
    held_by_b = b.lock("l", 10)
    assert await held_by_b.__aenter__(), "an expired lock can be taken"
    await held_by_a.__aexit__(None, None, None)  # must not free b's lock
    async with a.lock("l", 0.05) as got:
        assert not got
    await held_by_b.__aexit__(None, None, None)
    async with a.lock("l", 0.05) as got:
        assert got


# -- lifecycle ---------------------------------------------------------------------------


async def test_ping_and_closed_store(make_store: MakeStore) -> None:
    store = await make_store()
    await store.ping()
    await store.close()
    with pytest.raises(StoreError):
        await store.ping()
    with pytest.raises(StoreError):
        await store.enqueue(jobs(("a", "1")), TTL)
    await store.close()  # idempotent


def test_open_store_builds_each_backend(tmp_path: Path) -> None:
    assert isinstance(open_store(StoreSettings(backend="memory")), MemoryStore)
    sqlite = open_store(StoreSettings(backend="sqlite", path=tmp_path / "x.db"))
    assert isinstance(sqlite, SqliteStore) and sqlite.path == tmp_path / "x.db"
    url = Secret("redis://:pw@localhost:6379/2", "REDIS_URL")
    rs = open_store(StoreSettings(backend="redis", url=url, prefix="p"))
    assert isinstance(rs, RedisStore) and rs.base == "{p}:"
    assert "pw" not in rs.where
    with pytest.raises(StoreError, match=r"store\.url"):
        open_store(StoreSettings(backend="redis"))


def test_job_ids_are_unique_hex_and_differ_per_process() -> None:
    from gateway import ids
    from gateway.delivery.store import new_job_id

    made = {new_job_id() for _ in range(10_000)}
    assert len(made) == 10_000
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in made)
    prefix = next(iter(made))[:16]
    ids._forget()  # what a forked child does first
    assert new_job_id()[:16] != prefix
    short = ids.unique_id(16)
    assert len(short) == 16 and int(short, 16) >= 0
