"""Workspace: the core objects one process shares, built once from `Settings`.

The API and the dashboard use the same workspace when they run in one process (so a job
started in the dashboard shows in `/jobs`); scripts and notebooks build their own. Nothing
here knows about HTTP or Panel.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hybrid_audio.assembly import Assembler
from hybrid_audio.config import Settings
from hybrid_audio.database import Database
from hybrid_audio.engines import Engine
from hybrid_audio.generation import Generator
from hybrid_audio.jobs import Job, JobRunner
from hybrid_audio.logs import JsonlLog
from hybrid_audio.rotation import RotationEngine

_current: Workspace | None = None
_current_lock = threading.Lock()


@dataclass
class Workspace:
    settings: Settings
    generator: Generator
    assembler: Assembler
    rotation: RotationEngine
    jobs: JobRunner
    jobs_log: JsonlLog

    @classmethod
    def build(cls, settings: Settings, engine: Engine | None = None) -> Workspace:
        generator = Generator.from_settings(settings, engine=engine)
        assembler = Assembler(generator=generator)
        return cls(
            settings=settings,
            generator=generator,
            assembler=assembler,
            rotation=RotationEngine(
                settings=settings, seed=settings.rotation_seed, assembler=assembler
            ),
            jobs=JobRunner(Database(settings.database_path), max_workers=2),
            jobs_log=JsonlLog(Path(settings.logs_dir) / "jobs.jsonl", settings.log_max_bytes),
        )

    def start_bulk_generation(
        self,
        names: Sequence[str] | None = None,
        developers: Sequence[str] | None = None,
        *,
        source: str = "api",
    ) -> Job:
        """`generate_rotational_stems` as a background job, logged to jobs.jsonl.

        Both lists omitted → the datasets; one given → only that one (the omitted list is
        empty), so "these five names" never silently becomes "these names and every
        developer". Used by the API and the dashboard alike. The lists go to the job
        function only; the job's row records how many texts each held.
        """
        if (names is None) != (developers is None):
            names, developers = names or [], developers or []
        params = {
            "source": source,
            "names": "dataset" if names is None else len(names),
            "developers": "dataset" if developers is None else len(developers),
        }
        estimate = len(names or ()) + len(developers or ())  # the job corrects it once deduped
        return self.jobs.submit(
            "bulk_generate", self._bulk_work, estimate, params=params, args=(names, developers)
        )

    def _bulk_work(
        self, job: Job, names: Sequence[str] | None, developers: Sequence[str] | None
    ) -> dict:
        """The body of a bulk generation job, logged to jobs.jsonl."""
        self.jobs_log.write("job_started", job=job.id, kind=job.kind, **job.params)
        try:
            report = self.generator.generate_rotational_stems(names, developers, job=job)
        except BaseException as error:
            self.jobs_log.write("job_failed", job=job.id, error=str(error))
            raise
        self.jobs_log.write(
            "job_done",
            job=job.id,
            created=report.created,
            cached=report.cached,
            failed=len(report.failed),
        )
        return report.model_dump()

    def close(self) -> None:
        self.jobs.shutdown()


def set_current(workspace: Workspace | None) -> None:
    """Make `workspace` the one `current()` returns (the API server does, at start)."""
    global _current
    with _current_lock:
        _current = workspace


def installed() -> Workspace | None:
    """The workspace a server installed with `set_current`, if any (never builds one)."""
    return _current


def current(settings: Settings | None = None) -> Workspace:
    """The process's workspace: the server's, or one built from `settings` (environment)."""
    global _current
    with _current_lock:
        if _current is None:
            _current = Workspace.build(settings or Settings.from_env())
        return _current
