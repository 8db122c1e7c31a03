"""`X-Internal-API-Key`: required on every route but `/health` when INTERNAL_API_KEY is set.

The comparison is `hmac.compare_digest` on bytes, whose time does not depend on where the
first differing byte is, so the key cannot be guessed byte by byte from response times.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader

from hybrid_audio.api.errors import ApiError
from hybrid_audio.api.services import Shared
from hybrid_audio.api.session import COOKIE, session_token

HEADER = "X-Internal-API-Key"
_scheme = APIKeyHeader(
    name=HEADER, auto_error=False, description="Required when the server has a key."
)


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


def require_key(
    request: Request, given: Annotated[str | None, Depends(_scheme)], shared: Shared
) -> None:
    """Dependency of every protected router: the header, or the dashboard's session cookie
    (so the dashboard's audio players can load `/…/audio` by URL behind a key)."""
    expected = shared.settings.internal_api_key
    if not expected or keys_match(given, expected):
        return
    session = request.cookies.get(COOKIE)
    if session is not None and hmac.compare_digest(
        session.encode(), session_token(expected).encode()
    ):
        return
    reason = "missing" if not given else "wrong"
    raise ApiError(401, f"{reason} {HEADER} header", "unauthorized")
