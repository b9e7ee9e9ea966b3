"""SqliteStore specifics: the file, reopening, purging, query plans."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from gateway.clock import FakeClock
from gateway.delivery import sqlite as sqlite_module
from gateway.delivery.sqlite import SqliteStore
from gateway.delivery.store import NewJob
from gateway.errors import StoreError


async def test_creates_parent_directory_and_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "gw.sqlite3"
    async with SqliteStore(path) as store:
        await store.ping()
        assert path.exists()
        conn = sqlite3.connect(path)
        try:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
        finally:
            conn.close()


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
        conn = sqlite3.connect(path)
        try:
            assert conn.execute("SELECT key FROM dedupe").fetchall() == [("fresh",)]
            assert conn.execute("SELECT key FROM kv").fetchall() == [("forever",)]
        finally:
            conn.close()


async def test_claim_uses_the_ready_index(tmp_path: Path) -> None:
    """Claiming is O(ready threads): both claim queries are index lookups, never scans."""
    path = tmp_path / "gw.sqlite3"
    async with SqliteStore(path):
        pass
    conn = sqlite3.connect(path)
    try:
        ready = conn.execute("EXPLAIN QUERY PLAN " + sqlite_module.READY_SQL, (0.0, 10)).fetchall()
        head = conn.execute("EXPLAIN QUERY PLAN " + sqlite_module.HEAD_SQL, ("t",)).fetchall()
    finally:
        conn.close()
    assert "threads_by_ready" in str(ready) and "SCAN" not in str(ready)
    assert "jobs_by_thread" in str(head) and "SCAN" not in str(head)


async def test_two_stores_on_one_file_share_the_queue(tmp_path: Path) -> None:
    path = tmp_path / "gw.sqlite3"
    async with SqliteStore(path) as a, SqliteStore(path) as b:
        await a.enqueue([NewJob("t", b"1", None), NewJob("t", b"2", None)], 60)
        [job] = await b.claim("wb", 5, 30)
        assert await a.claim("wa", 5, 30) == []
        assert await b.complete(job, "wb")
        [nxt] = await a.claim("wa", 5, 30)
        assert nxt.payload == b"2"
