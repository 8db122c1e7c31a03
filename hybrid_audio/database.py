"""The state database: one SQLite file, versioned, shared by every core object.

One connection per thread and per process (sqlite3 connections are neither thread- nor
fork-safe), WAL so readers never wait for a writer, a generous busy timeout, and
`write()` transactions that start with `BEGIN IMMEDIATE`: the write lock is taken before
anything is read, so a read-then-update can never interleave with another writer's.

The schema is the ordered list `migrations.MIGRATIONS`; `PRAGMA user_version` says how many
have run. They run at first use, under the write lock, so two processes starting at once
migrate once. A database newer than this code is refused rather than misread.

The file's identity (device, inode) is recorded at first use. If an operator deletes or
replaces `state/` under a running server, SQLite would keep writing to the unlinked file
in old threads while new threads create a fresh one, and a rotation position could be
handed out twice. Instead every connect and every commit checks the identity, and once it
differs the database refuses all work (`StateDatabaseGoneError`, a 503) until a restart.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hybrid_audio.files import StorageError
from hybrid_audio.migrations import MIGRATIONS, Migration

#: SQLite result codes that mean the disk refused the write, as the errno files.py reports.
_DISK_REFUSALS = {sqlite3.SQLITE_FULL: errno.ENOSPC, sqlite3.SQLITE_READONLY: errno.EROFS}


class StateDatabaseError(RuntimeError):
    """The state database cannot be used safely (answered as 503)."""


class StateDatabaseGoneError(StateDatabaseError):
    """The database file was deleted or replaced while this process was using it."""


class Database:
    """Connections to one SQLite file, migrated to `MIGRATIONS` on first use."""

    def __init__(
        self,
        path: Path | str,
        *,
        rows_as_dicts: bool = False,
        migrations: tuple[Migration, ...] = MIGRATIONS,
    ) -> None:
        self.path = Path(path)
        self.rows_as_dicts = rows_as_dicts
        self.migrations = migrations
        self._local = threading.local()
        self._identity: tuple[int, int] | None = None
        self._identity_lock = threading.Lock()
        self._gone: str = ""

    # --- identity -------------------------------------------------------------------------

    def _current_identity(self) -> tuple[int, int] | None:
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return None
        return stat.st_dev, stat.st_ino

    def check_identity(self) -> None:
        """Raise `StateDatabaseGoneError` if the file is not the one this process opened."""
        if self._gone:
            raise StateDatabaseGoneError(self._gone)
        if self._identity is None or self._current_identity() == self._identity:
            return
        self._gone = (
            f"the state database {self.path} was deleted or replaced while the server was "
            "running; nothing more is written to avoid handing out a rotation position twice. "
            "Restart the server to open the new database."
        )
        raise StateDatabaseGoneError(self._gone)

    # --- connections ----------------------------------------------------------------------

    def connection(self) -> sqlite3.Connection:
        """This thread's connection (a new one after a fork), checked against the file."""
        self.check_identity()
        local = self._local
        if getattr(local, "pid", None) != os.getpid():
            db = self._open()
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA busy_timeout=30000")
            db.execute("PRAGMA synchronous=NORMAL")
            if self.rows_as_dicts:
                db.row_factory = sqlite3.Row
            with self._identity_lock:
                if self._identity is None:
                    self._identity = self._current_identity()
            self.check_identity()  # a new thread must not have created a fresh file
            self._migrate(db)
            local.db, local.pid = db, os.getpid()
        return local.db

    def _open(self) -> sqlite3.Connection:
        """A new connection. Once the file is known, it must exist: a thread connecting
        after the file was deleted must not create a fresh, empty database in its place."""
        if self._identity is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return sqlite3.connect(self.path, timeout=30, isolation_level=None)
        uri = f"{self.path.absolute().as_uri()}?mode=rw"
        try:
            return sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None)
        except sqlite3.OperationalError:
            self.check_identity()  # gone since the check above: say so
            raise

    def _migrate(self, db: sqlite3.Connection) -> None:
        latest = len(self.migrations)
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version == latest:
            return
        db.execute("BEGIN IMMEDIATE")
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > latest:
                raise StateDatabaseError(
                    f"the state database {self.path} has schema version {version}, newer than "
                    f"this code knows ({latest}); upgrade hybrid-audio or point "
                    "HYBRID_AUDIO_DB at another file"
                )
            for migration in self.migrations[version:]:
                migration.apply(db)
            db.execute(f"PRAGMA user_version = {latest}")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def schema_version(self) -> int:
        return self.connection().execute("PRAGMA user_version").fetchone()[0]

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A `BEGIN IMMEDIATE` transaction: committed on success, rolled back on error.

        The file's identity is checked again under the write lock, just before COMMIT, so
        a write racing the deletion of the file is rolled back rather than lost. A disk that
        refuses the write (full, read-only) raises `files.StorageError` naming the folder.
        """
        db = self.connection()
        with self._disk_refusals():
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                self.check_identity()
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:  # SQLite may have rolled back itself (a full disk)
                    db.execute("ROLLBACK")
                raise

    @contextmanager
    def _disk_refusals(self) -> Iterator[None]:
        """SQLite's "disk is full" / "readonly database" as the `StorageError` files raise."""
        try:
            yield
        except sqlite3.OperationalError as error:
            refusal = _DISK_REFUSALS.get(error.sqlite_errorcode & 0xFF)
            if refusal is None:
                raise
            raise StorageError(self.path.parent, OSError(refusal, str(error))) from error

    def close(self) -> None:
        """Close this thread's connection, if any."""
        db = getattr(self._local, "db", None)
        if db is not None and self._local.pid == os.getpid():  # not a parent's, after fork
            db.close()
        self._local.__dict__.clear()
