"""Long-running work as jobs: one persisted store, progress, errors, ETA, cancellation.

Every job — bulk generation today; campaigns, storage syncs and Dask runs later — is a row
of the `jobs` table in the state database: kind, state, done/total, the first
`MAX_STORED_ERRORS` errors and their count, a small JSON of parameters (never the inputs
themselves: a bulk job records how many names it was given, not the names), the owner
process (pid and start time) and timestamps. So `GET /jobs/{id}` answers for jobs of any
process sharing the database, and after a crash the job still exists:

- A `Job` is a param object, so the dashboard can watch `done` and `state` and the API can
  snapshot it. Every state change is written at once; progress at most every
  `PROGRESS_INTERVAL` seconds (the final write carries the last count). A cancel asked
  through another process is a flag in the row, seen at the job's next progress write.
- `JobRunner` runs job functions on a small thread pool and reads jobs from the table; the
  `Job` objects of its own running jobs are live (fresher than the table), the others are
  snapshots of their rows. Inputs are handed to the function only (`submit(..., args)`),
  so nothing keeps them once the function returns.
- Jobs whose owner process died (kill -9, power cut) are marked `interrupted` when a runner
  starts, and whenever one is read while it still says `queued` or `running`. A process
  counts as dead when its pid is gone, a zombie, or now belongs to a process that started
  at another time (pids are reused, in containers especially).
- Finished jobs are pruned when a runner starts and after each job: those finished more
  than `MAX_JOB_AGE_SECONDS` ago (7 days), and all but the newest `MAX_FINISHED_JOBS` (1,000).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Any

import param
from pydantic import BaseModel

from hybrid_audio.database import Database
from hybrid_audio.logs import JsonlLog

#: Seconds between two progress writes of one job (state changes are written at once).
PROGRESS_INTERVAL = 0.25
#: Errors a job keeps (in memory and in its row); `error_count` counts them all.
MAX_STORED_ERRORS = 100
#: Finished jobs kept, newest first; older ones are deleted.
MAX_FINISHED_JOBS = 1_000
#: Finished jobs older than this are deleted (seconds: 7 days).
MAX_JOB_AGE_SECONDS = 7 * 24 * 3600
#: Largest parameters JSON a job may record: parameters describe, they do not carry data.
MAX_PARAMS_BYTES = 4 * 1024
#: Items a list in a stored result keeps; the full lengths are recorded under "truncated".
MAX_RESULT_ITEMS = 100


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"
    PENDING = "queued"  # the wave-1 name, an alias of QUEUED for Python callers


#: States after which a job never changes again.
FINISHED_STATES = frozenset(
    {JobState.DONE, JobState.FAILED, JobState.CANCELLED, JobState.INTERRUPTED}
)


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
    error_count: int = 0
    message: str
    params: dict[str, Any] = {}
    owner_pid: int | None = None
    created_at: float | None = None
    started_at: float | None
    finished_at: float | None
    eta_seconds: float | None
    result: Any = None


class Job(param.Parameterized):
    """One unit of long work and its progress, written to its row as it changes."""

    id = param.String(default="", constant=True, doc="Unique job id.")
    kind = param.String(default="", constant=True, doc="What the job does, e.g. bulk_generate.")
    state = param.Selector(default=JobState.QUEUED, objects=list(JobState), doc="Lifecycle.")
    done = param.Integer(default=0, bounds=(0, None), doc="Steps finished (ok or failed).")
    total = param.Integer(default=0, bounds=(0, None), doc="Steps in all (0 while unknown).")
    errors = param.List(default=[], item_type=str, doc="The first failed steps' messages.")
    error_count = param.Integer(default=0, bounds=(0, None), doc="Failed steps in all.")
    message = param.String(default="", doc="Latest human-readable status.")
    params = param.Dict(default={}, doc="What the job was asked to do (small, JSON).")
    owner_pid = param.Integer(default=None, allow_None=True, doc="Process running it.")
    created_at = param.Number(default=None, allow_None=True, doc="time.time() when queued.")
    started_at = param.Number(default=None, allow_None=True, doc="time.time() at start.")
    finished_at = param.Number(default=None, allow_None=True, doc="time.time() at the end.")
    result = param.Parameter(default=None, doc="What the job function returned.")

    def __init__(self, store: JobStore | None = None, **params: Any) -> None:
        params.setdefault("id", uuid.uuid4().hex[:12])
        super().__init__(**params)
        self._cancel = threading.Event()
        self._lock = threading.Lock()
        self._store = store
        self._written = 0.0
        # Steps `advance(hold=…)` counted but has not published yet, their latest message,
        # and when steps were last published (time.monotonic()).
        self._held = 0
        self._held_message = ""
        self._published = -math.inf  # the first steps are published at once
        # Set by the runner once the final state is in the row: a waiter that sees the job
        # finished can read the row and find it finished too.
        self._settled = threading.Event()
        if store is not None:
            self.param.watch(self._write, list(_PERSISTED))

    def advance(
        self, steps: int = 1, *, error: str | None = None, message: str = "", hold: float = 0.0
    ) -> None:
        """Record finished steps (thread-safe).

        With `hold` (seconds), steps without an error are only counted until `hold` seconds
        have passed since steps were last published (`done`, `message`, their watchers and
        the row) or until `publish()`: one param update per campaign row was a sixth of the
        row's CPU. A step with an error is published at once, with those held before it.
        """
        with self._lock:
            self._held += steps
            if message:
                self._held_message = message
            now = time.monotonic()
            if hold and not error and now - self._published < hold:
                return
            self._publish(now, error)

    def publish(self) -> None:
        """Publish the steps `advance(hold=…)` still holds (at the end of the work, and
        whenever it stops: done, paused, cancelled or failed)."""
        with self._lock:
            if self._held:
                self._publish(time.monotonic(), None)

    def _publish(self, now: float, error: str | None) -> None:
        """Under the lock: the held steps (and `error`) into the parameters, in one update."""
        updates: dict[str, Any] = {"done": self.done + self._held}
        if error:
            updates["error_count"] = self.error_count + 1
            if len(self.errors) < MAX_STORED_ERRORS:
                updates["errors"] = [*self.errors, error]
        if self._held_message:
            updates["message"] = self._held_message
        self._held, self._held_message, self._published = 0, "", now
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
    def finished(self) -> bool:
        """Ended, and (for a job this process runs) its final state written to its row."""
        if self._store is not None and not self._settled.is_set():
            return False
        return self.state in FINISHED_STATES and self.finished_at is not None

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
            error_count=self.error_count,
            message=self.message,
            params=dict(self.params),
            owner_pid=self.owner_pid,
            created_at=self.created_at,
            started_at=self.started_at,
            finished_at=self.finished_at,
            eta_seconds=self.eta_seconds,
            result=self.result if isinstance(self.result, str | int | float | dict) else None,
        )

    def _write(self, *events: param.parameterized.Event) -> None:
        """Persist this job: at once on a state change, else at most every interval."""
        assert self._store is not None
        now = time.monotonic()
        urgent = any(e.name in ("state", "finished_at") for e in events)
        if not urgent and now - self._written < PROGRESS_INTERVAL:
            return
        self._written = now
        if self._store.update(self):
            self._cancel.set()  # asked through the table, maybe by another process


#: The parameters a row mirrors; a change of any of them may be written.
_PERSISTED = ("state", "done", "total", "errors", "error_count", "message", "finished_at")


def _process_start(pid: int) -> str | None:
    """When process `pid` started ("" where /proc is absent), or None if it is not running.

    A zombie counts as not running: a parent that has not reaped its killed child would
    otherwise keep the child's jobs "running" forever.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, owned by another user
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return "" if not Path("/proc/self/stat").exists() else None
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (command) "
    return None if fields[0] in ("Z", "X") else fields[19]  # state, …, starttime (field 22)


def _compact(result: Any) -> Any:
    """`result` for storage: lists in a dict result cut to `MAX_RESULT_ITEMS` items."""
    if not isinstance(result, dict):
        return result if isinstance(result, str | int | float) else None
    truncated = {
        k: len(v) for k, v in result.items() if isinstance(v, list) and len(v) > MAX_RESULT_ITEMS
    }
    if not truncated:
        return result
    cut = {k: v[:MAX_RESULT_ITEMS] if k in truncated else v for k, v in result.items()}
    return {**cut, "truncated": truncated}


class JobStore:
    """The `jobs` table: rows in, rows and snapshots out."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.pid = os.getpid()
        self.process_start = _process_start(self.pid) or ""
        # Snapshots handed out and still referenced: a job read twice is the same object,
        # and `refresh()` keeps the unfinished ones up to date with their rows.
        self._snapshots: weakref.WeakValueDictionary[str, Job] = weakref.WeakValueDictionary()
        self._snapshots_lock = threading.Lock()

    def insert(self, job: Job) -> None:
        params = json.dumps(job.params, ensure_ascii=False, sort_keys=True)
        if len(params.encode()) > MAX_PARAMS_BYTES:
            raise ValueError(f"job parameters are limited to {MAX_PARAMS_BYTES} bytes of JSON")
        with self.database.write() as db:
            db.execute(
                "INSERT INTO jobs (id, kind, state, done, total, errors, error_count, message,"
                " params, owner_pid, owner_start, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, '[]', 0, '', ?, ?, ?, ?, ?)",
                (
                    job.id,
                    job.kind,
                    str(job.state),
                    job.done,
                    job.total,
                    params,
                    self.pid,
                    self.process_start,
                    job.created_at,
                    job.created_at,
                ),
            )

    def update(self, job: Job) -> bool:
        """Write the job's progress and state; True if a cancel was asked through the row."""
        result = None
        if job.state in FINISHED_STATES:
            result = json.dumps(_compact(job.result), ensure_ascii=False, default=str)
        with self.database.write() as db:
            row = db.execute(
                "UPDATE jobs SET state = ?, done = ?, total = ?, errors = ?, error_count = ?,"
                " message = ?, result = ?, started_at = ?, finished_at = ?, updated_at = ?"
                " WHERE id = ? RETURNING cancel_requested",
                (
                    str(job.state),
                    job.done,
                    job.total,
                    json.dumps(job.errors, ensure_ascii=False),
                    job.error_count,
                    job.message,
                    result,
                    job.started_at,
                    job.finished_at,
                    time.time(),
                    job.id,
                ),
            ).fetchone()
        return bool(row and row[0])

    def request_cancel(self, job_id: str) -> None:
        with self.database.write() as db:
            db.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))

    def get(self, job_id: str) -> Job | None:
        row = self._rows("WHERE id = ?", (job_id,))
        return self._job(row[0]) if row else None

    def page(self, offset: int, limit: int) -> list[Job]:
        """Jobs newest first."""
        rows = self._rows("ORDER BY created_at DESC, id LIMIT ? OFFSET ?", (limit, offset))
        return [self._job(row) for row in rows]

    def count(self) -> int:
        return self.database.connection().execute("SELECT count(*) FROM jobs").fetchone()[0]

    def _select(self, clause: str, args: tuple[Any, ...]) -> list[dict[str, Any]]:
        cursor = self.database.connection().execute(f"SELECT * FROM jobs {clause}", args)
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def _rows(self, clause: str, args: tuple[Any, ...]) -> list[dict[str, Any]]:
        """Rows as dicts, after marking any orphan among them interrupted."""
        rows = self._select(clause, args)
        if self.mark_interrupted([r for r in rows if self._orphaned(r)]):
            rows = self._select(clause, args)
        return rows

    def _orphaned(self, row: Mapping[str, Any]) -> bool:
        """A queued or running job whose owner process is gone."""
        if row["state"] not in (JobState.QUEUED, JobState.RUNNING):
            return False
        if row["owner_pid"] == self.pid and row["owner_start"] == self.process_start:
            return False
        start = _process_start(row["owner_pid"])
        return start is None or (bool(start) and start != row["owner_start"])

    def mark_interrupted(self, orphans: Iterable[Mapping[str, Any]] | None = None) -> int:
        """Mark `orphans` (default: every queued/running job of a dead process) interrupted."""
        if orphans is None:
            active = (JobState.QUEUED.value, JobState.RUNNING.value)
            orphans = [
                r for r in self._select("WHERE state IN (?, ?)", active) if self._orphaned(r)
            ]
        dead = [(row["id"], row["owner_pid"]) for row in orphans]
        if not dead:
            return 0
        now = time.time()
        with self.database.write() as db:
            db.executemany(
                "UPDATE jobs SET state = ?, message = ?, finished_at = ?, updated_at = ?"
                " WHERE id = ? AND state IN (?, ?)",
                [
                    (
                        JobState.INTERRUPTED.value,
                        f"interrupted: the process running it (pid {pid}) stopped",
                        now,
                        now,
                        job_id,
                        JobState.QUEUED.value,
                        JobState.RUNNING.value,
                    )
                    for job_id, pid in dead
                ],
            )
        return len(dead)

    def prune(self) -> None:
        """Delete finished jobs older than the age limit or beyond the count limit."""
        finished = tuple(state.value for state in FINISHED_STATES)
        marks = ", ".join("?" * len(finished))
        with self.database.write() as db:
            db.execute(
                f"DELETE FROM jobs WHERE state IN ({marks}) AND finished_at < ?",
                (*finished, time.time() - MAX_JOB_AGE_SECONDS),
            )
            db.execute(
                f"DELETE FROM jobs WHERE state IN ({marks}) AND id NOT IN (SELECT id FROM jobs"
                f" WHERE state IN ({marks}) ORDER BY finished_at DESC LIMIT ?)",
                (*finished, *finished, MAX_FINISHED_JOBS),
            )

    def refresh(self) -> None:
        """Bring every unfinished snapshot still in use up to date with its row (jobs that
        another process runs: their progress reaches this process's watchers)."""
        with self._snapshots_lock:
            followed = [job.id for job in self._snapshots.values() if not job.finished]
        if followed:
            marks = ", ".join("?" * len(followed))
            for row in self._rows(f"WHERE id IN ({marks})", tuple(followed)):
                self._job(row)  # updates the snapshot in place

    def _job(self, row: Mapping[str, Any]) -> Job:
        """The snapshot `Job` of a row (not live, never written back), updated in place
        when one is already in use, so watchers of it see the row's changes."""
        values = {
            "state": JobState(row["state"]),
            "done": row["done"],
            "total": row["total"],
            "errors": json.loads(row["errors"]),
            "error_count": row["error_count"],
            "message": row["message"],
            "started_at": row["started_at"],
            "finished_at": row["finished_at"],
            "result": None if row["result"] is None else json.loads(row["result"]),
        }
        with self._snapshots_lock:
            job = self._snapshots.get(row["id"])
            if job is None:
                job = Job(
                    id=row["id"],
                    kind=row["kind"],
                    params=json.loads(row["params"]),
                    owner_pid=row["owner_pid"],
                    created_at=row["created_at"],
                    **values,
                )
                self._snapshots[job.id] = job
                return job
        job.param.update(**values)
        return job


class JobRunner:
    """Runs job functions in background threads; reads every job from the job store.

    Without a `database` the jobs live in a private temporary database, removed at
    `shutdown()` (tests, throwaway scripts); a workspace passes the state database.
    """

    def __init__(self, database: Database | None = None, max_workers: int = 2) -> None:
        self._scratch = None
        if database is None:
            self._scratch = tempfile.mkdtemp(prefix="hybrid-audio-jobs-")
            database = Database(Path(self._scratch) / "jobs.sqlite")
        self.store = JobStore(database)
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="job")
        self._live: dict[str, Job] = {}
        self._lock = threading.Lock()
        self.store.mark_interrupted()
        self.store.prune()

    def submit(
        self,
        kind: str,
        fn: Callable[..., Any],
        total: int = 0,
        *,
        params: Mapping[str, Any] | None = None,
        args: tuple[Any, ...] = (),
    ) -> Job:
        """Start `fn(job, *args)` in the background and return its job at once.

        `params` (small, JSON) describe the job in its row; `args` are its inputs, passed
        to `fn` only and dropped when it returns.
        """
        job = Job(
            self.store,
            kind=kind,
            total=total,
            params=dict(params or {}),
            owner_pid=self.store.pid,
            created_at=time.time(),
        )
        self.store.insert(job)
        with self._lock:
            self._live[job.id] = job
        self._pool.submit(self._run, job, fn, args)
        return job

    def _run(self, job: Job, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        try:
            if job.cancel_requested:
                raise JobCancelledError(job.id)
            job.param.update(state=JobState.RUNNING, started_at=time.time())
            result = fn(job, *args)
        except JobCancelledError:
            job.param.update(state=JobState.CANCELLED, message="cancelled", finished_at=time.time())
        except Exception as error:  # the job's failure is data, not a crash of the runner
            job.param.update(
                state=JobState.FAILED,
                errors=[*job.errors, f"{type(error).__name__}: {error}"][-MAX_STORED_ERRORS:],
                error_count=job.error_count + 1,
                message=str(error),
                finished_at=time.time(),
            )
        else:
            job.param.update(state=JobState.DONE, result=result, finished_at=time.time())
        finally:
            job._settled.set()
            with self._lock:
                self._live.pop(job.id, None)
            self.store.prune()

    def get(self, job_id: str) -> Job:
        """This process's live job, or a snapshot of any job in the store."""
        with self._lock:
            live = self._live.get(job_id)
        if live is not None:
            return live
        job = self.store.get(job_id)
        if job is None:
            raise KeyError(f"no job {job_id!r}")
        return job

    def list(self, offset: int = 0, limit: int = MAX_FINISHED_JOBS) -> list[Job]:
        """Jobs newest first (live objects for this process's running ones)."""
        with self._lock:
            live = dict(self._live)
        return [live.get(job.id, job) for job in self.store.page(offset, limit)]

    def count(self) -> int:
        return self.store.count()

    def refresh(self) -> None:
        """Bring the jobs other processes run, as read here, up to date with their rows."""
        self.store.refresh()

    def cancel(self, job_id: str) -> Job:
        """Ask a job to stop, whichever process runs it; a finished job is left as it is."""
        job = self.get(job_id)
        if not job.finished:
            job.cancel()
            self.store.request_cancel(job_id)
        return self.get(job_id)

    def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """Block until the job has finished (for scripts and tests)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not (job := self.get(job_id)).finished:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job.state} after {timeout} s")
            time.sleep(0.01)
        return job

    def shutdown(self) -> None:
        """Cancel this process's jobs, wait for them, and mark never-started ones cancelled."""
        with self._lock:
            live = list(self._live.values())
        for job in live:
            job.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)
        for job in live:
            if not job.finished:
                job.param.update(
                    state=JobState.CANCELLED,
                    message="cancelled: the server stopped before it started",
                    finished_at=time.time(),
                )
                job._settled.set()
        if self._scratch is not None:
            self.store.database.close()
            shutil.rmtree(self._scratch, ignore_errors=True)


@contextmanager
def logged(log: JsonlLog, event: str, job: Job, **fields: Any) -> Iterator[dict[str, Any]]:
    """A job's body between `<event>_started` and `<event>_done` (with what the body put in
    the dict it is given) or `<event>_failed` (the error, `cancelled` for a cancel, and how
    far it got): the lines a job writes to its log whoever started it (API, dashboard,
    notebook, script)."""
    fields = {"job": job.id, **fields}
    log.write(f"{event}_started", **fields)
    outcome: dict[str, Any] = {}
    try:
        yield outcome
    except BaseException as error:
        reason = "cancelled" if isinstance(error, JobCancelledError) else str(error)
        log.write(f"{event}_failed", **fields, error=reason, done=job.done)
        raise
    log.write(f"{event}_done", **fields, **outcome)
