"""Embedded store: one SQLite file in WAL mode.

Durability: every write is one transaction committed before the coroutine returns.
With `journal_mode=WAL` and `synchronous=NORMAL` a commit appends its pages to the WAL
file with write(2) but does not fsync it (the WAL is fsynced at checkpoints). After
write(2) returns, the data lives in the kernel's page cache, which survives the death
of the process (crash, SIGKILL, OOM kill): the next open replays the WAL. Only an
operating-system crash or power loss can drop the last commits (never corrupt the
file). That is the guarantee a gateway process needs; machine-level durability is the
job of the redis backend or of replicated storage.

Concurrency: operations are batched and run by `sqlite_batches.GroupCommit`, on the
event loop while that cannot block and on the store's own thread when it could (the
write lock held by another store or process, checkpoints). Writers use `BEGIN
IMMEDIATE`, so several stores or processes on one file serialise through SQLite's write
lock.

Expired dedupe keys, key-value entries and locks are purged every `PURGE_EVERY`
seconds, `PURGE_BATCH` rows a table at a time; a full batch means more are due, and the
next enqueue purges again, so the purge keeps up with any rate of messages while no
transaction grows long.

Claiming is O(threads ready), not O(jobs) (the tables: `sqlite_schema`).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import orjson

from gateway.clock import Clock, system_clock
from gateway.delivery.sqlite_batches import GroupCommit
from gateway.delivery.sqlite_schema import (
    DEAD_SQL,
    LIVE_KV_SQL,
    SCHEMA,
    UNLEASE_SQL,
    claim_heads,
    insert_job,
)
from gateway.delivery.store import DeadLetter, Job, NewJob, Store, log, new_job_id

T = TypeVar("T")

# The scopes of writes (`GroupCommit.read_now`): a read of keys of one namespace need
# not wait for a queued write of jobs or of another namespace. (The purge in an
# enqueue deletes only rows that reads already ignore.)
QUEUE = "queue"
PURGE_EVERY = 60.0  # seconds (injected clock) between purges of expired rows
PURGE_BATCH = 1_000


class SqliteStore(Store):
    """SQLite backend; see the module docstring for durability and concurrency."""

    backend = "sqlite"

    def __init__(self, path: Path | str, clock: Clock = system_clock) -> None:
        super().__init__(clock)
        self.path = Path(path)
        self._db = GroupCommit(self.path)
        self._last_purge = float("-inf")

    # -- plumbing ----------------------------------------------------------------------

    async def _run(self, what: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run the read `fn(conn)` in the next batch; every sqlite error is a StoreError."""
        self._check_open()
        return await self._db.queue(what, fn, write=False)

    async def _write(
        self,
        what: str,
        fn: Callable[[sqlite3.Connection], T],
        soon: bool = False,
        scope: str | None = None,
    ) -> T:
        """Run `fn(conn)` atomically: committed when this returns, rolled back on error.

        `soon`: it may wait a moment for company in its transaction; `scope`: what it
        changes, QUEUE or `_kv_scope(ns)`, None for anything (`GroupCommit.queue`).
        """
        self._check_open()
        return await self._db.queue(what, fn, write=True, soon=soon, scope=scope)

    async def open(self) -> None:
        if self._opened:
            return
        await self._db.open(SCHEMA)
        self._opened = True

    async def close(self) -> None:
        if not self._opened:
            return
        self._opened = False  # no new operations; the queued ones finish first
        await self._db.close()

    async def ping(self) -> None:
        await self._run("ping", lambda c: c.execute("SELECT 1").fetchone())

    def _maybe_purge(self, conn: sqlite3.Connection, now: float) -> None:
        if now - self._last_purge < PURGE_EVERY:
            return
        self._last_purge = now
        full = False
        for sql in (
            "DELETE FROM dedupe WHERE key IN (SELECT key FROM dedupe WHERE expires_at <= ?"
            " LIMIT ?)",
            "DELETE FROM kv WHERE rowid IN (SELECT rowid FROM kv WHERE expires_at IS NOT NULL"
            " AND expires_at <= ? LIMIT ?)",
            "DELETE FROM locks WHERE rowid IN (SELECT rowid FROM locks WHERE expires_at <= ?"
            " LIMIT ?)",
        ):
            full |= conn.execute(sql, (now, PURGE_BATCH)).rowcount == PURGE_BATCH
        if full:  # more expired rows than one batch: purge again at the next enqueue
            self._last_purge = float("-inf")

    # -- queue -------------------------------------------------------------------------

    async def enqueue(self, jobs: Sequence[NewJob], dedupe_ttl: float) -> list[bool]:
        return [r is not False for r in await self._enqueue(jobs, dedupe_ttl, None)]

    async def enqueue_and_claim(
        self, jobs: Sequence[NewJob], dedupe_ttl: float, owner: str, lease: float
    ) -> list[bool | Job]:
        return await self._enqueue(jobs, dedupe_ttl, (owner, lease))

    async def _enqueue(
        self, jobs: Sequence[NewJob], dedupe_ttl: float, lease: tuple[str, float] | None
    ) -> list[bool | Job]:
        if not jobs:
            self._check_open()
            return []

        def tx(conn: sqlite3.Connection) -> list[bool | Job]:
            now = self._clock()
            self._maybe_purge(conn, now)
            results: list[bool | Job] = []
            for job in jobs:
                if job.dedupe_key is not None:
                    cur = conn.execute(
                        "INSERT INTO dedupe (key, expires_at) VALUES (?, ?) ON CONFLICT (key)"
                        " DO UPDATE SET expires_at = excluded.expires_at"
                        " WHERE dedupe.expires_at <= ?",
                        (job.dedupe_key, now + dedupe_ttl, now),
                    )
                    if cur.rowcount != 1:
                        results.append(False)
                        continue
                id = new_job_id()
                if insert_job(conn, id, job.thread_key, job.payload, now, lease):
                    results.append(Job(id, job.thread_key, job.payload, 0, now))
                else:
                    results.append(True)
            return results

        results = await self._write("enqueue", tx, scope=QUEUE)
        if any(r is True for r in results):
            self.notify_work()
        return results

    async def claim(self, owner: str, limit: int, lease: float) -> list[Job]:
        if limit <= 0:
            self._check_open()
            return []
        return await self._write(
            "claim", lambda c: claim_heads(c, owner, limit, lease, self._clock())
        )

    @staticmethod
    def _held(conn: sqlite3.Connection, job: Job, owner: str, op: str) -> bool:
        row = conn.execute(
            "SELECT owner, leased_id FROM threads WHERE thread_key = ?", (job.thread_key,)
        ).fetchone()
        if row is None or row[0] != owner or row[1] != job.id:
            _lease_lost(op, owner, job)
            return False
        return True

    def _pop_head(self, conn: sqlite3.Connection, job: Job, now: float) -> bool:
        """Delete the leased head; return True when its thread has more jobs."""
        conn.execute("DELETE FROM jobs WHERE id = ?", (job.id,))
        return self._release_thread(conn, job, now)

    @staticmethod
    def _release_thread(conn: sqlite3.Connection, job: Job, now: float) -> bool:
        """After its head went: drop the thread if empty, else unlease it (True)."""
        # the thread goes with its last job; one statement for the commoner case
        gone = conn.execute(
            "DELETE FROM threads WHERE thread_key = ?"
            " AND NOT EXISTS (SELECT 1 FROM jobs WHERE thread_key = ?)",
            (job.thread_key, job.thread_key),
        ).rowcount
        if gone:
            return False
        conn.execute(UNLEASE_SQL, (now, job.thread_key))
        return True

    def _complete(
        self, conn: sqlite3.Connection, job: Job, owner: str, now: float
    ) -> tuple[bool, bool]:
        """(completed, its thread has more jobs): the leased head removed, if still held."""
        # the lease check is the DELETE's condition: one statement per message fewer
        held = conn.execute(
            "DELETE FROM jobs WHERE id = ? AND EXISTS (SELECT 1 FROM threads"
            " WHERE thread_key = ? AND owner = ? AND leased_id = ?)",
            (job.id, job.thread_key, owner, job.id),
        ).rowcount
        if not held:
            _lease_lost("complete", owner, job)
            return False, False
        return True, self._release_thread(conn, job, now)

    async def complete(self, job: Job, owner: str) -> bool:
        # CXone has the message: the completion joins the next batch (SOON_S at most)
        done, more = await self._write(
            "complete", lambda c: self._complete(c, job, owner, self._clock()), True, QUEUE
        )
        if more:
            self.notify_work()
        return done

    async def complete_and_claim(
        self, job: Job, owner: str, lease: float
    ) -> tuple[bool, list[Job]]:
        def tx(conn: sqlite3.Connection) -> tuple[bool, bool, list[Job]]:
            now = self._clock()
            done, more = self._complete(conn, job, owner, now)
            return done, more, claim_heads(conn, owner, 1, lease, now)

        done, more, claimed = await self._write("complete", tx)
        if more and all(j.thread_key != job.thread_key for j in claimed):
            self.notify_work()  # the thread's next job is for another worker
        return done, claimed

    async def retry_later(
        self, job: Job, owner: str, not_before: float, attempt: dict[str, Any]
    ) -> bool:
        record = orjson.dumps(attempt)

        def tx(conn: sqlite3.Connection) -> bool:
            if not self._held(conn, job, owner, "retry_later"):
                return False
            (log_,) = conn.execute("SELECT attempts FROM jobs WHERE id = ?", (job.id,)).fetchone()
            conn.execute(
                "UPDATE jobs SET attempts = ? WHERE id = ?", (_append(log_, record), job.id)
            )
            conn.execute(UNLEASE_SQL, (not_before, job.thread_key))
            return True

        return await self._write("retry_later", tx)

    async def dead_letter(self, job: Job, owner: str, reason: str, attempt: dict[str, Any]) -> bool:
        record = orjson.dumps(attempt)

        def tx(conn: sqlite3.Connection) -> tuple[bool, bool]:
            if not self._held(conn, job, owner, "dead_letter"):
                return False, False
            now = self._clock()
            row = conn.execute(
                "SELECT thread_key, payload, attempts FROM jobs WHERE id = ?", (job.id,)
            ).fetchone()
            conn.execute(
                "INSERT INTO dead (id, thread_key, payload, reason, attempts, failed_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (job.id, row[0], row[1], reason, _append(row[2], record), now),
            )
            return True, self._pop_head(conn, job, now)

        done, more = await self._write("dead_letter", tx)
        if more:
            self.notify_work()
        return done

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        sql, args = DEAD_SQL + " ORDER BY seq DESC LIMIT ?", (max(limit, 0),)
        rows = await self._run("dead_letters", lambda c: c.execute(sql, args).fetchall())
        return [_dead(r) for r in rows]

    async def get_dead(self, id: str) -> DeadLetter | None:
        sql = DEAD_SQL + " WHERE id = ?"
        row = await self._run("get_dead", lambda c: c.execute(sql, (id,)).fetchone())
        return None if row is None else _dead(row)

    async def replay_dead(self, id: str) -> bool:
        def tx(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                "SELECT thread_key, payload FROM dead WHERE id = ?", (id,)
            ).fetchone()
            if row is None:
                return False
            conn.execute("DELETE FROM dead WHERE id = ?", (id,))
            insert_job(conn, id, row[0], row[1], self._clock())
            return True

        done = await self._write("replay_dead", tx)
        if done:
            self.notify_work()
        return done

    async def drop_dead(self, id: str) -> bool:
        return await self._write(
            "drop_dead", lambda c: c.execute("DELETE FROM dead WHERE id = ?", (id,)).rowcount == 1
        )

    async def depth(self) -> int:
        return await self._count("jobs")

    async def dead_count(self) -> int:
        return await self._count("dead")

    async def _count(self, table: str) -> int:
        sql = f"SELECT count(*) FROM {table}"  # noqa: S608 (a constant table name)
        return int(await self._run(f"count {table}", lambda c: c.execute(sql).fetchone()[0]))

    # -- key-value and locks -------------------------------------------------------------

    async def kv_get(self, ns: str, key: str) -> bytes | None:
        def read(conn: sqlite3.Connection) -> Any:
            return conn.execute(LIVE_KV_SQL, (ns, key, self._clock())).fetchone()

        self._check_open()
        # one per inbound message (the alias), while a completion often waits for company
        done, row = self._db.read_now("kv_get", read, _kv_scope(ns))
        if not done:
            row = await self._run("kv_get", read)
        return None if row is None else bytes(row[0])

    async def kv_set(self, ns: str, key: str, value: bytes, ttl: float | None) -> None:
        await self._write("kv_set", self._kv_setter(ns, key, value, ttl), scope=_kv_scope(ns))

    def _kv_setter(
        self, ns: str, key: str, value: bytes, ttl: float | None
    ) -> Callable[[sqlite3.Connection], None]:
        def tx(conn: sqlite3.Connection) -> None:
            expires = None if ttl is None else self._clock() + ttl
            conn.execute(
                "INSERT OR REPLACE INTO kv (ns, key, value, expires_at) VALUES (?, ?, ?, ?)",
                (ns, key, value, expires),
            )

        return tx

    def _set_later(
        self, ns: str, key: str, value: bytes, ttl: float | None
    ) -> asyncio.Future[Any] | None:
        # no task: the write waits in the batch queue for company (SOON_S at most)
        self._check_open()
        setter = self._kv_setter(ns, key, value, ttl)
        return self._db.queue("kv_set", setter, True, True, _kv_scope(ns))

    async def kv_add(self, ns: str, key: str, value: bytes, ttl: float | None) -> bool:
        def tx(conn: sqlite3.Connection) -> bool:
            now = self._clock()
            expires = None if ttl is None else now + ttl
            cur = conn.execute(
                "INSERT INTO kv (ns, key, value, expires_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value,"
                " expires_at = excluded.expires_at"
                " WHERE kv.expires_at IS NOT NULL AND kv.expires_at <= ?",
                (ns, key, value, expires, now),
            )
            return cur.rowcount == 1

        return await self._write("kv_add", tx, scope=_kv_scope(ns))

    async def kv_delete(self, ns: str, key: str) -> None:
        await self._write(
            "kv_delete",
            lambda c: c.execute("DELETE FROM kv WHERE ns = ? AND key = ?", (ns, key)),
            scope=_kv_scope(ns),
        )

    async def _lock_try(self, name: str, token: str, ttl: float) -> bool:
        def tx(conn: sqlite3.Connection) -> bool:
            now = self._clock()
            cur = conn.execute(
                "INSERT INTO locks (name, token, expires_at) VALUES (?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET token = excluded.token,"
                " expires_at = excluded.expires_at WHERE locks.expires_at <= ?",
                (name, token, now + ttl, now),
            )
            return cur.rowcount == 1

        return await self._write("lock", tx)

    async def _lock_release(self, name: str, token: str) -> None:
        await self._write(
            "unlock",
            lambda c: c.execute("DELETE FROM locks WHERE name = ? AND token = ?", (name, token)),
        )


def _kv_scope(ns: str) -> str:
    return "kv:" + ns


def _lease_lost(op: str, owner: str, job: Job) -> None:
    log.warning("%s ignored: %s no longer holds the lease on job %s", op, owner, job.id)


def _append(log_json: bytes | str, record: bytes) -> bytes:
    """Append one JSON record to a JSON array text, without re-encoding the others."""
    text = log_json.encode() if isinstance(log_json, str) else bytes(log_json)
    if text.strip() == b"[]":
        return b"[" + record + b"]"
    return text.rstrip()[:-1] + b"," + record + b"]"


def _dead(row: Sequence[Any]) -> DeadLetter:
    return DeadLetter(
        id=row[0],
        thread_key=row[1],
        payload=bytes(row[2]),
        reason=row[3],
        attempts=list(orjson.loads(row[4])),
        failed_at=float(row[5]),
    )
