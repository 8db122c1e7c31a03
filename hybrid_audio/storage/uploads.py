"""The durable upload queue of GCS mode and the background uploader that drains it.

The local write is the commit point: a stem is queued inside the very transaction that
indexes it (`StemCache.store`), an output just before its manifest is renamed into place
(`Assembler._finish`: its WAV is written, its manifest is what commits it), so a committed
file is never left unqueued, even by a crash. Those rows are held (not due) until the
assembler `release`s them after the commit, or `LEASE` seconds, or a restart. Should an
uploader take one before its manifest is in place anyway (a restart or "retry now" while
another process assembles), a row younger than `LEASE` whose WAV is there but not its
manifest yet is retried with backoff; otherwise a row without its files is dropped (the
assembly failed, or its process died before the commit and the restart's recovery removed
the WAV). The
queue is the table `storage_uploads` of the state database, so a restart resumes it.

`Uploads` is a daemon thread woken when something is queued (and by a timer for backoff).
It takes due rows in bounded batches, reads each file (a stem through the cache, which
proves its samples against the index), uploads the batch with `upload_many`, and settles
every row:

- uploaded, or the bucket already holds the same sha256 → the row is deleted;
- the bucket holds other bytes under that name → `conflict` (reported, not retried: the
  local index is the truth for this machine, and uploads never overwrite);
- the bucket failed (unreachable, refused, anything else) → retried with exponential
  backoff (1 s doubling, at most 5 min); the row is kept, never lost;
- the local file vanished or changed since it was queued (invalidated, regenerated) → the
  row is dropped: the newer write queued its own.

Rows taken by an uploader are leased (their `next_attempt_at` moved `LEASE` seconds
ahead), so the uploaders of several server processes on one state folder do not upload
the same object at once; a lease left by a dead process ends when `start()` resumes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from sqlite3 import Connection
from typing import Any

import param
from pydantic import BaseModel

from hybrid_audio.cache import CorruptStemError, StemCache
from hybrid_audio.config import Settings
from hybrid_audio.database import Database
from hybrid_audio.files import read_inside
from hybrid_audio.manifests import mirrored_manifest
from hybrid_audio.storage.base import (
    ObjectExistsError,
    ObjectInfo,
    ObjectStore,
    crc32c_of,
    output_object_names,
    parse_object_name,
    stem_metadata,
)

log = logging.getLogger(__name__)

#: Rows uploaded per batch: bounds memory (each file is held until its upload ends).
BATCH = 64
#: Backoff after the first failure, doubled after each next one, and its cap (seconds).
BACKOFF_FIRST = 1.0
BACKOFF_CAP = 300.0
#: Seconds a taken row is left to its uploader before another may take it.
LEASE = 120.0
#: Longest sleep of an idle uploader: rows queued by another process are seen this late
#: at worst (sooner when `Workspace.refresh()` wakes it).
IDLE_POLL = 5.0

#: Content type of an object by its file's suffix.
CONTENT_TYPES = {"wav": "audio/wav", "json": "application/json"}


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class QueuedUpload:
    """One row taken from the queue: an object the bucket is owed, as it was queued."""

    name: str
    sha256: str
    attempts: int
    enqueued_at: str  # ISO 8601, UTC


class QueueCounts(BaseModel):
    """The queue at a glance."""

    pending: int = 0  # waiting to be uploaded (due now, backing off, or in flight)
    failing: int = 0  # pending rows that failed at least once
    conflicts: int = 0  # the bucket holds other bytes under the name: not retried
    due: int = 0  # pending rows whose time has come
    next_due: float | None = None  # Unix time of the earliest pending row
    last_error: str = ""  # of the row that failed last


class UploadQueue:
    """The `storage_uploads` table: what the bucket is still owed.

    `added` is set whenever a row is queued through this object, so the uploader of this
    process wakes at once.
    """

    def __init__(self, database: Database) -> None:
        self.database = database
        self.added = threading.Event()

    def add(self, db: Connection, name: str, sha256: str, not_before: float = 0.0) -> None:
        """Queue `name` inside the caller's write transaction on `db` (a queued row for an
        older version of the object is replaced, its attempts forgotten), due from the Unix
        time `not_before` on."""
        if parse_object_name(name) is None:
            raise ValueError(f"{name!r} is not a stem or output object name")
        db.execute(
            "INSERT OR REPLACE INTO storage_uploads "
            "(object_name, sha256, enqueued_at, attempts, next_attempt_at, last_error, state) "
            "VALUES (?, ?, ?, 0, ?, '', 'pending')",
            (name, sha256, _now_iso(), not_before),
        )
        if not not_before:
            self.added.set()

    def add_output(self, output_id: str, wav_sha256: str, manifest: bytes) -> None:
        """Queue an assembled output's WAV and manifest, in one transaction of its own,
        before its manifest commits it: held for `LEASE` seconds unless `release`d once the
        manifest is in place (a restart resumes held rows at once)."""
        wav, json_name = output_object_names(output_id)
        hold = time.time() + LEASE
        with self.database.write() as db:
            self.add(db, wav, wav_sha256, hold)
            self.add(db, json_name, hashlib.sha256(manifest).hexdigest(), hold)

    def release(self, output_id: str) -> None:
        """The output `add_output` queued is committed: its rows are due now."""
        with self.database.write() as db:
            db.execute(
                "UPDATE storage_uploads SET next_attempt_at = 0 "
                "WHERE object_name IN (?, ?) AND state = 'pending' AND attempts = 0",
                output_object_names(output_id),
            )
        self.added.set()

    def due(self, limit: int = BATCH, lease: float = LEASE) -> list[QueuedUpload]:
        """Up to `limit` pending rows whose time has come, oldest first, leased to the caller
        for `lease` seconds (until it settles each with done/failed/conflict)."""
        now = time.time()
        with self.database.write() as db:
            rows = db.execute(
                "UPDATE storage_uploads SET next_attempt_at = ? WHERE object_name IN ("
                "SELECT object_name FROM storage_uploads WHERE state = 'pending' "
                "AND next_attempt_at <= ? ORDER BY next_attempt_at, enqueued_at LIMIT ?) "
                "RETURNING object_name, sha256, attempts, enqueued_at",
                (now + lease, now, limit),
            ).fetchall()
        return [QueuedUpload(*row) for row in rows]

    def done(self, name: str, sha256: str | None = None) -> None:
        """The bucket has it: forget the row (only that version, when `sha256` is given, so
        a newer version queued meanwhile stays)."""
        sql, args = "DELETE FROM storage_uploads WHERE object_name = ?", [name]
        if sha256 is not None:
            sql, args = sql + " AND sha256 = ?", [name, sha256]
        with self.database.write() as db:
            db.execute(sql, args)

    def failed(self, name: str, error: str, sha256: str | None = None) -> None:
        """Try again later: 1 s after the first failure, doubling, at most 5 min."""
        sql = (
            "UPDATE storage_uploads SET attempts = attempts + 1, last_error = ?, "
            "next_attempt_at = ? + min(?, ? * (1 << min(attempts, 16))) "
            "WHERE object_name = ? AND state = 'pending'"
        )
        args: list[Any] = [error, time.time(), BACKOFF_CAP, BACKOFF_FIRST, name]
        if sha256 is not None:
            sql, args = sql + " AND sha256 = ?", [*args, sha256]
        with self.database.write() as db:
            db.execute(sql, args)

    def conflict(self, name: str, detail: str, sha256: str | None = None) -> None:
        """The bucket holds other bytes under `name`: report it, stop retrying."""
        sql = (
            "UPDATE storage_uploads SET state = 'conflict', attempts = attempts + 1, "
            "last_error = ? WHERE object_name = ?"
        )
        args = [detail, name]
        if sha256 is not None:
            sql, args = sql + " AND sha256 = ?", [*args, sha256]
        with self.database.write() as db:
            db.execute(sql, args)

    def retry_now(self, conflicts: bool = True) -> int:
        """Make every pending row due now, and with `conflicts` the conflicts too (after the
        operator resolved them); returns how many rows."""
        sql = "UPDATE storage_uploads SET next_attempt_at = 0, state = 'pending'"
        with self.database.write() as db:
            count = db.execute(sql if conflicts else sql + " WHERE state = 'pending'").rowcount
        self.added.set()
        return count

    def counts(self) -> QueueCounts:
        """Pending, failing, conflicting and due rows, and the latest error."""
        db = self.database.connection()
        row = db.execute(
            "SELECT count(*) FILTER (WHERE state = 'pending'), "
            "count(*) FILTER (WHERE state = 'pending' AND attempts > 0), "
            "count(*) FILTER (WHERE state = 'conflict'), "
            "count(*) FILTER (WHERE state = 'pending' AND next_attempt_at <= ?), "
            "min(next_attempt_at) FILTER (WHERE state = 'pending') FROM storage_uploads",
            (time.time(),),
        ).fetchone()
        error = db.execute(  # the latest failure backs off the furthest (or is a conflict)
            "SELECT last_error FROM storage_uploads WHERE last_error != '' "
            "ORDER BY next_attempt_at DESC LIMIT 1"
        ).fetchone()
        return QueueCounts(
            pending=row[0],
            failing=row[1],
            conflicts=row[2],
            due=row[3],
            next_due=row[4],
            last_error=error[0] if error else "",
        )

    def rows(self) -> list[dict[str, Any]]:
        """Every row, oldest first (for the dashboard and tests)."""
        cursor = self.database.connection().execute(
            "SELECT object_name, sha256, enqueued_at, attempts, next_attempt_at, last_error, "
            "state FROM storage_uploads ORDER BY enqueued_at"
        )
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


@dataclass(frozen=True)
class _Prepared:
    """A row ready to upload: the bytes read now and the metadata they go with."""

    row: QueuedUpload
    data: bytes
    metadata: dict[str, str]
    content_type: str


class _StaleError(Exception):
    """The local file vanished or changed since it was queued: drop the row."""


class _NotYetError(Exception):
    """An output queued moments ago whose manifest is not in place yet: try again later."""


class Uploads(param.Parameterized):
    """Drains the upload queue in the background; its counters are live parameters."""

    settings = param.ClassSelector(class_=Settings, doc="Output folder and upload workers.")
    store = param.ClassSelector(class_=ObjectStore, doc="The bucket uploads go to.")
    queue = param.ClassSelector(class_=UploadQueue, doc="What the bucket is still owed.")
    cache = param.ClassSelector(class_=StemCache, doc="Stems are read through it (proven).")
    pending = param.Integer(default=0, constant=True, doc="Rows waiting to be uploaded.")
    failing = param.Integer(default=0, constant=True, doc="Pending rows that failed before.")
    conflicts = param.Integer(
        default=0, constant=True, doc="Names the bucket holds other bytes under (not retried)."
    )
    uploaded = param.Integer(default=0, constant=True, doc="Objects this process uploaded.")
    last_error = param.String(default="", constant=True, doc="The latest failure or conflict.")

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        if None in (self.settings, self.store, self.queue, self.cache):
            raise ValueError("Uploads needs settings, store, queue and cache")
        self._stop = threading.Event()
        self._busy = threading.Event()  # set while a batch is taken and not yet settled
        self._thread: threading.Thread | None = None

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Resume the queue (rows a dead process leased or backed off are due at once;
        conflicts stay reported) and start the thread."""
        if self._thread is not None:
            return
        self.queue.retry_now(conflicts=False)
        self.publish()
        self._thread = threading.Thread(target=self._run, name="gcs-uploads", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        """Stop the thread; rows not uploaded stay queued for the next start."""
        self._stop.set()
        self.queue.added.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def retry_now(self) -> int:
        """Clear every backoff and conflict now (the dashboard's "retry")."""
        count = self.queue.retry_now()
        self.publish()
        return count

    def refresh(self) -> None:
        """Show the queue as it is (another process may have queued) and wake the thread."""
        self.publish()
        self.queue.added.set()

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Wait until nothing is due and no batch is in flight; False on timeout.

        Rows backing off after a failure are not due: with the bucket down this returns
        once each has been tried. For tests, scripts and benchmarks.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            idle = not self._busy.is_set() and self.queue.counts().due == 0
            if idle and not self._busy.is_set():  # and no batch was taken meanwhile
                return True
            self.queue.added.set()
            time.sleep(0.02)
        return False

    def publish(self) -> None:
        """Copy the queue's counters into the parameters."""
        counts = self.queue.counts()
        with param.edit_constant(self):
            self.param.update(
                pending=counts.pending,
                failing=counts.failing,
                conflicts=counts.conflicts,
                last_error=counts.last_error,
            )

    # --- the thread ---------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            self.queue.added.clear()  # before looking: a row added after this wakes us
            try:
                wait = 0.0 if self._step() else self._idle_seconds()
            except Exception:  # the state database failed: log, wait, try again
                log.exception("upload queue: batch failed")
                wait = IDLE_POLL
            if wait:
                self.queue.added.wait(wait)

    def _step(self) -> bool:
        """Upload one batch of due rows; False when none was due."""
        self._busy.set()
        try:
            batch = self.queue.due(BATCH)
            if batch:
                self._upload(batch)
            self.publish()
            return bool(batch)
        finally:
            self._busy.clear()

    def _idle_seconds(self) -> float:
        """Until the earliest backoff ends, at most `IDLE_POLL`."""
        next_due = self.queue.counts().next_due
        if next_due is None:
            return IDLE_POLL
        return min(IDLE_POLL, max(0.01, next_due - time.time()))

    def _upload(self, batch: list[QueuedUpload]) -> None:
        prepared: list[_Prepared] = []
        for row in batch:
            try:
                prepared.append(self._prepare(row))
            except _NotYetError as not_yet:
                self.queue.failed(row.name, str(not_yet), row.sha256)
            except _StaleError as stale:
                log.info("upload of %s dropped: %s", row.name, stale)
                self.queue.done(row.name, row.sha256)
        if not prepared:
            return
        items = [(p.row.name, p.data, p.metadata, p.content_type) for p in prepared]
        try:
            results = self.store.upload_many(items, self.settings.gcs_upload_workers)
        except Exception as error:  # the whole batch failed (e.g. no credentials)
            results = [error] * len(prepared)
        uploaded = 0
        for item, result in zip(prepared, results, strict=True):
            uploaded += self._settle(item, result)
        if uploaded:
            with param.edit_constant(self):
                self.uploaded += uploaded

    def _settle(self, item: _Prepared, result: ObjectInfo | Exception) -> bool:
        """Record one upload's outcome in the queue; True if this call uploaded it."""
        name, sha256 = item.row.name, item.row.sha256
        if isinstance(result, ObjectInfo):
            self.queue.done(name, sha256)
            return not self._erased_meanwhile(name)
        if isinstance(result, ObjectExistsError):
            try:
                remote = self.store.info(name)
            except Exception as error:
                self.queue.failed(name, f"{type(error).__name__}: {error}", sha256)
                return False
            ours = item.metadata.get("sha256")
            theirs = remote.metadata.get("sha256") if remote is not None else None
            # The same bytes, not only metadata that says so: an object whose bytes were
            # corrupted (or that the bucket stored wrong on a first attempt) keeps its
            # metadata, and is a conflict to report, not an upload done.
            same_bytes = remote is not None and remote.crc32c in ("", crc32c_of(item.data))
            if remote is not None and theirs == ours and same_bytes:
                self.queue.done(name, sha256)  # someone (another machine) uploaded it first
            elif remote is None:
                self.queue.failed(name, "the object vanished after a refused upload", sha256)
            else:
                crc = "" if same_bytes else f", its CRC32C {remote.crc32c} is not these bytes'"
                detail = (
                    f"the bucket holds other bytes under {name} (sha256 {theirs or 'unknown'}, "
                    f"here {ours}{crc}); nothing was overwritten"
                )
                self.queue.conflict(name, detail, sha256)
            return False
        self.queue.failed(name, f"{type(result).__name__}: {result}", sha256)
        return False

    def _erased_meanwhile(self, name: str) -> bool:
        """Remove an output just uploaded if its local file was erased while it was in
        flight (`Campaigns.delete`: personal data must not outlive the erasure, which
        looked at the bucket before this upload landed); True if it was removed. Stems
        are left alone: a stem invalidated here may still be wanted in the bucket."""
        parsed = parse_object_name(name)
        if parsed is None or parsed.area != "output":
            return False
        if (Path(self.settings.output_dir) / f"{parsed.output_id}.{parsed.suffix}").exists():
            return False
        try:
            self.store.delete(name)
        except Exception as error:  # the bucket went down meanwhile: say what stays there
            log.error("%s was erased here but stays in the bucket: %s", name, error)
            return False
        log.info("upload of %s removed again: the output was erased meanwhile", name)
        return True

    # --- reading what to upload ---------------------------------------------------------

    def _prepare(self, row: QueuedUpload) -> _Prepared:
        parsed = parse_object_name(row.name)
        if parsed is None:
            raise _StaleError("not a stem or output name")
        if parsed.area == "stem":
            return self._prepare_stem(row, str(parsed.stem_id))
        return self._prepare_output(row, str(parsed.output_id), parsed.suffix)

    def _prepare_stem(self, row: QueuedUpload, stem_id: str) -> _Prepared:
        record = self.cache.get(stem_id)
        if record is None or record.sha256 != row.sha256:
            raise _StaleError("the stem was invalidated or made again since it was queued")
        try:
            stored = self.cache.read(record)  # proves the samples against the index
        except (CorruptStemError, OSError) as error:
            raise _StaleError(str(error)) from None
        return _Prepared(row, stored.data, stem_metadata(record), CONTENT_TYPES["wav"])

    def _prepare_output(self, row: QueuedUpload, output_id: str, suffix: str) -> _Prepared:
        folder = Path(self.settings.output_dir)
        try:
            data, metadata, content_type = output_upload(folder, output_id, suffix)
        except (OSError, ValueError) as error:
            if _assembling(folder, output_id, row.enqueued_at):
                raise _NotYetError(f"the output is not committed yet ({error})") from None
            raise _StaleError(f"the output's files are gone or unreadable ({error})") from None
        if metadata["sha256"] != row.sha256:
            raise _StaleError("the file changed since it was queued")
        return _Prepared(row, data, metadata, content_type)


def _assembling(folder: Path, output_id: str, enqueued_at: str) -> bool:
    """Is the output of a row queued less than `LEASE` ago still being written: its WAV
    there, its manifest (the commit) not yet? A failed assembly removes its WAV."""
    young = time.time() - datetime.fromisoformat(enqueued_at).timestamp() < LEASE
    wav, manifest = (folder / f"{output_id}.{suffix}" for suffix in ("wav", "json"))
    return young and wav.exists() and not manifest.exists()


def output_upload(folder: Path, output_id: str, suffix: str) -> tuple[bytes, dict[str, str], str]:
    """One output file as it is uploaded: its bytes, its object metadata (its id, its own
    sha256, and the template and contract of its manifest) and its content type. Raises
    `OSError` when a file is gone or unsafe, `ValueError` when the manifest does not read."""
    data = read_inside(folder, f"{output_id}.{suffix}")[0]
    if suffix == "json":
        data = mirrored_manifest(data)  # without what only this machine keeps (deliveries)
    manifest = json.loads(data if suffix == "json" else read_inside(folder, f"{output_id}.json")[0])
    metadata = {
        "output_id": output_id,
        "sha256": hashlib.sha256(data).hexdigest(),
        "template": str(manifest.get("template", "")),
        "contract_signature": str(manifest.get("contract_signature", "")),
    }
    return data, metadata, CONTENT_TYPES[suffix]
