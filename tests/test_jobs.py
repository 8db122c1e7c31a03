"""Jobs: progress, ETA, failure as data, cancellation, and the persisted job store."""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path

import pytest

from hybrid_audio.database import Database
from hybrid_audio.jobs import (
    FINISHED_STATES,
    MAX_FINISHED_JOBS,
    MAX_JOB_AGE_SECONDS,
    MAX_STORED_ERRORS,
    Job,
    JobCancelledError,
    JobRunner,
    JobState,
    JobStore,
    logged,
)
from hybrid_audio.logs import JsonlLog


@pytest.fixture
def database(tmp_path: Path) -> Database:
    return Database(tmp_path / "state.sqlite3")


@pytest.fixture
def runner(database: Database):
    runner = JobRunner(database, max_workers=2)
    yield runner
    runner.shutdown()


def _row(database: Database, job_id: str) -> dict:
    cursor = database.connection().execute("SELECT * FROM jobs WHERE id = ?", (job_id,))
    names = [c[0] for c in cursor.description]
    return dict(zip(names, cursor.fetchone(), strict=True))


def _insert_running(database: Database, job_id: str, pid: int, start: str = "") -> None:
    """A row as a process that then died would have left it."""
    with database.write() as db:
        db.execute(
            "INSERT INTO jobs (id, kind, state, owner_pid, owner_start, created_at, updated_at)"
            " VALUES (?, 'bulk_generate', 'running', ?, ?, ?, ?)",
            (job_id, pid, start, time.time(), time.time()),
        )


def test_job_reports_progress_and_result(runner: JobRunner, database: Database) -> None:
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
    assert runner.get(job.id).info() == info  # read back from the table
    assert [j.id for j in runner.list()] == [job.id]
    row = _row(database, job.id)
    assert (row["state"], row["done"], row["total"], json.loads(row["result"])) == (
        "done",
        5,
        5,
        42,
    )
    assert row["owner_pid"] == os.getpid()


def test_failure_is_recorded_not_raised(runner: JobRunner) -> None:
    def work(job: Job) -> None:
        job.advance(error="stem.name.x: engine said no")
        raise RuntimeError("disk full")

    job = runner.wait(runner.submit("boom", work, total=2).id, timeout=5)
    assert job.state == JobState.FAILED
    assert job.errors == ["stem.name.x: engine said no", "RuntimeError: disk full"]
    assert job.error_count == 2


def test_cancel_stops_at_the_next_check(runner: JobRunner) -> None:
    started, release = threading.Event(), threading.Event()

    def work(job: Job) -> None:
        started.set()
        release.wait(5)
        job.raise_if_cancelled()
        job.advance()

    job = runner.submit("slow", work, total=1)
    started.wait(5)
    runner.cancel(job.id)
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


def test_held_steps_are_published_after_the_interval_with_an_error_or_by_publish() -> None:
    job = Job(kind="x")
    seen: list[int] = []
    job.param.watch(lambda event: seen.append(event.new), "done")
    job.advance(message="row 1", hold=3600)  # the first steps go out at once
    job.advance(message="row 2", hold=3600)
    job.advance(2, message="row 4", hold=3600)
    assert (seen, job.done, job.message) == ([1], 1, "row 1")
    job.advance(error="row 5: bad", message="row 5", hold=3600)  # an error goes out at once
    assert (seen, job.error_count, job.errors, job.message) == ([1, 5], 1, ["row 5: bad"], "row 5")
    job.advance(message="row 6", hold=3600)
    job.publish()
    job.publish()  # nothing held: no update
    assert (seen, job.message) == ([1, 5, 6], "row 6")
    job.advance(message="row 7", hold=1e-9)  # the interval has passed
    assert (seen, job.message) == ([1, 5, 6, 7], "row 7")


def test_unknown_job_is_a_key_error(runner: JobRunner) -> None:
    with pytest.raises(KeyError, match="no job"):
        runner.get("nope")


def test_pending_is_the_old_name_of_queued() -> None:
    """Python callers of wave 1 keep working; the API says "queued"."""
    assert JobState.PENDING is JobState.QUEUED
    assert Job().state == "queued"


def test_another_runner_on_the_database_sees_and_cancels_the_job(
    runner: JobRunner, database: Database
) -> None:
    """A second server process reads the job from the table and can cancel it."""
    started, stop = threading.Event(), threading.Event()

    def work(job: Job) -> None:
        started.set()
        while not stop.is_set():
            job.advance()
            job.raise_if_cancelled()
            time.sleep(0.01)

    job = runner.submit("loop", work)
    started.wait(5)
    other = JobRunner(Database(database.path))
    try:
        assert other.get(job.id).state == JobState.RUNNING
        other.cancel(job.id)
        assert other.wait(job.id, timeout=10).state == JobState.CANCELLED
    finally:
        stop.set()
        other.shutdown()
    assert job.state == JobState.CANCELLED


def test_errors_are_capped_and_counted(runner: JobRunner, database: Database) -> None:
    def work(job: Job) -> None:
        for i in range(MAX_STORED_ERRORS * 5):
            job.advance(error=f"stem {i} failed")

    job = runner.wait(runner.submit("errors", work).id, timeout=10)
    assert job.error_count == MAX_STORED_ERRORS * 5
    assert job.errors == [f"stem {i} failed" for i in range(MAX_STORED_ERRORS)]
    row = _row(database, job.id)
    assert row["error_count"] == MAX_STORED_ERRORS * 5
    assert len(json.loads(row["errors"])) == MAX_STORED_ERRORS


def test_a_job_does_not_keep_its_inputs(runner: JobRunner, database: Database) -> None:
    """The inputs go to the function only: once it returns nothing holds them."""

    class Names(list):
        pass

    names = Names(f"Name {i}" for i in range(10_000))
    alive = weakref.ref(names)

    def work(job: Job, given: list[str]) -> int:
        return len(given)

    job = runner.submit("count", work, params={"names": len(names)}, args=(names,))
    del names
    runner.wait(job.id, timeout=5)
    gc.collect()
    assert alive() is None
    assert job.result == 10_000
    assert json.loads(_row(database, job.id)["params"]) == {"names": 10_000}


def test_parameters_must_stay_small(runner: JobRunner) -> None:
    with pytest.raises(ValueError, match="limited"):
        runner.submit("big", lambda job: None, params={"names": ["x" * 100] * 100})


def test_a_job_of_a_dead_process_is_interrupted(database: Database) -> None:
    """A job left running by a killed process shows as interrupted, not running or missing."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    _insert_running(database, "deadbeef0001", child.pid)
    runner = JobRunner(database)
    try:
        job = runner.get("deadbeef0001")
    finally:
        runner.shutdown()
    assert job.state == JobState.INTERRUPTED
    assert f"pid {child.pid}" in job.message
    assert job.finished_at is not None


def test_an_unreaped_killed_process_counts_as_dead(database: Database) -> None:
    """A zombie (killed, not yet waited for) does not keep its jobs running."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    runner = JobRunner(database)
    try:
        start = Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
        _insert_running(database, "zombie000001", child.pid, start)
        assert runner.get("zombie000001").state == JobState.RUNNING  # alive: left alone
        os.kill(child.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while runner.get("zombie000001").state == JobState.RUNNING:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert runner.get("zombie000001").state == JobState.INTERRUPTED
    finally:
        child.wait()
        runner.shutdown()


def test_a_reused_pid_is_not_the_owner(database: Database) -> None:
    """Same pid, other start time (a restarted container): the old job is interrupted."""
    _insert_running(database, "reused000001", os.getpid(), start="1")
    runner = JobRunner(database)
    try:
        assert runner.get("reused000001").state == JobState.INTERRUPTED
    finally:
        runner.shutdown()


def test_finished_jobs_are_pruned_by_count_and_age(database: Database) -> None:
    now = time.time()
    with database.write() as db:
        db.executemany(
            "INSERT INTO jobs (id, kind, state, owner_pid, created_at, finished_at, updated_at)"
            " VALUES (?, 'x', 'done', 1, ?, ?, ?)",
            [(f"old{i:09d}", now - i, now - i, now) for i in range(MAX_FINISHED_JOBS + 50)],
        )
        db.execute(
            "INSERT INTO jobs (id, kind, state, owner_pid, created_at, finished_at, updated_at)"
            " VALUES ('ancient00000', 'x', 'failed', 1, 0, ?, 0)",
            (now - MAX_JOB_AGE_SECONDS - 60,),
        )
    runner = JobRunner(database)
    try:
        assert runner.count() == MAX_FINISHED_JOBS
        ids = {job.id for job in runner.list(0, MAX_FINISHED_JOBS)}
        assert "ancient00000" not in ids
        assert f"old{0:09d}" in ids
        assert f"old{MAX_FINISHED_JOBS:09d}" not in ids  # the oldest beyond the cap went
    finally:
        runner.shutdown()


def test_list_pages_newest_first(runner: JobRunner) -> None:
    jobs = [runner.submit("n", lambda job: None) for _ in range(5)]
    for job in jobs:
        runner.wait(job.id, timeout=5)
    newest_first = [job.id for job in reversed(jobs)]
    assert [j.id for j in runner.list(0, 2)] == newest_first[:2]
    assert [j.id for j in runner.list(2, 2)] == newest_first[2:4]
    assert runner.count() == 5


def test_a_waiter_sees_finished_only_once_the_row_says_so(
    runner: JobRunner, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: `wait()` returned as soon as the job's params said done, before the row
    was written, so another reader (a second server process) could still see `running`."""
    real_update = JobStore.update

    def slow_final_write(store: JobStore, job: Job) -> bool:
        if job.state in FINISHED_STATES:
            time.sleep(0.3)  # a busy database: the final write lands late
        return real_update(store, job)

    monkeypatch.setattr(JobStore, "update", slow_final_write)
    job = runner.wait(runner.submit("quick", lambda job: "ok").id, timeout=10)
    assert job.state == JobState.DONE
    assert _row(database, job.id)["state"] == "done"


def test_a_logged_job_writes_started_then_done_or_failed_with_how_far_it_got(
    tmp_path: Path,
) -> None:
    """The lines every logged job kind writes: what the body reports on success; on failure
    the error (`cancelled` for a cancel) and the progress reached; the error still raises."""
    log = JsonlLog(tmp_path / "jobs.jsonl")
    outcomes = {}
    for case in ("ok", "boom", "cancel"):
        job = Job(kind="bulk_generate", total=3)
        try:
            with logged(log, "job", job, source=case) as outcome:
                job.advance()
                if case == "boom":
                    raise ValueError("engine refused")
                if case == "cancel":
                    job.cancel()
                    job.raise_if_cancelled()
                outcome.update(created=1)
        except (ValueError, JobCancelledError) as error:
            outcomes[case] = type(error).__name__
    assert outcomes == {"boom": "ValueError", "cancel": "JobCancelledError"}
    lines = [json.loads(line) for line in (tmp_path / "jobs.jsonl").read_text().splitlines()]
    shown = [{k: v for k, v in line.items() if k not in ("ts", "job")} for line in lines]
    assert shown == [
        {"event": "job_started", "source": "ok"},
        {"event": "job_done", "source": "ok", "created": 1},
        {"event": "job_started", "source": "boom"},
        {"event": "job_failed", "source": "boom", "error": "engine refused", "done": 1},
        {"event": "job_started", "source": "cancel"},
        {"event": "job_failed", "source": "cancel", "error": "cancelled", "done": 1},
    ]
