"""`/jobs`: progress of long work."""

from __future__ import annotations

from fastapi import APIRouter

from hybrid_audio.api.errors import not_found
from hybrid_audio.api.services import Shared
from hybrid_audio.jobs import Job, JobInfo
from hybrid_audio.workspace import Workspace

router = APIRouter(prefix="/jobs", tags=["jobs"])


def _job(shared: Workspace, job_id: str) -> Job:
    try:
        return shared.jobs.get(job_id)
    except KeyError:
        raise not_found(f"job {job_id!r}") from None


@router.get("", response_model=list[JobInfo], summary="All jobs of this server process")
def list_jobs(shared: Shared) -> list[JobInfo]:
    return [job.info() for job in shared.jobs.list()]


@router.get("/{job_id}", response_model=JobInfo, summary="State, done/total, errors, ETA")
def get_job(job_id: str, shared: Shared) -> JobInfo:
    return _job(shared, job_id).info()


@router.post("/{job_id}/cancel", response_model=JobInfo, summary="Stop at the next stem")
def cancel_job(job_id: str, shared: Shared) -> JobInfo:
    job = _job(shared, job_id)
    job.cancel()
    return job.info()
