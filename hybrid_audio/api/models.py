"""Request and response models at the HTTP edge, named for what they carry.

Core models (`StemRecord`, `JobInfo`, `OutputSummary`, `VerifyReport`, `RotationStep`,
`StreamState`, `CacheReport`) are returned as they are; the models here add only what
HTTP needs. Every string a client sends has a length limit.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Path, Query, Response
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    computed_field,
    model_validator,
)

from hybrid_audio import kinds
from hybrid_audio.assembly import OutputSummary
from hybrid_audio.bitmerge import VerifyReport
from hybrid_audio.cache import StemRecord
from hybrid_audio.campaign import CampaignInfo
from hybrid_audio.contract import ENGINES
from hybrid_audio.jobs import JobInfo
from hybrid_audio.recipients import MAX_RECIPIENTS, RowProblem
from hybrid_audio.rotation import stream_names
from hybrid_audio.stems import MAX_TEXT
from hybrid_audio.storage.base import StorageDescription

Text = Field(min_length=1, max_length=256)
#: Largest page a list route returns (`limit`).
MAX_PAGE = 1000
#: SQLite's largest integer: a larger offset would not reach the database as a number.
MAX_OFFSET = 2**63 - 1
PageOffset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Rows to skip (newest first).")]
PageLimit = Annotated[int, Query(ge=1, le=MAX_PAGE, description=f"Rows, at most {MAX_PAGE}.")]


def model_response(model: BaseModel, status_code: int = 200) -> Response:
    """`model` as the JSON FastAPI would send for it as `response_model` (same bytes).

    For hot sync routes: a returned model is validated again and serialized in a second
    threadpool hop; a route that already holds the validated model returns its JSON here.
    """
    return Response(
        model.model_dump_json(by_alias=True), status_code, media_type="application/json"
    )


def set_page_headers(response: Response, offset: int, count: int, total: int) -> None:
    """`X-Total-Count`, and `X-Next-Offset` when rows follow this page of `count`."""
    response.headers["X-Total-Count"] = str(total)
    if offset + count < total and count:
        response.headers["X-Next-Offset"] = str(offset + count)


#: A bulk request may name at most this many texts per list.
MAX_BATCH = 100_000
#: Slots a template fills with the request's top-level fields, not with `slots`.
_FIELD_SLOTS = ("name", "developer", "script")


def _known_kind(value: str) -> str:
    if not kinds.is_kind(value):
        known = ", ".join(kinds.names())
        raise ValueError(f"unknown kind {value!r}; known kinds: {known} (see GET /kinds)")
    return value


def _known_stream(value: str) -> str:
    if value not in stream_names():
        raise ValueError(f"unknown stream {value!r}; streams: {', '.join(stream_names())}")
    return value


def _kind_enum(schema: dict[str, Any]) -> None:
    """The schema's enum, made when the schema is (after the server loaded kinds.json)."""
    schema["enum"] = list(kinds.names())


def _stream_enum(schema: dict[str, Any]) -> None:
    schema["enum"] = list(stream_names())


#: A kind's name (`GET /kinds`), checked against the registry when the request arrives.
KindName = Annotated[
    str, Field(max_length=32, json_schema_extra=_kind_enum), AfterValidator(_known_kind)
]
KindPath = Annotated[
    str, Path(max_length=32, json_schema_extra=_kind_enum), AfterValidator(_known_kind)
]
KindQuery = Annotated[KindName | None, Query()]


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
    sound: dict[str, float | int | None] | None = Field(
        default=None,
        description="Processing every stem gets at generation (loudness target LUFS, "
        "true-peak ceiling dBTP, edge fade ms, algorithm version); null when it is off.",
    )
    auth_required: bool
    storage: StorageDescription = Field(
        description="Where stems and outputs are mirrored: local (no bucket) or a GCS bucket."
    )


class NameRequest(BaseModel):
    name: str = Text


class DeveloperRequest(BaseModel):
    developer: str = Text


class ScriptRequest(BaseModel):
    key: str = Text


class StemRequest(BaseModel):
    """A stem of any kind: the text for a `lines` kind, the key for a `mapping` kind."""

    kind: KindName
    text: str = Text


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
    slots: dict[KindName, Annotated[str, Field(max_length=256)]] = Field(
        default_factory=dict,
        max_length=32,
        description='Values of the other kinds\' slots, e.g. {"intro": "Welcome"}.',
    )
    mode: Literal["exact", "hybrid"] | None = None
    generate_missing: bool = True

    @model_validator(mode="after")
    def _one_way_per_slot(self) -> AssembleRequest:
        twice = sorted(set(self.slots) & set(_FIELD_SLOTS))
        if twice:
            raise ValueError(f"give {', '.join(twice)} as top-level fields, not in slots")
        return self


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
    mode: Literal["exact", "hybrid"] | None = None  # the join; None → the template's own


#: A rotation stream's name (`rotation.stream_names()`) in a path, checked on arrival.
StreamPath = Annotated[
    str, Path(max_length=32, json_schema_extra=_stream_enum), AfterValidator(_known_stream)
]


class ResetRequest(BaseModel):
    stream: Annotated[
        str, Field(max_length=32, json_schema_extra=_stream_enum), AfterValidator(_known_stream)
    ]


class InvalidateRequest(BaseModel):
    stem_id: str = Field(min_length=1, max_length=128, examples=["stem.name.jose"])
    remote: StrictBool = Field(  # strict: a destructive flag is true or false, never 1
        default=False,
        description="Also delete the bucket's copy (GCS mode only: 409 without a bucket).",
    )


class InvalidateResponse(BaseModel):
    stem_id: str
    invalidated: bool = Field(description="Whether a local copy was removed.")
    remote: bool = Field(default=False, description="Whether a bucket copy was deleted.")


#: Longest object-name prefix or page token a storage route accepts.
MAX_PREFIX = 512
MAX_PAGE_TOKEN = 2048
ObjectPrefix = Annotated[
    str,
    Query(
        max_length=MAX_PREFIX,
        description='"" (everything), or under stems/ or output/, e.g. stems/name/.',
    ),
]
PageToken = Annotated[
    str | None,
    Query(max_length=MAX_PAGE_TOKEN, description="next_page_token of the previous page."),
]


class SyncRequest(BaseModel):
    """push: upload what the bucket lacks; pull: adopt what this machine lacks."""

    direction: Literal["push", "pull"]
    prefix: str = Field(default="", max_length=MAX_PREFIX, examples=["stems/name/"])


class StemSummary(BaseModel):
    """A stem as `/cache/list` shows it without `extended`."""

    stem_id: str
    kind: str
    text: str
    duration: float
    compatible: bool | None


class KindInfo(BaseModel):
    """A stem kind as `GET /kinds` shows it."""

    name: str
    plural: str
    aliases: list[str] = Field(description="Other spellings a client may accept.")
    form: Literal["lines", "mapping"] = Field(
        description="lines: one text per entry; mapping: key → phrase (the key names the stem)."
    )
    dataset: str = Field(description="The dataset file, relative to the server's base directory.")
    rotation: bool = Field(description="Whether the kind is a rotation stream.")


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


class RecipientIn(BaseModel):
    """One recipient of a JSON campaign body. An empty or missing name or developer, a
    script key the scripts dataset lacks or a repeated id refuses that row only (it is
    listed with its row number); the other rows go on."""

    model_config = ConfigDict(strict=True)

    name: str | None = Field(default=None, max_length=256, examples=["José"])
    developer: str | None = Field(default=None, max_length=256, examples=["Acme Homes"])
    script: str | None = Field(default=None, max_length=256, description="A scripts key.")
    id: str | None = Field(
        default=None, max_length=256, description="Your own recipient id, kept in the outputs."
    )


class RotationSource(BaseModel):
    """The next `count` name × developer pairs of the rotation of `seed` (default: the
    server's), fixed when the campaign is created."""

    model_config = ConfigDict(strict=True)  # a seed of `false` or a count of 1.0 is refused

    count: int = Field(ge=1, le=MAX_RECIPIENTS)
    seed: int | None = Field(default=None, ge=-(2**63), le=2**63 - 1)


class _CampaignBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    template: str = Field(min_length=1, max_length=80, examples=["double_anchor"])
    join: Literal["exact", "hybrid"] | None = Field(
        default=None, description="exact or hybrid joins; default: the template's own."
    )


class RecipientsCampaign(_CampaignBody):
    recipients: list[RecipientIn] = Field(min_length=1, max_length=MAX_RECIPIENTS)


class RotationCampaign(_CampaignBody):
    rotation: RotationSource


#: A JSON campaign body: a recipient list or a rotation source, never both.
CampaignBody = RecipientsCampaign | RotationCampaign


class CampaignStarted(BaseModel):
    """A campaign and the job that runs it (follow it at /jobs/{id})."""

    campaign: CampaignInfo
    job: JobInfo

    @computed_field(description="The campaign's id, the same as `campaign.id`.")
    @property
    def campaign_id(self) -> str:
        return self.campaign.id


class CampaignDetail(CampaignInfo):
    problems: list[RowProblem] = Field(
        description=f"Refused and failed rows by row number (the first {MAX_PAGE}; "
        "all of them: /campaigns/{id}/messages?state=failed)."
    )


#: The longest text, respelling, phoneme string or note of a pronunciation entry.
PronunciationText = Annotated[str, Field(max_length=MAX_TEXT)]


class PronunciationRequest(BaseModel):
    """`PUT /pronunciations`: how `text` should be said; the core refuses text that cannot
    be spoken (control characters, no letter or digit) and the engines' `[[`/`<<` syntax."""

    model_config = ConfigDict(extra="forbid", strict=True)

    text: PronunciationText = Field(min_length=1, examples=["Nguyen"])
    respelling: PronunciationText = Field(default="", examples=["Win"])
    phonemes: dict[Literal[ENGINES], PronunciationText] = Field(
        default_factory=dict,
        description="Per engine, in its notation: espeak phonemes for piper, IPA for "
        'cartesia, e.g. {"piper": "wˈɪn"}.',
    )
    note: PronunciationText = ""
    regenerate: StrictBool = Field(
        default=True, description="Make every stem using the entry again now."
    )
