"""Assembler: template + inputs → stems → bit-exact merge → output file, manifest, proof.

`assemble()` loads a template, fills its slots (generating missing stems through the
`Generator` when allowed), checks every stem against the active contract and against the
sha256 its index row recorded, merges with `bitmerge_semantic`, writes
`output/<UTC YYYYmmddTHHMMSSffffffZ>_<template>_<name>_<developer>.wav` and a JSON manifest
beside it, then re-reads the written file and verifies it byte by byte against the stems;
the verdict goes into the manifest. Files are written to a temporary name, fsynced and
hard-linked into place, which fails rather than overwrites: two assemblies in the same
microsecond get `_2`, `_3`… suffixes instead of clobbering each other.
"""

from __future__ import annotations

import json
import os
import re
from collections import OrderedDict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import param
from pydantic import BaseModel

from hybrid_audio.bitmerge import (
    Manifest,
    MergeError,
    Part,
    Silence,
    VerifyReport,
    bitmerge_semantic,
    verify,
)
from hybrid_audio.cache import StemRecord
from hybrid_audio.datasets import load_dataset
from hybrid_audio.files import atomic_write, write_temp
from hybrid_audio.generation import Generator
from hybrid_audio.stems import StemId, normalize
from hybrid_audio.templates import (
    SilenceSegment,
    SlotSegment,
    StemSegment,
    Template,
    load_template,
    template_path,
)
from hybrid_audio.wav import Wav, read_wav

_OUTPUT_ID = re.compile(r"\d{8}T\d{12}Z_[a-z0-9_]+")
#: Stems kept parsed in memory (with their sha256): a campaign reuses the same few stems.
_STEM_MEMORY = 512


class AssemblyError(ValueError):
    """The message cannot be assembled as asked (missing input, unknown stem…)."""


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

    generator = param.ClassSelector(class_=Generator, doc="Makes (or finds) the stems.")
    last_result = param.ClassSelector(
        class_=AssemblyResult, allow_None=True, constant=True, doc="The latest assembly."
    )

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._stems: OrderedDict[tuple[str, str], Wav] = OrderedDict()
        self._templates: dict[str, tuple[tuple, Template]] = {}  # name → (file stamps, it)

    @property
    def settings(self):
        return self.generator.settings

    @property
    def output_dir(self) -> Path:
        return Path(self.settings.output_dir)

    # --- assembling ---------------------------------------------------------------------

    def load_template(self, template: str) -> Template:
        """The validated template, re-read only when it or the scripts file changed on disk
        (every assembly asks for it; parsing both files each time was a tenth of the cost)."""
        files = (template_path(template, self.settings), Path(self.settings.scripts_file))
        try:
            stamp = tuple((st.st_mtime_ns, st.st_size) for st in map(os.stat, files))
        except OSError:
            stamp = None  # let the loaders below raise their clear errors
        seen = self._templates.get(template)
        if stamp is not None and seen is not None and seen[0] == stamp:
            return seen[1]
        scripts = load_dataset("script", self.settings)
        loaded = load_template(template, self.settings, {i.stem_id.slug for i in scripts.items})
        if stamp is not None:
            self._templates[template] = (stamp, loaded)
        return loaded

    def assemble(
        self,
        template: str,
        name: str | None = None,
        developer: str | None = None,
        script: str | None = None,
        *,
        generate_missing: bool = True,
        mode: str | None = None,
    ) -> AssemblyResult:
        """Assemble one message; raises `AssemblyError`/`TemplateError` on bad input."""
        tpl = self.load_template(template)
        inputs = {"name": name, "developer": developer, "script": script}
        missing = sorted(slot for slot in tpl.slots if not (inputs[slot] or "").strip())
        if missing:
            raise AssemblyError(f"template {tpl.name!r} needs: {', '.join(missing)}")
        parts, sources = [], []
        for index, segment in enumerate(tpl.segments):
            if isinstance(segment, SilenceSegment):
                parts.append(Silence(ms=segment.silence_ms))
                sources.append({"kind": "silence", "ms": segment.silence_ms})
                continue
            record = self._stem_for(segment, inputs, generate_missing, tpl.name, index)
            wav = self._checked_wav(record)
            parts.append(Part(wav, record.stem_id))
            sources.append({"kind": "stem", "stem_id": record.stem_id, "path": record.path})
        join = mode or tpl.join
        try:
            merged = bitmerge_semantic(
                parts,
                gap_ms=tpl.gap_ms,
                trim=tpl.trim.to_trim() if tpl.trim else None,
                mode=join,
                crossfade_ms=tpl.crossfade_ms,
                format=self.generator.contract.audio_format,
            )
        except MergeError as error:
            raise AssemblyError(f"template {tpl.name!r}: {error}") from None
        output_id, wav_path = self._write_new(tpl.name, inputs, merged.wav)
        report = verify(wav_path, merged.manifest, parts)  # from disk, as a reader would
        created = datetime.now(UTC).isoformat(timespec="microseconds")
        document = {
            "id": output_id,
            "template": tpl.name,
            "inputs": inputs,
            "contract_signature": self.generator.contract.signature(),
            "contract": self.generator.contract.canonical(),
            "created_at": created,
            "output": {
                "path": wav_path.name,
                "sha256": merged.sha256,
                "bytes": len(merged.wav),
                "duration": merged.manifest.duration,
            },
            "sources": sources,
            "merge": merged.manifest.model_dump(mode="json"),
            "verify": report.model_dump(mode="json"),
        }
        manifest_path = wav_path.with_suffix(".json")
        # Compact JSON: an indented dump takes Python's slow encoder and doubles the cost
        # of an assembly; `python -m json.tool` makes it readable when needed.
        atomic_write(manifest_path, json.dumps(document, ensure_ascii=False).encode())
        result = AssemblyResult(
            summary=_summary(document),
            wav_path=str(wav_path),
            manifest_path=str(manifest_path),
            report=report,
        )
        with param.edit_constant(self):
            self.last_result = result
        return result

    def _stem_for(
        self,
        segment: StemSegment | SlotSegment,
        inputs: dict[str, str | None],
        generate_missing: bool,
        template: str,
        index: int,
    ) -> StemRecord:
        generator = self.generator
        if isinstance(segment, StemSegment):
            stem_id = StemId.parse(segment.stem)
            record = generator.cache.lookup(stem_id)
            if record is None and stem_id.kind == "script" and generate_missing:
                return self._script(str(stem_id), template)
            if record is None:
                raise AssemblyError(
                    f"template {template!r} segments[{index}]: stem {stem_id} is not in the "
                    "cache (or not compatible with the active contract)"
                    + ("" if generate_missing else "; allow generate_missing to make it")
                )
            return record
        value = (inputs[segment.slot] or "").strip()
        if segment.slot == "script":
            if not generate_missing:
                return self._cached(StemId.for_text("script", value), template, index)
            return self._script(value, template)
        if not generate_missing:
            return self._cached(StemId.for_text(segment.slot, value), template, index)
        return generator.generate(segment.slot, value)

    def _script(self, key: str, template: str) -> StemRecord:
        """The script stem of `key`; an unknown key is this request's error, not a crash."""
        try:
            return self.generator.generate_script(key)
        except KeyError as error:
            raise AssemblyError(f"template {template!r}: {error.args[0]}") from None

    def _cached(self, stem_id: StemId, template: str, index: int) -> StemRecord:
        record = self.generator.cache.lookup(stem_id)
        if record is None:
            raise AssemblyError(
                f"template {template!r} segments[{index}]: {stem_id} is not in the cache "
                "and generate_missing is off"
            )
        return record

    def _checked_wav(self, record: StemRecord) -> Wav:
        """The stem's audio, parsed strictly, in the contract's format, unchanged on disk."""
        key = (record.stem_id, record.sha256)
        wav = self._stems.get(key)
        if wav is None:
            wav = read_wav(Path(self.settings.stems_dir) / record.path)
            if wav.sha256 != record.sha256:
                raise AssemblyError(
                    f"{record.stem_id}: the file's samples no longer match the index "
                    "(sha256 differs); run cache verify and regenerate it"
                )
            self._stems[key] = wav
            if len(self._stems) > _STEM_MEMORY:
                self._stems.popitem(last=False)
        self._stems.move_to_end(key)
        if wav.format != self.generator.contract.audio_format:
            raise AssemblyError(
                f"{record.stem_id} is {wav.format.describe()}, the contract wants "
                f"{self.generator.contract.audio_format.describe()}"
            )
        return wav

    def _write_new(
        self, template: str, inputs: dict[str, str | None], data: bytes
    ) -> tuple[str, Path]:
        """Write the output under a fresh id; never overwrite another output."""
        stamp = utc_stamp()
        slugs = [_slug(inputs["name"]), _slug(inputs["developer"])]
        base = "_".join([stamp, normalize(template), *slugs])
        self.output_dir.mkdir(parents=True, exist_ok=True)
        tmp = write_temp(self.output_dir / f"{base}.wav", data)
        try:
            for attempt in range(1, 1000):
                output_id = base if attempt == 1 else f"{base}_{attempt}"
                path = self.output_dir / f"{output_id}.wav"
                try:
                    os.link(tmp, path)  # atomic, and fails if the name is taken
                except FileExistsError:
                    continue
                return output_id, path
            raise AssemblyError(f"could not find a free output name for {base}")
        finally:
            tmp.unlink(missing_ok=True)

    # --- reading back -------------------------------------------------------------------

    def list_outputs(self) -> list[OutputSummary]:
        """Every assembled message with a manifest, newest first."""
        summaries = []
        for path in sorted(self.output_dir.glob("*.json"), reverse=True):
            if not _OUTPUT_ID.fullmatch(path.stem):
                continue
            try:
                summaries.append(_summary(json.loads(path.read_bytes())))
            except (ValueError, KeyError):
                continue  # a foreign or broken file is not an output
        return summaries

    def load_output(self, output_id: str) -> dict[str, Any]:
        """The manifest document of one output."""
        return json.loads(self._manifest_path(output_id).read_bytes())

    def output_path(self, output_id: str) -> Path:
        return self._manifest_path(output_id).with_suffix(".wav")

    def verify_output(self, output_id: str) -> VerifyReport:
        """Re-verify an output from disk against the stems it was made from."""
        document = self.load_output(output_id)
        stems = Path(self.settings.stems_dir)
        parts: list[Part | Silence] = [
            Part(stems / s["path"], s["stem_id"]) if s["kind"] == "stem" else Silence(ms=s["ms"])
            for s in document["sources"]
        ]
        return verify(self.output_path(output_id), Manifest(**document["merge"]), parts)

    def _manifest_path(self, output_id: str) -> Path:
        if not isinstance(output_id, str) or not _OUTPUT_ID.fullmatch(output_id):
            raise AssemblyError(f"{output_id!r} is not an output id")
        path = self.output_dir / f"{output_id}.json"
        if not path.exists():
            raise KeyError(f"no output {output_id!r}")
        return path


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
