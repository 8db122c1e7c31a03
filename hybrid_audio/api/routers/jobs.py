"""`/jobs`: progress of long work, from the job store every server process shares.

Lists are pages: `offset`/`limit` (at most `MAX_PAGE`), newest first; the body stays a
JSON list, and the headers `X-Total-Count` (all rows) and `X-Next-Offset` (only when more
follow) tell a client how to get the rest.
"""

from __future__ import annotations

from fastapi import APIRouter, Response

from hybrid_audio.api.errors import not_found
from hybrid_audio.api.models import PageLimit, PageOffset, set_page_headers
from hybrid_audio.api.services import Shared
from hybrid_audio.jobs import Job, JobInfo
from hybrid_audio.workspace import Workspace

router = APIRouter(prefix="/jobs", tags=["jobs"])


def _job(shared: Workspace, job_id: str) -> Job:
    try:
        return shared.jobs.get(job_id)
    except KeyError:
        raise not_found(f"job {job_id!r}") from None


@router.get("", response_model=list[JobInfo], summary="Jobs of every process, newest first")
def list_jobs(
    shared: Shared, response: Response, offset: PageOffset = 0, limit: PageLimit = 100
) -> list[JobInfo]:
    jobs = shared.jobs.list(offset, limit)
    set_page_headers(response, offset, len(jobs), shared.jobs.count())
    return [job.info() for job in jobs]


@router.get("/{job_id}", response_model=JobInfo, summary="State, done/total, errors, ETA")
def get_job(job_id: str, shared: Shared) -> JobInfo:
    return _job(shared, job_id).info()


@router.post("/{job_id}/cancel", response_model=JobInfo, summary="Stop at the next stem")
def cancel_job(job_id: str, shared: Shared) -> JobInfo:
    _job(shared, job_id)
    return shared.jobs.cancel(job_id).info()
