"""FastAPI's way to the process's one `Workspace` (`app.state.workspace`), and the version.

Every route takes the workspace as `workspace: WorkspaceDep`; the object has that one name
in the API, the dashboard and notebooks.
"""

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


def workspace(request: Request) -> Workspace:
    """FastAPI dependency: the workspace the app built at start (`create_app`'s lifespan)."""
    return request.app.state.workspace


WorkspaceDep = Annotated[Workspace, Depends(workspace)]
