"""Which stems a pronunciation fix touches, and which assembled messages it leaves stale.

A message is a proven join of the stems as they were when it was assembled (its manifest
records each stem's sha256). When a stem changes afterwards — a pronunciation entry makes it
differently, it is made again, or it leaves the cache — the message still plays and still
verifies against its own record, but it no longer says what a new assembly would say: it
is *stale*, and `stale_stems_of` says which stem and why. A fix (`apply_fix`) sets the entry,
makes every stem that uses it again through the generator (so the stem file and its row are
replaced atomically by `StemCache.store`), and lists the messages that became stale;
`remove_fix` undoes it — the engines are deterministic, so the old bytes come back.

Only stems of the active contract are considered: stems of another contract are not
usable now, and the next generation makes them with the dictionary applied.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from hybrid_audio import kinds
from hybrid_audio.cache import StemRecord
from hybrid_audio.engines import EngineConfigError, EngineError, EngineQuotaError
from hybrid_audio.pronunciation import PronunciationEntry, whole_words
from hybrid_audio.stems import spoken_text
from hybrid_audio.wav import WavError

if TYPE_CHECKING:
    from hybrid_audio.jobs import Job
    from hybrid_audio.workspace import Workspace

GONE = "no longer cached"
REMADE = "made again since: other audio"
ENTRY_CHANGED = "its pronunciation entry changed; regenerate it"


class StaleStem(BaseModel):
    """A stem of a message that a new assembly would not use as it was."""

    stem_id: str
    text: str
    reason: str


class StaleOutput(BaseModel):
    """An assembled message and its stems that changed since it was made."""

    output_id: str
    stems: list[StaleStem]


class FixReport(BaseModel):
    """What a pronunciation fix (or its removal) did."""

    entry: PronunciationEntry | None  # the entry set, or the one removed
    removed: bool
    regenerated: list[StemRecord]  # the stems made again (or by another process meanwhile)
    failed: list[str]  # "stem id: error"; those stems keep what was stored
    stale_outputs: list[StaleOutput]  # messages using the stems touched


class _Rows:
    """The active contract's cached stems and what the dictionary says of each, read at
    most once per call (a few thousand manifests share a few hundred stems)."""

    def __init__(self, workspace: Workspace, rows: Mapping[str, StemRecord] | None = None):
        self._workspace = workspace
        self._rows = dict(rows) if rows is not None else {}
        self._complete = rows is not None
        self._hashes: dict[str, str] = {}

    def get(self, stem_id: str) -> StemRecord | None:
        if not self._complete and stem_id not in self._rows:
            self._rows[stem_id] = self._workspace.cache.get(stem_id)
        row = self._rows.get(stem_id)
        return row if row is not None and row.compatible else None

    def outdated(self, row: StemRecord) -> bool:
        """Would the dictionary make this stem differently now?"""
        if row.text not in self._hashes:
            self._hashes[row.text] = self._workspace.generator.pronounce(row.text).entry_hash
        return self._hashes[row.text] != row.pronunciation


def _stale(document: dict[str, Any], rows: _Rows) -> list[StaleStem]:
    stale: dict[str, StaleStem] = {}
    for segment in document["merge"]["segments"]:
        stem_id = segment["id"]
        if segment["kind"] != "audio" or stem_id in stale:
            continue
        row = rows.get(stem_id)
        if row is None:
            reason = GONE
        elif row.sha256 != segment["source_sha256"]:
            reason = REMADE
        elif rows.outdated(row):
            reason = ENTRY_CHANGED
        else:
            continue
        text = row.text if row is not None else ""  # a manifest does not keep the text
        stale[stem_id] = StaleStem(stem_id=stem_id, text=text, reason=reason)
    return list(stale.values())


def stale_stems_of(workspace: Workspace, document: dict[str, Any]) -> list[StaleStem]:
    """The stems of one output manifest (`Assembler.load_output`) that changed since it was
    assembled, each once, in the order they are heard; empty when the message is current."""
    return _stale(document, _Rows(workspace))


def stale_outputs(
    workspace: Workspace,
    offset: int = 0,
    limit: int | None = 100,
    using: Collection[str] | None = None,
) -> list[StaleOutput]:
    """The stale messages, newest first: `limit` (None: all) of them from `offset`.

    Every manifest is read once and the cache index once; a manifest that does not read
    as an output (foreign, broken, linked) is skipped, as `list_outputs` does. With
    `using` (stem ids: a fix's stems) only the messages stale in one of those stems are
    listed, with only those stems, and a manifest that does not name one of them is not
    parsed (a fix touches a few stems; parsing was most of the cost of 10⁵ manifests).
    """
    rows = _Rows(workspace, {row.stem_id: row for row in workspace.cache.list()})
    # each id as its manifest writes it, quoted: "stem.name.ann" is not in "stem.name.anna"
    named = None if using is None else [json.dumps(i, ensure_ascii=False).encode() for i in using]
    found: list[StaleOutput] = []
    end = None if limit is None else offset + limit
    for output_id in workspace.assembler.output_ids():
        try:
            data = workspace.assembler.read_manifest(output_id)
            if named is not None and not any(name in data for name in named):
                continue
            stems = _stale(json.loads(data), rows)
        except (ValueError, KeyError, OSError, TypeError):
            continue
        if using is not None:
            stems = [stem for stem in stems if stem.stem_id in using]
        if stems:
            found.append(StaleOutput(output_id=output_id, stems=stems))
            if end is not None and len(found) >= end:
                break
    return found[offset:end]


def stems_using(workspace: Workspace, text: str) -> list[StemRecord]:
    """Cached stems (active contract) whose spoken text holds `text` as a whole word or
    phrase, any case — the rule the dictionary applies entries with — plus those whose
    recorded pronunciation the dictionary would no longer give them. By stem id."""
    matcher = whole_words([spoken_text(text)])
    rows = _Rows(workspace)
    return [
        row
        for row in workspace.cache.list(compatible=True)
        if (matcher is not None and matcher.search(row.text)) or rows.outdated(row)
    ]


def apply_fix(
    workspace: Workspace,
    text: str,
    respelling: str = "",
    phonemes: dict[str, str] | None = None,
    note: str = "",
    regenerate: bool = True,
    job: Job | None = None,
) -> FixReport:
    """Set the entry for `text` (ValueError for a bad one) and, with `regenerate`, make
    every stem using it again; report the messages that use those stems and are stale.
    `job` (when run as one) shows progress: one step per stem made again."""
    entry = workspace.pronunciations.set(text, respelling, phonemes, note)
    return _report(workspace, entry, removed=False, regenerate=regenerate, job=job)


def remove_fix(
    workspace: Workspace, text: str, regenerate: bool = True, job: Job | None = None
) -> FixReport:
    """Remove the entry for `text` and, with `regenerate`, make its stems again as written
    (the bytes they had before the entry). `removed` is False when there was no entry."""
    entry = workspace.pronunciations.get(text)
    if entry is None or not workspace.pronunciations.remove(text):
        return FixReport(entry=None, removed=False, regenerated=[], failed=[], stale_outputs=[])
    return _report(workspace, entry, removed=True, regenerate=regenerate, job=job)


def _report(
    workspace: Workspace,
    entry: PronunciationEntry,
    *,
    removed: bool,
    regenerate: bool,
    job: Job | None,
) -> FixReport:
    touched = stems_using(workspace, entry.text)
    regenerated, failed = _regenerate(workspace, touched, job) if regenerate else ([], [])
    ids = {row.stem_id for row in touched}
    return FixReport(
        entry=entry,
        removed=removed,
        regenerated=regenerated,
        failed=failed,
        stale_outputs=stale_outputs(workspace, limit=None, using=ids),
    )


def _regenerate(
    workspace: Workspace, rows: list[StemRecord], job: Job | None = None
) -> tuple[list[StemRecord], list[str]]:
    """Make each stem again as `Generator.generate` would now. A stem that fails (engine
    error, its phrase gone from the dataset) is reported and keeps what was stored; the
    others go on — except after a configuration or quota error, which every further stem
    would repeat: those are reported as not tried. `job` advances one step per stem."""
    generator = workspace.generator
    made: list[StemRecord] = []
    failed: list[str] = []
    fatal: EngineError | None = None
    if job is not None:
        job.param.update(total=len(rows))
    for row in rows:
        error: str | None = None
        if fatal is not None:
            error = f"{row.stem_id}: not tried after {fatal}"
        else:
            try:
                if kinds.get(row.kind).form == "mapping":  # the id comes from the key
                    record = generator.generate_keyed(row.kind, row.stem_id)
                else:
                    record = generator.generate(row.kind, row.text)
                if record.updated_at != row.updated_at:  # else not this engine's entry
                    made.append(record)
            except (EngineConfigError, EngineQuotaError) as exc:
                fatal = exc
                error = f"{row.stem_id}: {exc}"
            except (EngineError, WavError, KeyError, ValueError) as exc:
                error = f"{row.stem_id}: {exc}"
        if error is not None:
            failed.append(error)
        if job is not None:
            job.advance(error=error, message=row.stem_id)
    return made, failed
