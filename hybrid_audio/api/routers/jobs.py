"""`/jobs`: progress of long work, from the job store every server process shares.

Lists are pages: `offset`/`limit` (at most `MAX_PAGE`), newest first; the body stays a
JSON list, and the headers `X-Total-Count` (all rows) and `X-Next-Offset` (only when more
follow) tell a client how to get the rest.
"""

from __future__ import annotations

from fastapi import APIRouter, Response

from hybrid_audio.api.deps import WorkspaceDep
from hybrid_audio.api.errors import not_found
from hybrid_audio.api.models import PageLimit, PageOffset, set_page_headers
from hybrid_audio.jobs import Job, JobInfo
from hybrid_audio.workspace import Workspace

router = APIRouter(prefix="/jobs", tags=["jobs"])


def _job(workspace: Workspace, job_id: str) -> Job:
    try:
        return workspace.jobs.get(job_id)
    except KeyError:
        raise not_found(f"job {job_id!r}") from None


@router.get("", response_model=list[JobInfo], summary="Jobs of every process, newest first")
def list_jobs(
    workspace: WorkspaceDep, response: Response, offset: PageOffset = 0, limit: PageLimit = 100
) -> list[JobInfo]:
    jobs = workspace.jobs.list(offset, limit)
    set_page_headers(response, offset, len(jobs), workspace.jobs.count())
    return [job.info() for job in jobs]


@router.get("/{job_id}", response_model=JobInfo, summary="State, done/total, errors, ETA")
def get_job(job_id: str, workspace: WorkspaceDep) -> JobInfo:
    return _job(workspace, job_id).info()


@router.post("/{job_id}/cancel", response_model=JobInfo, summary="Stop at the next stem")
def cancel_job(job_id: str, workspace: WorkspaceDep) -> JobInfo:
    try:
        return workspace.jobs.cancel(job_id).info()
    except KeyError:
        raise not_found(f"job {job_id!r}") from None
