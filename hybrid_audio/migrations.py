"""The state database's schema, as an ordered list of migrations.

`PRAGMA user_version` is the number of migrations a database has run; `Database` runs the
rest at first use, in order, inside one write transaction. Append new migrations at the
end and never edit one that has shipped: a database made by wave 1 has version 0 and
tables created with `IF NOT EXISTS`, which is why migration 1 tolerates them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

from hybrid_audio.stems import StemId


@dataclass(frozen=True)
class Migration:
    """One step of the schema: SQL statements, or a function for data changes."""

    description: str
    sql: str = ""
    function: Callable[[sqlite3.Connection], None] | None = None

    def apply(self, db: sqlite3.Connection) -> None:
        # Statement by statement: executescript() would COMMIT the caller's transaction.
        for statement in filter(str.strip, self.sql.split(";")):
            db.execute(statement)
        if self.function is not None:
            self.function(db)


STEMS_AND_CURSORS = """
CREATE TABLE IF NOT EXISTS stems (
    stem_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    text TEXT NOT NULL,
    path TEXT NOT NULL,
    contract_signature TEXT NOT NULL,
    engine TEXT NOT NULL,
    engine_version TEXT NOT NULL,
    model TEXT NOT NULL,
    voice TEXT NOT NULL,
    api_version TEXT NOT NULL DEFAULT '',
    container TEXT NOT NULL DEFAULT 'wav',
    encoding TEXT NOT NULL,
    sample_rate INTEGER NOT NULL,
    channels INTEGER NOT NULL,
    bits_per_sample INTEGER NOT NULL,
    frames INTEGER NOT NULL,
    duration REAL NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    repairs TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS stems_kind ON stems(kind);
CREATE TABLE IF NOT EXISTS rotation_cursors (
    stream TEXT NOT NULL,
    seed INTEGER NOT NULL,
    cycle INTEGER NOT NULL,
    position INTEGER NOT NULL,
    size INTEGER NOT NULL,
    fingerprint TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (stream, seed)
) WITHOUT ROWID
"""

STEM_FILE_MOVES = """
CREATE TABLE IF NOT EXISTS stem_file_moves (
    old_id TEXT PRIMARY KEY,
    new_id TEXT NOT NULL
)
"""


def rekey_stems_by_text(db: sqlite3.Connection) -> None:
    """Give every name and developer stem the id of the text it speaks (issue 9).

    Ids used to be the slug alone, so "Lucía" sat at `stem.name.lucia`; now that id belongs
    to "Lucia" and "Lucía" has `stem.name.lucia__<hash>`. Rows whose id is unchanged are
    left alone. A row whose text has a new id is re-keyed and its file's move is recorded
    in `stem_file_moves` (the stems folder is not known here); `StemCache` makes the moves
    when it opens, file first, then the record, so an interrupted run is finished by the
    next. A row whose text no longer makes an id (a control character) is dropped and its
    file recorded for deletion (empty `new_id`). Script rows are left: their id comes
    from the script key, which the index does not store. New ids cannot collide: the
    readable part of a new id is the old slug, and old slugs were unique.
    """
    db.execute(STEM_FILE_MOVES)
    rows = db.execute("SELECT stem_id, kind, text FROM stems WHERE kind != 'script'")
    for stem_id, kind, text in rows.fetchall():
        try:
            new = StemId.for_text(kind, text)
        except ValueError:
            db.execute("DELETE FROM stems WHERE stem_id = ?", (stem_id,))
            db.execute("INSERT OR REPLACE INTO stem_file_moves VALUES (?, '')", (stem_id,))
            continue
        if str(new) == stem_id:
            continue
        db.execute(
            "UPDATE stems SET stem_id = ?, path = ? WHERE stem_id = ?",
            (str(new), f"{new.kind}/{new.filename}", stem_id),
        )
        db.execute("INSERT OR REPLACE INTO stem_file_moves VALUES (?, ?)", (stem_id, str(new)))


#: Dashboard sessions (sha256 of the random token, never the token) and failed key checks
#: per client, shared by every server process on this state folder (hybrid_audio.sessions).
SESSIONS_AND_AUTH_FAILURES = """
CREATE TABLE IF NOT EXISTS dashboard_sessions (
    token_sha256 TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS dashboard_sessions_expiry ON dashboard_sessions(expires_at);
CREATE TABLE IF NOT EXISTS auth_failures (
    client TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS auth_failures_client ON auth_failures(client, at)
"""

#: The one job store (hybrid_audio.jobs): every long-running job of every process, its
#: progress, the first errors, a small JSON of parameters (never the inputs), the owner
#: process (pid and start time, to tell a crash from a running job) and timestamps.
JOBS = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    done INTEGER NOT NULL DEFAULT 0,
    total INTEGER NOT NULL DEFAULT 0,
    errors TEXT NOT NULL DEFAULT '[]',
    error_count INTEGER NOT NULL DEFAULT 0,
    message TEXT NOT NULL DEFAULT '',
    params TEXT NOT NULL DEFAULT '{}',
    result TEXT,
    owner_pid INTEGER NOT NULL,
    owner_start TEXT NOT NULL DEFAULT '',
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    updated_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS jobs_created ON jobs(created_at);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, finished_at)
"""

#: The counters migration 5 made (issue 10), frozen: a shipped migration never changes.
_ISSUE_10_COUNTERS = {"stems": "stems", "rotation": "rotation_cursors", "jobs": "jobs"}
#: The counters migration 6 adds: the durable upload queue of GCS mode (issue 11).
_UPLOAD_COUNTERS = {"uploads": "storage_uploads"}
#: The counter migration 7 adds: campaigns and their message rows (issue 12).
_CAMPAIGN_COUNTERS = {"campaigns": "campaigns"}
_PRONUNCIATION_COUNTERS = {"pronunciations": "pronunciations"}
#: The counter migration 9 adds: the active contract every server process follows.
_CONTRACT_COUNTERS = {"contract": "active_contract"}
#: What each revision counter follows: `name` → the table whose every write bumps it
#: (the "campaigns" counter also follows `campaign_messages`, see `campaign_counter`).
REVISED_TABLES = {
    **_ISSUE_10_COUNTERS,
    **_UPLOAD_COUNTERS,
    **_CAMPAIGN_COUNTERS,
    **_PRONUNCIATION_COUNTERS,
    **_CONTRACT_COUNTERS,
}


def revision_counters(db: sqlite3.Connection) -> None:
    """One counter per live table, bumped by triggers inside the writing transaction (issue 10).

    Any process that inserts, updates or deletes a row of `stems`, `rotation_cursors` or
    `jobs` bumps that table's counter in the same commit, so another process sees that
    something changed by reading one small table (`hybrid_audio.live.read_revisions`)
    instead of re-reading the rows. Triggers, not code, so no write path can forget it.
    Trigger bodies hold semicolons, which `Migration.sql` would split on: a function.
    """
    db.execute(
        "CREATE TABLE IF NOT EXISTS revisions "
        "(name TEXT PRIMARY KEY, value INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID"
    )
    _count_writes(db, _ISSUE_10_COUNTERS)


def _count_writes(db: sqlite3.Connection, counters: dict[str, str]) -> None:
    """A counter row per `name` and the triggers that bump it on every write to `table`."""
    for name, table in counters.items():
        db.execute("INSERT OR IGNORE INTO revisions (name, value) VALUES (?, 0)", (name,))
        for event in ("INSERT", "UPDATE", "DELETE"):
            db.execute(
                f"CREATE TRIGGER IF NOT EXISTS {table}_{event.lower()}_revision "
                f"AFTER {event} ON {table} BEGIN "
                f"UPDATE revisions SET value = value + 1 WHERE name = '{name}'; END"
            )


#: The durable upload queue of GCS mode (hybrid_audio.storage.uploads): one row per object
#: a committed local write still owes the bucket. `state` is `pending` (retried with
#: backoff until `next_attempt_at`, a Unix time) or `conflict` (the bucket holds other bytes
#: under that name: reported, not retried). `sha256` is what was queued (a stem's samples,
#: an output file's bytes), so a row whose file changed since is recognised and dropped.
STORAGE_UPLOADS = """
CREATE TABLE IF NOT EXISTS storage_uploads (
    object_name TEXT PRIMARY KEY,
    sha256 TEXT NOT NULL,
    enqueued_at TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL DEFAULT 'pending'
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS storage_uploads_due ON storage_uploads(state, next_attempt_at)
"""


def upload_counter(db: sqlite3.Connection) -> None:
    """The upload queue's revision counter ("uploads"), so every process's
    `Workspace.refresh()` sees queue changes the way it sees the stems'."""
    _count_writes(db, _UPLOAD_COUNTERS)


#: Campaigns (hybrid_audio.campaign): one row per campaign — template, join mode, source
#: (recipients or rotation), the contract signature pinned at creation, state and counts,
#: the job running it, small JSON `params` (the rotation seed) — and one row per message:
#: the recipient as given (names are personal data: `Campaigns.delete` erases them), its
#: state, and once made its deterministic output id, duration, sha256 and proof verdict.
#: Rows refused at creation are stored `failed` with their error, so problems keep their
#: row numbers.
CAMPAIGNS = """
CREATE TABLE IF NOT EXISTS campaigns (
    id TEXT PRIMARY KEY,
    template TEXT NOT NULL,
    join_mode TEXT,
    source TEXT NOT NULL,
    contract_signature TEXT NOT NULL,
    state TEXT NOT NULL,
    pause_reason TEXT NOT NULL DEFAULT '',
    total INTEGER NOT NULL DEFAULT 0,
    done INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    distinct_stems INTEGER NOT NULL DEFAULT 0,
    job_id TEXT,
    params TEXT NOT NULL DEFAULT '{}',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    finished_at TEXT
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS campaigns_created ON campaigns(created_at);
CREATE TABLE IF NOT EXISTS campaign_messages (
    campaign_id TEXT NOT NULL,
    row INTEGER NOT NULL,
    recipient_id TEXT,
    name TEXT NOT NULL,
    developer TEXT NOT NULL,
    script TEXT,
    state TEXT NOT NULL,
    output_id TEXT,
    duration REAL,
    sha256 TEXT,
    verified INTEGER NOT NULL DEFAULT 0,
    error TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (campaign_id, row)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS campaign_messages_state ON campaign_messages(campaign_id, state, row)
"""


def campaign_counter(db: sqlite3.Connection) -> None:
    """The "campaigns" revision counter, bumped by every write to `campaigns` and to
    `campaign_messages`, so other processes' `Workspace.refresh()` see campaign progress."""
    _count_writes(db, _CAMPAIGN_COUNTERS)
    _count_writes(db, {"campaigns": "campaign_messages"})


#: Sound (issue 13): what processing measured for each stem (`sound.SoundReport`: loudness
#: before and after in LUFS, true peak after in dBTP, the gain; NULL for stems made without
#: processing), the pronunciation entries it was made with (their hash, "" for none) and the
#: text the engine was actually given; and the pronunciation dictionary itself, keyed by the
#: casefolded spoken text, `phonemes` a JSON object engine → phonemes.
SOUND_AND_PRONUNCIATIONS = """
ALTER TABLE stems ADD COLUMN loudness_before REAL;
ALTER TABLE stems ADD COLUMN loudness_after REAL;
ALTER TABLE stems ADD COLUMN true_peak_after REAL;
ALTER TABLE stems ADD COLUMN gain_db REAL;
ALTER TABLE stems ADD COLUMN pronunciation TEXT NOT NULL DEFAULT '';
ALTER TABLE stems ADD COLUMN spoken_as TEXT NOT NULL DEFAULT '';
CREATE TABLE IF NOT EXISTS pronunciations (
    key TEXT PRIMARY KEY,
    text TEXT NOT NULL,
    respelling TEXT NOT NULL DEFAULT '',
    phonemes TEXT NOT NULL DEFAULT '{}',
    note TEXT NOT NULL DEFAULT '',
    updated_at TEXT NOT NULL
) WITHOUT ROWID
"""


def pronunciation_counter(db: sqlite3.Connection) -> None:
    """The dictionary's revision counter ("pronunciations"): a process rebuilds its matcher
    and its views when another process edited an entry."""
    _count_writes(db, _PRONUNCIATION_COUNTERS)


#: The active voice contract (hybrid_audio.shared_contract): one row (`id` 1) holding the
#: contract's values as JSON and the signature of the environment contract it was made
#: from, so every server process on this state folder makes stems under the same contract.
ACTIVE_CONTRACT = """
CREATE TABLE IF NOT EXISTS active_contract (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    contract TEXT NOT NULL,
    made_from TEXT NOT NULL,
    updated_at TEXT NOT NULL
)
"""


def contract_counter(db: sqlite3.Connection) -> None:
    """The active contract's revision counter ("contract"): every process follows a change
    made by another (`Generator.follow_contract`)."""
    _count_writes(db, _CONTRACT_COUNTERS)


#: Append only. The position (1-based) is the schema version a database reaches.
MIGRATIONS: tuple[Migration, ...] = (
    Migration("stem index and rotation cursors (wave 1)", sql=STEMS_AND_CURSORS),
    Migration("stem ids from the exact text spoken (issue 9)", function=rekey_stems_by_text),
    Migration("dashboard sessions and failed key checks (issue 9)", sql=SESSIONS_AND_AUTH_FAILURES),
    Migration("the persisted job store (issue 9)", sql=JOBS),
    Migration("revision counters of the live tables (issue 10)", function=revision_counters),
    Migration(
        "the durable GCS upload queue and its counter (issue 11)",
        sql=STORAGE_UPLOADS,
        function=upload_counter,
    ),
    Migration(
        "campaigns, their messages and their counter (issue 12)",
        sql=CAMPAIGNS,
        function=campaign_counter,
    ),
    Migration(
        "stem loudness and pronunciation columns, the pronunciation dictionary (issue 13)",
        sql=SOUND_AND_PRONUNCIATIONS,
        function=pronunciation_counter,
    ),
    Migration(
        "the active contract shared by every process and its counter (issue 9)",
        sql=ACTIVE_CONTRACT,
        function=contract_counter,
    ),
)
