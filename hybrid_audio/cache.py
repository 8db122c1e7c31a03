"""StemCache: stem files on disk and a SQLite index that knows how each was made.

Files live at `stems/<kind>/stem.<kind>.<slug>.wav` (see `stems.stem_path`). A file is
written to a temporary name in the same folder, fsynced and renamed into place; only then
is its index row committed, so a crash leaves at worst an orphan file (which `verify()`
reports and the next generation replaces), never a row pointing at half a file. The index
uses WAL, a busy timeout and `BEGIN IMMEDIATE` for writes, so threads and processes can
share it. A stem made under another voice contract is never reported compatible.

Each id has one current stem: regenerating under a new contract replaces file and row.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import param
from pydantic import BaseModel, computed_field

from hybrid_audio.contract import VoiceContract
from hybrid_audio.database import Database
from hybrid_audio.files import (
    TEMP_SUFFIX,
    StorageError,
    atomic_write,
    discard,
    leftovers,
    read_inside,
    storage_errors,
)
from hybrid_audio.live import RevisionPublisher, read_revision
from hybrid_audio.stems import KINDS, StemId, stem_path
from hybrid_audio.storage.base import stem_object_name
from hybrid_audio.wav import Wav, WavError, read_wav, write_wav

if TYPE_CHECKING:
    from hybrid_audio.pronunciation import Pronounced
    from hybrid_audio.sound import SoundReport
    from hybrid_audio.storage.uploads import UploadQueue

log = logging.getLogger(__name__)
#: Suffix of a stem file moved aside by `invalidate()` until its row is gone.
ASIDE_SUFFIX = ".aside"
#: Parsed index rows kept by `get` (a campaign's messages reuse the same few stems).
_RECORD_MEMORY = 4096


class CorruptStemError(ValueError):
    """A stem's file is missing or no longer holds the samples its index row recorded."""

    def __init__(self, message: str, *, samples_differ: bool = False) -> None:
        super().__init__(message)
        self.samples_differ = samples_differ  # parses, but other samples than recorded


class StemRecord(BaseModel):
    """One stem as the index knows it. `sha256` is of the sample bytes (the data chunk)."""

    stem_id: str
    kind: str
    text: str
    path: str  # relative to the stems folder
    contract_signature: str
    engine: str
    engine_version: str
    model: str
    voice: str
    api_version: str = ""
    container: str = "wav"
    encoding: str
    sample_rate: int
    channels: int
    bits_per_sample: int
    frames: int
    duration: float
    sha256: str
    size: int
    repairs: str = ""
    created_at: str
    updated_at: str
    # Sound processing (`sound.SoundReport`): None for a stem made without it.
    loudness_before: float | None = None  # LUFS of the engine's clip
    loudness_after: float | None = None  # LUFS of the stored stem
    true_peak_after: float | None = None  # dBTP of the stored stem
    gain_db: float | None = None
    pronunciation: str = ""  # hash of the dictionary entries applied ("" none)
    spoken_as: str = ""  # the text the engine was given ("" = `text`)
    compatible: bool | None = None  # against the cache's active contract, when known
    cached: bool | None = None  # True when returned from the cache without synthesis


#: Index columns: every StemRecord field but the two computed per lookup.
_COLUMNS = [name for name in StemRecord.model_fields if name not in ("compatible", "cached")]


class CacheReport(BaseModel):
    """What `verify()` found; `ok` when every file and row agree."""

    checked: int
    orphan_files: list[str] = []  # files with no index row
    missing_files: list[str] = []  # rows whose file is gone
    hash_mismatches: list[str] = []  # file samples differ from the recorded sha256
    unreadable: list[str] = []  # files that are not valid WAV any more
    temp_files: list[str] = []  # leftovers of interrupted writes

    @computed_field  # part of the JSON too, so API clients need not recompute it
    @property
    def ok(self) -> bool:
        return not (
            self.orphan_files
            or self.missing_files
            or self.hash_mismatches
            or self.unreadable
            or self.temp_files
        )


@dataclass(frozen=True)
class StoredStem:
    """A stem's file as read from disk, proven to hold the samples its row recorded."""

    record: StemRecord
    data: bytes  # the whole file
    wav: Wav
    stat: os.stat_result  # of the descriptor the bytes came through


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


class StemCache(param.Parameterized):
    """Stem files plus their SQLite index, checked against an active voice contract."""

    stems_dir = param.Path(default=None, check_exists=False, doc="Folder of the stem files.")
    database_path = param.Path(default=None, check_exists=False, doc="SQLite index file.")
    contract = param.ClassSelector(
        class_=VoiceContract, doc="Active contract: stems made under another are incompatible."
    )
    revision = param.Integer(
        default=0,
        bounds=(0, None),
        doc="The state database's stems revision as last seen: raised by every store and "
        "invalidate of this process at once, and by `Workspace.refresh()` for other "
        "processes'. Watch it to follow the cache.",
    )

    def __init__(self, *, upload_queue: UploadQueue | None = None, **params) -> None:
        """`upload_queue` (GCS mode only) is owed every stem this cache stores."""
        super().__init__(**params)
        self.upload_queue = upload_queue
        if self.stems_dir is None or self.database_path is None:
            raise ValueError("StemCache needs stems_dir and database_path")
        if self.contract is None:
            self.contract = VoiceContract()
        Path(self.stems_dir).mkdir(parents=True, exist_ok=True)
        # param.Path resolves the folder at every read (a Parameterized built each time:
        # a third of a cached lookup), so the resolved folder is kept until it is set anew,
        # also as a string: joining strings is a tenth of building a Path per lookup.
        self._root = Path(self.stems_dir)
        self._root_str = str(self._root)
        self.param.watch(self._new_root, "stems_dir")
        # index row (as read) → its record: parsing the row was most of the rest.
        self._records: dict[tuple, StemRecord] = {}
        self._db = Database(self.database_path, rows_as_dicts=True)
        self._revision = RevisionPublisher(self, "revision")
        self.revision = read_revision(self._db.connection(), "stems")  # also makes the schema
        self._finish_file_moves()
        self.sweep_temp_files()  # leftovers of a crash, before anything trusts the folder

    def _finish_file_moves(self) -> None:
        """Move the files of stems a migration re-keyed (`migrations.rekey_stems_by_text`).

        Under the write lock, so no other process generates meanwhile: the file first
        (renamed, or deleted when its row was dropped or the new file already exists), then
        the record of the move; an interrupted run is finished by the next.
        """
        moves = "SELECT old_id, new_id FROM stem_file_moves"
        if self._db.connection().execute(moves + " LIMIT 1").fetchone() is None:
            return  # the usual case: no write lock taken at every open
        with self._db.write() as db:
            for row in db.execute(moves).fetchall():
                old = self.path_of(row["old_id"])
                if row["new_id"] and old.exists() and not self.path_of(row["new_id"]).exists():
                    os.replace(old, self.path_of(row["new_id"]))
                else:
                    old.unlink(missing_ok=True)
                db.execute("DELETE FROM stem_file_moves WHERE old_id = ?", (row["old_id"],))

    def _new_root(self, event: param.parameterized.Event) -> None:
        self._root = Path(event.new)
        self._root_str = str(self._root)

    def _record(self, row: sqlite3.Row) -> StemRecord:
        record = StemRecord(**dict(row))
        record.compatible = record.contract_signature == self.contract.signature()
        return record

    # --- reading ------------------------------------------------------------------------

    def path_of(self, stem_id: StemId | str) -> Path:
        return stem_path(stem_id, self.stems_dir)

    def get(self, stem_id: StemId | str) -> StemRecord | None:
        """The index row of `stem_id`, with its compatibility, or None."""
        # A StemId is valid by construction; only a string needs parsing (5 µs a lookup).
        key = stem_id if isinstance(stem_id, StemId) else StemId.parse(str(stem_id))
        row = (
            self._db.connection()
            .execute("SELECT * FROM stems WHERE stem_id = ?", (str(key),))
            .fetchone()
        )
        if row is None:
            return None
        # Memoised by the whole row as read now and the contract: a changed row (another
        # process stored the stem again) or contract is a new key, never a stale record.
        key = (tuple(row), self.contract.signature())
        record = self._records.get(key)
        if record is None:
            if len(self._records) >= _RECORD_MEMORY:
                self._records.clear()
            record = self._records[key] = self._record(row)
        return record.model_copy()  # callers may change their copy

    def lookup(self, stem_id: StemId | str) -> StemRecord | None:
        """A usable stem: indexed, compatible with the active contract, and its file a
        regular file (never a symbolic link) of the recorded size. This is the cheap check;
        the samples themselves are proven whenever the stem is read (`read`)."""
        record = self.get(stem_id)
        if record is None or not record.compatible or not self.file_ok(record):
            return None
        return record

    def file_ok(self, record: StemRecord) -> bool:
        """Is the record's file a regular file (never a symbolic link) of its size?"""
        return self.file_stat(record) is not None

    def file_stat(self, record: StemRecord) -> os.stat_result | None:
        """The `lstat` of the record's file if `file_ok`, else None (for a caller that
        compares the file's identity next, without a second `lstat`)."""
        try:
            info = os.lstat(os.path.join(self._root_str, record.path))
        except FileNotFoundError:
            return None
        return info if stat.S_ISREG(info.st_mode) and info.st_size == record.size else None

    def counters(self, *names: str) -> tuple[int, ...]:
        """The state database's revision counters `names` (one small read): any write to
        their tables, by any process, moves them (`migrations.revision_counters`)."""
        rows = self._db.connection().execute("SELECT name, value FROM revisions").fetchall()
        values = {row["name"]: row["value"] for row in rows}
        return tuple(values.get(name, 0) for name in names)

    def read(self, record: StemRecord, known: StoredStem | None = None) -> StoredStem:
        """The stem's file as it is on disk now, proven against its index row.

        Raises `CorruptStemError` when the file is missing, no longer parses, or holds
        other samples than the recorded sha256, and `files.UnsafeFileError` when it is a
        symbolic link or not a regular file of the stems folder. File bytes equal to those
        of `known` (this stem read and proven before) are that proof again, without a
        parse and a hash.
        """
        fix = "invalidate the stem and generate it again (cache verify lists all such stems)"
        try:
            data, info = read_inside(self._root, record.path)
        except FileNotFoundError:
            raise CorruptStemError(f"{record.stem_id}: its file is missing; {fix}") from None
        if known is not None and known.record.sha256 == record.sha256 and known.data == data:
            return StoredStem(record, data, known.wav, info)
        try:
            wav = read_wav(data)
        except WavError as error:
            raise CorruptStemError(
                f"{record.stem_id}: its file is not valid WAV any more ({error.detail}); {fix}"
            ) from None
        if wav.sha256 != record.sha256:
            raise CorruptStemError(
                f"{record.stem_id}: the file's samples differ from the sha256 the index "
                f"recorded (it was changed on disk); {fix}",
                samples_differ=True,
            )
        return StoredStem(record, data, wav, info)

    def incompatibility(self, record: StemRecord) -> list[str]:
        """Why `record` does not match the active contract: one "field: stem ≠ contract" per
        field the index keeps that differs; empty when the stem is compatible. A stem whose
        kept fields all match was made with another language, speed, volume or emotion
        (the index keeps only the signature of those)."""
        if record.contract_signature == self.contract.signature():
            return []
        wanted = self.contract.audio_format
        fields = {
            "engine": self.contract.engine,
            "engine_version": self.contract.engine_version,
            "model": self.contract.model,
            "voice": self.contract.voice,
            "encoding": wanted.encoding.value,
            "sample_rate": wanted.sample_rate,
            "channels": wanted.channels,
            "bits_per_sample": wanted.bits_per_sample,
        }
        reasons = [
            f"{field}: {getattr(record, field)} ≠ {value}"
            for field, value in fields.items()
            if getattr(record, field) != value
        ]
        return reasons or ["language, speed, volume or emotion differ (contract signature)"]

    def load(self, stem_id: StemId | str) -> Wav:
        """The stem's audio, read strictly from disk and proven against the index."""
        record = self.get(stem_id)
        if record is None:
            raise KeyError(f"{stem_id} is not in the cache")
        return self.read(record).wav

    def list(self, kind: str | None = None, compatible: bool | None = None) -> list[StemRecord]:
        """Indexed stems, optionally of one kind and/or (in)compatible with the contract."""
        if kind is not None and kind not in KINDS:
            raise ValueError(f"unknown stem kind {kind!r}; known kinds: {', '.join(KINDS)}")
        sql, args = "SELECT * FROM stems", ()
        if kind is not None:
            sql, args = sql + " WHERE kind = ?", (kind,)
        rows = self._db.connection().execute(sql + " ORDER BY stem_id", args).fetchall()
        records = [self._record(row) for row in rows]
        if compatible is not None:
            records = [r for r in records if r.compatible == compatible]
        return records

    # --- writing ------------------------------------------------------------------------

    def store(
        self,
        stem_id: StemId | str,
        text: str,
        wav: Wav,
        *,
        api_version: str = "",
        upload: bool = True,
        sound: SoundReport | None = None,
        pronounced: Pronounced | None = None,
    ) -> StemRecord:
        """Check an engine's `wav` against the contract, write the file atomically, index it.

        The stored file is always canonical (`write_wav`); header repairs the engine needed
        to read its service's answer (`Wav.repairs`) are recorded in `repairs`. With an
        upload queue the stem is queued in the index's own transaction, so a committed stem
        is never left unqueued; `upload=False` for a stem just adopted from the bucket.
        `sound` (what processing measured) and `pronounced` (the dictionary entries applied)
        are recorded in the row.
        """
        sid = StemId.parse(str(stem_id))
        contract = self.contract
        if wav.format != contract.audio_format:
            raise WavError(
                "contract format",
                0,
                f"engine returned {wav.format.describe()}, contract wants "
                f"{contract.audio_format.describe()}",
                str(sid),
            )
        if wav.frames == 0:
            raise WavError("non-empty audio", wav.data_offset, "no samples", str(sid))
        data = write_wav(wav.format, wav.pcm)
        path = self.path_of(sid)
        atomic_write(path, data)
        now = _now()
        fmt = wav.format
        values = {
            "stem_id": str(sid),
            "kind": sid.kind,
            "text": text,
            "path": str(path.relative_to(self.stems_dir)),
            "contract_signature": contract.signature(),
            "engine": contract.engine,
            "engine_version": contract.engine_version,
            "model": contract.model,
            "voice": contract.voice,
            "api_version": api_version,
            "container": "wav",
            "encoding": fmt.encoding.value,
            "sample_rate": fmt.sample_rate,
            "channels": fmt.channels,
            "bits_per_sample": fmt.bits_per_sample,
            "frames": wav.frames,
            "duration": wav.duration,
            "sha256": wav.sha256,
            "size": len(data),
            "repairs": "; ".join(wav.repairs),
            "created_at": now,
            "updated_at": now,
            "loudness_before": sound.loudness_before if sound else None,
            "loudness_after": sound.loudness_after if sound else None,
            "true_peak_after": sound.true_peak_after if sound else None,
            "gain_db": sound.gain_db if sound else None,
            "pronunciation": pronounced.entry_hash if pronounced else "",
            # What the engine was given, when it is not `text` (an entry, or a name's
            # `[[`/`<<` broken apart); "" when unknown (a stem adopted from the bucket).
            "spoken_as": pronounced.engine_text
            if pronounced and pronounced.engine_text not in ("", text)
            else "",
        }
        placeholders = ", ".join("?" for _ in _COLUMNS)
        with self._db.write() as db:
            row = db.execute(
                f"INSERT INTO stems ({', '.join(_COLUMNS)}) VALUES ({placeholders}) "
                "ON CONFLICT(stem_id) DO UPDATE SET "
                + ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS if c != "created_at")
                + " RETURNING *",  # the row as written (a replaced stem keeps created_at)
                [values[c] for c in _COLUMNS],
            ).fetchone()
            if upload and self.upload_queue is not None:
                self.upload_queue.add(db, stem_object_name(sid), wav.sha256)
            revision = read_revision(db, "stems")
        self._revision.publish(revision)
        return self._record(row)

    def invalidate(self, stem_id: StemId | str) -> bool:
        """Forget a stem: its row and its file go together, or neither does.

        Inside the row's delete transaction the file is renamed aside; only if the commit
        succeeds is the aside file removed, otherwise it is renamed back. A folder that
        refuses the rename (read-only, say) raises `StorageError` with the row untouched;
        a crash between rename and commit leaves an aside file that `sweep_temp_files`
        puts back. True if there was a row or a file.
        """
        sid = StemId.parse(str(stem_id))
        path = self.path_of(sid)
        aside = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}{ASIDE_SUFFIX}")
        moved = False
        try:
            with self._db.write() as db:
                deleted = db.execute("DELETE FROM stems WHERE stem_id = ?", (str(sid),)).rowcount
                revision = read_revision(db, "stems")
                with storage_errors(path.parent):
                    try:
                        os.rename(path, aside)
                        moved = True
                    except FileNotFoundError:
                        pass
        except BaseException:
            if moved:
                os.rename(aside, path)
            raise
        discard(aside)
        self._revision.publish(revision)
        return bool(deleted) or moved

    def refresh(self) -> bool:
        """Show the stems revision the database holds (changes of other processes)."""
        return self._revision.publish(read_revision(self._db.connection(), "stems"))

    def _leftover_temp_files(self) -> list[Path]:
        """Temp and aside files whose writing process is gone (killed mid-write)."""
        root = Path(self.stems_dir)
        return leftovers(root, f"*/.*{TEMP_SUFFIX}") + leftovers(root, f"*/.*{ASIDE_SUFFIX}")

    def sweep_temp_files(self) -> int:
        """Clean up after interrupted writes and invalidations; returns how many files.

        Temp files are deleted. A file an interrupted `invalidate()` moved aside goes back
        into place if its row survived (the delete was not committed), else it is deleted.
        A folder that cannot be written is left as it is (logged).
        """
        leftovers = self._leftover_temp_files()
        for path in leftovers:
            target = path.with_name(path.name[1:].rsplit(".", 3)[0])  # drop pid.hex.suffix
            try:
                with storage_errors(path.parent):
                    if path.name.endswith(ASIDE_SUFFIX) and self._row_survived(target):
                        os.rename(path, target)
                    else:
                        path.unlink(missing_ok=True)
            except StorageError as error:
                log.warning("leftover %s not swept: %s", path, error)
        return len(leftovers)

    def _row_survived(self, target: Path) -> bool:
        """Is `target` (a stem file moved aside) still indexed and not made again since?"""
        rel = str(target.relative_to(self.stems_dir))
        row = self._db.connection().execute("SELECT 1 FROM stems WHERE path = ?", (rel,))
        return row.fetchone() is not None and not os.path.lexists(target)

    # --- audit --------------------------------------------------------------------------

    def verify(self) -> CacheReport:
        """Compare files and index: orphans, missing files, hash mismatches, leftovers."""
        root = Path(self.stems_dir)
        rows = {r.path: r for r in self.list()}
        on_disk = {
            str(p.relative_to(root))
            for p in root.glob("*/*.wav")
            if not p.name.startswith(".") and (p.is_file() or p.is_symlink())
        }
        report = CacheReport(checked=len(rows))
        report.temp_files = sorted(str(p.relative_to(root)) for p in self._leftover_temp_files())
        report.orphan_files = sorted(on_disk - rows.keys())
        for rel, record in sorted(rows.items()):
            if rel not in on_disk:
                report.missing_files.append(record.stem_id)
                continue
            try:
                self.read(record)
            except OSError as error:  # a symbolic link, or not a regular file
                report.unreadable.append(f"{record.stem_id}: {error}")
            except CorruptStemError as error:
                if error.samples_differ:
                    report.hash_mismatches.append(record.stem_id)
                else:
                    report.unreadable.append(str(error))
        return report
