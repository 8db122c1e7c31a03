"""The core objects one API process shares, built once from `Settings`.

Routes get them through `Depends(services)`; nothing here knows about HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request

from hybrid_audio.assembly import Assembler
from hybrid_audio.config import Settings
from hybrid_audio.engines import Engine
from hybrid_audio.generation import Generator
from hybrid_audio.jobs import JobRunner
from hybrid_audio.logs import JsonlLog
from hybrid_audio.rotation import RotationEngine


def package_version() -> str:
    try:
        return version("hybrid-audio")
    except PackageNotFoundError:
        return "unknown"


@dataclass
class Services:
    settings: Settings
    generator: Generator
    assembler: Assembler
    rotation: RotationEngine
    jobs: JobRunner
    api_log: JsonlLog
    jobs_log: JsonlLog

    @classmethod
    def build(cls, settings: Settings, engine: Engine | None = None) -> Services:
        generator = Generator.from_settings(settings, engine=engine)
        assembler = Assembler(generator=generator)
        logs = Path(settings.logs_dir)
        return cls(
            settings=settings,
            generator=generator,
            assembler=assembler,
            rotation=RotationEngine(
                settings=settings, seed=settings.rotation_seed, assembler=assembler
            ),
            jobs=JobRunner(max_workers=2),
            api_log=JsonlLog(logs / "api.jsonl", settings.log_max_bytes),
            jobs_log=JsonlLog(logs / "jobs.jsonl", settings.log_max_bytes),
        )

    def close(self) -> None:
        self.jobs.shutdown()


def services(request: Request) -> Services:
    """FastAPI dependency: the process's shared core objects."""
    return request.app.state.services


Shared = Annotated[Services, Depends(services)]
