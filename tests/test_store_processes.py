"""Crash and multi-process behaviour of the durable backends, with real child processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from gateway.clock import FakeClock
from gateway.delivery.redis_store import RedisStore
from gateway.delivery.sqlite import SqliteStore
from gateway.delivery.store import NewJob, Store
from tests.test_store_contract import REDIS_URL, cleanup_redis, redis_available

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import asyncio, os, signal, sys
from gateway.delivery.redis_store import RedisStore
from gateway.delivery.sqlite import SqliteStore
from gateway.delivery.store import NewJob

backend, target, prefix, mode = sys.argv[1:5]

def make():
    if backend == "sqlite":
        return SqliteStore(target)
    return RedisStore(target, prefix=prefix)

async def enqueue_then_die(store):
    assert all(await store.enqueue(
        [NewJob("t%d" % (i % 3), b"m%d" % i, "k%d" % i) for i in range(90)], 3600))
    assert await store.enqueue([NewJob("t0", b"last", None)], 3600) == [True]
    print("enqueued", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)

async def claim_then_die(store):
    jobs = await store.claim("doomed", 10, 30)
    print(",".join(sorted(j.id for j in jobs)), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)

async def work(store):
    owner = "%s-%d" % (mode, os.getpid())
    while True:
        jobs = await store.claim(owner, 4, 30)
        if not jobs:
            if await store.depth() == 0:
                return
            await store.wait_for_work(0.01)
            continue
        for job in jobs:
            thread, seq = job.payload.decode().split(":")
            last = await store.kv_get("last", thread)
            if int(last or b"-1") != int(seq) - 1:
                await store.kv_set("violation", thread, job.payload, None)
            if not await store.kv_add("seen", job.payload.decode(), b"1", None):
                await store.kv_set("violation", thread, b"twice " + job.payload, None)
            await store.kv_set("last", thread, seq.encode(), None)
            assert await store.complete(job, owner)

async def main():
    store = make()
    await store.open()
    run = {"enqueue": enqueue_then_die, "claim": claim_then_die}.get(mode, work)
    try:
        await run(store)
    finally:
        await store.close()

asyncio.run(main())
"""


def child(backend: str, target: str, prefix: str, mode: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, backend, target, prefix, mode],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    """(backend, path or url, prefix) of a fresh, empty backend."""
    prefix = f"test-{uuid.uuid4().hex}"
    if request.param == "redis":
        if not redis_available():
            pytest.skip(f"no Redis server answers at {REDIS_URL} (set REDIS_URL or start one)")
        yield "redis", REDIS_URL, prefix
        cleanup_redis(prefix)
    else:
        yield "sqlite", str(tmp_path / "gw.sqlite3"), prefix


@pytest.fixture
async def parent_store(target: tuple[str, str, str]) -> AsyncIterator[tuple[Store, FakeClock]]:
    """A store in this process on the children's backend; its clock starts at real time."""
    backend, where, prefix = target
    clock = FakeClock(time.time())
    store: Store
    if backend == "sqlite":
        store = SqliteStore(where, clock=clock)
    else:
        store = RedisStore(where, prefix=prefix, clock=clock)
    await store.open()
    yield store, clock
    await store.close()


async def test_enqueued_jobs_survive_a_hard_kill(
    target: tuple[str, str, str], parent_store: tuple[Store, FakeClock]
) -> None:
    code, out, err = finish(child(*target, "enqueue"))
    assert code == -signal.SIGKILL, err
    assert out.strip() == "enqueued"
    store, clock = parent_store
    clock.now = time.time()  # the child enqueued in real time
    assert await store.depth() == 91
    assert await store.enqueue([NewJob("t0", b"dup", "k7")], 3600) == [False]
    order: list[bytes] = []
    while batch := await store.claim("w", 10, 30):
        for job in batch:
            if job.thread_key == "t0":
                order.append(job.payload)
            assert await store.complete(job, "w")
    assert order == [b"m%d" % i for i in range(0, 90, 3)] + [b"last"]


async def test_leases_of_a_killed_process_expire(
    target: tuple[str, str, str], parent_store: tuple[Store, FakeClock]
) -> None:
    store, clock = parent_store
    await store.enqueue([NewJob(f"t{i}", b"x", None) for i in range(3)], 3600)
    code, out, err = finish(child(*target, "claim"))
    assert code == -signal.SIGKILL, err
    leased = set(out.strip().split(","))
    assert len(leased) == 3
    clock.now = time.time()
    assert await store.claim("w", 10, 30) == []
    clock.advance(31)
    assert {j.id for j in await store.claim("w", 10, 30)} == leased


async def test_worker_processes_share_the_queue_in_order(
    target: tuple[str, str, str], parent_store: tuple[Store, FakeClock]
) -> None:
    store, _ = parent_store
    threads, per_thread = 8, 25
    batch = [
        NewJob(f"t{t}", f"t{t}:{n}".encode(), None)
        for n in range(per_thread)
        for t in range(threads)
    ]
    assert all(await store.enqueue(batch, 3600))
    procs = [child(*target, "work") for _ in range(3)]
    for proc in procs:
        code, _, err = finish(proc, timeout=120)
        assert code == 0, err
    assert await store.depth() == 0
    for t in range(threads):
        assert await store.kv_get("last", f"t{t}") == str(per_thread - 1).encode()
        assert await store.kv_get("violation", f"t{t}") is None
    for job_payload in (f"t{t}:{n}" for t in range(threads) for n in range(per_thread)):
        assert await store.kv_get("seen", job_payload) == b"1"
