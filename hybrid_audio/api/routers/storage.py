"""`/storage`: the storage mode with its upload queue, and push/pull syncs as jobs.

The audit and the consistency report live under `/cache` (`bucket_list`,
`check_in_bucket`), the names the seed gives them. Without a bucket (local mode) a sync or
a remote invalidation is a 409 `storage_not_configured`: the request is well formed, the
server's configuration is what refuses it.
"""

from __future__ import annotations

from fastapi import APIRouter

from hybrid_audio.api.deps import WorkspaceDep
from hybrid_audio.api.errors import ApiError
from hybrid_audio.api.models import SyncRequest
from hybrid_audio.jobs import JobInfo
from hybrid_audio.storage.reports import StorageStatus
from hybrid_audio.workspace import Workspace

router = APIRouter(prefix="/storage", tags=["storage"])


def require_bucket(workspace: Workspace, what: str) -> None:
    """409 `storage_not_configured` unless this server mirrors to a bucket."""
    if workspace.store.mode != "gcs":
        raise ApiError(
            409,
            f"no bucket is configured, so the server cannot {what}: "
            "start it with GCS_BUCKET set (see GET /health: storage.mode is local)",
            code="storage_not_configured",
        )


@router.get("", response_model=StorageStatus, summary="Mode, bucket and the upload queue")
def status(workspace: WorkspaceDep) -> StorageStatus:
    return workspace.storage.status()


@router.post(
    "/sync",
    response_model=JobInfo,
    status_code=202,
    summary="Push to or pull from the bucket as a job (follow it at /jobs/{id})",
)
def sync(body: SyncRequest, workspace: WorkspaceDep) -> JobInfo:
    """push uploads every local stem and output the bucket lacks; pull adopts every bucket
    object this machine lacks (stems only with a compatible contract, verified by sha256).
    Neither overwrites: different bytes under one name are reported as conflicts."""
    require_bucket(workspace, f"{body.direction} objects")
    return workspace.storage.start_sync(body.direction, body.prefix, source="api").info()
