"""The dashboard session cookie: its name and what it holds (never the key itself)."""

from __future__ import annotations

import hashlib
import hmac

COOKIE = "hybrid_audio_session"


def session_token(key: str) -> str:
    """An HMAC of a fixed label under the key: proves the holder knew the key."""
    return hmac.new(key.encode(), b"hybrid-audio dashboard session", hashlib.sha256).hexdigest()
