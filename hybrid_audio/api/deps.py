"""FastAPI access to the process's `Workspace` (the shared core objects)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Annotated

from fastapi import Depends, Request

from hybrid_audio.workspace import Workspace


def package_version() -> str:
    try:
        return version("hybrid-audio")
    except PackageNotFoundError:
        return "unknown"


def services(request: Request) -> Workspace:
    """FastAPI dependency: the process's shared core objects."""
    return request.app.state.services


Shared = Annotated[Workspace, Depends(services)]
