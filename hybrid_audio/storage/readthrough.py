"""Adopting a stem from the bucket instead of synthesizing it (the read-through cache).

A bucket object is data from another machine, never trusted as it is: before a stem is
adopted its metadata must name this contract's signature, its text must be the text
whose id the object carries, and the WAV's samples must hash to the metadata's sha256.
Only then is it stored through `StemCache.store` (which checks the format again and
writes the canonical file, so the local file's bytes equal the uploaded object's). A
compatible local stem is never replaced: the same samples are "already" here, other
samples are a "conflict" to report (the local index is the truth for this machine).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from hybrid_audio import kinds
from hybrid_audio.cache import StemCache, StemRecord
from hybrid_audio.pronunciation import Pronounced
from hybrid_audio.stems import StemId, same_identity
from hybrid_audio.storage.base import (
    ObjectInfo,
    ObjectStore,
    metadata_text,
    parse_object_name,
)
from hybrid_audio.wav import WavError, read_wav

PullStatus = Literal["adopted", "already", "conflict", "incompatible", "invalid"]
NOT_A_STEM = "not a stem object name"


class PullOutcome(BaseModel):
    """What became of one bucket stem: the local record (when there is one) and why."""

    status: PullStatus
    name: str
    record: StemRecord | None = None
    detail: str = ""


def pull_stem(
    store: ObjectStore,
    cache: StemCache,
    name_or_info: str | ObjectInfo,
    *,
    text: str | None = None,
    pronunciation: str | None = None,
) -> PullOutcome:
    """Download one stem object, prove it, and store it locally unless it is already here.

    The text is proven against the id for kinds whose id is made from the text (names,
    developers); a script's id comes from its key, which the object does not carry, so
    there `text`, when given, is the text the caller wants spoken: an object speaking
    another text (a phrase edited since) is "incompatible". An `ObjectInfo` from a
    listing lets an incompatible object be skipped without downloading it. Raises
    `ObjectMissingError` when there is no such object and `StorageUnavailableError` when
    the bucket cannot be reached. `pronunciation` (the hash of the dictionary entries the
    caller would apply) rules out an object made with other entries; None accepts any.
    """
    if isinstance(name_or_info, ObjectInfo):
        name = name_or_info.name
        ruled_out = refusal(cache, name_or_info, text=text, pronunciation=pronunciation)
        if ruled_out is not None:
            return ruled_out
    else:
        name = name_or_info
        if stem_id_of(name) is None:
            return PullOutcome(status="invalid", name=name, detail=NOT_A_STEM)
    data, info = store.download(name)
    return adopt_stem(cache, info, data, text=text, pronunciation=pronunciation)


def adopt_stem(
    cache: StemCache,
    info: ObjectInfo,
    data: bytes,
    *,
    text: str | None = None,
    pronunciation: str | None = None,
) -> PullOutcome:
    """Prove downloaded bytes against the metadata `info` describes them with, and store
    them unless a compatible stem is here already (see `pull_stem`).

    A bulk pull passes the metadata from its listing and bytes fetched later: an object
    replaced in between hashes to another sha256 and is refused as "invalid".
    """
    ruled_out = refusal(cache, info, text=text, pronunciation=pronunciation)
    if ruled_out is not None:
        return ruled_out
    name = info.name
    stem_id = stem_id_of(name)
    assert stem_id is not None  # refusal ruled out any other name
    sha256 = info.metadata["sha256"]
    try:
        wav = read_wav(data)
    except WavError as error:
        return PullOutcome(status="invalid", name=name, detail=f"not valid WAV: {error}")
    if wav.sha256 != sha256:
        return PullOutcome(
            status="invalid",
            name=name,
            detail=f"its samples hash to {wav.sha256}, its metadata says {sha256}",
        )
    local = cache.lookup(stem_id)  # compatible, and its file in place
    if local is not None:
        if local.sha256 == sha256:
            return PullOutcome(status="already", name=name, record=local)
        return PullOutcome(
            status="conflict",
            name=name,
            record=local,
            detail=f"this machine holds other samples ({local.sha256}); kept, not overwritten",
        )
    spoken = metadata_text(info.metadata)
    try:
        record = cache.store(
            stem_id,
            spoken,
            wav,
            api_version=info.metadata.get("api_version", ""),
            upload=False,
            # The entries' hash travels with the object; the text they made does not.
            pronounced=Pronounced(
                engine_text="", entry_hash=info.metadata.get("pronunciation", ""), entries=[]
            ),
        )
    except WavError as error:  # another format than the contract's
        return PullOutcome(status="invalid", name=name, detail=str(error))
    return PullOutcome(status="adopted", name=name, record=record)


def refusal(
    cache: StemCache,
    info: ObjectInfo,
    *,
    text: str | None = None,
    pronunciation: str | None = None,
) -> PullOutcome | None:
    """Why an object is not worth downloading by its name and metadata alone, or None."""
    stem_id = stem_id_of(info.name)
    if stem_id is None:
        return PullOutcome(status="invalid", name=info.name, detail=NOT_A_STEM)
    refused = _refusal(cache, stem_id, info.metadata, text, pronunciation)
    if refused is None:
        return None
    return PullOutcome(status=refused[0], name=info.name, detail=refused[1])


def stem_id_of(name: str) -> StemId | None:
    """The stem id a stem object name holds; None for any other name."""
    parsed = parse_object_name(name)
    if parsed is None or parsed.area != "stem":
        return None
    return StemId.parse(str(parsed.stem_id))


def _refusal(
    cache: StemCache,
    stem_id: StemId,
    metadata: dict[str, str],
    text: str | None,
    pronunciation: str | None,
) -> tuple[PullStatus, str] | None:
    """Why an object's metadata rules it out, or None when it may be downloaded/adopted."""
    if not metadata.get("sha256") or metadata.get("stem_id") != str(stem_id):
        return "invalid", "its metadata lacks the stem id or sha256 of a stem object"
    signature = cache.contract.signature()
    if metadata.get("contract_signature") != signature:
        return "incompatible", (
            f"made under contract {metadata.get('contract_signature') or 'unknown'}, "
            f"the active one is {signature}"
        )
    spoken = metadata_text(metadata)
    if kinds.get(stem_id.kind).form == "lines":  # the id is the text's: prove it
        try:
            own = StemId.for_text(stem_id.kind, spoken)
        except ValueError:
            own = None
        if own != stem_id:
            return "invalid", f"its text {spoken!r} is not the text of {stem_id}"
    if text is not None and not same_identity(spoken, text):
        return "incompatible", f"it speaks {spoken!r}, not {text!r}"
    if pronunciation is not None and metadata.get("pronunciation", "") != pronunciation:
        return "incompatible", "it was made with other pronunciation dictionary entries"
    return None
