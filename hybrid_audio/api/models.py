"""Request and response models at the HTTP edge, named for what they carry.

Core models (`StemRecord`, `JobInfo`, `OutputSummary`, `VerifyReport`, `RotationStep`,
`StreamState`, `CacheReport`) are returned as they are; the models here add only what
HTTP needs. Every string a client sends has a length limit.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Query, Response
from pydantic import BaseModel, Field

from hybrid_audio.assembly import OutputSummary
from hybrid_audio.bitmerge import VerifyReport
from hybrid_audio.cache import StemRecord

Text = Field(min_length=1, max_length=256)
#: Largest page a list route returns (`limit`).
MAX_PAGE = 1000
PageOffset = Annotated[int, Query(ge=0, description="Rows to skip (newest first).")]
PageLimit = Annotated[int, Query(ge=1, le=MAX_PAGE, description=f"Rows, at most {MAX_PAGE}.")]


def set_page_headers(response: Response, offset: int, count: int, total: int) -> None:
    """`X-Total-Count`, and `X-Next-Offset` when rows follow this page of `count`."""
    response.headers["X-Total-Count"] = str(total)
    if offset + count < total and count:
        response.headers["X-Next-Offset"] = str(offset + count)


#: A bulk request may name at most this many texts per list.
MAX_BATCH = 100_000


class ErrorBody(BaseModel):
    code: str = Field(description="Machine-readable: not_found, validation_error, …")
    message: str = Field(description="What went wrong and, where possible, what to do.")
    details: Any = None


class ErrorResponse(BaseModel):
    """Every error the API returns has this shape."""

    error: ErrorBody


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    version: str
    engine: str
    engine_version: str
    contract_signature: str
    audio_format: str
    auth_required: bool


class NameRequest(BaseModel):
    name: str = Text


class DeveloperRequest(BaseModel):
    developer: str = Text


class ScriptRequest(BaseModel):
    key: str = Text


class CombinedRequest(BaseModel):
    name: str = Text
    developer: str = Text


class StemResponse(BaseModel):
    """One stem, and how the text became its id ("José María → stem.name.jose_maria")."""

    stem: StemRecord
    normalized: str


class CombinedResponse(BaseModel):
    name: StemResponse
    developer: StemResponse


class BulkRequest(BaseModel):
    """Texts to make stems of. Both omitted: the datasets; one omitted: none of that kind."""

    names: list[str] | None = Field(default=None, max_length=MAX_BATCH)
    developers: list[str] | None = Field(default=None, max_length=MAX_BATCH)


class AssembleRequest(BaseModel):
    template: str = Field(min_length=1, max_length=80, examples=["double_anchor"])
    name: str | None = Field(default=None, max_length=256)
    developer: str | None = Field(default=None, max_length=256)
    script: str | None = Field(default=None, max_length=256)
    mode: Literal["exact", "hybrid"] | None = None
    generate_missing: bool = True


class AssembleResponse(BaseModel):
    id: str
    duration: float
    sha256: str
    verified: bool
    summary: OutputSummary
    report: VerifyReport
    audio_url: str


class GeneratePairRequest(BaseModel):
    template: str = Field(default="double_anchor", min_length=1, max_length=80)


class ResetRequest(BaseModel):
    stream: Literal["name", "developer", "script", "pair"]


class InvalidateRequest(BaseModel):
    stem_id: str = Field(min_length=1, max_length=128, examples=["stem.name.jose"])


class InvalidateResponse(BaseModel):
    stem_id: str
    invalidated: bool


class StemSummary(BaseModel):
    """A stem as `/cache/list` shows it without `extended`."""

    stem_id: str
    kind: str
    text: str
    duration: float
    compatible: bool | None


class DatasetItemOut(BaseModel):
    text: str
    stem_id: str
    key: str | None = None


class DatasetInfo(BaseModel):
    kind: str
    count: int
    path: str = Field(description="The dataset file, relative to the server's base directory.")
    collisions: list[str]
    rejected: list[str]


class DatasetContent(DatasetInfo):
    items: list[DatasetItemOut]
