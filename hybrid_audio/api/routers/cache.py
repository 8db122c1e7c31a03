"""`/cache`: the stems the server holds, their audio, invalidation and the audit.

Storage routes (`check_in_bucket`, `bucket_list`) join this router with the GCS issue.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from hybrid_audio.api.audio import VerifiedAudio
from hybrid_audio.api.deps import WorkspaceDep
from hybrid_audio.api.errors import ApiError, not_found
from hybrid_audio.api.models import InvalidateRequest, InvalidateResponse, KindQuery, StemSummary
from hybrid_audio.api.routers.generate import generate_rotational
from hybrid_audio.cache import CacheReport, StemRecord
from hybrid_audio.stems import StemId

router = APIRouter(prefix="/cache", tags=["cache"])


@router.get(
    "/list",
    response_model=list[StemRecord] | list[StemSummary],
    summary="Stems, with compatibility against the active contract",
)
def list_stems(
    workspace: WorkspaceDep,
    kind: KindQuery = None,
    compatible: bool | None = None,
    extended: bool = False,
) -> list[StemRecord] | list[StemSummary]:
    records = workspace.generator.cache.list(kind=kind, compatible=compatible)
    if extended:
        return records
    return [
        StemSummary(
            stem_id=r.stem_id,
            kind=r.kind,
            text=r.text,
            duration=r.duration,
            compatible=r.compatible,
        )
        for r in records
    ]


@router.post("/invalidate", response_model=InvalidateResponse, summary="Forget a stem")
def invalidate(body: InvalidateRequest, workspace: WorkspaceDep) -> InvalidateResponse:
    stem_id = str(StemId.parse(body.stem_id))
    return InvalidateResponse(
        stem_id=stem_id, invalidated=workspace.generator.cache.invalidate(stem_id)
    )


router.add_api_route(
    "/bulk_generate",
    generate_rotational,
    methods=["POST"],
    status_code=202,
    summary="Alias of POST /generate/rotational",
    description="The same route under the name the seed's README gives it; use "
    "`POST /generate/rotational`.",
    deprecated=True,
)


@router.get(
    "/stems/{stem_id}/audio",
    response_class=FileResponse,
    responses={200: {"content": {"audio/wav": {}}}},
    summary="A stem's WAV file, proven against its index row (409 if changed on disk)",
)
def stem_audio(stem_id: str, workspace: WorkspaceDep) -> FileResponse:
    try:
        sid = StemId.parse(stem_id)
    except ValueError as error:
        raise ApiError(422, str(error)) from None
    cache = workspace.generator.cache
    record = cache.get(sid)
    if record is None:
        raise not_found(f"stem {stem_id!r}")
    stored = cache.read(record)  # 409 if changed on disk, a link, or gone
    return VerifiedAudio(stored.data, stored.stat, Path(record.path).name)


@router.get("/verify", response_model=CacheReport, summary="Files against the index")
def verify(workspace: WorkspaceDep) -> CacheReport:
    return workspace.verify_cache()
