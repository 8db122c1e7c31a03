"""The state database: versioned migrations and the file-identity check."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from hybrid_audio.database import Database, StateDatabaseError, StateDatabaseGoneError
from hybrid_audio.migrations import MIGRATIONS, Migration


def test_a_new_database_runs_every_migration_once(tmp_path: Path) -> None:
    ran: list[int] = []
    steps = (
        Migration("one", sql="CREATE TABLE a (x INTEGER)"),
        Migration("two", function=lambda db: ran.append(1)),
    )
    path = tmp_path / "state.sqlite3"
    assert Database(path, migrations=steps).schema_version() == 2
    assert Database(path, migrations=steps).schema_version() == 2  # a second opener
    assert ran == [1]


def test_only_the_missing_migrations_run(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    Database(path, migrations=MIGRATIONS[:1]).connection()
    assert Database(path, migrations=MIGRATIONS[:1]).schema_version() == 1
    assert Database(path).schema_version() == len(MIGRATIONS)


def test_a_database_newer_than_the_code_is_refused(tmp_path: Path) -> None:
    """An older hybrid-audio never misreads a schema it does not know."""
    path = tmp_path / "state.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with pytest.raises(StateDatabaseError, match="newer than this code"):
        Database(path).connection()


def test_a_failed_migration_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    broken = (Migration("ok", sql="CREATE TABLE a (x)"), Migration("bad", sql="NOT SQL"))
    with pytest.raises(sqlite3.OperationalError):
        Database(path, migrations=broken).connection()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 0
        assert db.execute("SELECT name FROM sqlite_master WHERE name = 'a'").fetchone() is None


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_deleted_or_replaced_file_refuses_every_later_use(tmp_path: Path, how: str) -> None:
    """Old threads would write to the unlinked file and new ones to a fresh one."""
    path = tmp_path / "state.sqlite3"
    database = Database(path)
    with database.write() as db:
        db.execute("INSERT INTO rotation_cursors VALUES ('name', 0, 0, 1, 3, 'f', 'x', 'x')")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    if how == "replaced":
        Database(path).connection()  # another process's fresh file
    with (
        pytest.raises(StateDatabaseGoneError, match="Restart the server"),
        database.write() as db,
    ):
        db.execute("UPDATE rotation_cursors SET position = 2")
    errors: list[BaseException] = []

    def new_thread() -> None:
        try:
            database.connection()
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=new_thread)
    thread.start()
    thread.join()
    assert len(errors) == 1
    assert isinstance(errors[0], StateDatabaseGoneError)
    assert path.exists() == (how == "replaced")  # a new thread never creates a fresh file
