"""Long-running work as jobs: id, state, progress, errors, ETA, cancellation.

A `Job` is a param object, so the dashboard can watch `done` and `state` and the API can
snapshot it. `JobRunner` runs job functions on a small thread pool; the function receives
its `Job`, reports with `advance()` and checks `raise_if_cancelled()` between steps.
Jobs live in memory, in the process that runs them.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from enum import StrEnum
from typing import Any

import param
from pydantic import BaseModel


class JobState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class JobCancelledError(Exception):
    """Raised inside a job function when its job was cancelled."""


class JobInfo(BaseModel):
    """A snapshot of a job, safe to serialize."""

    id: str
    kind: str
    state: JobState
    done: int
    total: int
    errors: list[str]
    message: str
    started_at: float | None
    finished_at: float | None
    eta_seconds: float | None
    result: Any = None


class Job(param.Parameterized):
    """One unit of long work and its progress."""

    id = param.String(default="", constant=True, doc="Unique job id.")
    kind = param.String(default="", constant=True, doc="What the job does, e.g. bulk_generate.")
    state = param.Selector(default=JobState.PENDING, objects=list(JobState), doc="Lifecycle.")
    done = param.Integer(default=0, bounds=(0, None), doc="Steps finished (ok or failed).")
    total = param.Integer(default=0, bounds=(0, None), doc="Steps in all (0 while unknown).")
    errors = param.List(default=[], item_type=str, doc="One message per failed step.")
    message = param.String(default="", doc="Latest human-readable status.")
    started_at = param.Number(default=None, allow_None=True, doc="time.time() at start.")
    finished_at = param.Number(default=None, allow_None=True, doc="time.time() at the end.")
    result = param.Parameter(default=None, doc="What the job function returned.")

    def __init__(self, **params: Any) -> None:
        params.setdefault("id", uuid.uuid4().hex[:12])
        super().__init__(**params)
        self._cancel = threading.Event()
        self._lock = threading.Lock()

    def advance(self, steps: int = 1, *, error: str | None = None, message: str = "") -> None:
        """Record finished steps (thread-safe)."""
        with self._lock:
            updates: dict[str, Any] = {"done": self.done + steps}
            if error:
                updates["errors"] = [*self.errors, error]
            if message:
                updates["message"] = message
            self.param.update(**updates)

    def cancel(self) -> None:
        """Ask the job to stop at its next check."""
        self._cancel.set()

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    def raise_if_cancelled(self) -> None:
        if self._cancel.is_set():
            raise JobCancelledError(self.id)

    @property
    def eta_seconds(self) -> float | None:
        """Remaining time at the average pace so far, once there is a pace."""
        if self.started_at is None or not self.done or not self.total:
            return None
        if self.state != JobState.RUNNING:
            return 0.0
        elapsed = time.time() - self.started_at
        return elapsed / self.done * max(self.total - self.done, 0)

    def info(self) -> JobInfo:
        return JobInfo(
            id=self.id,
            kind=self.kind,
            state=self.state,
            done=self.done,
            total=self.total,
            errors=list(self.errors),
            message=self.message,
            started_at=self.started_at,
            finished_at=self.finished_at,
            eta_seconds=self.eta_seconds,
            result=self.result if isinstance(self.result, str | int | float | dict) else None,
        )


class JobRunner:
    """Runs job functions in background threads and keeps their `Job`s."""

    def __init__(self, max_workers: int = 2) -> None:
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="job")
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def submit(self, kind: str, fn: Callable[[Job], Any], total: int = 0) -> Job:
        """Start `fn(job)` in the background and return its job at once."""
        job = Job(kind=kind, total=total)
        with self._lock:
            self._jobs[job.id] = job
        self._pool.submit(self._run, job, fn)
        return job

    @staticmethod
    def _run(job: Job, fn: Callable[[Job], Any]) -> None:
        job.param.update(state=JobState.RUNNING, started_at=time.time())
        try:
            result = fn(job)
        except JobCancelledError:
            job.param.update(state=JobState.CANCELLED, message="cancelled")
        except Exception as error:  # the job's failure is data, not a crash of the runner
            job.param.update(
                state=JobState.FAILED,
                errors=[*job.errors, f"{type(error).__name__}: {error}"],
                message=str(error),
            )
        else:
            job.param.update(state=JobState.DONE, result=result)
        finally:
            job.finished_at = time.time()

    def get(self, job_id: str) -> Job:
        with self._lock:
            if job_id not in self._jobs:
                raise KeyError(f"no job {job_id!r}")
            return self._jobs[job_id]

    def list(self) -> list[Job]:
        with self._lock:
            return list(self._jobs.values())

    def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """Block until the job has finished (for scripts and tests)."""
        job = self.get(job_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        while job.finished_at is None:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job.state} after {timeout} s")
            time.sleep(0.01)
        return job

    def shutdown(self) -> None:
        for job in self.list():
            job.cancel()
        self._pool.shutdown(wait=True)
