"""Bulk generation as a job: shared by `/generate/rotational` and `/cache/bulk_generate`."""

from __future__ import annotations

from hybrid_audio.api.models import BulkRequest
from hybrid_audio.jobs import Job, JobInfo
from hybrid_audio.workspace import Workspace


def start_bulk_job(shared: Workspace, body: BulkRequest) -> JobInfo:
    """Run `generate_rotational_stems` in the background; the job reports its progress."""

    # Both lists omitted → the datasets; one given → only that one (an omitted list is empty),
    # so "these five names" never silently becomes "these names and every developer".
    names, developers = body.names, body.developers
    if (names is None) != (developers is None):
        names, developers = names or [], developers or []

    def work(job: Job) -> dict:
        shared.jobs_log.write("job_started", job=job.id, kind=job.kind)
        try:
            report = shared.generator.generate_rotational_stems(
                names=names, developers=developers, job=job
            )
        except BaseException as error:
            shared.jobs_log.write("job_failed", job=job.id, error=str(error))
            raise
        shared.jobs_log.write(
            "job_done",
            job=job.id,
            created=report.created,
            cached=report.cached,
            failed=len(report.failed),
        )
        return report.model_dump()

    return shared.jobs.submit("bulk_generate", work).info()
