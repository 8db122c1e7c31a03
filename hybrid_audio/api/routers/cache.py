"""`/cache`: the stems the server holds, their audio, invalidation and the audits.

`verify` checks the files against the index; `check_in_bucket` compares the index with the
bucket (in local mode: the files against the index, saying no bucket is configured);
`bucket_list` lists the bucket (or the local files) by prefix, a page at a time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse

from hybrid_audio.api.audio import VerifiedAudio
from hybrid_audio.api.deps import WorkspaceDep
from hybrid_audio.api.errors import ApiError, not_found
from hybrid_audio.api.models import (
    InvalidateRequest,
    InvalidateResponse,
    KindQuery,
    ObjectPrefix,
    PageLimit,
    PageToken,
    StemSummary,
)
from hybrid_audio.api.routers.generate import generate_rotational
from hybrid_audio.api.routers.storage import require_bucket
from hybrid_audio.cache import CacheReport, StemRecord
from hybrid_audio.stems import StemId
from hybrid_audio.storage.reports import AuditPage, ConsistencyReport

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
    """Removes the local copy; with `remote` also the bucket's (409 without a bucket), so
    the next request synthesizes the stem instead of downloading it again."""
    stem_id = str(StemId.parse(body.stem_id))
    if body.remote:
        require_bucket(workspace, "delete a bucket copy")
    outcome = workspace.storage.invalidate(stem_id, remote=body.remote)
    return InvalidateResponse(stem_id=stem_id, invalidated=outcome.local, remote=outcome.remote)


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


# HEAD as for a message's audio (`routers/assemble.py`).
router.add_api_route(
    "/stems/{stem_id}/audio", stem_audio, methods=["HEAD"], include_in_schema=False
)


@router.get("/verify", response_model=CacheReport, summary="Files against the index")
def verify(workspace: WorkspaceDep) -> CacheReport:
    return workspace.verify_cache()


@router.get(
    "/check_in_bucket",
    response_model=ConsistencyReport,
    summary="The local index against the bucket: a summary and one row per difference",
)
def check_in_bucket(
    workspace: WorkspaceDep,
    stem_id: Annotated[str | None, Query(max_length=128, examples=["stem.name.jose"])] = None,
) -> ConsistencyReport:
    """Missing on either side, checksum or contract mismatches, orphan objects (`ok` when
    there are none); `stem_id` checks that stem only. Without a bucket, the local files
    are audited against the index and `note` says so."""
    # consistency() parses the id (422 when it is not one)
    return workspace.storage.consistency(stem_id, source="api")


@router.get(
    "/bucket_list",
    response_model=AuditPage,
    summary="Objects under a prefix, a page at a time (sizes, checksums, metadata)",
)
def bucket_list(
    workspace: WorkspaceDep,
    prefix: ObjectPrefix = "",
    limit: PageLimit = 100,
    page_token: PageToken = None,
) -> AuditPage:
    """Follow `next_page_token` (null on the last page) for the rest. A stem's spoken text
    in `metadata.text` is percent-encoded UTF-8 (object metadata is ASCII)."""
    return workspace.storage.audit(prefix, limit, page_token, source="api")
