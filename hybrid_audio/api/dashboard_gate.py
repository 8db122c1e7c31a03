"""The access gate: every browser-facing rule that must hold before any route runs.

ASGI middleware in front of the API and the mounted Panel app. In order:

1. Without INTERNAL_API_KEY, a request whose `Host` is not a loopback name or the server's
   own address is refused with 421 (DNS rebinding; see `origin.py`).
2. A state-changing request that a browser made from another origin is refused with 403,
   key or not; a websocket must come from the server's own page (else closed, 1008).
3. `/components/<module>/<Component>/…` (Panel's component resources) answers only for the
   components in `ALLOWED_COMPONENTS`; anything else is the same 404, before Panel imports
   a module (which it would do for any installed module name).
4. With a key, every route the dashboard mounts — the routes the Panel app itself says it
   handles (`PanelASGI.handles`: the app, its websocket, autoload.js, metadata, /static,
   /components, favicon, …) and anything under /dashboard — and the OpenAPI docs need a
   session (the docs also take the key header). `/dashboard/login` shows a password form;
   the right key (constant-time) starts a session (`hybrid_audio.sessions`) and sets its
   cookie; `POST /dashboard/logout` ends it. Failed logins count against the client's
   allowance (`FailureLimiter`): over it, 429 with Retry-After.

API routes check the key or session themselves (`auth.require_key`), where they know which
one authorised the request.
"""

from __future__ import annotations

import html
from collections.abc import Awaitable, Callable
from typing import Protocol
from urllib.parse import parse_qs

from anyio import to_thread
from starlette.types import ASGIApp, Receive, Scope, Send

from hybrid_audio.api.auth import HEADER, try_key
from hybrid_audio.api.errors import envelope_body
from hybrid_audio.api.middleware import send_json
from hybrid_audio.api.origin import (
    SAFE_METHODS,
    cross_origin,
    from_own_page,
    header,
    host_allowed,
    host_name,
)
from hybrid_audio.api.session import clear_cookie, session_token, set_cookie
from hybrid_audio.database import StateDatabaseError
from hybrid_audio.sessions import FailureLimiter, SessionStore

PREFIX = "/dashboard"
LOGIN = "/dashboard/login"
LOGOUT = "/dashboard/logout"
COMPONENTS = "/components/"
#: `module.Component` names whose resources the dashboard serves under /components/. The
#: dashboard's own JS and CSS all come from /static (Panel and Bokeh bundles), so none is
#: needed today; a custom component that ships resources is added here by name.
ALLOWED_COMPONENTS: frozenset[str] = frozenset()
#: Largest login form read (the form has one field).
_LOGIN_BODY_LIMIT = 16_384

_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>Hybrid Audio — sign in</title>
<style>body{{font-family:sans-serif;max-width:24rem;margin:6rem auto}}
input,button{{font-size:1rem;padding:.4rem}} .error{{color:#b00020}}</style>
</head><body><h1>Hybrid Audio</h1>
<p>This dashboard needs the server's internal API key.</p>{error}
<form method="post" action="{action}">
<label>Key <input type="password" name="key" autofocus></label>
<button type="submit">Sign in</button></form></body></html>"""


class RouteOwner(Protocol):
    """What the gate needs of the mounted Panel app (`panel.io.asgi.PanelASGI`)."""

    def handles(self, scope: Scope) -> bool: ...


def component_allowed(path: str) -> bool:
    """Whether a /components/ path names an allowed `module/Component`."""
    parts = path[len(COMPONENTS) :].split("/")
    return len(parts) >= 4 and f"{parts[0]}.{parts[1]}" in ALLOWED_COMPONENTS


class AccessGate:
    """ASGI middleware applying the rules above; see the module docstring."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        key: str,
        sessions: SessionStore,
        limiter: FailureLimiter,
        dashboard: RouteOwner | None = None,
        docs_paths: frozenset[str] = frozenset(),
    ) -> None:
        self.app = app
        self.key = key
        self.sessions = sessions
        self.limiter = limiter
        self.dashboard = dashboard
        self.docs_paths = docs_paths

    def _is_dashboard(self, scope: Scope) -> bool:
        path = scope.get("path", "")
        if path == PREFIX or path.startswith(PREFIX + "/"):
            return True
        return self.dashboard is not None and self.dashboard.handles(scope)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        try:
            refusal = await self._refusal(scope, receive)
        except StateDatabaseError as error:
            refusal = _json(503, "unavailable", str(error))
        if refusal is None:
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
        else:
            await refusal(send)

    async def _refusal(self, scope: Scope, receive: Receive) -> Responder | None:
        """None to let the request through, else how to answer it."""
        path = scope.get("path", "")
        websocket = scope["type"] == "websocket"
        if not self.key and not host_allowed(scope):
            return _json(
                421,
                "misdirected_request",
                f"this server does not answer to the host {host_name(scope)!r}: without "
                "INTERNAL_API_KEY it answers only to localhost, 127.0.0.1, [::1] or its own "
                "address (a protection against DNS rebinding)",
            )
        if websocket and not from_own_page(scope):
            return _json(403, "forbidden", "websocket from another origin")
        if not websocket and scope["method"] not in SAFE_METHODS and cross_origin(scope):
            return _json(
                403,
                "cross_origin_refused",
                "a state-changing request from a page of another origin is refused",
            )
        dashboard = self._is_dashboard(scope)
        if dashboard and path.startswith(COMPONENTS) and not component_allowed(path):
            return _json(404, "not_found", "not found")
        if not self.key:
            return None
        if not websocket and path == LOGIN:
            return await self._login(scope, receive)
        if not websocket and path == LOGOUT:
            return await self._logout(scope)
        if dashboard:
            if await self._has_session(scope):
                return None
            if not websocket and scope["method"] in ("GET", "HEAD"):
                return _respond(303, b"", [(b"location", LOGIN.encode())])
            return _json(401, "unauthorized", f"sign in at {LOGIN}")
        if path in self.docs_paths:
            if await self._has_session(scope):
                return None
            given = header(scope, HEADER.lower().encode())
            if given:  # counted like any key: the docs are no way round the failure limit
                client = (scope.get("client") or ("",))[0]
                wait = await to_thread.run_sync(try_key, self.limiter, client, given, self.key)
                if wait is None:
                    return None
                if wait:
                    return _too_many(wait)
            return _json(401, "unauthorized", f"send {HEADER} or sign in at {LOGIN}")
        return None

    async def _has_session(self, scope: Scope) -> bool:
        token = session_token(scope)
        return bool(token) and await to_thread.run_sync(self.sessions.valid, token)

    async def _login(self, scope: Scope, receive: Receive) -> Responder:
        if scope["method"] != "POST":
            return _page(200, "")
        if not from_own_page(scope):
            return _page(403, "Sign in from this server's own login page.")
        client = (scope.get("client") or ("",))[0]
        body, more = b"", True
        while more and len(body) < _LOGIN_BODY_LIMIT:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        given = parse_qs(body.decode("utf-8", "replace")).get("key", [""])[0]
        wait = await to_thread.run_sync(try_key, self.limiter, client, given, self.key)
        if wait is not None:
            return _too_many(wait) if wait else _page(401, "That key is not right.")
        token = await to_thread.run_sync(self.sessions.create)
        cookie = set_cookie(token, self.sessions.ttl_seconds)
        return _respond(
            303, b"", [(b"location", PREFIX.encode()), (b"set-cookie", cookie.encode())]
        )

    async def _logout(self, scope: Scope) -> Responder:
        if scope["method"] != "POST":
            return _respond(405, b"", [(b"allow", b"POST")])
        if not from_own_page(scope):
            return _json(403, "cross_origin_refused", "log out from this server's own page")
        await to_thread.run_sync(self.sessions.end, session_token(scope))
        return _respond(
            303, b"", [(b"location", LOGIN.encode()), (b"set-cookie", clear_cookie().encode())]
        )


Responder = Callable[[Send], Awaitable[None]]


def _json(status: int, code: str, message: str, headers: list | None = None) -> Responder:
    async def respond(send: Send) -> None:
        await send_json(send, status, envelope_body(code, message), headers)

    return respond


def _too_many(wait: int) -> Responder:
    return _json(
        429,
        "rate_limited",
        f"too many failed sign-ins from this address; try again in {wait} s",
        [(b"retry-after", str(wait).encode())],
    )


def _page(status: int, error: str) -> Responder:
    note = f'<p class="error">{html.escape(error)}</p>' if error else ""
    text = _PAGE.format(error=note, action=html.escape(LOGIN))
    return _respond(status, text.encode(), [(b"content-type", b"text/html; charset=utf-8")])


def _respond(status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> Responder:
    async def respond(send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-length", str(len(body)).encode()),
                    (b"cache-control", b"no-store"),
                    *headers,
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return respond
