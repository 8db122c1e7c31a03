"""`X-Internal-API-Key`: required on every route but `/health` when INTERNAL_API_KEY is set.

The comparison is `hmac.compare_digest` on bytes, whose time does not depend on where the
first differing byte is, so the key cannot be guessed byte by byte from response times.
A client that sends wrong keys too often is refused for a while (429 with Retry-After; the
count is in the state database, shared by every server process, see
`hybrid_audio.sessions.FailureLimiter`) — even with the right key, or the refusal itself
would tell a guesser when it found the key.

Browsers use the dashboard's session cookie instead (an `<audio>` cannot send a header).
A state-changing request authorised by that cookie must show that it comes from this
server's own page (`origin.from_own_page`): a page on another port of the same host gets
the SameSite=Strict cookie too, and must not be able to change anything with it.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from anyio import to_thread
from fastapi import HTTPException
from fastapi.security import APIKeyHeader
from starlette.requests import HTTPConnection

from hybrid_audio.api.errors import ApiError
from hybrid_audio.api.origin import SAFE_METHODS, from_own_page
from hybrid_audio.api.session import session_token
from hybrid_audio.sessions import FailureLimiter, SessionStore

HEADER = "X-Internal-API-Key"


@dataclass(frozen=True)
class Access:
    """The key, the shared session store and failure counter (`app.state.access`).

    The key is the one the access gate checks, read once when the app is made.
    """

    key: str
    sessions: SessionStore
    limiter: FailureLimiter


def keys_match(given: str | None, expected: str) -> bool:
    """Constant-time comparison of a presented key with the configured one.

    HTTP header values arrive decoded as latin-1, so the bytes a UTF-8 client sent are
    `given.encode("latin-1")`; text passed in directly is compared as UTF-8. Both
    comparisons always run (`|`, not `or`), so the time does not depend on which matched.
    """
    wanted = expected.encode()
    text = given or ""
    as_text = hmac.compare_digest(text.encode(), wanted)
    try:
        as_header = hmac.compare_digest(text.encode("latin-1"), wanted)
    except UnicodeEncodeError:
        as_header = False
    return as_text | as_header


def try_key(limiter: FailureLimiter, client: str, given: str, expected: str) -> int | None:
    """One key attempt by `client`, counted against its allowance: None if it is let in;
    otherwise the seconds it must wait (0: the key was wrong, but it may try again now).

    A client already held off is refused even with the right key, or the refusal itself
    would tell a guesser when it found the key.
    """
    if wait := limiter.retry_after(client):
        return wait
    if keys_match(given, expected):
        return None
    return limiter.record(client)


def too_many_failures(wait: int) -> HTTPException:
    """The 429 a client gets after too many wrong keys."""
    return HTTPException(
        429,
        f"too many wrong {HEADER} values from this address; try again in {wait} s",
        headers={"Retry-After": str(wait)},
    )


class KeyCheck(APIKeyHeader):
    """The key check as one dependency that is also the OpenAPI security scheme.

    FastAPI solves every sub-dependency per request: the header scheme, the workspace and
    the check as three dependencies cost ~20 µs more CPU per request than this one (stubbed
    assemble, in-process ASGI, interleaved). As the scheme's own `__call__` the check reads
    the header and `Access` directly; the OpenAPI document is unchanged (scheme
    `APIKeyHeader`, header `X-Internal-API-Key`).
    """

    async def __call__(self, request: HTTPConnection) -> None:
        """The header, or a dashboard session.

        `async` so that the common case costs no threadpool hop: the right key is checked
        here, then the client's recent failures are read from the state database (a WAL
        read, which does not wait for writers). A wrong key is counted (a database write,
        which may wait for the lock) in the threadpool.
        """
        access: Access = request.app.state.access
        expected = access.key
        if not expected:
            return
        given = request.headers.get(HEADER)
        if given:
            client = request.client.host if request.client else ""
            if keys_match(given, expected):
                wait = access.limiter.retry_after(client)  # held off: refused even so
                if not wait:
                    return
            else:
                wait = await to_thread.run_sync(try_key, access.limiter, client, given, expected)
            if wait:
                raise too_many_failures(wait)
            raise ApiError(401, f"wrong {HEADER} header", "unauthorized")
        if access.sessions.valid(session_token(request.scope)):
            if request.scope["method"] not in SAFE_METHODS and not from_own_page(request.scope):
                raise ApiError(
                    403,
                    "a change authorised by the dashboard session must come from this "
                    f"server's own pages; other clients send {HEADER}",
                    "cross_origin_refused",
                )
            return
        raise ApiError(401, f"missing {HEADER} header", "unauthorized")


#: Dependency of every protected router (`app.py`).
require_key = KeyCheck(
    name=HEADER,
    scheme_name="APIKeyHeader",
    auto_error=False,
    description="Required when the server has a key.",
)
