"""Push and pull: bring the bucket and this machine's stems and outputs level, as a job.

The local index is the truth for this machine, so neither direction ever replaces bytes:
- push uploads what the bucket lacks (new objects only, `if_generation_match=0`); a name
  the bucket already holds with the same sha256 is skipped, with other bytes it is a
  conflict. Batches go through `upload_many`, so a real bucket gets many requests in flight.
- pull downloads each batch of stems with `download_many` (one request per object,
  `GCS_UPLOAD_WORKERS` at a time, after the listing that described them) and adopts them
  through `adopt_stem` under each stem's lock (compatible, proven by sha256, never over a
  local stem with other bytes); it writes outputs (WAV + manifest, the manifest's sha256 proven
  against the WAV) only where no local file has that name.
Between batches the job checks for a cancel; progress is one step per object.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hybrid_audio.assembly import Assembler
from hybrid_audio.cache import StemCache, StemRecord
from hybrid_audio.files import create_new, read_inside, stem_lock
from hybrid_audio.jobs import Job
from hybrid_audio.manifests import mirrored_manifest
from hybrid_audio.storage.base import (
    OUTPUT_PREFIX,
    STEMS_PREFIX,
    ObjectExistsError,
    ObjectInfo,
    ObjectStore,
    StorageUnavailableError,
    output_object_names,
    parse_object_name,
    stem_metadata,
    stem_object_name,
)
from hybrid_audio.storage.readthrough import PullOutcome, adopt_stem, refusal, stem_id_of
from hybrid_audio.storage.reports import SyncReport
from hybrid_audio.storage.uploads import CONTENT_TYPES, UploadQueue, output_upload

#: Objects per upload_many/download_many call: one progress step and cancel check each.
BATCH = 50


@dataclass(frozen=True)
class LocalObject:
    """A stem or output file of this machine as the bucket would name and describe it."""

    name: str
    folder: Path
    relative: str  # the file, inside `folder`
    sha256: str  # what the object's metadata carries: samples for stems, file for outputs
    contract_signature: str
    stem_id: str | None = None
    output_id: str | None = None

    def read(self) -> bytes:
        """The bytes the object holds (a link or a missing file raises `OSError`): the
        file's, a manifest's without the sections only this machine keeps (`manifests`)."""
        data = read_inside(self.folder, self.relative)[0]
        return mirrored_manifest(data) if self.relative.endswith(".json") else data


def local_objects(
    cache: StemCache, assembler: Assembler, prefix: str = ""
) -> dict[str, LocalObject]:
    """Every indexed stem and every output with a manifest, by object name, under `prefix`."""
    found: dict[str, LocalObject] = {}
    if STEMS_PREFIX.startswith(prefix) or prefix.startswith(STEMS_PREFIX):
        for record in cache.list():
            obj = _stem_object(cache, record)
            if obj.name.startswith(prefix):
                found[obj.name] = obj
    if OUTPUT_PREFIX.startswith(prefix) or prefix.startswith(OUTPUT_PREFIX):
        for output_id in assembler.output_ids():
            for obj in output_objects(assembler, output_id):
                if obj.name.startswith(prefix):
                    found[obj.name] = obj
    return found


def stem_object(cache: StemCache, stem_id: str) -> LocalObject | None:
    """The indexed stem `stem_id` as an object, or None if the index does not hold it."""
    record = cache.get(stem_id)
    return None if record is None else _stem_object(cache, record)


def _stem_object(cache: StemCache, record: StemRecord) -> LocalObject:
    return LocalObject(
        name=stem_object_name(record.stem_id),
        folder=Path(cache.stems_dir),
        relative=record.path,
        sha256=record.sha256,
        contract_signature=record.contract_signature,
        stem_id=record.stem_id,
    )


def output_objects(assembler: Assembler, output_id: str) -> list[LocalObject]:
    """An output's WAV and manifest as objects; none if its manifest does not read."""
    folder = assembler.output_dir
    try:
        manifest = mirrored_manifest(read_inside(folder, f"{output_id}.json")[0])
        document = json.loads(manifest)
        wav_sha256 = str(document["output"]["sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        return []  # not an output this machine can vouch for (local audit reports it)
    signature = str(document.get("contract_signature", ""))
    wav_name, json_name = output_object_names(output_id)
    common = {"folder": folder, "contract_signature": signature, "output_id": output_id}
    return [
        LocalObject(name=wav_name, relative=f"{output_id}.wav", sha256=wav_sha256, **common),
        LocalObject(
            name=json_name,
            relative=f"{output_id}.json",
            sha256=hashlib.sha256(manifest).hexdigest(),
            **common,
        ),
    ]


def _batches(items: Sequence[Any], size: int = BATCH) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Syncer:
    """One push or pull, reporting into a `SyncReport` and a job's progress."""

    def __init__(
        self,
        store: ObjectStore,
        cache: StemCache,
        assembler: Assembler,
        queue: UploadQueue | None = None,
    ) -> None:
        self.store = store
        self.cache = cache
        self.assembler = assembler
        self.queue = queue  # the durable upload queue (GCS mode), or None

    # --- push ---------------------------------------------------------------------------

    def push(self, prefix: str, job: Job) -> SyncReport:
        """Upload every local stem and output under `prefix` that the bucket lacks; report
        names the bucket holds with other bytes, and settle queued names it holds already."""
        report = SyncReport(direction="push", prefix=prefix)
        local = local_objects(self.cache, self.assembler, prefix)
        remote = {info.name: info for info in self.store.iterate(prefix)}
        queued = {row["object_name"] for row in self.queue.rows()} if self.queue else set()
        for name in sorted(local.keys() & remote.keys()):
            if name in queued or remote[name].metadata.get("sha256") != local[name].sha256:
                report.considered += 1
                self._settle_existing(local[name], remote[name], report)
        todo = [local[name] for name in sorted(local.keys() - remote.keys())]
        report.considered += len(todo)
        job.param.update(total=report.considered, done=report.considered - len(todo))
        for batch in _batches(todo):
            job.raise_if_cancelled()
            items, ready = [], []
            for obj in batch:
                try:
                    items.append(self._upload_item(obj))
                    ready.append(obj)
                except (OSError, ValueError, KeyError) as error:
                    report.failed.append(f"{obj.name}: {error}")
            for obj, result in zip(ready, self.store.upload_many(items), strict=True):
                if isinstance(result, StorageUnavailableError):
                    raise result
                if isinstance(result, ObjectExistsError):  # made meanwhile by another machine
                    info = self.store.info(obj.name)
                    if info is not None:
                        self._settle_existing(obj, info, report)
                        continue
                if isinstance(result, Exception):
                    report.failed.append(f"{obj.name}: {result}")
                    continue
                report.transferred += 1
                self._done(obj)
            job.advance(len(batch), message=f"pushed {report.transferred}")
        return report

    def _upload_item(self, obj: LocalObject) -> tuple[str, bytes, dict[str, str], str]:
        """Name, proven bytes, metadata and content type of one upload."""
        if obj.stem_id is not None:
            record = self.cache.get(obj.stem_id)
            if record is None:
                raise KeyError(f"{obj.stem_id} left the index")
            data = self.cache.read(record).data
            return obj.name, data, stem_metadata(record), CONTENT_TYPES["wav"]
        assert obj.output_id is not None
        suffix = obj.name.rpartition(".")[2]
        data, metadata, content_type = output_upload(obj.folder, obj.output_id, suffix)
        if metadata["sha256"] != obj.sha256:
            raise ValueError("the file differs from the sha256 its manifest recorded")
        return obj.name, data, metadata, content_type

    def _settle_existing(self, obj: LocalObject, info: ObjectInfo, report: SyncReport) -> None:
        """The bucket has the name already: same sha256 → skipped (and dequeued), else a
        conflict that is reported and left alone on both sides."""
        remote_sha256 = info.metadata.get("sha256", "")
        if remote_sha256 == obj.sha256:
            report.skipped += 1
            self._done(obj)
        else:
            report.conflicts.append(
                f"{obj.name}: the bucket holds other bytes "
                f"(sha256 {remote_sha256 or 'unknown'} ≠ local {obj.sha256})"
            )

    def _done(self, obj: LocalObject) -> None:
        """The bucket has this version: its queue row (if any) is settled."""
        if self.queue is not None:
            self.queue.done(obj.name, obj.sha256)

    # --- pull ---------------------------------------------------------------------------

    def pull(self, prefix: str, job: Job) -> SyncReport:
        """Adopt every stem and output under `prefix` that this machine lacks."""
        report = SyncReport(direction="pull", prefix=prefix)
        stems: list[tuple[str, ObjectInfo]] = []  # (stem id, its object)
        outputs: dict[str, dict[str, ObjectInfo]] = {}
        for info in self.store.iterate(prefix):
            parsed = parse_object_name(info.name)
            if parsed is None:
                continue  # an orphan: consistency reports it, nothing to adopt
            if parsed.area == "stem" and parsed.stem_id:
                here = self.cache.lookup(parsed.stem_id)
                if here is None or here.sha256 != info.metadata.get("sha256"):
                    stems.append((parsed.stem_id, info))
            else:
                outputs.setdefault(parsed.output_id or "", {})[parsed.suffix] = info
        outputs = {oid: pair for oid, pair in outputs.items() if self._output_missing(oid)}
        report.considered = len(stems) + sum(len(pair) for pair in outputs.values())
        job.param.update(total=report.considered)
        for batch in _batches(stems):
            job.raise_if_cancelled()
            self._pull_stems([info for _, info in batch], report)
            job.advance(len(batch), message=f"pulled {report.transferred}")
        for batch in _batches(sorted(outputs), BATCH // 2):  # two objects per output
            job.raise_if_cancelled()
            self._pull_outputs({oid: outputs[oid] for oid in batch}, report)
            job.advance(
                sum(len(outputs[oid]) for oid in batch), message=f"pulled {report.transferred}"
            )
        return report

    def _output_missing(self, output_id: str) -> bool:
        folder = self.assembler.output_dir
        return not all((folder / f"{output_id}.{suffix}").exists() for suffix in ("wav", "json"))

    def _pull_stems(self, infos: Sequence[ObjectInfo], report: SyncReport) -> None:
        """Download a batch at once (objects ruled out by their listed metadata are not
        fetched), then adopt each under its stem's lock."""
        wanted: list[ObjectInfo] = []
        for info in infos:
            ruled_out = refusal(self.cache, info)
            if ruled_out is None:
                wanted.append(info)
            else:
                self._count(info, ruled_out, report)
        fetched = self.store.download_many([info.name for info in wanted])
        for info, data in zip(wanted, fetched, strict=True):
            if isinstance(data, StorageUnavailableError):
                raise data
            if isinstance(data, Exception):
                report.failed.append(f"{info.name}: {data}")
                continue
            try:
                outcome = self._adopt(info, data)
            except Exception as error:  # one bad object must not stop the others
                report.failed.append(f"{info.name}: {error}")
                continue
            self._count(info, outcome, report)

    def _adopt(self, info: ObjectInfo, data: bytes) -> PullOutcome:
        """`adopt_stem` inside the generator's lock of that stem, so a pull never lands
        between a generation's lookup and its store."""
        stem_id = stem_id_of(info.name)
        assert stem_id is not None  # refusal ruled out any other name
        with stem_lock(self.assembler.settings.state_dir, str(stem_id)):
            return adopt_stem(self.cache, info, data)

    @staticmethod
    def _count(info: ObjectInfo, outcome: PullOutcome, report: SyncReport) -> None:
        if outcome.status == "adopted":
            report.transferred += 1
        elif outcome.status in ("already", "incompatible"):
            report.skipped += 1
        elif outcome.status == "conflict":
            report.conflicts.append(f"{info.name}: {outcome.detail}")
        else:
            report.failed.append(f"{info.name}: {outcome.detail}")

    def _pull_outputs(self, pairs: dict[str, dict[str, ObjectInfo]], report: SyncReport) -> None:
        """Download the pairs of a batch at once, prove each, write the absent files."""
        for pair in [pair for pair in pairs.values() if set(pair) != {"wav", "json"}]:
            for info in pair.values():
                report.failed.append(f"{info.name}: the bucket holds only half of the output")
        whole = [oid for oid, pair in pairs.items() if set(pair) == {"wav", "json"}]
        names = [name for oid in whole for name in output_object_names(oid)]
        fetched = dict(zip(names, self.store.download_many(names), strict=True))
        for output_id in whole:
            wav_name, json_name = output_object_names(output_id)
            wav, manifest = fetched[wav_name], fetched[json_name]
            for result in (wav, manifest):
                if isinstance(result, StorageUnavailableError):
                    raise result
            if isinstance(wav, Exception) or isinstance(manifest, Exception):
                error = wav if isinstance(wav, Exception) else manifest
                report.failed.extend(f"{name}: {error}" for name in (wav_name, json_name))
                continue
            problem = _output_problem(output_id, wav, manifest)
            if problem:
                report.failed.extend(f"{name}: {problem}" for name in (wav_name, json_name))
                continue
            self._write_output({wav_name: wav, json_name: manifest}, report)

    def _write_output(self, files: dict[str, bytes], report: SyncReport) -> None:
        """Write the absent files of one output, WAV first, the manifest last (an output WAV
        exists only with its manifest); a local file with other bytes is a conflict and
        nothing of that output is written."""
        folder = self.assembler.output_dir
        targets = {name: folder / name[len(OUTPUT_PREFIX) :] for name in files}
        for name, path in targets.items():
            if path.exists() and _mirrored(folder, path.name) != files[name]:
                report.conflicts.append(f"{name}: a local file holds other bytes (kept)")
                return
        for name in sorted(files, key=lambda n: n.endswith(".json")):
            if targets[name].exists():
                report.skipped += 1
            elif create_new(targets[name], files[name]):
                report.transferred += 1
            else:
                report.conflicts.append(f"{name}: written locally meanwhile (kept)")


def _mirrored(folder: Path, name: str) -> bytes:
    """A local output file as the bucket would hold it (see `LocalObject.read`)."""
    data = read_inside(folder, name)[0]
    return mirrored_manifest(data) if name.endswith(".json") else data


def _output_problem(output_id: str, wav: bytes, manifest: bytes) -> str:
    """Why a downloaded output cannot be trusted, or "" when its manifest proves its WAV."""
    try:
        document = json.loads(manifest)
        recorded = document["output"]["sha256"]
    except (ValueError, KeyError, TypeError):
        return "the manifest does not read as an output manifest"
    if document.get("id") != output_id:
        return f"the manifest names another output ({document.get('id')!r})"
    if hashlib.sha256(wav).hexdigest() != recorded:
        return "the WAV differs from the sha256 its manifest records"
    return ""
