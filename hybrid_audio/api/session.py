"""The dashboard session cookie: its name, how it is set, cleared and read.

The cookie holds a random session id from `hybrid_audio.sessions.SessionStore` (never the
key nor anything derived from it). HttpOnly (no script reads it), SameSite=Strict (no other
site sends it), Path=/ (the audio routes under the API need it too), Max-Age = the session's
lifetime.
"""

from __future__ import annotations

from http.cookies import CookieError, SimpleCookie

from starlette.types import Scope

from hybrid_audio.api.origin import header

COOKIE = "hybrid_audio_session"


def set_cookie(token: str, max_age: int) -> str:
    """A Set-Cookie value for a new session."""
    return f"{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}"


def clear_cookie() -> str:
    """A Set-Cookie value that removes the session cookie."""
    return f"{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"


def session_token(scope: Scope) -> str | None:
    """The session id the request's Cookie header carries, if any."""
    raw = header(scope, b"cookie")
    if not raw:
        return None
    jar = SimpleCookie()
    try:
        jar.load(raw)
    except CookieError:
        return None
    morsel = jar.get(COOKIE)
    return morsel.value if morsel is not None else None
