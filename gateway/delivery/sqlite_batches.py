"""Group commit for the SQLite store: batches of operations, run on the loop or a thread.

Every store operation is a function of a connection. A read that finds no write of
its scope queued before it runs at once (`read_now`); other operations submitted
during one turn of the event loop form a batch: the reads run as they are, the writes
share one `BEGIN IMMEDIATE` transaction. A batch runs *inline*, on the event-loop thread, through
a connection that never waits (`busy_timeout = 0`) and never checkpoints: a commit in
WAL mode with `synchronous = NORMAL` is a few write(2) calls into the page cache, tens
of microseconds, far less than handing the batch to a thread and back (measured
120-250 µs of CPU, most of a store operation's cost). A write no request waits for (a
delivered job's completion, a reply's answer record: `soon=True`) waits up to `SOON_S`
for company instead of making a transaction of its own.

Everything that can block goes to the store's own thread and its own connection:
- a batch that finds the write lock taken (another store or process on the file) runs
  there, waiting for the lock up to `BUSY_TIMEOUT_MS`; the batches submitted while it
  waits run after it (order is kept: a batch starts only when the one before it is
  done), back on the loop unless the file is still busy;
- the WAL checkpoint (which fsyncs) starts after every `CHECKPOINT_EVERY` commits. It
  is PASSIVE: it copies what the WAL holds into the database without taking the write
  lock, so inline batches go on committing meanwhile. It runs on a thread and a
  connection of its own at background priority (nice `BACKGROUND_NICE`, Linux): at
  normal priority the copy took the core from the event loop a scheduler slice at a
  time (replies' p99 at 1,780/s, medians of twelve 5-s phases: 6.4 ms, at nice 19 4.7).
  It holds no lock the loop waits for, so it may wait for idle time; on a saturated
  core it still gets the small share the scheduler gives nice 19 (closed-loop intake:
  the WAL peaked at 106 MB in a minute, 104 MB in three, 85 MB at normal priority).
  A PASSIVE checkpoint alone never lets the WAL start over under steady writes (the
  frames committed while it copies are always left; the WAL reached 9 GB in a
  ten-minute soak). So once the WAL holds `WAL_RESTART_FRAMES` frames (or a quarter of
  the database's pages, if more: `_restart_frames`), a RESTART
  checkpoint follows, on the store's thread at normal priority: it takes the write
  lock, copies what the PASSIVE ones left, syncs the database file and makes the next
  writer start the WAL from its beginning. Batches find the lock taken and wait on the
  thread behind it only for that (a RESTART of the whole WAL every time held them for
  the whole copy and its fsync: a p99 of 20-50 ms on replies). To keep it short, the
  background thread first catches up (`_catch_up`): a PASSIVE checkpoint syncs the
  database file only when it copied the WAL's last frame, which under steady writes it
  never does, so the pages of every PASSIVE copy since the last RESTART were left for
  the RESTART's fsync (25-70 ms, growing with the file); the catch-up syncs them, then
  copies and syncs what was committed meanwhile, pass after pass, until a pass finds
  little to copy or the passes stop converging (the RESTART then held the writers 1-4
  ms).

A batch first runs plainly; only when one of several operations fails is it rolled back
and run again with a savepoint around each operation, so that the failure takes back
that operation's writes alone (savepoints would cost two statements per operation).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from gateway.delivery.sqlite_file import SharedFile
from gateway.errors import StoreError

T = TypeVar("T")
Outcomes = list[tuple[bool, Any]]

BUSY_TIMEOUT_MS = 10_000  # how long the store's thread waits for another writer
CHECKPOINT_EVERY = 250  # inline commits between two WAL checkpoints on the thread
WAL_RESTART_FRAMES = 16_384  # the WAL starts over past this many frames (64 MB of 4 KB pages)
WAL_RESTART_SHARE = 4  # or past the database's pages / this, if more (see `_restart_frames`)
CATCH_UP_PASSES = 6  # at most this many PASSIVE copies and syncs before a RESTART
CATCH_UP_FRAMES = 64  # a pass copying fewer frames than this ends them (`_catch_up`)
BACKGROUND_NICE = 19  # the PASSIVE checkpoints' thread: CPU the event loop leaves idle
SOON_S = 0.002  # how long a write submitted `soon` waits for company


class GroupCommit:
    """The connections to one SQLite file and the batching of operations on them."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._inline: sqlite3.Connection | None = None  # used on the event-loop thread
        self._thread: sqlite3.Connection | None = None  # used on the executor's thread
        self._executor: ThreadPoolExecutor | None = None
        self._checkpointer: sqlite3.Connection | None = None  # the background thread's
        self._background: ThreadPoolExecutor | None = None
        self._file: SharedFile | None = None  # to sync the database file (`_catch_up`)
        self._pending: list[_Op] = []
        # the scopes of the pending writes (None: anything), for `read_now`: one per
        # inbound message, which scanned the pending operations (thirty at saturation)
        self._write_scopes: set[str | None] = set()
        self._scheduled = False  # an inline run is scheduled with call_soon
        self._soon: asyncio.TimerHandle | None = None  # the run `soon` writes wait for
        self._on_thread: asyncio.Task[None] | None = None  # batches waiting for the lock
        self._checkpoint: asyncio.Task[None] | None = None
        self._commits = 0
        # the loop of `open`; asyncio.get_running_loop() costs a getpid() syscall per call
        # on Python 3.11, and every store operation comes through here
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- opening and closing ---------------------------------------------------------

    async def open(self, schema: str) -> None:
        """Create the file and its schema; raise StoreError naming the file otherwise."""
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-store")

        def connect() -> tuple[sqlite3.Connection, sqlite3.Connection, sqlite3.Connection]:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = SharedFile.acquire(self.path)  # before any connection (its doc)
            opened: list[sqlite3.Connection] = []
            try:
                thread = _connect(self.path, BUSY_TIMEOUT_MS)
                opened.append(thread)
                mode = thread.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise sqlite3.OperationalError(f"cannot switch to WAL (got {mode})")
                thread.executescript(schema)
                for _ in range(2):  # the loop's and the background checkpoints'
                    opened.append(_connect(self.path, 0))
                    opened[-1].execute("PRAGMA wal_autocheckpoint = 0")  # ours, by turns
            except BaseException:
                for conn in opened:
                    conn.close()
                self._release_file()
                raise
            return thread, opened[1], opened[2]

        try:
            loop = asyncio.get_running_loop()
            connections = await loop.run_in_executor(executor, connect)
        except (sqlite3.Error, OSError) as exc:
            executor.shutdown(wait=False)
            raise StoreError(f"sqlite store {self.path}: cannot open: {exc}") from exc
        self._thread, self._inline, self._checkpointer = connections
        self._loop = loop
        self._executor = executor
        self._background = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="sqlite-checkpoint", initializer=_background_priority
        )

    async def close(self) -> None:
        """Finish the queued operations and checkpoints, then close the connections."""
        while True:
            if self._pending and self._on_thread is None:
                self._run_inline()
            waiting = self._on_thread or self._checkpoint
            if waiting is None:
                if not self._pending:
                    break
                continue
            with suppress(Exception):
                await asyncio.shield(waiting)
            if waiting is self._checkpoint:
                self._checkpoint = None
        inline, checkpointer, thread = self._inline, self._checkpointer, self._thread
        executor, background = self._executor, self._background
        self._inline = self._checkpointer = self._thread = None
        self._executor = self._background = None
        if background is not None:
            background.shutdown(wait=True)
        if inline is None or checkpointer is None or thread is None or executor is None:
            return
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(executor, inline.close)
            await loop.run_in_executor(executor, checkpointer.close)
            await loop.run_in_executor(executor, thread.close)  # the last: it checkpoints
        finally:
            executor.shutdown(wait=True)
            self._release_file()

    def _release_file(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            file.release()

    # -- submitting ------------------------------------------------------------------

    def queue(
        self,
        what: str,
        fn: Callable[[sqlite3.Connection], T],
        write: bool,
        soon: bool = False,
        scope: str | None = None,
    ) -> asyncio.Future[T]:
        """Queue `fn(conn)` for the next batch; the future of its outcome, to await.

        A write is committed when the future is done and rolled back when it fails; sqlite
        errors come back as StoreError naming the file and `what`.

        `soon`: for a write no request waits for (a delivered job's completion), the
        batch is not started for it: any operation submitted meanwhile takes it along in
        its own transaction, and it runs by itself after `SOON_S` at most. At moderate
        load, where a batch rarely has company, it so costs no commit of its own. Until
        it runs, reads of what it writes queue behind it and see its writes.

        `scope`: what a write changes, for `read_now` ("queue", "kv:<ns>"); None: anything.
        """
        loop = self._loop
        if loop is None:
            raise StoreError(f"sqlite store {self.path}: not open")
        future: asyncio.Future[T] = loop.create_future()
        self._pending.append(_Op(what, fn, write, future, scope))
        if write:
            self._write_scopes.add(scope)
        if not self._scheduled and self._on_thread is None:
            if not soon:
                self._scheduled = True
                loop.call_soon(self._run_inline)
            elif self._soon is None:
                self._soon = loop.call_later(SOON_S, self._run_soon)
        return future

    def _run_soon(self) -> None:
        self._soon = None
        if not self._scheduled:  # else the run already scheduled takes what is pending
            self._run_inline()

    def read_now(
        self, what: str, fn: Callable[[sqlite3.Connection], T], scope: str | None = None
    ) -> tuple[bool, T | None]:
        """Run the read `fn(conn)` of `scope` at once, when no write of it is queued before.

        (True, result), or (False, None) when it must take its turn (`queue`): a write
        of its scope (or of an unknown one, or a read of an unknown scope) is pending, a
        batch runs on the thread (the read must see their writes), or the file is busy.
        A read needs no write lock and in WAL mode waits for no writer, so it costs the
        statement alone, not a batch and a wake-up; and a queue write waiting for
        company (a completion) is not made to run early by a key read.
        """
        conn = self._inline
        if self._on_thread is not None or conn is None or conn.in_transaction:
            return False, None
        scopes = self._write_scopes
        if scopes and (scope is None or None in scopes or scope in scopes):
            return False, None
        try:
            return True, fn(conn)
        except sqlite3.Error as exc:
            if _is_busy(exc):
                return False, None
            raise _wrap(exc, self.path, what) from None

    def _run_inline(self) -> None:
        """Run what is pending on the loop's connection; to the thread if the file is busy."""
        self._scheduled = False
        if self._on_thread is not None or not self._pending:
            return  # the thread's batches take the pending ones in turn
        if self._soon is not None:  # this run takes the writes waiting for company
            self._soon.cancel()
            self._soon = None
        ops, self._pending = self._pending, []
        self._write_scopes.clear()
        outcomes = self._execute(self._inline, ops, inline=True)
        if outcomes is None:  # busy: wait for the lock on the thread, keeping the order
            self._on_thread = asyncio.get_running_loop().create_task(
                self._run_on_thread(ops), name="sqlite-store-busy"
            )
            return
        _settle(ops, outcomes)
        if any(op.write for op in ops):
            self._commits += 1
            if self._commits >= CHECKPOINT_EVERY and self._checkpoint is None:
                self._start_checkpoint()

    async def _run_on_thread(self, ops: list[_Op]) -> None:
        """Run `ops` on the store's thread, then hand what came meanwhile back to the loop.

        The batches submitted while `ops` waited for the lock run after it, inline again
        (and back here only if the file is still busy): staying on the thread while
        submissions keep coming made every later batch pay a thread hop, and under
        steady load the thread fell behind for tens of milliseconds after each WAL
        RESTART (replies' p99).
        """
        loop = asyncio.get_running_loop()
        try:
            outcomes = await loop.run_in_executor(
                self._executor, self._execute, self._thread, ops, False
            )
        except BaseException as exc:  # the executor is gone (interpreter exit)
            self._on_thread = None
            message = f"sqlite store {self.path}: not available: {exc!r}"
            _settle(ops, [(False, StoreError(message)) for _ in ops])
            if not isinstance(exc, Exception):
                raise
            return
        self._on_thread = None
        assert outcomes is not None  # only inline runs report busy
        _settle(ops, outcomes)
        if self._pending and not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._run_inline)

    def _start_checkpoint(self) -> None:
        self._commits = 0
        if self._loop is None or self._background is None:
            return
        self._checkpoint = self._loop.create_task(self._checkpoints(), name="sqlite-checkpoint")
        self._checkpoint.add_done_callback(self._checkpoint_done)

    async def _checkpoints(self) -> None:
        """PASSIVE in the background; RESTART on the store's thread once the WAL is long."""
        loop, background, executor = self._loop, self._background, self._executor
        checkpointer, thread = self._checkpointer, self._thread
        assert loop is not None and background is not None and executor is not None
        assert checkpointer is not None and thread is not None
        frames, pages = await loop.run_in_executor(background, _passive, checkpointer)
        if frames >= _restart_frames(pages):
            await loop.run_in_executor(background, _catch_up, checkpointer, self._file, frames)
            await loop.run_in_executor(executor, _checkpoint, thread, "RESTART")

    def _checkpoint_done(self, _: asyncio.Task[None]) -> None:
        self._checkpoint = None

    # -- running one batch -----------------------------------------------------------

    def _execute(
        self, conn: sqlite3.Connection | None, ops: list[_Op], inline: bool
    ) -> Outcomes | None:
        """Run one batch, its writes in one transaction; None: `inline` and the file is busy."""
        if conn is None:
            return [(False, StoreError(f"sqlite store {self.path} is closed")) for _ in ops]
        if not any(op.write for op in ops):  # reads need no write lock
            reads = [self._call(conn, op) for op in ops]
            if inline and any(not ok and _is_busy(value) for ok, value in reads):
                return None  # e.g. another process recovering the WAL: wait on the thread
            return reads
        try:
            outcomes = self._transaction(conn, ops, isolate=False)
            if outcomes is None:
                outcomes = self._transaction(conn, ops, isolate=True)
        except Exception as exc:  # BEGIN, a savepoint or COMMIT failed: nothing was written
            with suppress(sqlite3.Error):
                if conn.in_transaction:
                    conn.rollback()
            if inline and _is_busy(exc):
                return None
            what = "+".join(sorted({op.what for op in ops}))
            message = str(_wrap(exc, self.path, what))
            return [(False, StoreError(message)) for _ in ops]
        assert outcomes is not None
        return outcomes

    def _transaction(
        self, conn: sqlite3.Connection, ops: list[_Op], isolate: bool
    ) -> Outcomes | None:
        """Run `ops` in one transaction; None when one of several failed and not `isolate`."""
        outcomes: Outcomes = []
        conn.execute("BEGIN IMMEDIATE")
        for op in ops:
            if isolate:
                conn.execute("SAVEPOINT op")
            outcome = self._call(conn, op)
            if not conn.in_transaction:  # an error that ended the whole transaction
                raise outcome[1]
            if isolate:
                if not outcome[0]:
                    conn.execute("ROLLBACK TO op")
                conn.execute("RELEASE op")
            elif not outcome[0]:
                conn.rollback()
                return None if len(ops) > 1 else [outcome]
            outcomes.append(outcome)
        conn.commit()
        return outcomes

    def _call(self, conn: sqlite3.Connection, op: _Op) -> tuple[bool, Any]:
        try:
            return True, op.fn(conn)
        except Exception as exc:
            return False, _wrap(exc, self.path, op.what)


@dataclass(slots=True)
class _Op:
    """One queued store operation and the future its caller awaits."""

    what: str
    fn: Callable[[sqlite3.Connection], Any]
    write: bool
    future: asyncio.Future[Any]
    scope: str | None = None  # what a write changes (`GroupCommit.read_now`); None: anything


def _connect(path: Path, busy_timeout_ms: int) -> sqlite3.Connection:
    conn = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, timeout=busy_timeout_ms / 1000
    )
    try:
        conn.execute(f"PRAGMA busy_timeout = {busy_timeout_ms}")
        conn.execute("PRAGMA synchronous = NORMAL")
    except BaseException:
        conn.close()
        raise
    return conn


def _checkpoint(conn: sqlite3.Connection, mode: str) -> int:
    """Run a checkpoint; the frames the WAL holds (0 when it failed: the next one will do)."""
    with suppress(sqlite3.Error):
        # (busy, frames in the WAL, frames checkpointed)
        ((_, frames, _),) = conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchall()
        return int(frames)
    return 0


def _passive(conn: sqlite3.Connection) -> tuple[int, int]:
    """A PASSIVE checkpoint: the frames the WAL holds and the database's size in pages."""
    frames = _checkpoint(conn, "PASSIVE")
    with suppress(sqlite3.Error):
        ((pages,),) = conn.execute("PRAGMA page_count").fetchall()
        return frames, int(pages)
    return frames, 0


def _catch_up(conn: sqlite3.Connection, file: SharedFile | None, frames: int) -> None:
    """Bring the database file up to the WAL's end, synced, so a RESTART finds little to do.

    The RESTART holds the writers while it copies what is left and syncs the database
    file, and that sync writes every page copied since the database was last synced: a
    PASSIVE checkpoint syncs it only when it copied the WAL's last frame, which under
    steady writes it never does. So sync here, off the writers' path, then copy and
    sync what was committed meanwhile, and again, until a pass copies fewer than
    `CATCH_UP_FRAMES` frames, or not half as many as the pass before: then the writes
    come as fast as a pass can copy and sync (each PASSIVE syncs the WAL first, and the
    writers' appends slow down meanwhile), and more passes would only prolong that.
    Measured on one core with writes going on, a RESTART past 64 MB of WAL in a 180 MB
    database held the writers 21-61 ms without this, 1.0-3.6 ms with it.
    """
    if file is not None:
        file.sync()
    before: int | None = None  # frames the pass before copied
    for _ in range(CATCH_UP_PASSES):
        latest = _checkpoint(conn, "PASSIVE")
        if file is not None:
            file.sync()
        copied, frames = latest - frames, latest
        if copied < CATCH_UP_FRAMES:  # also when it failed (0) or the WAL restarted
            return
        if before is not None and copied > before // 2:
            return  # not converging: writes come as fast as a pass copies and syncs
        before = copied


def _restart_frames(pages: int) -> int:
    """How long the WAL may grow before a RESTART, for a database of `pages` pages.

    The RESTART's fsync of the database file holds the writers. Before `_catch_up` it
    wrote every page the PASSIVE checkpoints had copied since the last RESTART, and it
    grew with the file (measured on the benchmark's disk with random keys: 5 ms at 4 MB,
    15 ms at 60 MB, 50 ms at 300 MB; 0.3-1 ms without the fsyncs). A WAL allowed a
    fixed share of the database made that pause proportionally rarer; since the
    catch-up syncs those pages first it also spares a large file's catch-up syncs. Up
    to 256 MB of database the 64 MB floor applies.
    """
    return max(WAL_RESTART_FRAMES, pages // WAL_RESTART_SHARE)


def _background_priority() -> None:
    """Lower the calling thread's priority (Linux: nice is per thread; elsewhere nothing)."""
    if sys.platform == "linux":
        with suppress(OSError):  # e.g. a seccomp profile refusing it: normal priority
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICE)


def _settle(ops: list[_Op], outcomes: Outcomes) -> None:
    for op, (ok, value) in zip(ops, outcomes, strict=True):
        if op.future.done():  # its caller was cancelled
            continue
        if ok:
            op.future.set_result(value)
        else:
            op.future.set_exception(value)


def _is_busy(exc: BaseException) -> bool:
    """True for SQLITE_BUSY/LOCKED (the file is busy elsewhere), seen directly or wrapped."""
    cause = exc.__cause__ if isinstance(exc, StoreError) else exc
    code = getattr(cause, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _wrap(exc: Exception, path: Path, what: str) -> Exception:
    """sqlite errors become StoreError naming the file and the operation; others pass."""
    if isinstance(exc, sqlite3.Error):
        error = StoreError(f"sqlite store {path}: {what} failed: {exc}")
        error.__cause__ = exc
        return error
    return exc
