"""SQLite access shared by the stem index and the rotation cursors.

One connection per thread and per process (sqlite3 connections are neither thread- nor
fork-safe), WAL so readers never wait for a writer, a generous busy timeout, and
`write()` transactions that start with `BEGIN IMMEDIATE`: the write lock is taken before
anything is read, so a read-then-update can never interleave with another writer's.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class Database:
    """Connections to one SQLite file, created with `schema` on first use."""

    def __init__(self, path: Path | str, schema: str, *, rows_as_dicts: bool = False) -> None:
        self.path = Path(path)
        self.schema = schema
        self.rows_as_dicts = rows_as_dicts
        self._local = threading.local()

    def connection(self) -> sqlite3.Connection:
        """This thread's connection (a new one after a fork)."""
        local = self._local
        if getattr(local, "pid", None) != os.getpid():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA busy_timeout=30000")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(self.schema)
            if self.rows_as_dicts:
                db.row_factory = sqlite3.Row
            local.db, local.pid = db, os.getpid()
        return local.db

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A `BEGIN IMMEDIATE` transaction: committed on success, rolled back on error."""
        db = self.connection()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def close(self) -> None:
        """Close this thread's connection, if any."""
        db = getattr(self._local, "db", None)
        if db is not None and self._local.pid == os.getpid():  # not a parent's, after fork
            db.close()
        self._local.__dict__.clear()
