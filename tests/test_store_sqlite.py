"""SqliteStore specifics: the file, reopening, purging, query plans, group commit."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from gateway.clock import FakeClock
from gateway.delivery import sqlite as sqlite_module
from gateway.delivery import sqlite_batches
from gateway.delivery.sqlite import SqliteStore
from gateway.delivery.sqlite_file import SharedFile
from gateway.delivery.sqlite_schema import CLAIM_SQL, SCHEMA
from gateway.delivery.store import NewJob
from gateway.errors import StoreError


def _rows(path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
    """The rows of `sql`, read through a connection of its own (closed again)."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return conn.execute(sql, params).fetchall()


async def test_creates_parent_directory_and_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "gw.sqlite3"
    async with SqliteStore(path) as store:
        await store.ping()
        assert path.exists()
        assert _rows(path, "PRAGMA journal_mode") == [("wal",)]
        assert _rows(path, "PRAGMA user_version") == [(1,)]


async def test_unusable_path_raises_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreError, match="cannot open"):
        await SqliteStore(blocker / "gw.sqlite3").open()
    with pytest.raises(StoreError, match="not open"):
        await SqliteStore(tmp_path / "never-opened.db").depth()


async def test_everything_survives_close_and_reopen(tmp_path: Path) -> None:
    clock = FakeClock()
    path = tmp_path / "gw.sqlite3"
    store = SqliteStore(path, clock=clock)
    await store.open()
    assert await store.enqueue(
        [NewJob("a", b"a1", "k1"), NewJob("a", b"a2", "k2"), NewJob("b", b"b1", None)], 3600
    ) == [True, True, True]
    claimed = {j.thread_key: j for j in await store.claim("w", 10, 30)}
    assert await store.dead_letter(claimed["b"], "w", "final", {"status": 400})
    await store.kv_set("ns", "k", b"v", None)
    await store.close()

    reopened = SqliteStore(path, clock=clock)
    await reopened.open()
    try:
        assert await reopened.depth() == 2
        assert await reopened.dead_count() == 1
        assert await reopened.kv_get("ns", "k") == b"v"
        assert await reopened.enqueue([NewJob("a", b"dup", "k1")], 3600) == [False]
        assert await reopened.claim("w2", 10, 30) == [], "the lease is durable too"
        clock.advance(30)
        [again] = await reopened.claim("w2", 10, 30)
        assert again.id == claimed["a"].id
        assert await reopened.complete(again, "w2")
        [a2] = await reopened.claim("w2", 10, 30)
        assert a2.payload == b"a2"
    finally:
        await reopened.close()


async def test_expired_rows_are_purged(tmp_path: Path) -> None:
    clock = FakeClock()
    path = tmp_path / "gw.sqlite3"
    async with SqliteStore(path, clock=clock) as store:
        await store.enqueue([NewJob("t", b"x", f"k{i}") for i in range(50)], 10)
        await store.kv_set("ns", "short", b"v", 10)
        await store.kv_set("ns", "forever", b"v", None)
        clock.advance(sqlite_module.PURGE_EVERY + 1)
        await store.enqueue([NewJob("t", b"y", "fresh")], 10)
        assert _rows(path, "SELECT key FROM dedupe") == [("fresh",)]
        assert _rows(path, "SELECT key FROM kv") == [("forever",)]


async def test_dedupe_keys_and_threads_are_stored_in_their_key_order(tmp_path: Path) -> None:
    """A new file's dedupe and threads tables are WITHOUT ROWID: one B-tree each, not two."""
    path = tmp_path / "gw.sqlite3"
    async with SqliteStore(path):
        pass
    sql = dict(_rows(path, "SELECT name, sql FROM sqlite_master WHERE type = 'table'"))
    assert sql["dedupe"].endswith("WITHOUT ROWID") and sql["threads"].endswith("WITHOUT ROWID")
    assert "WITHOUT ROWID" not in sql["jobs"]


async def test_a_file_of_an_earlier_version_with_rowid_tables_works_the_same(
    tmp_path: Path,
) -> None:
    """Files created before keep their rowid dedupe and threads tables: every statement
    serves both (the purge names rows by key, not by rowid)."""
    clock = FakeClock()
    path = tmp_path / "gw.sqlite3"
    conn = sqlite3.connect(path)
    try:
        conn.executescript(SCHEMA.replace(") WITHOUT ROWID;", ");"))
        assert "WITHOUT ROWID" not in str(conn.execute("SELECT sql FROM sqlite_master").fetchall())
    finally:
        conn.close()
    async with SqliteStore(path, clock=clock) as store:
        assert await store.enqueue(
            [NewJob("a", b"a1", "k1"), NewJob("a", b"a2", "k2")] * 2, 10
        ) == [True, True, False, False]
        [head] = await store.claim("w", 10, 30)
        assert head.payload == b"a1"
        done, [following] = await store.complete_and_claim(head, "w", 30)
        assert done and following.payload == b"a2"
        assert await store.complete(following, "w")
        assert await store.depth() == 0
        clock.advance(sqlite_module.PURGE_EVERY + 1)
        assert await store.enqueue([NewJob("b", b"b1", "fresh")], 10) == [True]
        assert _rows(path, "SELECT key FROM dedupe") == [("fresh",)]
        assert _rows(path, "SELECT thread_key FROM threads") == [("b",)]


async def test_claim_uses_the_ready_index(tmp_path: Path) -> None:
    """Claiming is O(ready threads): the claim query is index lookups, never a scan."""
    path = tmp_path / "gw.sqlite3"
    async with SqliteStore(path):
        pass
    plan = str(_rows(path, "EXPLAIN QUERY PLAN " + CLAIM_SQL, (0.0, 10)))
    assert "threads_by_ready" in plan and "jobs_by_thread" in plan
    assert "SCAN" not in plan and "TEMP B-TREE" not in plan


async def test_a_thread_row_without_jobs_is_repaired_by_the_next_claim(tmp_path: Path) -> None:
    """A `threads` row with no job (never written so) is dropped, not claimed or wedged."""
    clock = FakeClock()
    path = tmp_path / "gw.sqlite3"
    async with SqliteStore(path, clock=clock) as store:
        await store.enqueue([NewJob("real", b"r1", None)], 60)
        conn = sqlite3.connect(path)
        try:
            conn.execute("INSERT INTO threads (thread_key, ready_at) VALUES ('ghost', 0)")
            conn.commit()
        finally:
            conn.close()
        (job,) = await store.claim("w", 10, 30)
        assert (job.thread_key, job.payload) == ("real", b"r1")
        assert _rows(path, "SELECT thread_key FROM threads") == [("real",)]


async def test_order_holds_when_the_newest_row_goes_and_its_seq_is_reused(
    tmp_path: Path,
) -> None:
    """seq is max + 1 (no AUTOINCREMENT): a reused number is still above every row present."""
    clock = FakeClock()
    async with SqliteStore(tmp_path / "gw.sqlite3", clock=clock) as store:
        await store.enqueue([NewJob("a", b"a1", None), NewJob("b", b"b1", None)], 60)
        claimed = {j.thread_key: j for j in await store.claim("w", 10, 30)}
        assert await store.complete(claimed["b"], "w")  # the newest row is gone
        await store.enqueue([NewJob("a", b"a2", None), NewJob("a", b"a3", None)], 60)
        assert await store.complete(claimed["a"], "w")
        order = []
        while jobs := await store.claim("w", 10, 30):
            order.append(jobs[0].payload)
            assert await store.complete(jobs[0], "w")
        assert order == [b"a2", b"a3"]

        for key in ("x", "y"):
            await store.enqueue([NewJob(key, key.encode(), None)], 60)
            [job] = await store.claim("w", 10, 30)
            await store.dead_letter(job, "w", "final", {})
        newest = await store.dead_letters(1)
        assert await store.drop_dead(newest[0].id)
        await store.enqueue([NewJob("z", b"z", None)], 60)
        [job] = await store.claim("w", 10, 30)
        await store.dead_letter(job, "w", "final", {})
        assert [d.thread_key for d in await store.dead_letters()] == ["z", "x"]


async def test_two_stores_on_one_file_share_the_queue(tmp_path: Path) -> None:
    path = tmp_path / "gw.sqlite3"
    async with SqliteStore(path) as a, SqliteStore(path) as b:
        await a.enqueue([NewJob("t", b"1", None), NewJob("t", b"2", None)], 60)
        [job] = await b.claim("wb", 5, 30)
        assert await a.claim("wa", 5, 30) == []
        assert await b.complete(job, "wb")
        [nxt] = await a.claim("wa", 5, 30)
        assert nxt.payload == b"2"


# -- group commit ---------------------------------------------------------------------


def _batches(store: SqliteStore, where: list[bool] | None = None) -> list[int]:
    """Record the size of every batch the store runs (and in `where`, whether inline)."""
    sizes: list[int] = []
    execute = store._db._execute

    def counting(conn: Any, ops: list[Any], inline: bool) -> Any:
        sizes.append(len(ops))
        if where is not None:
            where.append(inline)
        return execute(conn, ops, inline)

    store._db._execute = counting  # type: ignore[method-assign]
    return sizes


async def test_concurrent_operations_share_one_transaction(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "g.db", clock=FakeClock())
    await store.open()
    try:
        sizes = _batches(store)
        await asyncio.gather(*(store.kv_set("ns", str(i), b"v", None) for i in range(50)))
        assert sum(sizes) == 50 and len(sizes) < 50  # batched, none lost
        assert max(sizes) > 1
        sizes.clear()
        await store.kv_set("ns", "alone", b"v", None)  # alone it is its own batch
        assert sizes == [1]
        values = await asyncio.gather(*(store.kv_get("ns", str(i)) for i in range(50)))
        assert values == [b"v"] * 50
    finally:
        await store.close()
    reopened = SqliteStore(tmp_path / "g.db", clock=FakeClock())
    await reopened.open()
    try:
        assert await reopened.kv_get("ns", "49") == b"v"  # committed, on disk
    finally:
        await reopened.close()


async def test_a_failing_operation_leaves_its_batch_mates_written(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "g.db", clock=FakeClock())
    await store.open()
    try:
        sizes = _batches(store)

        def half_then_fail(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO kv (ns, key, value) VALUES ('ns', 'half', x'00')")
            conn.execute("INSERT INTO nowhere VALUES (1)")  # no such table

        def python_bug(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO kv (ns, key, value) VALUES ('ns', 'bug', x'00')")
            raise KeyError("bug")

        outcomes = await asyncio.gather(
            store.kv_set("ns", "before", b"1", None),
            store._write("broken op", half_then_fail),
            store._write("buggy op", python_bug),
            store.kv_set("ns", "after", b"2", None),
            return_exceptions=True,
        )
        assert max(sizes) == 4
        assert outcomes[0] is None and outcomes[3] is None
        assert isinstance(outcomes[1], StoreError)
        assert "broken op failed" in str(outcomes[1]) and "nowhere" in str(outcomes[1])
        assert isinstance(outcomes[2], KeyError)  # not a store failure: passed on as it is
        assert await store.kv_get("ns", "before") == b"1"
        assert await store.kv_get("ns", "after") == b"2"
        assert await store.kv_get("ns", "half") is None  # its own writes rolled back
        assert await store.kv_get("ns", "bug") is None
    finally:
        await store.close()


async def test_close_finishes_queued_operations(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "g.db", clock=FakeClock())
    await store.open()
    writes = [asyncio.ensure_future(store.kv_set("ns", str(i), b"v", None)) for i in range(20)]
    await asyncio.sleep(0)  # the writes are queued
    await store.close()
    assert all(w.done() and w.exception() is None for w in writes)
    with pytest.raises(StoreError, match="not open"):
        await store.kv_get("ns", "0")
    reopened = SqliteStore(tmp_path / "g.db", clock=FakeClock())
    await reopened.open()
    try:
        assert await reopened.kv_get("ns", "19") == b"v"
    finally:
        await reopened.close()


async def test_batches_run_inline_and_wait_for_a_held_lock_on_the_thread(tmp_path: Path) -> None:
    """Another writer holds the lock: the batch waits on the thread; those submitted
    meanwhile run after it, in order, back on the event loop."""
    path = tmp_path / "g.db"
    async with SqliteStore(path, clock=FakeClock()) as store:
        where: list[bool] = []
        sizes = _batches(store, where)
        await store.kv_set("ns", "first", b"1", None)
        assert where == [True], "with the lock free a batch runs on the event loop"

        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            other.execute("INSERT INTO kv (ns, key, value) VALUES ('ns', 'other', x'00')")
            blocked = asyncio.ensure_future(store.kv_set("ns", "a", b"1", None))
            while store._db._on_thread is None:  # the inline attempt found the lock taken
                await asyncio.sleep(0)
            later = asyncio.ensure_future(store.kv_set("ns", "b", b"2", None))
            read = asyncio.ensure_future(store.kv_get("ns", "other"))
            for _ in range(5):
                await asyncio.sleep(0)
            assert not blocked.done() and not later.done() and not read.done()
            other.commit()
        finally:
            other.close()
        await asyncio.gather(blocked, later)
        assert await read == b"\x00", "queued behind the blocked write, the read sees it"
        # tried inline, then on the thread; what came meanwhile ran after it as one batch,
        # inline again (staying on the thread made every later batch pay a thread hop)
        assert where == [True, True, False, True]
        assert sizes[-2:] == [1, 2]
        where.clear()
        await store.kv_set("ns", "c", b"3", None)
        assert where == [True], "once the lock is free again, batches run inline"
        assert [await store.kv_get("ns", k) for k in "abc"] == [b"1", b"2", b"3"]


async def test_a_read_that_finds_the_file_busy_is_run_again_on_the_thread(
    tmp_path: Path,
) -> None:
    """WAL readers rarely meet SQLITE_BUSY (another process recovering the WAL); the loop's
    connection never waits, so such a read is run again on the thread, which does."""
    async with SqliteStore(tmp_path / "g.db", clock=FakeClock()) as store:
        await store.kv_set("ns", "k", b"v", None)
        where: list[bool] = []
        _batches(store, where)

        def read(conn: sqlite3.Connection) -> bytes:
            if conn is store._db._inline:
                busy = sqlite3.OperationalError("database is locked")
                busy.sqlite_errorcode = sqlite3.SQLITE_BUSY  # as sqlite3 sets it
                raise busy
            return bytes(conn.execute("SELECT value FROM kv WHERE key = 'k'").fetchone()[0])

        assert await store._run("read", read) == b"v"
        assert where == [True, False]


async def test_a_key_read_with_nothing_queued_runs_at_once(tmp_path: Path) -> None:
    """kv_get (the alias lookup of every inbound message) needs no batch when idle..."""
    async with SqliteStore(tmp_path / "g.db", clock=FakeClock()) as store:
        await store.kv_set("ns", "k", b"v", None)
        sizes = _batches(store)
        assert await store.kv_get("ns", "k") == b"v"
        assert await store.kv_get("ns", "missing") is None
        assert sizes == []


async def test_a_key_read_waits_for_the_writes_queued_before_it(tmp_path: Path) -> None:
    """... but with an operation queued it takes its turn, and sees that write."""
    async with SqliteStore(tmp_path / "g.db", clock=FakeClock()) as store:
        sizes = _batches(store)
        writing = asyncio.ensure_future(store.kv_set("ns", "k", b"new", None))
        await asyncio.sleep(0)  # the write is submitted, its batch not yet run
        assert store._db._pending
        assert await store.kv_get("ns", "k") == b"new"
        await writing
        assert sizes == [2]  # the write and the read, one batch


async def test_a_key_read_does_not_wait_for_writes_of_other_things(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A completion waiting for company, or a write of another namespace, leaves a key
    read to run at once; the completion still waits for the next enqueue (the alias read
    of every inbound message used to make it commit alone)."""
    monkeypatch.setattr(sqlite_batches, "SOON_S", 3600.0)
    async with SqliteStore(tmp_path / "g.db", clock=FakeClock()) as store:
        await store.kv_set("ns", "k", b"v", None)
        job = await _one_leased_job(store)
        sizes = _batches(store)
        completing = asyncio.ensure_future(store.complete(job, "w"))
        store.kv_set_later("other", "k", b"x", None)
        await asyncio.sleep(0)
        assert await store.kv_get("ns", "k") == b"v"
        assert sizes == [] and not completing.done()
        assert await store.kv_get("other", "k") == b"x"  # its own namespace: waits, sees it
        assert sizes == [3] and await completing is True
        # nothing is pending any more: the read runs at once again, in no batch
        assert await store.kv_get("other", "k") == b"x" and sizes == [3]


async def test_a_key_read_that_finds_the_file_busy_takes_its_turn(tmp_path: Path) -> None:
    async with SqliteStore(tmp_path / "g.db", clock=FakeClock()) as store:
        await store.kv_set("ns", "k", b"v", None)
        where: list[bool] = []
        _batches(store, where)
        inline = store._db._inline
        assert inline is not None
        real = store._db.read_now

        def busy_once(what: str, fn: Any, scope: str | None = None) -> Any:
            def refuse(conn: sqlite3.Connection) -> Any:
                busy = sqlite3.OperationalError("database is locked")
                busy.sqlite_errorcode = sqlite3.SQLITE_BUSY
                raise busy

            return real(what, refuse, scope)

        store._db.read_now = busy_once  # type: ignore[method-assign]
        assert await store.kv_get("ns", "k") == b"v"
        assert where == [True]  # the batch ran it


async def _one_leased_job(store: SqliteStore) -> Any:
    await store.enqueue([NewJob("t", b"p", None)], 60)
    (job,) = await store.claim("w", 1, 30)
    return job


async def test_a_completion_joins_the_next_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A delivered job's completion rides in the transaction of what comes next.

    (At moderate load each completion was a transaction of its own, the largest part of
    the SQLite store's cost per message there.)
    """
    monkeypatch.setattr(sqlite_batches, "SOON_S", 3600.0)  # it waits for company alone
    async with SqliteStore(tmp_path / "g.db", clock=FakeClock()) as store:
        job = await _one_leased_job(store)
        sizes = _batches(store)
        completing = asyncio.ensure_future(store.complete(job, "w"))
        for _ in range(3):  # turns of the loop in which an immediate write would have run
            await asyncio.sleep(0)
        assert sizes == [] and not completing.done()
        await store.kv_set("n", "k", b"v", None)
        assert await completing is True
        assert sizes == [2]  # one transaction for both
        assert await store.depth() == 0


async def test_a_completion_alone_runs_soon_and_reads_see_it(tmp_path: Path) -> None:
    async with SqliteStore(tmp_path / "g.db", clock=FakeClock()) as store:
        job = await _one_leased_job(store)
        sizes = _batches(store)
        assert await store.complete(job, "w") is True  # nothing came: it ran by itself
        assert sizes == [1]
        job = await _one_leased_job(store)
        sizes.clear()
        # a read submitted while the completion waits takes its turn after it
        done, depth = await asyncio.gather(store.complete(job, "w"), store.depth())
        assert (done, depth) == (True, 0)
        assert sizes == [2]


async def test_a_write_made_without_waiting_joins_the_next_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reply's answer record (`kv_set_later`) costs no commit of its own either."""
    monkeypatch.setattr(sqlite_batches, "SOON_S", 3600.0)
    async with SqliteStore(tmp_path / "g.db", clock=FakeClock()) as store:
        sizes = _batches(store)
        store.kv_set_later("n", "answer", b"a", 60)
        for _ in range(3):
            await asyncio.sleep(0)
        assert sizes == []
        assert await store.kv_add("n", "key", b"k", 60) is True
        assert sizes == [2]
        assert await store.kv_get("n", "answer") == b"a"


async def test_a_failed_write_made_without_waiting_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with SqliteStore(tmp_path / "g.db", clock=FakeClock()) as store:

        def broken(ns: str, key: str, value: bytes, ttl: float | None) -> Any:
            def tx(conn: sqlite3.Connection) -> None:
                conn.execute("INSERT INTO no_such_table VALUES (1)")

            return tx

        store._kv_setter = broken  # type: ignore[method-assign]
        store.kv_set_later("n", "k", b"v", 60)
        await store._finish_later()
        assert "a write made without waiting failed" in caplog.text
        assert "kv_set failed" in caplog.text
        await store.kv_add("n", "other", b"v", 60)  # the store goes on


async def test_close_runs_a_completion_waiting_for_company(tmp_path: Path) -> None:
    path = tmp_path / "g.db"
    store = SqliteStore(path, clock=FakeClock())
    await store.open()
    job = await _one_leased_job(store)
    completing = asyncio.ensure_future(store.complete(job, "w"))
    await asyncio.sleep(0)  # one turn of the loop: the completion is queued, not yet run
    assert not completing.done()
    await store.close()
    assert completing.result() is True
    async with SqliteStore(path, clock=FakeClock()) as again:
        assert await again.depth() == 0


def _wal_frames(path: Path) -> int:
    probe = sqlite3.connect(path)
    try:  # (busy, frames in the WAL, frames checkpointed)
        ((_, frames, _),) = probe.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
    finally:
        probe.close()
    return int(frames)


async def _write_through_a_checkpoint(store: SqliteStore, before: int) -> int:
    """Write `before` batches, start a checkpoint, keep writing until it is done.

    Returns how many of the batches written meanwhile had to wait on the store's thread
    for the write lock.
    """
    written = 0
    on_thread = 0
    db = store._db

    async def batch() -> None:
        nonlocal written, on_thread
        await asyncio.gather(
            *(store.kv_set("ns", f"{written}-{j}", b"v" * 500, None) for j in range(4))
        )
        written += 1

    run_on_thread = db._run_on_thread

    async def counted(ops: list[Any]) -> None:
        nonlocal on_thread
        on_thread += 1
        await run_on_thread(ops)

    for _ in range(before):
        await batch()
    db._run_on_thread = counted  # type: ignore[method-assign]
    db._start_checkpoint()
    checkpoint = db._checkpoint
    assert checkpoint is not None
    while not checkpoint.done():  # keep writing while it runs
        await batch()
    await batch()
    await batch()
    return on_thread


async def test_a_checkpoint_restarts_a_long_wal_while_writes_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writers go on during the checkpoint, yet the next write starts a long WAL over.

    (A PASSIVE checkpoint alone cannot do that: frames written while it runs are not in
    the database, so the WAL never restarts under steady writes; it reached 9 GB in a
    ten-minute soak.)
    """
    monkeypatch.setattr(sqlite_batches, "CHECKPOINT_EVERY", 10**9)  # started by hand
    monkeypatch.setattr(sqlite_batches, "WAL_RESTART_FRAMES", 100)
    path = tmp_path / "g.db"
    async with SqliteStore(path, clock=FakeClock()) as store:
        await _write_through_a_checkpoint(store, before=100)
        frames = _wal_frames(path)
    assert frames < 60, f"{frames} frames in the WAL: it did not start over"


async def test_a_checkpoint_of_a_short_wal_never_holds_up_the_writers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Below `WAL_RESTART_FRAMES` a checkpoint is PASSIVE: no commit waits for it.

    (A RESTART checkpoint takes the write lock for its whole copy and fsync: the loop's
    batches then found the lock taken and waited on the thread behind it, the tail of
    every request that writes.)
    """
    monkeypatch.setattr(sqlite_batches, "CHECKPOINT_EVERY", 10**9)
    path = tmp_path / "g.db"
    async with SqliteStore(path, clock=FakeClock()) as store:
        waited = await _write_through_a_checkpoint(store, before=1000)
        frames = _wal_frames(path)
    assert waited == 0, f"{waited} batches waited for the checkpoint's lock"
    assert 1000 < frames < sqlite_batches.WAL_RESTART_FRAMES  # copied, not started over


def _record_checkpoints(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, int]]:
    """Record each checkpoint (and each sync of the database file) as it runs: its mode
    ("sync" for a sync), the thread's name prefix and the thread's nice value."""
    seen: list[tuple[str, str, int]] = []

    def note(mode: str) -> None:
        nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        seen.append((mode, threading.current_thread().name.split("_")[0], nice))

    checkpoint, sync = sqlite_batches._checkpoint, SharedFile.sync

    def recorded_checkpoint(conn: sqlite3.Connection, mode: str) -> int:
        note(mode)
        return checkpoint(conn, mode)

    def recorded_sync(file: SharedFile) -> None:
        note("sync")
        sync(file)

    monkeypatch.setattr(sqlite_batches, "_checkpoint", recorded_checkpoint)
    monkeypatch.setattr(SharedFile, "sync", recorded_sync)
    return seen


async def test_a_large_database_lets_its_wal_grow_longer_before_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The RESTART's fsync grows with the file; a larger file restarts its WAL more rarely.

    The same WAL that a small database starts over (the test above) is left to grow in a
    database four times its length or more, and the threshold keeps its floor below.
    """
    assert sqlite_batches._restart_frames(0) == sqlite_batches.WAL_RESTART_FRAMES
    assert sqlite_batches._restart_frames(400_000) == 100_000
    monkeypatch.setattr(sqlite_batches, "CHECKPOINT_EVERY", 10**9)  # started by hand
    monkeypatch.setattr(sqlite_batches, "WAL_RESTART_FRAMES", 100)
    seen = _record_checkpoints(monkeypatch)
    path = tmp_path / "g.db"
    async with SqliteStore(path, clock=FakeClock()) as store:
        for i in range(1_000):  # about 3,000 pages of keys, then an empty WAL
            await store.kv_set("big", str(i), b"v" * 12_000, None)
        side = sqlite3.connect(path)
        try:
            side.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            ((pages,),) = side.execute("PRAGMA page_count").fetchall()
        finally:
            side.close()
        assert pages > 2_400
        await _write_through_a_checkpoint(store, before=100)
        frames = _wal_frames(path)
    # (how far the WAL grows while the checkpoint runs depends on the disk: what
    # matters is that the checkpoint saw fewer frames than a quarter of the pages)
    modes = [mode for mode, _, _ in seen]
    assert modes == ["PASSIVE"], f"{modes}: restarted"
    assert frames > 100, f"{frames} frames: the WAL started over"


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread nice is Linux's")
async def test_the_passive_checkpoint_runs_at_background_priority_off_the_store_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The PASSIVE copy yields the core to the event loop; RESTART stays at normal priority.

    (At normal priority the copy took the core from the loop a scheduler slice at a time:
    the tail latency of replies under moderate load.)
    """
    monkeypatch.setattr(sqlite_batches, "CHECKPOINT_EVERY", 10**9)
    monkeypatch.setattr(sqlite_batches, "WAL_RESTART_FRAMES", 1)  # every checkpoint restarts
    seen = _record_checkpoints(monkeypatch)
    base = os.getpriority(os.PRIO_PROCESS, 0)
    async with SqliteStore(tmp_path / "g.db", clock=FakeClock()) as store:
        await _write_through_a_checkpoint(store, before=10)
    background = min(base + sqlite_batches.BACKGROUND_NICE, 19)
    *passive, restart = [entry for entry in seen if entry[0] != "sync"]
    assert len(passive) >= 2  # the first, then the catch-up's (the test below)
    assert set(passive) == {("PASSIVE", "sqlite-checkpoint", background)}
    assert restart == ("RESTART", "sqlite-store", base)


async def test_before_a_restart_the_database_file_is_synced_and_caught_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The RESTART holds the writers; what can be done before it is, off their path.

    A PASSIVE checkpoint syncs the database file only when it copied the WAL's last
    frame, never under steady writes, so the RESTART's own fsync had every page copied
    since the last RESTART to write (25-70 ms with the writers held). Before it, the
    background thread syncs the file, then copies and syncs what came meanwhile.
    """
    monkeypatch.setattr(sqlite_batches, "CHECKPOINT_EVERY", 10**9)
    monkeypatch.setattr(sqlite_batches, "WAL_RESTART_FRAMES", 100)
    synced: set[tuple[int, int]] = set()
    sync = SharedFile.sync

    def recorded_sync(file: SharedFile) -> None:
        stat = os.fstat(file.fd)
        synced.add((stat.st_dev, stat.st_ino))
        sync(file)

    monkeypatch.setattr(SharedFile, "sync", recorded_sync)
    seen = _record_checkpoints(monkeypatch)  # wraps the recording sync above
    path = tmp_path / "g.db"
    async with SqliteStore(path, clock=FakeClock()) as store:
        await _write_through_a_checkpoint(store, before=100)
        frames = _wal_frames(path)
    stat = os.stat(path)
    assert synced == {(stat.st_dev, stat.st_ino)}
    modes = [mode for mode, _, _ in seen]
    passes = (len(modes) - 3) // 2
    assert 1 <= passes <= sqlite_batches.CATCH_UP_PASSES
    assert modes == ["PASSIVE", "sync"] + ["PASSIVE", "sync"] * passes + ["RESTART"]
    assert {thread for mode, thread, _ in seen if mode != "RESTART"} == {"sqlite-checkpoint"}
    assert frames < 60, f"{frames} frames in the WAL: it did not start over"


def test_the_catch_up_stops_once_a_pass_finds_little_to_copy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each pass copies what was committed during the one before; it stops when that is
    small (the RESTART then copies as little), when it is not half the pass before's,
    when a pass fails, or after a few passes."""
    few = sqlite_batches.CATCH_UP_FRAMES - 1

    def passes(wal_sizes: list[int]) -> int:
        sizes = iter(wal_sizes)
        monkeypatch.setattr(sqlite_batches, "_checkpoint", lambda conn, mode: next(sizes))
        sqlite_batches._catch_up(None, None, 1_000)  # type: ignore[arg-type]
        return len(wal_sizes) - len(list(sizes))

    assert passes([1_500, 1_600, 1_600 + few, 99_999]) == 3
    assert passes([0, 99_999]) == 1  # failed (busy, or an I/O error): the RESTART decides
    # not converging: the second pass copied as much as the first (writes as fast as a
    # pass copies and syncs), so further passes would only prolong the disturbance
    assert passes([1_700, 2_400, 3_100, 3_150]) == 2
    shrinking = [2 ** (12 - n) for n in range(12)]  # each pass copies half the last
    assert passes([1_000 + sum(shrinking[: n + 1]) for n in range(12)]) == 6
    assert sqlite_batches.CATCH_UP_PASSES == 6


@pytest.mark.skipif(sys.platform != "linux", reason="the lock probe reads Linux's struct flock")
async def test_stores_on_one_file_share_the_descriptor_that_syncs_it(tmp_path: Path) -> None:
    """Closing a descriptor drops every POSIX lock the process holds on the file.

    If each store closed a descriptor of its own, the first to close would take the
    other's SQLite locks with it: in WAL mode the shared lock on the database file that
    tells another process closing its last connection not to delete the WAL.
    """
    path = tmp_path / "g.db"
    first = SqliteStore(path, clock=FakeClock())
    second = SqliteStore(path, clock=FakeClock())
    await first.open()
    await second.open()
    try:
        shared = first._db._file
        assert shared is not None and shared is second._db._file
        await second.kv_set("ns", "k", b"v", None)
        await first.close()
        assert _locked_by_another_process(path), "the second store lost its lock"
        os.fstat(shared.fd)  # still open
        assert await second.kv_get("ns", "k") == b"v"
    finally:
        await second.close()
    with pytest.raises(OSError):
        os.fstat(shared.fd)  # the last store closed it


def _locked_by_another_process(path: Path) -> bool:
    """Whether a process holds a lock on SQLite's shared-lock bytes of the database file."""
    probe = (
        "import fcntl, os, struct, sys\n"
        "fd = os.open(sys.argv[1], os.O_RDONLY)\n"
        "ask = struct.pack('hhqqi', fcntl.F_WRLCK, 0, 0x40000002, 510, 0)\n"
        "answer = struct.unpack('hhqqi', fcntl.fcntl(fd, fcntl.F_GETLK, ask))\n"
        "print(answer[0] != fcntl.F_UNLCK)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, str(path)], capture_output=True, text=True, check=True
    )
    return done.stdout.strip() == "True"


async def test_purge_catches_up_with_more_expired_rows_than_one_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_module, "PURGE_BATCH", 10)
    clock = FakeClock()
    path = tmp_path / "g.db"
    async with SqliteStore(path, clock=clock) as store:
        await store.enqueue([NewJob("t", b"x", f"k{i}") for i in range(35)], 10)
        clock.advance(sqlite_module.PURGE_EVERY + 1)
        counts = []
        for i in range(5):  # no time passes: the purge is due again because a batch was full
            await store.enqueue([NewJob("t", b"y", f"fresh{i}")], 10)
            counts.append(
                await store._run(
                    "n", lambda c: c.execute("SELECT count(*) FROM dedupe").fetchone()[0]
                )
            )
        assert counts == [26, 17, 8, 4, 5], counts
