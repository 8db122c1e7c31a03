"""Revision counters: how one process learns that another changed the live tables.

Every write to a live table (`stems`, `rotation_cursors`, `jobs`, `active_contract`…) bumps
that table's counter in the `revisions` table inside the same transaction (triggers,
`migrations.REVISED_TABLES`).
Inside a process, param is the only live state: the core objects publish what changed as
parameters (`StemCache.revision`, `RotationEngine.cursors`, `Job.done`…). Across processes
(several server workers on one state folder) `Workspace.refresh()` reads these counters and
updates those parameters, so a watcher cannot tell a change made here from one made there.
This module never imports Panel; the dashboard's adapter calls `refresh()` periodically.
"""

from __future__ import annotations

import sqlite3
import threading

import param

from hybrid_audio.migrations import REVISED_TABLES

#: The counters, one per live table (`"stems"`, `"rotation"`, `"jobs"`, `"contract"`…).
REVISIONS = tuple(REVISED_TABLES)


def read_revisions(db: sqlite3.Connection) -> dict[str, int]:
    """Every counter's value (one small read; 0 for a counter not made yet)."""
    rows = db.execute("SELECT name, value FROM revisions").fetchall()
    values = {str(row[0]): int(row[1]) for row in rows}
    return {name: values.get(name, 0) for name in REVISIONS}


def read_revision(db: sqlite3.Connection, name: str) -> int:
    """One counter's value; inside a write transaction, the value that write made."""
    row = db.execute("SELECT value FROM revisions WHERE name = ?", (name,)).fetchone()
    return int(row[0]) if row else 0


class RevisionPublisher:
    """Sets an integer parameter to a counter value, never backwards.

    Two threads that commit revisions 5 and 6 may publish them in either order; the
    parameter shows 6 either way (and its watchers fire once per increase).
    """

    def __init__(self, owner: param.Parameterized, name: str) -> None:
        self._owner = owner
        self._name = name
        self._lock = threading.RLock()  # a watcher may write again (and publish) in its turn

    def publish(self, value: int) -> bool:
        """Show `value` if it is newer than the one shown; True if it was."""
        with self._lock:
            if value <= getattr(self._owner, self._name):
                return False
            setattr(self._owner, self._name, value)
            return True
