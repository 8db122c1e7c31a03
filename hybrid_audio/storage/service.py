"""StorageService: consistency, audit, sync, invalidate and status, whoever asks.

The API, the CLI, the dashboard and notebooks all call these methods, so every audit,
consistency check and sync is logged here (`logs/storage.jsonl`) — also when nothing but
a script runs. In GCS mode consistency compares the local index with the bucket; in local
mode (no bucket) the same call audits the files against the index and says so.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import param

from hybrid_audio.assembly import Assembler, CorruptOutputError
from hybrid_audio.cache import StemCache
from hybrid_audio.config import Settings
from hybrid_audio.files import leftovers
from hybrid_audio.jobs import Job, JobRunner, logged
from hybrid_audio.logs import JsonlLog
from hybrid_audio.stems import StemId
from hybrid_audio.storage.base import (
    OUTPUT_PREFIX,
    STEMS_PREFIX,
    ObjectInfo,
    ObjectStore,
    StorageDescription,
    crc32c_of,
    output_object_names,
    parse_object_name,
    stem_object_name,
)
from hybrid_audio.storage.reports import (
    LOCAL_STATUSES,
    REMOTE_STATUSES,
    AuditPage,
    ConsistencyReport,
    Difference,
    InvalidateOutcome,
    StorageStatus,
)
from hybrid_audio.storage.sync import LocalObject, Syncer, local_objects, stem_object
from hybrid_audio.storage.uploads import UploadQueue, Uploads

LOCAL_NOTE = "no bucket is configured: the local files were audited against the index"
NO_BUCKET = "no bucket is configured (set GCS_BUCKET)"
LOCAL_AUDIT_NOTE = "no bucket is configured: these are the local files"
#: Prefixes an audit may list: a whole area or one stem kind's folder.
AUDIT_PREFIXES = (STEMS_PREFIX, OUTPUT_PREFIX)
MAX_AUDIT_LIMIT = 1000


class StorageService(param.Parameterized):
    """The storage operations above one `ObjectStore`, logged, with the last report live."""

    settings = param.ClassSelector(class_=Settings, doc="Paths and the bucket settings.")
    store = param.ClassSelector(class_=ObjectStore, doc="The bucket, or the local files.")
    cache = param.ClassSelector(class_=StemCache, doc="The local index of stems.")
    assembler = param.ClassSelector(class_=Assembler, doc="The output folder and manifests.")
    jobs = param.ClassSelector(class_=JobRunner, doc="The one job store (sync jobs).")
    uploads = param.ClassSelector(
        class_=Uploads, default=None, allow_None=True, doc="The upload queue (GCS mode)."
    )
    log = param.ClassSelector(class_=JsonlLog, doc="<logs_dir>/storage.jsonl.")
    last_report = param.ClassSelector(
        class_=ConsistencyReport,
        default=None,
        allow_None=True,
        doc="The latest consistency report (the dashboard's table).",
    )

    # --- describe -----------------------------------------------------------------------

    @property
    def gcs(self) -> bool:
        return self.store.mode == "gcs"

    def describe(self) -> StorageDescription:
        return self.store.describe()

    def status(self) -> StorageStatus:
        """Mode and bucket, plus the upload queue's counters (zeros without one)."""
        status = StorageStatus(storage=self.describe())
        if self.uploads is not None:
            status.pending = self.uploads.pending
            status.failing = self.uploads.failing
            status.conflicts = self.uploads.conflicts
            status.uploaded = self.uploads.uploaded
            status.last_error = self.uploads.last_error
        return status

    # --- consistency --------------------------------------------------------------------

    def consistency(
        self, stem_id: str | None = None, source: str = "headless"
    ) -> ConsistencyReport:
        """Local index against the bucket (GCS), or files against the index (local);
        with `stem_id` only that stem. Logged as `gcs_consistency` with `source` (who asked:
        api, dashboard, headless), as sync lines are; sets `last_report`."""
        sid = str(StemId.parse(stem_id)) if stem_id is not None else None
        description = self.describe()
        report = ConsistencyReport(
            mode=description.mode, bucket=description.bucket, prefix=description.prefix
        )
        statuses = REMOTE_STATUSES if self.gcs else LOCAL_STATUSES
        try:
            if not self.gcs:
                report.note = LOCAL_NOTE
                self._audit_local(sid, report)
            elif sid is None:
                self._compare_all(report)
            else:
                self._compare_one(sid, report)
        except Exception as error:  # a bucket that cannot be read: logged, then raised
            self.log.write(
                "gcs_consistency",
                **description.model_dump(),
                stem_id=sid,
                source=source,
                error=str(error),
            )
            raise
        counts = Counter(row.status for row in report.rows)
        report.summary = {status: counts[status] for status in statuses}
        self.log.write(
            "gcs_consistency",
            mode=report.mode,
            bucket=report.bucket,
            prefix=report.prefix,
            stem_id=sid,
            source=source,
            ok=report.ok,
            checked_local=report.checked_local,
            checked_remote=report.checked_remote,
            summary=report.summary,
        )
        self.last_report = report
        return report

    def _compare_all(self, report: ConsistencyReport) -> None:
        local = local_objects(self.cache, self.assembler)
        report.checked_local = len(local)
        seen: set[str] = set()
        for prefix in AUDIT_PREFIXES:
            for info in self.store.iterate(prefix):
                report.checked_remote += 1
                seen.add(info.name)
                report.rows.extend(_differences(info, local.get(info.name)))
        report.rows.extend(_missing_remote(local[name]) for name in sorted(local.keys() - seen))

    def _compare_one(self, stem_id: str, report: ConsistencyReport) -> None:
        local = stem_object(self.cache, stem_id)
        info = self.store.info(stem_object_name(stem_id))
        report.checked_local = int(local is not None)
        report.checked_remote = int(info is not None)
        if info is not None:
            report.rows.extend(_differences(info, local))
        elif local is not None:
            report.rows.append(_missing_remote(local))
        else:
            report.note = f"{stem_id} is neither in the local index nor in the bucket"

    def _audit_local(self, stem_id: str | None, report: ConsistencyReport) -> None:
        """Files against the index: `StemCache.verify()` for stems, manifests for outputs
        (with `stem_id`, the rows of that stem out of the whole stems audit)."""
        verified = self.cache.verify()
        rows = [
            *(
                _stem_row("missing_file", s, "indexed, but its file is gone")
                for s in verified.missing_files
            ),
            *(
                _stem_row("hash_mismatch", s, "the file's samples differ from the index sha256")
                for s in verified.hash_mismatches
            ),
            *(_unreadable_row(entry) for entry in verified.unreadable),
            *(
                _file_row("orphan_file", STEMS_PREFIX, rel, "a stem file the index does not know")
                for rel in verified.orphan_files
            ),
            *(
                _file_row("temp_file", STEMS_PREFIX, rel, "left by an interrupted write")
                for rel in verified.temp_files
            ),
        ]
        if stem_id is None:
            report.checked_local = verified.checked + self._audit_outputs(rows)
            report.rows = rows
        else:
            report.checked_local = int(self.cache.get(stem_id) is not None)
            report.rows = [row for row in rows if row.stem_id == stem_id]

    def _audit_outputs(self, rows: list[Difference]) -> int:
        """Each output's WAV against its manifest's sha256; WAVs without a manifest and temp
        files. Returns how many outputs were checked."""
        folder = self.assembler.output_dir
        ids = self.assembler.output_ids()
        for output_id in ids:
            wav_name = output_object_names(output_id)[0]
            try:
                self.assembler.read_output(output_id)
            except CorruptOutputError as error:
                rows.append(_output_row("hash_mismatch", wav_name, output_id, str(error)))
            except KeyError:
                rows.append(
                    _output_row("missing_file", wav_name, output_id, "the manifest's WAV is gone")
                )
            except (OSError, ValueError, TypeError) as error:
                rows.append(_output_row("unreadable", wav_name, output_id, str(error)))
        known = set(ids)
        for wav in sorted(folder.glob("*.wav")) if folder.is_dir() else []:
            name = OUTPUT_PREFIX + wav.name
            if wav.stem not in known and parse_object_name(name) is not None:
                rows.append(_output_row("orphan_file", name, wav.stem, "a WAV without a manifest"))
        for path in sorted(leftovers(folder)) if folder.is_dir() else []:
            rows.append(
                _file_row("temp_file", OUTPUT_PREFIX, path.name, "left by an interrupted write")
            )
        return len(ids)

    # --- audit --------------------------------------------------------------------------

    def audit(
        self,
        prefix: str = "",
        limit: int = 100,
        page_token: str | None = None,
        source: str = "headless",
    ) -> AuditPage:
        """One page of the bucket (or the local files) under `prefix`; logged `gcs_audit`
        with `source` (see `consistency`). In local mode `note` says there is no bucket."""
        check_prefix(prefix)
        if not 1 <= limit <= MAX_AUDIT_LIMIT:
            raise ValueError(f"limit must be between 1 and {MAX_AUDIT_LIMIT}; got {limit}")
        description = self.describe()
        fields = {
            "mode": description.mode,
            "bucket": description.bucket,
            "prefix": prefix,
            "source": source,
        }
        try:
            page = self.store.list_page(prefix, limit, page_token)
        except Exception as error:
            self.log.write("gcs_audit", **fields, limit=limit, error=str(error))
            raise
        self.log.write(
            "gcs_audit",
            **fields,
            limit=limit,
            objects=len(page.objects),
            more=page.next_page_token is not None,
        )
        return AuditPage(
            mode=description.mode,
            bucket=description.bucket,
            prefix=prefix,
            objects=page.objects,
            next_page_token=page.next_page_token,
            note="" if self.gcs else LOCAL_AUDIT_NOTE,
        )

    # --- sync ---------------------------------------------------------------------------

    def start_sync(self, direction: str, prefix: str = "", source: str = "api") -> Job:
        """Push or pull as a `storage_sync` job with progress (GCS mode only)."""
        if not self.gcs:
            raise ValueError(NO_BUCKET)
        if direction not in ("push", "pull"):
            raise ValueError(f"direction must be push or pull; got {direction!r}")
        check_prefix(prefix)
        params = {"direction": direction, "prefix": prefix, "source": source}
        return self.jobs.submit(
            "storage_sync", self._sync_work, params=params, args=(direction, prefix)
        )

    def _sync_work(self, job: Job, direction: str, prefix: str) -> dict[str, Any]:
        """The body of a sync job, logged to storage.jsonl from start to end."""
        fields = {"direction": direction, "prefix": prefix, "source": job.params.get("source")}
        syncer = Syncer(self.store, self.cache, self.assembler, self._queue())
        with logged(self.log, "storage_sync", job, **fields) as outcome:
            report = syncer.push(prefix, job) if direction == "push" else syncer.pull(prefix, job)
            outcome.update(
                considered=report.considered,
                transferred=report.transferred,
                skipped=report.skipped,
                conflicts=len(report.conflicts),
                failed=len(report.failed),
            )
        return report.model_dump()

    def _queue(self) -> UploadQueue | None:
        return self.uploads.queue if self.uploads is not None else None

    # --- invalidate ---------------------------------------------------------------------

    def invalidate(self, stem_id: str, remote: bool = False) -> InvalidateOutcome:
        """Remove the local copy of a stem and, with `remote`, the bucket's copy."""
        sid = str(StemId.parse(stem_id))
        if remote and not self.gcs:
            raise ValueError(f"{NO_BUCKET}: there is no remote copy to remove")
        outcome = InvalidateOutcome(
            stem_id=sid,
            local=self.cache.invalidate(sid),
            remote=self.store.delete(stem_object_name(sid)) if remote else False,
        )
        self.log.write("storage_invalidate", **outcome.model_dump())
        return outcome


def check_prefix(prefix: str) -> None:
    """An audit or sync prefix: "" (everything) or inside stems/ or output/."""
    if prefix and not prefix.startswith(AUDIT_PREFIXES):
        raise ValueError(
            f"prefix must be empty or start with {' or '.join(AUDIT_PREFIXES)} "
            f"(e.g. stems/name/, stems/developer/, stems/script/, output/); got {prefix!r}"
        )


# --- rows --------------------------------------------------------------------------------


def _differences(info: ObjectInfo, local: LocalObject | None) -> list[Difference]:
    """What is wrong with one bucket object, judged against the local file it mirrors."""
    meta = info.metadata
    remote_sha256 = meta.get("sha256") or None
    parsed = parse_object_name(info.name)
    row = {
        "name": info.name,
        "stem_id": parsed.stem_id if parsed else None,
        "output_id": parsed.output_id if parsed else None,
        "remote_sha256": remote_sha256,
        "local_sha256": local.sha256 if local else None,
    }
    if parsed is None:
        return [
            Difference(status="orphan_remote", detail="not a stem or output object name", **row)
        ]
    if parsed.area == "stem" and (meta.get("stem_id") != parsed.stem_id or not remote_sha256):
        detail = "a stem object without stem metadata (stem_id, sha256)"
        return [Difference(status="orphan_remote", detail=detail, **row)]
    if local is None:
        return [Difference(status="missing_local", detail="in the bucket, not here", **row)]
    rows = []
    if remote_sha256 and remote_sha256 != local.sha256:
        detail = "the object's sha256 metadata differs from the local index"
        rows.append(Difference(status="checksum_mismatch", detail=detail, **row))
    elif (crc32c := _local_crc32c(local)) is not None and crc32c != info.crc32c:
        detail = f"the object's bytes differ from the local file (crc32c {info.crc32c})"
        rows.append(Difference(status="checksum_mismatch", detail=detail, **row))
    remote_contract = meta.get("contract_signature")
    if remote_contract and local.contract_signature and remote_contract != local.contract_signature:
        detail = f"made under contract {remote_contract}, here {local.contract_signature}"
        rows.append(Difference(status="contract_mismatch", detail=detail, **row))
    return rows


def _local_crc32c(local: LocalObject) -> str | None:
    """CRC32C of the local file; None when it cannot be read (the local audit's business)."""
    try:
        return crc32c_of(local.read())
    except OSError:
        return None


def _missing_remote(local: LocalObject) -> Difference:
    return Difference(
        status="missing_remote",
        name=local.name,
        stem_id=local.stem_id,
        output_id=local.output_id,
        detail="here, not in the bucket",
        local_sha256=local.sha256,
    )


def _stem_row(status: str, stem_id: str, detail: str) -> Difference:
    return Difference(status=status, name=stem_object_name(stem_id), stem_id=stem_id, detail=detail)


def _unreadable_row(entry: str) -> Difference:
    """`StemCache.verify` reports an unreadable stem as "<stem id>: <why>"."""
    stem_id, _, detail = entry.partition(": ")
    return _stem_row("unreadable", stem_id, detail)


def _output_row(status: str, name: str, output_id: str, detail: str) -> Difference:
    return Difference(status=status, name=name, output_id=output_id, detail=detail)


def _file_row(status: str, area: str, relative: str, detail: str) -> Difference:
    """A row for a file by its path (an orphan or a temp file; maybe no valid name)."""
    name = area + Path(relative).as_posix()
    parsed = parse_object_name(name)
    return Difference(
        status=status,
        name=name,
        stem_id=parsed.stem_id if parsed else None,
        output_id=parsed.output_id if parsed else None,
        detail=detail,
    )
