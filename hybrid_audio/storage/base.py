"""The object-store protocol both storage modes speak, and the names objects get.

Object names mirror local paths, so a bucket listing reads like the base dir:
`stems/<kind>/<stem id>.wav`, `output/<output id>.wav` and `output/<output id>.json`.
Names here never carry the `GCS_PREFIX`; the GCS backend adds and strips it, so the same
name means the same thing in both modes. `resolve` maps a name to its local file through
`Settings` (the stems and output folders can be configured apart from the base dir) and
refuses any name that is not one of those shapes — a name from a bucket listing is data,
never a path to trust.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable
from urllib.parse import quote, unquote

import google_crc32c
from pydantic import BaseModel

from hybrid_audio.config import Settings
from hybrid_audio.stems import StemId, stem_path

if TYPE_CHECKING:
    from hybrid_audio.cache import StemRecord

Mode = Literal["local", "gcs"]
#: One object to upload in bulk: name, bytes, metadata, content type.
UploadItem = tuple[str, bytes, Mapping[str, str], str]
STEMS_PREFIX = "stems/"
OUTPUT_PREFIX = "output/"
#: Output ids as the Assembler makes them (`<utc stamp>_<template>_<slug…>`, maybe `-n`).
_OUTPUT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


class StorageUnavailableError(RuntimeError):
    """The bucket refused or could not be reached after retries (→ 503, naming the bucket).

    Permanent refusals (403: no permission; 404: no such bucket) are raised at once;
    transient ones (5xx, timeouts, refused connections) after the library's retry policy
    gave up (`GCS_RETRY_DEADLINE`).
    """

    def __init__(self, bucket: str, reason: str) -> None:
        super().__init__(f"storage bucket {bucket!r} is unavailable: {reason}")
        self.bucket = bucket
        self.reason = reason


class ObjectExistsError(ValueError):
    """An upload found an object of that name already there (generation precondition 0)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"object {name!r} already exists; uploads never overwrite")
        self.name = name


class ObjectMissingError(KeyError):
    """No object of that name."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name

    def __str__(self) -> str:
        return f"object {self.name!r} does not exist"


class ChecksumMismatchError(ValueError):
    """Bytes that arrived differ from the checksum the store computed (CRC32C)."""


class ObjectInfo(BaseModel):
    """One object as a listing or a lookup describes it (name without `GCS_PREFIX`)."""

    name: str
    size: int
    crc32c: str  # base64 of the big-endian CRC32C, as GCS reports it
    md5: str = ""  # base64, when the store has one
    metadata: dict[str, str] = {}  # stem id, kind, text, contract signature, engine, sha256…
    updated: str | None = None  # ISO 8601
    generation: int | None = None


class ObjectPage(BaseModel):
    """One page of a listing; `next_page_token` is None on the last page."""

    objects: list[ObjectInfo]
    next_page_token: str | None = None


class StorageDescription(BaseModel):
    """What `/health` and the Storage page show."""

    mode: Mode
    bucket: str | None = None
    prefix: str = ""


@runtime_checkable
class ObjectStore(Protocol):
    """Objects by name: the local filesystem or a GCS bucket."""

    mode: Mode

    def describe(self) -> StorageDescription: ...

    def upload(
        self, name: str, data: bytes, metadata: Mapping[str, str], content_type: str
    ) -> ObjectInfo:
        """Create `name` (never overwrite: `ObjectExistsError`); CRC32C checked."""
        ...

    def download(self, name: str) -> tuple[bytes, ObjectInfo]:
        """The object's bytes, CRC32C checked (`ObjectMissingError` if absent)."""
        ...

    def info(self, name: str) -> ObjectInfo | None: ...

    def exists(self, name: str) -> bool: ...

    def delete(self, name: str) -> bool:
        """True if there was an object to delete."""
        ...

    def list_page(self, prefix: str, limit: int, page_token: str | None = None) -> ObjectPage:
        """At most `limit` objects under `prefix`, from `page_token` on, in name order."""
        ...

    def iterate(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object under `prefix`, page after page."""
        ...

    def upload_many(
        self, items: Sequence[UploadItem], workers: int | None = None
    ) -> list[ObjectInfo | Exception]:
        """`upload` of each item, `workers` at once (default `GCS_UPLOAD_WORKERS`); one
        result per item, in order: its `ObjectInfo` or the error `upload` would raise."""
        ...

    def download_many(
        self, names: Sequence[str], workers: int | None = None
    ) -> list[bytes | Exception]:
        """The bytes of each object (CRC32C checked) or the error `download` would raise."""
        ...


def crc32c_of(data: bytes) -> str:
    """The CRC32C of `data` as GCS reports it: base64 of the big-endian checksum."""
    return base64.b64encode(google_crc32c.Checksum(data).digest()).decode("ascii")


# --- names -------------------------------------------------------------------------------


def stem_object_name(stem_id: StemId | str) -> str:
    """`stem.name.jose` → `stems/name/stem.name.jose.wav`."""
    sid = stem_id if isinstance(stem_id, StemId) else StemId.parse(str(stem_id))
    return f"{STEMS_PREFIX}{sid.kind}/{sid.filename}"


def output_object_names(output_id: str) -> tuple[str, str]:
    """The WAV and the manifest of an output: `output/<id>.wav`, `output/<id>.json`."""
    if not _OUTPUT_ID.match(output_id):
        raise ValueError(f"not an output id: {output_id!r}")
    return f"{OUTPUT_PREFIX}{output_id}.wav", f"{OUTPUT_PREFIX}{output_id}.json"


class ParsedName(BaseModel):
    """What an object name stands for: a stem (its id) or an output file (id, suffix)."""

    area: Literal["stem", "output"]
    stem_id: str | None = None
    output_id: str | None = None
    suffix: Literal["wav", "json"] = "wav"


def parse_object_name(name: str) -> ParsedName | None:
    """The stem or output an object name stands for; None for any other name (an orphan)."""
    if name.startswith(STEMS_PREFIX):
        kind, _, filename = name[len(STEMS_PREFIX) :].partition("/")
        if not filename.endswith(".wav"):
            return None
        try:
            sid = StemId.parse(filename[: -len(".wav")])
        except ValueError:
            return None
        return ParsedName(area="stem", stem_id=str(sid)) if sid.kind == kind else None
    if name.startswith(OUTPUT_PREFIX):
        stem, dot, suffix = name[len(OUTPUT_PREFIX) :].rpartition(".")
        if dot and suffix in ("wav", "json") and _OUTPUT_ID.match(stem):
            return ParsedName(area="output", output_id=stem, suffix=suffix)  # type: ignore[arg-type]
    return None


def resolve(settings: Settings, name: str) -> Path:
    """The local file an object name mirrors (`ValueError` for any other name)."""
    parsed = parse_object_name(name)
    if parsed is None:
        raise ValueError(f"{name!r} is not a stem or output object name")
    if parsed.area == "stem":
        return stem_path(parsed.stem_id or "", settings.stems_dir)
    return Path(settings.output_dir) / f"{parsed.output_id}.{parsed.suffix}"


# --- metadata ----------------------------------------------------------------------------

#: Metadata keys of a stem object: enough to adopt it without synthesis on another machine.
STEM_METADATA = (
    "stem_id",
    "kind",
    "text",
    "contract_signature",
    "engine",
    "engine_version",
    "model",
    "voice",
    "api_version",
    "sha256",
    "pronunciation",  # hash of the dictionary entries it was made with ("" none)
)


def stem_metadata(record: StemRecord) -> dict[str, str]:
    """The object metadata of a stem: its id, kind, text as spoken, contract, engine, sha256
    (of the samples, as the index records it).

    Every value is ASCII: the text is percent-encoded (UTF-8), because metadata travels as
    HTTP headers on downloads (`x-goog-meta-*`), where only ASCII is safe — the emulator
    fails a download outright on a non-Latin-1 value. `metadata_text` decodes it.
    """
    values = {key: str(getattr(record, key)) for key in STEM_METADATA}
    values["text"] = quote(record.text, safe=" ")
    return values


def metadata_text(metadata: Mapping[str, str]) -> str:
    """The spoken text a stem object's metadata carries (decoded)."""
    return unquote(metadata.get("text", ""))
