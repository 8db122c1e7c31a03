"""`/generate`: make (or find) stems; bulk runs become jobs.

`/name`, `/developer` and `/script` are the built-in kinds' routes; `/stem` makes a stem of
any kind (`GET /kinds`). `POST /generate/rotational` is the one bulk route;
`POST /cache/bulk_generate` (named by the seed's README) is its documented alias.
"""

from __future__ import annotations

from fastapi import APIRouter

from hybrid_audio import kinds
from hybrid_audio.api.deps import WorkspaceDep
from hybrid_audio.api.errors import ApiError
from hybrid_audio.api.models import (
    BulkRequest,
    CombinedRequest,
    CombinedResponse,
    DeveloperRequest,
    NameRequest,
    ScriptRequest,
    StemRequest,
    StemResponse,
)
from hybrid_audio.cache import StemRecord
from hybrid_audio.jobs import JobInfo
from hybrid_audio.workspace import Workspace

router = APIRouter(prefix="/generate", tags=["generate"])


def stem_response(text: str, record: StemRecord) -> StemResponse:
    return StemResponse(stem=record, normalized=f"{text} → {record.stem_id}")


@router.post("/name", response_model=StemResponse, summary="The stem of a first name")
def generate_name(body: NameRequest, workspace: WorkspaceDep) -> StemResponse:
    return stem_response(body.name, workspace.generator.generate_name(body.name))


@router.post("/developer", response_model=StemResponse, summary="The stem of a developer")
def generate_developer(body: DeveloperRequest, workspace: WorkspaceDep) -> StemResponse:
    return stem_response(body.developer, workspace.generator.generate_developer(body.developer))


@router.post("/script", response_model=StemResponse, summary="The stem of a script phrase")
def generate_script(body: ScriptRequest, workspace: WorkspaceDep) -> StemResponse:
    return stem_response(body.key, _keyed(workspace, "script", body.key))


@router.post("/stem", response_model=StemResponse, summary="The stem of any kind's text or key")
def generate_stem(body: StemRequest, workspace: WorkspaceDep) -> StemResponse:
    """`text` is spoken for a `lines` kind; for a `mapping` kind it is the key whose phrase
    is spoken (404 if the kind's dataset has no such key)."""
    if kinds.get(body.kind).form == "mapping":
        return stem_response(body.text, _keyed(workspace, body.kind, body.text))
    return stem_response(body.text, workspace.generator.generate(body.kind, body.text))


def _keyed(workspace: Workspace, kind: str, key: str) -> StemRecord:
    try:
        return workspace.generator.generate_keyed(kind, key)
    except KeyError as error:
        raise ApiError(404, str(error.args[0])) from None


@router.post("/combined", response_model=CombinedResponse, summary="Name and developer stems")
def generate_combined(body: CombinedRequest, workspace: WorkspaceDep) -> CombinedResponse:
    name, developer = workspace.generator.generate_combined(body.name, body.developer)
    return CombinedResponse(
        name=stem_response(body.name, name), developer=stem_response(body.developer, developer)
    )


@router.post(
    "/rotational",
    response_model=JobInfo,
    status_code=202,
    summary="Every name and developer stem (datasets by default) as a job",
)
def generate_rotational(body: BulkRequest, workspace: WorkspaceDep) -> JobInfo:
    return workspace.start_bulk_generation(body.names, body.developers).info()
