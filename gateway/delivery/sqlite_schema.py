"""The SQLite store's tables and its queue statements (`gateway.delivery.sqlite`).

`threads` holds one row per non-empty thread with `ready_at` = the head's not_before or
the end of its lease (indexed), so claiming is O(threads ready), not O(jobs).
"""

from __future__ import annotations

import sqlite3

import orjson

from gateway.delivery.store import Job

# `seq` orders jobs (FIFO per thread) and dead letters (newest first). Without
# AUTOINCREMENT a new row gets max(seq) + 1, greater than every row present, which is all
# the ordering needs, and a commit writes one page fewer (sqlite_sequence): files created
# before keep AUTOINCREMENT and work the same. `dedupe` and `threads` are WITHOUT ROWID:
# their rows live in the primary key's B-tree, so an event's intake and completion
# dirty two pages fewer than with a rowid table beside its key index (a sixth fewer
# bytes written per single event at moderate load, docs/performance.md). Files created
# before keep their rowid tables; no statement names a rowid, so both work the same.
SCHEMA = """
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    thread_key TEXT NOT NULL,
    payload BLOB NOT NULL,
    attempts BLOB NOT NULL DEFAULT '[]',
    enqueued_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_thread ON jobs (thread_key, seq);
CREATE TABLE IF NOT EXISTS threads (
    thread_key TEXT PRIMARY KEY,
    ready_at REAL NOT NULL,
    owner TEXT,
    leased_id TEXT
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS threads_by_ready ON threads (ready_at);
CREATE TABLE IF NOT EXISTS dedupe (key TEXT PRIMARY KEY, expires_at REAL NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS dedupe_by_expiry ON dedupe (expires_at);
CREATE TABLE IF NOT EXISTS dead (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    thread_key TEXT NOT NULL,
    payload BLOB NOT NULL,
    reason TEXT NOT NULL,
    attempts BLOB NOT NULL,
    failed_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS kv (
    ns TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL, expires_at REAL,
    PRIMARY KEY (ns, key)
);
CREATE INDEX IF NOT EXISTS kv_by_expiry ON kv (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS locks (name TEXT PRIMARY KEY, token TEXT NOT NULL,
                                  expires_at REAL NOT NULL);
PRAGMA user_version = 1;
COMMIT;
"""

# Claiming: the ready threads, each with its head job, in one query of index lookups
# (tested with EXPLAIN QUERY PLAN); a thread without jobs (which cannot happen) comes back
# with NULLs and is repaired.
CLAIM_SQL = (
    "SELECT t.thread_key, j.id, j.payload, j.attempts, j.enqueued_at FROM threads AS t"
    " LEFT JOIN jobs AS j ON j.seq ="
    " (SELECT seq FROM jobs WHERE thread_key = t.thread_key ORDER BY seq LIMIT 1)"
    " WHERE t.ready_at <= ? ORDER BY t.ready_at LIMIT ?"
)
UNLEASE_SQL = "UPDATE threads SET ready_at = ?, owner = NULL, leased_id = NULL WHERE thread_key = ?"
DEAD_SQL = "SELECT id, thread_key, payload, reason, attempts, failed_at FROM dead"
LIVE_KV_SQL = (
    "SELECT value FROM kv WHERE ns = ? AND key = ? AND (expires_at IS NULL OR expires_at > ?)"
)


def claim_heads(
    conn: sqlite3.Connection, owner: str, limit: int, lease: float, now: float
) -> list[Job]:
    """Lease up to `limit` ready thread heads to `owner` (inside the caller's transaction)."""
    out: list[Job] = []
    for key, id, payload, attempts, enqueued_at in conn.execute(CLAIM_SQL, (now, limit)).fetchall():
        if id is None:  # a thread without jobs cannot happen; repair rather than wedge
            conn.execute("DELETE FROM threads WHERE thread_key = ?", (key,))
            continue
        conn.execute(
            "UPDATE threads SET ready_at = ?, owner = ?, leased_id = ? WHERE thread_key = ?",
            (now + lease, owner, id, key),
        )
        out.append(Job(id, key, bytes(payload), len(orjson.loads(attempts)), enqueued_at))
    return out


def insert_job(
    conn: sqlite3.Connection,
    id: str,
    thread_key: str,
    payload: bytes,
    now: float,
    lease: tuple[str, float] | None = None,
) -> bool:
    """Append a job to its thread; True when `lease` was given and the job got it."""
    conn.execute(
        "INSERT INTO jobs (id, thread_key, payload, enqueued_at) VALUES (?, ?, ?, ?)",
        (id, thread_key, payload, now),
    )
    if lease is None:
        conn.execute(
            "INSERT INTO threads (thread_key, ready_at) VALUES (?, ?)"
            " ON CONFLICT (thread_key) DO NOTHING",
            (thread_key, now),
        )
        return False
    # a new thread row means the thread was empty: this job is its head, leased at once
    cur = conn.execute(
        "INSERT INTO threads (thread_key, ready_at, owner, leased_id) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (thread_key) DO NOTHING",
        (thread_key, now + lease[1], lease[0], id),
    )
    return cur.rowcount == 1
