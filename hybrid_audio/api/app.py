"""`create_app(settings)`: the FastAPI application over one set of core objects.

Routers are mounted with the key check as a dependency (all but `/health`); errors use one
envelope (`errors.py`); bodies are size-limited and every request is logged as one JSON
line (`middleware.py`). The core objects are built when the app starts and shared by all
requests; sync routes run in the threadpool, and the core is thread- and process-safe.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI

from hybrid_audio.api import errors
from hybrid_audio.api.auth import require_key
from hybrid_audio.api.dashboard_gate import DashboardGate
from hybrid_audio.api.middleware import BodyLimit, EnvelopeErrors, RequestLog
from hybrid_audio.api.models import ErrorResponse
from hybrid_audio.api.routers import assemble, cache, external, generate, health, jobs, rotation
from hybrid_audio.api.services import package_version
from hybrid_audio.config import Settings
from hybrid_audio.engines import Engine
from hybrid_audio.logs import JsonlLog
from hybrid_audio.workspace import Workspace, set_current

_ERRORS = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in {
        400: "A body that cannot be parsed, or a malformed Range header",
        401: "Missing or wrong X-Internal-API-Key",
        404: "Not found",
        409: "Conflicts with stored state",
        413: "Body too large",
        416: "Range not satisfiable",
        422: "Invalid input",
        429: "Engine quota or rate limit",
        500: "Internal error (no details are disclosed)",
        503: "Engine unavailable or misconfigured",
    }.items()
}


def create_app(settings: Settings | None = None, engine: Engine | None = None) -> FastAPI:
    """The API for `settings` (environment by default); `engine` overrides the configured one."""
    settings = settings or Settings.from_env()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        workspace = Workspace.build(settings, engine)
        app.state.services = workspace
        set_current(workspace)  # the dashboard, mounted in this process, shares it
        try:
            yield
        finally:
            set_current(None)
            workspace.close()

    app = FastAPI(
        title="Hybrid Audio",
        version=package_version(),
        description="Personalized spoken messages from cached TTS stems, joined bit-exactly.",
        lifespan=lifespan,
        responses=_ERRORS,
    )
    errors.install(app)
    app.include_router(health.router)
    protected = [Depends(require_key)]
    for module in (generate, assemble, rotation, cache, external, jobs):
        app.include_router(module.router, dependencies=protected)
    dashboard = _mount_dashboard(app)
    # Added last = outermost: the log sees every request and its final status; the
    # dashboard's login gate answers HTML, so it sits outside the JSON error envelope.
    app.add_middleware(EnvelopeErrors)
    if dashboard:
        app.add_middleware(DashboardGate, key=settings.internal_api_key)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    api_log = JsonlLog(Path(settings.logs_dir) / "api.jsonl", settings.log_max_bytes)
    app.add_middleware(RequestLog, log=api_log)
    return app


#: The Panel app; it lives in the repository's app/ folder, beside this package.
DASHBOARD = Path(__file__).resolve().parents[2] / "app" / "dashboard.py"


def _mount_dashboard(app: FastAPI) -> bool:
    """Serve app/dashboard.py at /dashboard in this process (Panel ≥ 1.10, native ASGI).

    The dashboard then shares this process's Workspace (`workspace.current()`), so its jobs
    show in `/jobs`. Behind INTERNAL_API_KEY it needs a session from `/dashboard/login`.
    """
    if not DASHBOARD.is_file():
        return False
    from panel.io.fastapi import add_applications

    add_applications({"/dashboard": str(DASHBOARD)}, app=app, title="Hybrid Audio")
    return True
