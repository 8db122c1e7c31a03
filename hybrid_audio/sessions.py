"""Dashboard sessions and failed key checks, kept in the state database.

Both live in SQLite rather than in a process's memory so that every server process on one
state folder (`--workers N`, a second server) shares them: a login made through one process
is valid in all, a logout in one ends the session everywhere, and an attacker cannot
multiply the allowance of wrong keys by the number of processes.

A session is a random token (`secrets.token_urlsafe(32)`, 256 bits) with an expiry; the
table holds its sha256, never the token, so a copy of the database opens nothing. Failed key
checks (wrong API key, wrong dashboard login) are rows per client address; a client with
`limit` failures within the last `window` seconds is refused until the oldest leaves the
window (a sliding window: no burst at a window edge).
"""

from __future__ import annotations

import hashlib
import math
import secrets
import time

from hybrid_audio.database import Database


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class SessionStore:
    """Create, check and end dashboard sessions."""

    def __init__(self, db: Database, ttl_seconds: int) -> None:
        self.db = db
        self.ttl_seconds = ttl_seconds

    def create(self) -> str:
        """A new session's token (expired sessions are dropped on the way)."""
        token = secrets.token_urlsafe(32)
        now = time.time()
        with self.db.write() as conn:
            conn.execute("DELETE FROM dashboard_sessions WHERE expires_at <= ?", (now,))
            conn.execute(
                "INSERT INTO dashboard_sessions VALUES (?, ?, ?)",
                (_digest(token), now, now + self.ttl_seconds),
            )
        return token

    def valid(self, token: str | None) -> bool:
        """Whether `token` is a live session (a lookup by hash: no timing to learn from)."""
        if not token:
            return False
        row = (
            self.db.connection()
            .execute(
                "SELECT expires_at FROM dashboard_sessions WHERE token_sha256 = ?",
                (_digest(token),),
            )
            .fetchone()
        )
        return row is not None and row[0] > time.time()

    def end(self, token: str | None) -> None:
        """Log out: the session stops working in every process."""
        if token:
            with self.db.write() as conn:
                conn.execute(
                    "DELETE FROM dashboard_sessions WHERE token_sha256 = ?", (_digest(token),)
                )


class FailureLimiter:
    """At most `limit` failed key checks per client within `window` seconds (0 = no limit)."""

    def __init__(self, db: Database, limit: int, window: int) -> None:
        self.db = db
        self.limit = limit
        self.window = window

    def retry_after(self, client: str) -> int:
        """Seconds until `client` may try again; 0 if it may now."""
        if self.limit <= 0:
            return 0
        now = time.time()
        rows = (
            self.db.connection()
            .execute(
                "SELECT at FROM auth_failures WHERE client = ? AND at > ? ORDER BY at DESC LIMIT ?",
                (client, now - self.window, self.limit),
            )
            .fetchall()
        )
        if len(rows) < self.limit:
            return 0
        return max(1, math.ceil(rows[-1][0] + self.window - now))

    def record(self, client: str) -> int:
        """Count one failure of `client`; the wait it must now observe (0 if none)."""
        if self.limit <= 0:
            return 0
        now = time.time()
        with self.db.write() as conn:
            conn.execute("DELETE FROM auth_failures WHERE at <= ?", (now - self.window,))
            conn.execute("INSERT INTO auth_failures VALUES (?, ?)", (client, now))
        return self.retry_after(client)
