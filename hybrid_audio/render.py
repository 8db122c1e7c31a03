"""Messages kept as manifests: the WAV is made again from the stems its manifest names.

A message is fully determined by its manifest: the stems (by id, file and the sha256 of
their samples), the silences, the merge's parameters (gap, trim, join, crossfade, format)
and the output's sha256. A campaign created with `store="manifest"` keeps only that JSON
(~8 KB instead of ~350 KB of audio); its manifest's `output.store` is `"manifest"` and its
`<id>.wav` is never written (`Assembler.assemble(keep_wav=False)` proves the merged bytes
and creates the manifest alone). `Assembler.read_output` renders such a message on request, so the
audio route (with Range), deliveries and the campaign zip all get the same proven bytes.

Nothing but the recorded audio is ever served: each stem file must still hold the samples
whose sha256 the manifest recorded (a stem made again since, or evicted, fails the render
with `StemChangedError`, a 409 naming it), the merge is run again with the recorded
parameters, its bytes must hash to the recorded output sha256, and the proof (`verify`)
is run against the stems as read, as it is when a message is assembled.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hybrid_audio.assembly import MANIFEST_STORE, CorruptOutputError
from hybrid_audio.bitmerge import (
    Manifest,
    MergeError,
    Part,
    Silence,
    Trim,
    VerifyReport,
    bitmerge_semantic,
    verify,
)
from hybrid_audio.files import discard, read_inside
from hybrid_audio.wav import WavError, read_wav

if TYPE_CHECKING:
    from hybrid_audio.assembly import Assembler

#: Campaign store modes: keep each message's WAV, or only its manifest.
STORE_MODES = ("wav", MANIFEST_STORE)


class StemChangedError(CorruptOutputError):
    """A stem a manifest-only message names no longer holds the samples it recorded."""


def is_manifest_only(document: dict[str, Any]) -> bool:
    """Does this manifest stand for its message, without a WAV kept?"""
    output = document.get("output")
    return isinstance(output, dict) and output.get("store") == MANIFEST_STORE


def keep_manifest_only(assembler: Assembler, output_id: str) -> None:
    """Turn a made message into a manifest-only one: mark its manifest, then remove its
    WAV. Marked first, so a crash in between leaves a marked manifest whose stray WAV is
    removed when this runs again (a campaign's resume adopts the message and calls it)."""
    with assembler.manifest_lock(output_id):
        if not is_manifest_only(assembler.load_output(output_id)):
            assembler.record_in_manifest(output_id, "output", "store", MANIFEST_STORE)
        discard(assembler.output_dir / f"{output_id}.wav")


def render_output(assembler: Assembler, document: dict[str, Any]) -> tuple[bytes, os.stat_result]:
    """The message's WAV made again from its stems, proven (see the module docstring);
    the stat is the manifest's (the message's only file)."""
    output_id = document["id"]
    merge = Manifest(**document["merge"])
    parts = _parts(Path(assembler.settings.stems_dir), document, merge)
    data = _merge(output_id, parts, merge)
    if hashlib.sha256(data).hexdigest() != document["output"]["sha256"]:
        raise CorruptOutputError(
            f"output {output_id}: rendered from its stems, the WAV differs from the sha256 its "
            "manifest recorded; assemble the message again"
        )
    report = verify(data, merge, parts)
    if not report.ok:
        raise CorruptOutputError(f"output {output_id}: the rendered WAV did not verify")
    info = os.lstat(assembler.output_dir / f"{output_id}.json")
    return data, info


def verify_manifest_only(assembler: Assembler, document: dict[str, Any]) -> VerifyReport:
    """The proof of a manifest-only message: rendered from the stems on disk and verified;
    a stem that changed (or a render that differs) is a failed report, not an error."""
    merge = Manifest(**document["merge"])
    try:
        parts = _parts(Path(assembler.settings.stems_dir), document, merge)
        data = _merge(document["id"], parts, merge)
    except CorruptOutputError as error:
        return VerifyReport(ok=False, header_exact=False, errors=[str(error)])
    report = verify(data, merge, parts)
    if hashlib.sha256(data).hexdigest() != document["output"]["sha256"]:
        errors = [*report.errors, "the rendered WAV differs from the recorded sha256"]
        return report.model_copy(update={"ok": False, "errors": errors})
    return report


def _parts(stems: Path, document: dict[str, Any], merge: Manifest) -> list[Part | Silence]:
    """The merge's parts from the stem files, each checked against the sha256 the manifest
    recorded for it; every stem that fails is named in one `StemChangedError`."""
    recorded = {s.part_index: s.source_sha256 for s in merge.segments if s.kind == "audio"}
    parts: list[Part | Silence] = []
    changed: list[str] = []
    for index, source in enumerate(document["sources"]):
        if source["kind"] != "stem":
            parts.append(Silence(ms=source["ms"]))
            continue
        stem_id = source["stem_id"]
        try:
            wav = read_wav(read_inside(stems, source["path"])[0])
        except FileNotFoundError:
            changed.append(f"{stem_id} (its file is gone)")
            continue
        except WavError:
            changed.append(f"{stem_id} (its file is not valid WAV)")
            continue
        if wav.sha256 != recorded.get(index):
            changed.append(f"{stem_id} (its samples differ: made again since)")
        parts.append(Part(wav, stem_id))
    if changed:
        raise StemChangedError(
            f"output {document['id']} is kept as a manifest and cannot be rendered: "
            f"{', '.join(changed)}; assemble the message again"
        )
    return parts


def _merge(output_id: str, parts: list[Part | Silence], merge: Manifest) -> bytes:
    try:
        return bitmerge_semantic(
            parts,
            gap_ms=merge.gap_ms,
            trim=Trim(**merge.trim) if merge.trim else None,
            mode=merge.mode,
            crossfade_ms=merge.crossfade_ms,
            format=merge.format,
        ).wav
    except MergeError as error:
        raise CorruptOutputError(f"output {output_id}: cannot be rendered: {error}") from None
