"""Workspace: the core objects one process shares, built once from `Settings`.

The API and the dashboard use the same workspace when they run in one process (so a job
started in the dashboard shows in `/jobs`); scripts and notebooks build their own. Nothing
here knows about HTTP or Panel.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from hybrid_audio.assembly import Assembler
from hybrid_audio.config import Settings
from hybrid_audio.engines import Engine
from hybrid_audio.generation import Generator
from hybrid_audio.jobs import JobRunner
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
            jobs=JobRunner(max_workers=2),
            jobs_log=JsonlLog(Path(settings.logs_dir) / "jobs.jsonl", settings.log_max_bytes),
        )

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
