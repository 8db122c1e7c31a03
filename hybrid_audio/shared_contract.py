"""The active voice contract, shared by every process on one state folder.

`make run` serves from several worker processes over one base dir; a contract kept only in
memory would change in the process that answered the dashboard and nowhere else. So the
active contract lives in one row of the state database (`active_contract`): its values
(JSON of `CONTRACT_PARAMETERS`) and the signature of the environment contract (the one
`Settings` ask for) it was made from. Every write moves the `contract` revision counter,
which each process reads with the counters it reads anyway (`Generator.hit_state`,
`Workspace.refresh`) and follows when it moved (`Generator.follow_contract`).

Startup rule (`adopt`): a process takes the stored contract when it was made from the
environment contract this process has too, so a dashboard change holds across restarts and
for workers started later; when the environment's contract settings changed since, the
environment wins and overwrites the row. One write transaction, so two workers starting
together agree.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from hybrid_audio.contract import CONTRACT_PARAMETERS, Encoding, VoiceContract
from hybrid_audio.database import Database
from hybrid_audio.live import read_revision

_READ = (
    "SELECT a.contract, a.made_from, r.value FROM active_contract a"
    " JOIN revisions r ON r.name = 'contract' WHERE a.id = 1"
)


@dataclass(frozen=True)
class StoredContract:
    """The shared contract as stored: its values, what it was made from, its revision."""

    values: dict[str, Any]
    made_from: str  # signature of the environment contract of the process that wrote it
    revision: int  # the `contract` counter that write made


def read(db: sqlite3.Connection) -> StoredContract | None:
    """The stored contract with the counter of its write (one statement, so they agree);
    None before any process stored one."""
    row = db.execute(_READ).fetchone()
    if row is None:
        return None
    values = json.loads(row[0])
    values["encoding"] = Encoding(values["encoding"])
    return StoredContract(values=values, made_from=str(row[1]), revision=int(row[2]))


def write(db: sqlite3.Connection, contract: VoiceContract, made_from: str) -> int:
    """Store `contract` as the shared one (inside the caller's write transaction); returns
    the `contract` revision this write made."""
    values = json.dumps({name: getattr(contract, name) for name in CONTRACT_PARAMETERS})
    db.execute(
        "INSERT INTO active_contract (id, contract, made_from, updated_at) VALUES (1, ?, ?, ?)"
        " ON CONFLICT (id) DO UPDATE SET contract = excluded.contract,"
        " made_from = excluded.made_from, updated_at = excluded.updated_at",
        (values, made_from, datetime.now(UTC).isoformat(timespec="seconds")),
    )
    return read_revision(db, "contract")


def adopt(database: Database, environment: VoiceContract) -> StoredContract:
    """The contract a starting process must use (the startup rule, in the module docstring):
    the stored one if it was made from `environment`, else `environment`, stored."""
    made_from = environment.signature()
    with database.write() as db:
        stored = read(db)
        if stored is not None and stored.made_from == made_from:
            return stored
        revision = write(db, environment, made_from)
    return StoredContract(values=environment.values(), made_from=made_from, revision=revision)
