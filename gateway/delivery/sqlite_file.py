"""One descriptor per SQLite database file and process, to sync the file outside SQLite.

The WAL checkpoints sync the database file only now and then (`sqlite_batches`
`_catch_up` says when and why a sync of our own helps). A descriptor of our own is safe
to open but not to close at any time: closing any descriptor of a file drops every
POSIX lock the process holds on it, SQLite's included (in WAL mode each open connection
holds a shared lock on the database file; without it, another process closing its last
connection would believe itself the last and delete the WAL from under this one). So
every store of the process on one file shares one descriptor, taken before its
connections are opened and closed when the last store lets it go, after its own.
"""

from __future__ import annotations

import os
import threading
from contextlib import suppress
from pathlib import Path
from typing import ClassVar

_sync = getattr(os, "fdatasync", os.fsync)  # fdatasync: not on macOS


class SharedFile:
    """The process's read-only descriptor of one database file, counted by its users."""

    _open: ClassVar[dict[tuple[int, int], SharedFile]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, fd: int, key: tuple[int, int]) -> None:
        self._fd = fd
        self._key = key
        self._users = 1

    @classmethod
    def acquire(cls, path: Path) -> SharedFile | None:
        """The descriptor of the file at `path`, created if need be; None: it cannot be opened.

        Acquire before opening a connection and release after closing it: a store that
        opened its connections first would have them robbed of their locks if another
        store of the process let the file go meanwhile. A file a store already holds is
        found by device and inode, so a second store never opens, and later closes, a
        descriptor of its own.
        """
        with cls._lock:
            try:
                stat = os.stat(path)
            except FileNotFoundError:
                shared = None
            except OSError:
                return None
            else:
                shared = cls._open.get((stat.st_dev, stat.st_ino))
            if shared is not None:
                shared._users += 1
                return shared
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)  # SQLite's own mode
            except OSError:
                return None
            stat = os.fstat(fd)
            key = (stat.st_dev, stat.st_ino)
            shared = cls._open[key] = cls(fd, key)
            return shared

    def sync(self) -> None:
        """Write the file's dirty pages to disk; a failure is left for SQLite's own sync.

        (Since Linux 4.13 a writeback error is reported to every descriptor open at the
        time, so SQLite's own sync still sees what this one saw.)
        """
        with suppress(OSError):
            _sync(self._fd)

    def release(self) -> None:
        """One user fewer; the last closes the descriptor (its connections closed first)."""
        with self._lock:  # held while closing: an `acquire` meanwhile would open anew
            self._users -= 1
            if self._users > 0:
                return
            if self._open.get(self._key) is self:
                del self._open[self._key]
            os.close(self._fd)

    @property
    def fd(self) -> int:
        return self._fd
