"""`create_app(settings)`: the FastAPI application over one set of core objects.

Routers are mounted with the key check as a dependency (all but `/health`); errors use one
envelope (`errors.py`); bodies are size-limited and must arrive in bounded time, and every
request is logged as one JSON line (`middleware.py`); the access gate
(`dashboard_gate.py`) keeps the dashboard, its resource routes and the docs behind the key,
and refuses cross-origin changes and rebound Host names. The core objects are built when
the app starts and shared by all requests; sync routes run in the threadpool, and the core
is thread- and process-safe.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI

from hybrid_audio.api import errors
from hybrid_audio.api.auth import Access, require_key
from hybrid_audio.api.dashboard_gate import AccessGate, RouteOwner
from hybrid_audio.api.deps import package_version
from hybrid_audio.api.middleware import BodyLimit, EnvelopeErrors, ReadTimeout, RequestLog
from hybrid_audio.api.models import ErrorResponse
from hybrid_audio.api.routers import (
    assemble,
    cache,
    campaigns,
    datasets,
    generate,
    health,
    jobs,
    kinds,
    pronunciations,
    rotation,
    storage,
)
from hybrid_audio.config import Settings
from hybrid_audio.database import Database
from hybrid_audio.engines import Engine
from hybrid_audio.kinds import load as load_kinds
from hybrid_audio.logs import JsonlLog
from hybrid_audio.sessions import FailureLimiter, SessionStore
from hybrid_audio.workspace import Workspace, set_current

_ERRORS = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in {
        400: "A body that cannot be parsed, a malformed Range header, or a request line and "
        "headers over 16 KiB",
        401: "Missing or wrong X-Internal-API-Key",
        403: "A change from a page of another origin",
        404: "Not found",
        409: "Conflicts with stored state",
        413: "Body too large",
        416: "Range not satisfiable",
        422: "Invalid input",
        408: "The request body did not arrive in time",
        429: "Engine quota or rate limit, or too many wrong keys from this address",
        500: "Internal error (no details are disclosed)",
        503: "Engine unavailable or misconfigured, state database gone, a read-only folder, "
        "or the storage bucket unreachable or refusing (the message and details name it)",
        507: "A folder's disk is full (the message names the folder)",
    }.items()
}


#: Longest wait for the next part of a request body before answering 408.
BODY_READ_TIMEOUT = 30.0


def create_app(
    settings: Settings | None = None,
    engine: Engine | None = None,
    *,
    body_timeout: float = BODY_READ_TIMEOUT,
) -> FastAPI:
    """The API for `settings` (environment by default); `engine` overrides the configured one;
    `body_timeout`: seconds to wait for each part of a request body (then 408)."""
    settings = settings or Settings.from_env()
    load_kinds(settings)  # a bad kinds.json stops the start, not a later request

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        workspace = Workspace.build(settings, engine)
        app.state.workspace = workspace
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
    errors.install(app, guard=require_key)
    app.include_router(health.router)
    protected = [Depends(require_key)]
    routers = (generate, assemble, rotation, cache, storage, datasets, jobs, kinds)
    for module in (*routers, campaigns, pronunciations):
        app.include_router(module.router, dependencies=protected)
    dashboard = _mount_dashboard(app)
    database = Database(settings.database_path)  # sessions and failure counts, shared
    access = Access(
        key=settings.internal_api_key,
        sessions=SessionStore(database, settings.dashboard_session_seconds),
        limiter=FailureLimiter(database, settings.auth_failure_limit, settings.auth_failure_window),
    )
    app.state.access = access
    docs = {app.openapi_url, app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url}
    # Added last = outermost: the log sees every request and its final status; the
    # gate answers HTML (the login page), so it sits outside the JSON error envelope.
    app.add_middleware(EnvelopeErrors)
    app.add_middleware(
        AccessGate,
        key=access.key,
        sessions=access.sessions,
        limiter=access.limiter,
        dashboard=dashboard,
        docs_paths=frozenset(path for path in docs if path),
    )
    # Recipient lists may be longer than any other body: their two paths get their own limit.
    uploads = max(settings.max_body_bytes, campaigns.MAX_CAMPAIGN_BYTES)
    app.add_middleware(
        BodyLimit,
        max_bytes=settings.max_body_bytes,
        larger={"/campaigns": uploads, "/campaigns/preview": uploads},
    )
    app.add_middleware(ReadTimeout, seconds=body_timeout)
    api_log = JsonlLog(Path(settings.logs_dir) / "api.jsonl", settings.log_max_bytes)
    app.add_middleware(RequestLog, log=api_log)
    return app


#: The Panel app; it lives in the repository's app/ folder, beside this package.
DASHBOARD = Path(__file__).resolve().parents[2] / "app" / "dashboard.py"


def _mount_dashboard(app: FastAPI) -> RouteOwner | None:
    """Serve app/dashboard.py at /dashboard in this process (Panel ≥ 1.10, native ASGI).

    The dashboard then shares this process's Workspace (`workspace.current()`), so its jobs
    show in `/jobs`. Returns the mounted Panel app, which knows every route it answers (the
    page, its websocket, /static, /components, …): the gate puts all of them behind the
    key. Behind INTERNAL_API_KEY it needs a session from `/dashboard/login`.
    """
    if not DASHBOARD.is_file():
        return None
    from panel.io.fastapi import add_applications

    mounted = add_applications({"/dashboard": str(DASHBOARD)}, app=app, title="Hybrid Audio")
    return mounted.asgi
