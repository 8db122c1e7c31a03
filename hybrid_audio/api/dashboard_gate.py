"""Keep the dashboard behind INTERNAL_API_KEY: a login page and a session cookie.

Browsers cannot send a custom header on a page load or a websocket, so the dashboard uses
a cookie instead: `/dashboard/login` shows a password form; the right key (compared in
constant time) sets an HttpOnly, SameSite=Strict cookie holding a keyed hash of the key
(never the key itself), and every `/dashboard…` request and websocket must carry it.
Without a key configured the gate lets everything through (the server then only binds
loopback).
"""

from __future__ import annotations

import hmac
import html
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Receive, Scope, Send

from hybrid_audio.api.auth import keys_match
from hybrid_audio.api.session import COOKIE, session_token

PREFIX = "/dashboard"
LOGIN = "/dashboard/login"

_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>Hybrid Audio — sign in</title>
<style>body{{font-family:sans-serif;max-width:24rem;margin:6rem auto}}
input,button{{font-size:1rem;padding:.4rem}} .error{{color:#b00020}}</style>
</head><body><h1>Hybrid Audio</h1>
<p>This dashboard needs the server's internal API key.</p>{error}
<form method="post" action="{action}">
<label>Key <input type="password" name="key" autofocus></label>
<button type="submit">Sign in</button></form></body></html>"""


class DashboardGate:
    """ASGI middleware in front of the mounted Panel app."""

    def __init__(self, app: ASGIApp, key: str) -> None:
        self.app = app
        self.key = key
        self.token = session_token(key) if key else ""

    def _has_session(self, scope: Scope) -> bool:
        cookies = dict(scope.get("headers", [])).get(b"cookie", b"").decode("latin-1")
        for part in cookies.split(";"):
            name, _, value = part.strip().partition("=")
            if name == COOKIE:
                return hmac.compare_digest(value.encode(), self.token.encode())
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        guarded = scope["type"] in ("http", "websocket") and (
            path == PREFIX or path.startswith(PREFIX + "/")
        )
        if not self.key or not guarded:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "http" and path == LOGIN:
            await self._login(scope, receive, send)
            return
        if self._has_session(scope):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await _respond(send, 303, b"", [(b"location", LOGIN.encode())])

    async def _login(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "POST":
            await _page(send, 200, "")
            return
        body, more = b"", True
        while more and len(body) < 16_384:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        given = parse_qs(body.decode("utf-8", "replace")).get("key", [""])[0]
        if not keys_match(given, self.key):
            await _page(send, 401, '<p class="error">That key is not right.</p>')
            return
        cookie = f"{COOKIE}={self.token}; Path=/; HttpOnly; SameSite=Strict"
        await _respond(
            send, 303, b"", [(b"location", PREFIX.encode()), (b"set-cookie", cookie.encode())]
        )


async def _page(send: Send, status: int, error: str) -> None:
    text = _PAGE.format(error=error, action=html.escape(LOGIN))
    await _respond(send, status, text.encode(), [(b"content-type", b"text/html; charset=utf-8")])


async def _respond(send: Send, status: int, body: bytes, headers: list) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-length", str(len(body)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})
