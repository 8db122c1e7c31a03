"""`/generate`: make (or find) stems; bulk runs become jobs."""

from __future__ import annotations

from fastapi import APIRouter

from hybrid_audio.api.errors import ApiError
from hybrid_audio.api.models import (
    BulkRequest,
    CombinedRequest,
    CombinedResponse,
    DeveloperRequest,
    NameRequest,
    ScriptRequest,
    StemResponse,
)
from hybrid_audio.api.services import Shared
from hybrid_audio.cache import StemRecord
from hybrid_audio.jobs import JobInfo

router = APIRouter(prefix="/generate", tags=["generate"])


def stem_response(text: str, record: StemRecord) -> StemResponse:
    return StemResponse(stem=record, normalized=f"{text} → {record.stem_id}")


@router.post("/name", response_model=StemResponse, summary="The stem of a first name")
def generate_name(body: NameRequest, shared: Shared) -> StemResponse:
    return stem_response(body.name, shared.generator.generate_name(body.name))


@router.post("/developer", response_model=StemResponse, summary="The stem of a developer")
def generate_developer(body: DeveloperRequest, shared: Shared) -> StemResponse:
    return stem_response(body.developer, shared.generator.generate_developer(body.developer))


@router.post("/script", response_model=StemResponse, summary="The stem of a script phrase")
def generate_script(body: ScriptRequest, shared: Shared) -> StemResponse:
    try:
        record = shared.generator.generate_script(body.key)
    except KeyError as error:
        raise ApiError(404, str(error.args[0])) from None
    return stem_response(body.key, record)


@router.post("/combined", response_model=CombinedResponse, summary="Name and developer stems")
def generate_combined(body: CombinedRequest, shared: Shared) -> CombinedResponse:
    name, developer = shared.generator.generate_combined(body.name, body.developer)
    return CombinedResponse(
        name=stem_response(body.name, name), developer=stem_response(body.developer, developer)
    )


@router.post(
    "/rotational",
    response_model=JobInfo,
    status_code=202,
    summary="Every name and developer stem (datasets by default) as a job",
)
def generate_rotational(body: BulkRequest, shared: Shared) -> JobInfo:
    return shared.start_bulk_generation(body.names, body.developers).info()
