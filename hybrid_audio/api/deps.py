"""FastAPI's way to the process's one `Workspace` (`app.state.workspace`), and the version.

Every route takes the workspace as `workspace: WorkspaceDep`; the object has that one name
in the API, the dashboard and notebooks. The dependency is `async` because it only reads an
attribute: FastAPI runs a sync dependency in the threadpool, a hop that cost more CPU than
many routes' own work.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated

from fastapi import Depends, Request

from hybrid_audio.workspace import Workspace


@cache
def package_version() -> str:
    """The installed version (looked up once: the lookup scans the import path)."""
    try:
        return version("hybrid-audio")
    except PackageNotFoundError:
        return "unknown"


async def workspace(request: Request) -> Workspace:
    """FastAPI dependency: the workspace the app built at start (`create_app`'s lifespan)."""
    return request.app.state.workspace


WorkspaceDep = Annotated[Workspace, Depends(workspace)]
