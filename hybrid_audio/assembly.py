"""Assembler: template + inputs → stems → bit-exact merge → output file, manifest, proof.

`assemble()` loads a template, fills its slots (generating missing stems through the
`Generator` when allowed), checks every stem against the active contract and against the
sha256 its index row recorded, merges with `bitmerge_semantic`, writes
`output/<UTC YYYYmmddTHHMMSSffffffZ>_<template>_<name>_<developer>.wav` and a JSON manifest
beside it, then re-reads the written file and verifies it byte by byte against the stems;
the verdict goes into the manifest. Files are written to a temporary name, fsynced and
hard-linked into place, which fails rather than overwrites: two assemblies in the same
microsecond get `_2`, `_3`… suffixes instead of clobbering each other.

Nothing is trusted that the disk no longer says. A parsed stem is kept in memory only
while its file's identity (device, inode, size, mtime_ns, ctime_ns) is unchanged, so a
stem rewritten in place or replaced is read again — and refused (`CorruptStemError`, a
409) when its samples no longer match the index; the proof re-reads every stem the same
way after the output is written, so `verified` means "matches the files as they are".
An output WAV exists only with its manifest: on any failure before the manifest is written
the WAV is removed, and `recover_outputs()` (run when an Assembler starts) removes what a
crash left: temp files of dead writers, and WAVs without a manifest. Such a WAV is removed,
not completed — its merge record (segment offsets, source hashes) died with the process,
and assembling the message again is exact and cheap.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import stat
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import param
from pydantic import BaseModel

from hybrid_audio import kinds
from hybrid_audio.bitmerge import (
    Manifest,
    MergeError,
    MergeResult,
    Part,
    Silence,
    VerifyReport,
    bitmerge_semantic,
    verify,
)
from hybrid_audio.cache import StemCache, StemRecord, StoredStem
from hybrid_audio.config import Settings
from hybrid_audio.contract import VoiceContract
from hybrid_audio.datasets import load_dataset
from hybrid_audio.files import (
    StorageError,
    SyncBatch,
    atomic_write,
    create_new,
    discard,
    leftovers,
    read_inside,
    stem_lock,
    storage_errors,
    write_temp,
)
from hybrid_audio.generation import Generator
from hybrid_audio.manifests import manifest_bytes
from hybrid_audio.stems import StemId, normalize
from hybrid_audio.templates import (
    SilenceSegment,
    SlotSegment,
    StemSegment,
    Template,
    load_template,
    template_path,
)
from hybrid_audio.wav import Wav

if TYPE_CHECKING:
    from hybrid_audio.storage.uploads import UploadQueue

#: Output ids: `<UTC stamp>_<template>_<name>_<developer>` for single messages, or a
#: campaign message's deterministic `<campaign id>_<row:06d>` (hybrid_audio.campaign).
_STAMPED_ID = re.compile(r"\d{8}T\d{12}Z_[a-z0-9_]+")
CAMPAIGN_OUTPUT_ID = re.compile(r"c[0-9a-f]{12}_\d{6,}")
_OUTPUT_ID = re.compile(f"{_STAMPED_ID.pattern}|{CAMPAIGN_OUTPUT_ID.pattern}")
#: A manifest's `output.store` when the message is kept as its manifest only
#: (`hybrid_audio.render`): no WAV, rendered from its stems on request.
MANIFEST_STORE = "manifest"
#: Stems kept parsed in memory (with their sha256): a campaign reuses the same few stems.
_STEM_MEMORY = 512
#: Messages whose resolved stems are kept (`Assembler._resolve`).
_RESOLVED_MEMORY = 4096
#: A file changed less than this long ago may change again within the same timestamp tick
#: (file systems stamp with a coarse clock), so its parsed copy is not kept ("racy git").
SETTLED_NS = 2_000_000_000
log = logging.getLogger(__name__)


class AssemblyError(ValueError):
    """The message cannot be assembled as asked (missing input, unknown stem…)."""


class CorruptOutputError(ValueError):
    """An output's WAV no longer holds the bytes its manifest recorded."""


class OutputSummary(BaseModel):
    """One assembled message, as listed."""

    id: str
    template: str
    name: str | None
    developer: str | None
    script: str | None
    duration: float
    sha256: str
    created_at: str
    verified: bool
    path: str


class AssemblyResult(BaseModel):
    """What `assemble()` made: the summary, its files and the proof."""

    summary: OutputSummary
    wav_path: str
    manifest_path: str
    report: VerifyReport


class Assembler(param.Parameterized):
    """Builds messages from templates; the last result is a parameter views can watch."""

    settings = param.ClassSelector(
        class_=Settings, doc="Where templates, datasets, stems and outputs live."
    )
    cache = param.ClassSelector(class_=StemCache, doc="The stems a message is made of.")
    contract = param.ClassSelector(
        class_=VoiceContract, doc="Active contract: the format every stem and output must have."
    )
    generator = param.ClassSelector(
        class_=Generator,
        default=None,
        allow_None=True,
        doc="Makes the stems a message lacks; None → only cached stems can be used.",
    )
    last_result = param.ClassSelector(
        class_=AssemblyResult, allow_None=True, constant=True, doc="The latest assembly."
    )

    def __init__(self, *, upload_queue: UploadQueue | None = None, **params: Any) -> None:
        """`upload_queue` (GCS mode only) is owed every output this assembler writes."""
        super().__init__(**params)
        self.upload_queue = upload_queue
        if self.settings is None or self.cache is None or self.contract is None:
            raise ValueError("Assembler needs settings, cache and contract")
        # (stem id, index sha256) → (file identity when read, parsed audio, and for a file
        # changed less than SETTLED_NS before it was read, what was read: see _checked_wav)
        self._stems: OrderedDict[
            tuple[str, str], tuple[tuple[int, ...], Wav, StoredStem | None]
        ] = OrderedDict()
        self._stems_lock = threading.Lock()
        self._result_lock = threading.Lock()  # see _set_last_result
        # name → (settings, its two files, their stamps, the template)
        self._templates: dict[str, tuple[Settings, tuple[str, str], tuple, Template]] = {}
        self._canonical: tuple[str, dict[str, Any]] | None = None  # (signature, canonical)
        # (template, generate_missing, inputs) → (state, template, records): see `_resolve`
        self._resolved: dict[tuple, tuple[tuple, Template, list[StemRecord | None]]] = {}
        self.recover_outputs()

    @property
    def output_dir(self) -> Path:
        return Path(self.settings.output_dir)

    # --- assembling ---------------------------------------------------------------------

    def load_template(self, template: str) -> Template:
        """The validated template, re-read only when it or the scripts file changed on disk
        (every assembly asks for it; parsing both files each time was a tenth of the cost)."""
        seen = self._templates.get(template)
        if seen is not None and seen[0] is self.settings:
            files = seen[1]  # (their paths, as strings: building them was half the cost)
        else:
            files = (str(template_path(template, self.settings)), str(self.settings.scripts_file))
        try:
            stamp = tuple((st.st_mtime_ns, st.st_size) for st in map(os.stat, files))
        except OSError:
            stamp = None  # let the loaders below raise their clear errors
        if stamp is not None and seen is not None and seen[1:3] == (files, stamp):
            return seen[3]
        scripts = load_dataset("script", self.settings)
        loaded = load_template(template, self.settings, {i.stem_id.slug for i in scripts.items})
        if stamp is not None:
            self._templates[template] = (self.settings, files, stamp, loaded)
        return loaded

    def assemble(
        self,
        template: str,
        name: str | None = None,
        developer: str | None = None,
        script: str | None = None,
        *,
        slots: Mapping[str, str | None] | None = None,
        generate_missing: bool = True,
        mode: str | None = None,
        output_id: str | None = None,
        batch: SyncBatch | None = None,
        campaign: Mapping[str, Any] | None = None,
        keep_wav: bool = True,
    ) -> AssemblyResult:
        """Assemble one message; raises `AssemblyError`/`TemplateError` on bad input.

        `slots` fills slots of other kinds (`{"intro": "Welcome"}`, see `kinds`).
        `output_id` (a campaign message id, `CAMPAIGN_OUTPUT_ID`) names the output instead
        of a timestamp; an output of that id that already exists is refused, never replaced.
        With a `batch` (a campaign's group commit) the WAV and manifest are written without
        fsync and added to it: the caller syncs the batch before it records the message.
        `campaign` (a campaign message's campaign id, row and recipient id) is kept as the
        manifest's `campaign` block, so the message itself says whom it is for.
        Without `keep_wav` (a manifest-only campaign, `hybrid_audio.render`; needs
        `output_id`) the WAV is never written: the proof is made on the merged bytes, which
        every render must give again, and the manifest, marked `output.store = "manifest"`,
        is the whole message.
        """
        if output_id is not None and not CAMPAIGN_OUTPUT_ID.fullmatch(output_id):
            raise AssemblyError(f"{output_id!r} is not a campaign message id")
        if not keep_wav and output_id is None:
            raise AssemblyError("a message kept as its manifest only needs its campaign id")
        tpl = self.load_template(template)
        inputs = {**(slots or {}), "name": name, "developer": developer, "script": script}
        missing = sorted(slot for slot in tpl.slots if not (inputs.get(slot) or "").strip())
        if missing:
            raise AssemblyError(f"template {tpl.name!r} needs: {', '.join(missing)}")
        parts: list[Part | Silence] = []
        sources: list[dict[str, Any]] = []
        # per part: the stem, or None for silence
        records, stats = self._resolve(tpl, inputs, generate_missing)
        for segment, record, info in zip(tpl.segments, records, stats, strict=True):
            if record is None:
                assert isinstance(segment, SilenceSegment)
                parts.append(Silence(ms=segment.silence_ms))
                sources.append({"kind": "silence", "ms": segment.silence_ms})
                continue
            parts.append(Part(self._checked_wav(record, info), record.stem_id))
            sources.append({"kind": "stem", "stem_id": record.stem_id, "path": record.path})
        join = mode or tpl.join
        try:
            merged = bitmerge_semantic(
                parts,
                gap_ms=tpl.gap_ms,
                trim=tpl.trim.to_trim(self.contract.edge_fade_ms) if tpl.trim else None,
                mode=join,
                crossfade_ms=tpl.crossfade_ms,
                format=self.contract.audio_format,
            )
        except MergeError as error:
            raise AssemblyError(f"template {tpl.name!r}: {error}") from None
        base = output_id or "_".join(
            [utc_stamp(), normalize(tpl.name), _slug(name), _slug(developer)]
        )
        if not keep_wav:
            assert output_id is not None
            on_disk = self._on_disk(parts, records)
            wav_path = self.output_dir / f"{output_id}.wav"  # the name a render serves
            return self._finish(
                tpl, inputs, output_id, wav_path, merged, sources, on_disk, batch, campaign, False
            )
        tmp = write_temp(self.output_dir / f"{base}.wav", merged.wav, sync=batch is None)
        try:  # the temp name stays linked until the manifest exists (see recover_outputs)
            output_id, wav_path = self._link_new(base, tmp, suffixes=output_id is None)
            try:
                on_disk = self._on_disk(parts, records)
                return self._finish(
                    tpl, inputs, output_id, wav_path, merged, sources, on_disk, batch, campaign
                )
            except BaseException:
                discard(wav_path)  # no output without its manifest
                raise
        finally:
            discard(tmp)

    def _on_disk(
        self, parts: list[Part | Silence], records: list[StemRecord | None]
    ) -> list[Part | Silence]:
        """The parts with each stem as its file holds it now: the proof uses those, not the
        copies merged."""
        return [
            Part(self._checked_wav(r), r.stem_id) if r is not None else part
            for part, r in zip(parts, records, strict=True)
        ]

    def _finish(
        self,
        tpl: Template,
        inputs: dict[str, str | None],
        output_id: str,
        wav_path: Path,
        merged: MergeResult,
        sources: list[dict[str, Any]],
        on_disk: list[Part | Silence],
        batch: SyncBatch | None,
        campaign: Mapping[str, Any] | None,
        wav_kept: bool = True,
    ) -> AssemblyResult:
        """Prove the output (the written file, or without `wav_kept` the merged bytes)
        against the stems as read from disk; write the manifest (fsynced, or owed by
        `batch`). A manifest-only message's manifest is created, never replaces a file."""
        written = read_inside(self.output_dir, wav_path.name)[0] if wav_kept else merged.wav
        report = verify(written, merged.manifest, on_disk)
        created = datetime.now(UTC).isoformat(timespec="microseconds")
        document = {
            "id": output_id,
            "template": tpl.name,
            "inputs": inputs,
            **({"campaign": dict(campaign)} if campaign is not None else {}),
            "contract_signature": self.contract.signature(),
            "contract": self._canonical_contract(),
            "created_at": created,
            "output": {
                "path": wav_path.name,
                "sha256": merged.sha256,
                "bytes": len(merged.wav),
                "duration": merged.manifest.duration,
                **({} if wav_kept else {"store": MANIFEST_STORE}),
            },
            "sources": sources,
            "merge": merged.manifest.model_dump(mode="json"),
            "verify": report.model_dump(mode="json"),
        }
        manifest_path = wav_path.with_suffix(".json")
        manifest = manifest_bytes(document)
        self._queue_upload(output_id, merged.sha256, manifest)
        if not wav_kept:
            if not create_new(manifest_path, manifest, sync=batch is None):
                raise AssemblyError(f"output {output_id} already exists; it is never overwritten")
        else:
            atomic_write(manifest_path, manifest, sync=batch is None)
        if batch is not None:
            batch.add(*([wav_path] if wav_kept else []), manifest_path)
        self._release_upload(output_id)
        result = AssemblyResult(
            summary=_summary(document),
            wav_path=str(wav_path),
            manifest_path=str(manifest_path),
            report=report,
        )
        self._set_last_result(result)
        return result

    def _set_last_result(self, result: AssemblyResult) -> None:
        """Set `last_result`, constant to everyone else. Only that parameter is unlocked:
        `param.edit_constant` unlocks (and copies) every parameter of the assembler, and
        cost twice as much, a few percent of a campaign message's CPU. Under a lock: two
        threads (the API's assembly slots) would otherwise lock it again under each other."""
        parameter = self.param["last_result"]
        with self._result_lock:
            parameter.constant = False
            try:
                self.last_result = result
            finally:
                parameter.constant = True

    def _canonical_contract(self) -> dict[str, Any]:
        """`contract.canonical()`, built again only when the contract's signature changes
        (it hashes the canonical form, so equal signatures mean equal forms). Shared between
        manifests: a document is serialized, never changed."""
        signature = self.contract.signature()
        kept = self._canonical
        if kept is None or kept[0] != signature:
            kept = self._canonical = (signature, self.contract.canonical())
        return kept[1]

    def _queue_upload(self, output_id: str, wav_sha256: str, manifest: bytes) -> None:
        """Owe the bucket the output's WAV and manifest (one transaction) before the manifest
        commits the output, so no crash leaves a committed output unqueued; a state database
        that refuses the row fails the assembly. The rows are held until `_release_upload`."""
        if self.upload_queue is not None:
            self.upload_queue.add_output(output_id, wav_sha256, manifest)

    def _release_upload(self, output_id: str) -> None:
        """The output is committed: its queued rows may go now. Should the state database
        refuse that, they go when their hold ends (`UploadQueue.add_output`); the output
        stays committed either way, so this is logged, not raised."""
        if self.upload_queue is None:
            return
        try:
            self.upload_queue.release(output_id)
        except Exception as error:
            log.warning("output %s: upload starts when its hold ends (%s)", output_id, error)

    def _resolve(
        self, tpl: Template, inputs: dict[str, str | None], generate_missing: bool
    ) -> tuple[list[StemRecord | None], list[os.stat_result | None]]:
        """Each segment's stem (None for a silence), as `_stem_for` finds it, and the
        `lstat` of each kept stem's file (None where there is none: `_checked_wav` takes it).

        Kept per (template, inputs) while `_resolution_state()` is unchanged — the stems
        and pronunciations revisions (any process's write moves them) and the contracts —
        and every kept stem's file is still a regular file of its size (`file_ok`): five
        index reads per message were a tenth of its CPU. A message that needed a mapping
        kind's dataset (read from its file each time) or made a stem is not kept.
        """
        state = self._resolution_state()
        key = (tpl.name, generate_missing, tuple(sorted(inputs.items())))
        kept = self._resolved.get(key)
        if state is not None and kept is not None and kept[0] == state and kept[1] is tpl:
            stats = [None if r is None else self.cache.file_stat(r) for r in kept[2]]
            if all(r is None or info is not None for r, info in zip(kept[2], stats, strict=True)):
                return kept[2], stats
        records: list[StemRecord | None] = [
            None
            if isinstance(segment, SilenceSegment)
            else self._stem_for(segment, inputs, generate_missing, tpl.name, index)
            for index, segment in enumerate(tpl.segments)
        ]
        fresh = all(r is None or r.cached is not False for r in records)
        if state is not None and fresh and not _reads_dataset(tpl):
            if len(self._resolved) >= _RESOLVED_MEMORY:
                self._resolved.clear()
            self._resolved[key] = (state, tpl, records)
        return records, [None] * len(records)

    def _resolution_state(self) -> tuple | None:
        """What `_resolve` results depend on in the index, or None: keep nothing."""
        signature = self.cache.contract.signature()
        if self.generator is None:
            return (*self.cache.counters("stems"), signature)
        if self.generator.cache is not self.cache:
            return None
        hit = self.generator.hit_state()
        return None if hit is None else (*hit, signature)

    def _stem_for(
        self,
        segment: StemSegment | SlotSegment,
        inputs: dict[str, str | None],
        generate_missing: bool,
        template: str,
        index: int,
    ) -> StemRecord:
        generate_missing = generate_missing and self.generator is not None
        if isinstance(segment, StemSegment):
            stem_id = StemId.parse(segment.stem)
            record = self.cache.lookup(stem_id)
            mapping = kinds.get(stem_id.kind).form == "mapping"
            if record is None and mapping and generate_missing:
                return self._keyed(stem_id.kind, str(stem_id), template)
            if record is None:
                raise AssemblyError(
                    f"template {template!r} segments[{index}]: stem {stem_id} is not in the "
                    "cache (or not compatible with the active contract)"
                    + ("" if generate_missing else "; allow generate_missing to make it")
                )
            return record
        value = (inputs.get(segment.slot) or "").strip()
        if kinds.get(segment.slot).form == "mapping":
            if not generate_missing:
                return self._cached(StemId.for_text(segment.slot, value), template, index)
            return self._keyed(segment.slot, value, template)
        if not generate_missing:
            return self._cached(StemId.for_text(segment.slot, value), template, index)
        return self.generator.generate(segment.slot, value)

    def _keyed(self, kind: str, key: str, template: str) -> StemRecord:
        """The stem of `key` in a mapping kind (script); an unknown key is this request's
        error, not a crash."""
        try:
            return self.generator.generate_keyed(kind, key)
        except KeyError as error:
            raise AssemblyError(f"template {template!r}: {error.args[0]}") from None

    def _cached(self, stem_id: StemId, template: str, index: int) -> StemRecord:
        record = self.cache.lookup(stem_id)
        if record is None:
            raise AssemblyError(
                f"template {template!r} segments[{index}]: {stem_id} is not in the cache "
                + (
                    "and generate_missing is off"
                    if self.generator is not None
                    else "and this assembler has no generator to make it"
                )
            )
        return record

    def _checked_wav(self, record: StemRecord, info: os.stat_result | None = None) -> Wav:
        """The stem's audio as its file holds it now, proven against the index row.

        The parsed copy kept in memory is used only while the file's identity (`info`, its
        `lstat` just taken, or taken here) is the one it was read with; otherwise the file
        is read again (through `StemCache.read`, which refuses links and raises
        `CorruptStemError` when the samples differ).
        """
        key = (record.stem_id, record.sha256)
        with self._stems_lock:
            kept = self._stems.get(key)
        unchanged = False
        if kept is not None and kept[2] is None:  # (a racy one is always read: see below)
            try:  # one lstat of a joined string: a Path per segment was most of the cost
                if info is None:
                    info = os.lstat(os.path.join(self.settings.stems_dir, record.path))
                unchanged = _identity(info) == kept[0]
            except FileNotFoundError:
                pass
        if unchanged:
            assert kept is not None
            wav = kept[1]
        else:
            started = time.time_ns()
            stored = self.cache.read(record, known=None if kept is None else kept[2])
            wav = stored.wav
            settled = max(stored.stat.st_mtime_ns, stored.stat.st_ctime_ns) + SETTLED_NS
            with self._stems_lock:
                self._stems.pop(key, None)
                # A file changed less than SETTLED_NS ago may change again unseen by its
                # identity: it is read every time, and its bytes compared with these
                # (a campaign's stems are made just before its rows, which parsed and
                # hashed every stem twice per row for those first seconds).
                racy = None if settled < started else stored
                self._stems[key] = (_identity(stored.stat), wav, racy)
                if len(self._stems) > _STEM_MEMORY:
                    self._stems.popitem(last=False)
        if wav.format != self.contract.audio_format:
            raise AssemblyError(
                f"{record.stem_id} is {wav.format.describe()}, the contract wants "
                f"{self.contract.audio_format.describe()}"
            )
        return wav

    def _link_new(self, base: str, tmp: Path, *, suffixes: bool = True) -> tuple[str, Path]:
        """Link the written temp file under a fresh id; never overwrite another output.

        Without `suffixes` (a deterministic id) the id is `base` or nothing.
        """
        with storage_errors(self.output_dir):
            for attempt in range(1, 1000 if suffixes else 2):
                output_id = base if attempt == 1 else f"{base}_{attempt}"
                path = self.output_dir / f"{output_id}.wav"
                try:
                    os.link(tmp, path)  # atomic, and fails if the name is taken
                except FileExistsError:
                    continue
                return output_id, path
        if not suffixes:
            raise AssemblyError(f"output {base} already exists; it is never overwritten")
        raise AssemblyError(f"could not find a free output name for {base}")

    def recover_outputs(self) -> int:
        """Remove what a crash left in the output folder; returns how many files.

        Temp files whose writer is gone are deleted; so is an output WAV without its
        manifest once no temp name links to it any more (while an assembly runs, its temp
        file keeps a second link, `st_nlink` 2, so a live writer's output is left alone).
        Removed rather than completed: see the module docstring. A folder that cannot be
        written is left as it is (logged).
        """
        folder = self.output_dir
        removed = 0
        try:
            with storage_errors(folder):
                # One listing, then a system call only for a temp file or for a WAV listed
                # without its manifest: a stat of every WAV made each start take seconds at
                # 10⁵–10⁶ outputs (and every Dask worker builds an Assembler).
                names = os.listdir(folder)
                manifests = {name[:-5] for name in names if name.endswith(".json")}
                # Temp files first: a dead writer's temp name still links its WAV (two
                # links), which only then reads as abandoned.
                for path in leftovers(folder, names=names):
                    path.unlink(missing_ok=True)
                    removed += 1
                for name in names:
                    if (
                        name.endswith(".wav")
                        and name[:-4] not in manifests
                        and _OUTPUT_ID.fullmatch(name[:-4])
                        and _abandoned(folder / name)
                    ):
                        (folder / name).unlink(missing_ok=True)
                        removed += 1
        except (FileNotFoundError, NotADirectoryError):
            return removed  # no output folder (yet)
        except StorageError as error:
            log.warning("output folder not fully recovered: %s", error)
        return removed

    # --- reading back -------------------------------------------------------------------

    def list_outputs(self, offset: int = 0, limit: int | None = None) -> list[OutputSummary]:
        """Assembled messages with a manifest, newest first: `limit` (default all) of
        `output_ids()` from `offset`. Only the page's manifests are read."""
        summaries = []
        page = self.output_ids()[offset : None if limit is None else offset + limit]
        for output_id in page:
            try:
                document = read_inside(self.output_dir, f"{output_id}.json")[0]
                summaries.append(_summary(json.loads(document)))
            except (ValueError, KeyError, OSError):
                continue  # a foreign, broken or linked file is not an output
        return summaries

    def output_ids(self) -> list[str]:
        """Ids of the manifests in the output folder, newest first (ids start with a UTC
        timestamp), then campaign messages (by campaign, then row); a page of
        `list_outputs` may hold fewer if some do not read as outputs."""
        try:  # (names, not Paths: this lists every output, 10⁶ of them in a big campaign)
            ids = [name[:-5] for name in os.listdir(self.output_dir) if name.endswith(".json")]
        except (FileNotFoundError, NotADirectoryError):
            return []
        stamped = sorted((i for i in ids if _STAMPED_ID.fullmatch(i)), reverse=True)
        return stamped + sorted(i for i in ids if CAMPAIGN_OUTPUT_ID.fullmatch(i))

    def load_output(self, output_id: str) -> dict[str, Any]:
        """The manifest document of one output (a symbolic link is refused, not followed)."""
        return json.loads(self.read_manifest(output_id))

    def read_manifest(self, output_id: str) -> bytes:
        """The manifest file's bytes, unparsed (a symbolic link is refused, not followed)."""
        try:
            data, _ = read_inside(self.output_dir, self._manifest_path(output_id).name)
        except FileNotFoundError:
            raise KeyError(f"no output {output_id!r}") from None
        return data

    def read_output(self, output_id: str) -> tuple[bytes, os.stat_result]:
        """The output's WAV bytes, proven to be what its manifest recorded.

        Read through one descriptor that refuses links (`files.read_inside`); bytes that
        differ from the manifest's sha256 raise `CorruptOutputError`. A message kept as a
        manifest only is rendered from its stems (`hybrid_audio.render`).
        """
        document = self.load_output(output_id)
        if _manifest_only(document):
            from hybrid_audio.render import render_output

            return render_output(self, document)
        try:
            data, info = read_inside(self.output_dir, f"{output_id}.wav")
        except FileNotFoundError:
            raise KeyError(f"output {output_id!r} has no audio file") from None
        if hashlib.sha256(data).hexdigest() != document["output"]["sha256"]:
            raise CorruptOutputError(
                f"output {output_id}: the WAV file differs from the sha256 its manifest "
                "recorded (it was changed on disk); assemble the message again"
            )
        return data, info

    def verify_output(self, output_id: str) -> VerifyReport:
        """Re-verify an output from disk against the stems it was made from.

        Files are read through `files.read_inside` (a symbolic link is refused); a missing
        stem file is reported in the proof, not raised.
        """
        document = self.load_output(output_id)
        if _manifest_only(document):
            from hybrid_audio.render import verify_manifest_only

            return verify_manifest_only(self, document)
        stems = Path(self.settings.stems_dir)
        parts: list[Part | Silence] = [
            Part(_bytes_or_path(stems, s["path"]), s["stem_id"])
            if s["kind"] == "stem"
            else Silence(ms=s["ms"])
            for s in document["sources"]
        ]
        written = _bytes_or_path(self.output_dir, f"{output_id}.wav")
        return verify(written, Manifest(**document["merge"]), parts)

    @contextmanager
    def manifest_lock(self, output_id: str) -> Iterator[None]:
        """Hold the lock of one output's manifest, in this process or another (a `flock`
        in the state folder's locks/): whoever rewrites a manifest takes it, so no two
        rewrites lose each other's change."""
        self._manifest_path(output_id)  # an id, never a path
        with stem_lock(self.settings.state_dir, f"output-{output_id}"):
            yield

    def record_in_manifest(self, output_id: str, section: str, key: str, value: Any) -> None:
        """Set `section[key]` of a manifest and rewrite it atomically (a delivery record:
        later additions go to the manifest, never into the WAV). Hold `manifest_lock`."""
        document = self.load_output(output_id)
        if not isinstance(document.get(section), dict):
            document[section] = {}  # absent, or a section that does not read: made anew
        document[section][key] = value
        atomic_write(self._manifest_path(output_id), manifest_bytes(document))

    def _manifest_path(self, output_id: str) -> Path:
        if not isinstance(output_id, str) or not _OUTPUT_ID.fullmatch(output_id):
            raise AssemblyError(f"{output_id!r} is not an output id")
        return self.output_dir / f"{output_id}.json"


def _reads_dataset(tpl: Template) -> bool:
    """Does the template fill a slot of a mapping kind (its phrase read from a dataset
    file, which no revision counter follows)?"""
    return any(
        isinstance(s, SlotSegment) and kinds.get(s.slot).form == "mapping" for s in tpl.segments
    )


def _abandoned(wav: Path) -> bool:
    """`abandoned`, for a WAV that may be removed meanwhile (False then: nothing to do)."""
    try:
        return abandoned(wav)
    except FileNotFoundError:
        return False


def abandoned(wav: Path) -> bool:
    """Is this output WAV what a writer that died before its manifest left?

    The link count is read before the manifest is looked for: a writer writes the manifest
    and only then drops its temp link, so a WAV seen with one link and, after that, no
    manifest has no live writer. (The other order races a live writer that finishes in
    between: manifest not there yet, then its temp link gone — and its output deleted; two
    Dask workers over one folder met exactly that.)
    """
    return writer_finished(wav) and not wav.with_suffix(".json").exists()


def writer_finished(wav: Path) -> bool:
    """Is this output WAV (found without its manifest) a regular file no temp name links any
    more? Its assembly then died before the manifest; while one runs, its temp file keeps a
    second link (`st_nlink` 2), so a live writer's output is never taken for a leftover."""
    info = os.lstat(wav)
    return stat.S_ISREG(info.st_mode) and info.st_nlink == 1


def _manifest_only(document: dict[str, Any]) -> bool:
    """Is this output kept as its manifest only (`hybrid_audio.render`)?"""
    output = document.get("output")
    return isinstance(output, dict) and output.get("store") == MANIFEST_STORE


def _identity(info: os.stat_result) -> tuple[int, ...]:
    """What changes when a file is replaced or rewritten, even at the same size."""
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def _bytes_or_path(folder: Path, relative: str) -> bytes | Path:
    """The file's bytes (links refused); its path when missing, for `verify` to report."""
    try:
        return read_inside(folder, relative)[0]
    except FileNotFoundError:
        return folder / relative


def utc_stamp() -> str:
    """`YYYYmmddTHHMMSSffffffZ`: output ids sort by time."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")


def _slug(text: str | None) -> str:
    try:
        return normalize(text) if text else "none"
    except ValueError:
        return "none"


def _summary(document: dict[str, Any]) -> OutputSummary:
    inputs = document["inputs"]
    return OutputSummary(
        id=document["id"],
        template=document["template"],
        name=inputs.get("name"),
        developer=inputs.get("developer"),
        script=inputs.get("script"),
        duration=document["output"]["duration"],
        sha256=document["output"]["sha256"],
        created_at=document["created_at"],
        verified=document["verify"]["ok"],
        path=document["output"]["path"],
    )
