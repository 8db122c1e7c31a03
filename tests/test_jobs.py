"""Jobs: progress, ETA, failure as data, cancellation."""

from __future__ import annotations

import threading
import time

import pytest

from hybrid_audio.jobs import Job, JobRunner, JobState


@pytest.fixture
def runner():
    runner = JobRunner(max_workers=2)
    yield runner
    runner.shutdown()


def test_job_reports_progress_and_result(runner: JobRunner) -> None:
    def work(job: Job) -> int:
        for i in range(5):
            job.advance(message=f"step {i}")
        return 42

    job = runner.submit("count", work, total=5)
    runner.wait(job.id, timeout=5)
    info = job.info()
    assert (info.state, info.done, info.total, info.result) == (JobState.DONE, 5, 5, 42)
    assert info.message == "step 4"
    assert info.eta_seconds == 0.0
    assert runner.get(job.id) is job
    assert job in runner.list()


def test_failure_is_recorded_not_raised(runner: JobRunner) -> None:
    def work(job: Job) -> None:
        job.advance(error="stem.name.x: engine said no")
        raise RuntimeError("disk full")

    job = runner.wait(runner.submit("boom", work, total=2).id, timeout=5)
    assert job.state == JobState.FAILED
    assert job.errors == ["stem.name.x: engine said no", "RuntimeError: disk full"]


def test_cancel_stops_at_the_next_check(runner: JobRunner) -> None:
    started, release = threading.Event(), threading.Event()

    def work(job: Job) -> None:
        started.set()
        release.wait(5)
        job.raise_if_cancelled()
        job.advance()

    job = runner.submit("slow", work, total=1)
    started.wait(5)
    job.cancel()
    release.set()
    runner.wait(job.id, timeout=5)
    assert job.state == JobState.CANCELLED
    assert job.done == 0


def test_eta_from_the_pace_so_far() -> None:
    job = Job(kind="x", total=10)
    assert job.eta_seconds is None
    job.param.update(state=JobState.RUNNING, started_at=time.time() - 10)
    job.advance(5)
    assert job.eta_seconds == pytest.approx(10, abs=0.5)  # 5 steps took 10 s; 5 remain


def test_unknown_job_is_a_key_error(runner: JobRunner) -> None:
    with pytest.raises(KeyError, match="no job"):
        runner.get("nope")
