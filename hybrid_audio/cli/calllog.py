"""The CLI's call log: one `cli_call` JSON line per invocation, in the user's state folder.

The log belongs to the user who runs the client, not to the folder it runs from nor to a
server: it goes to `$HYBRID_AUDIO_CLI_LOG_DIR`, else `$XDG_STATE_HOME/hybrid-audio/`, else
`~/.local/state/hybrid-audio/` (the XDG base-directory rule: a relative `XDG_STATE_HOME` is
ignored). `cli.jsonl` is rotated by size (`LOG_MAX_BYTES`, default 10 MiB; 3 backups) under an
`flock`, so concurrent invocations never interleave or lose lines. The key is never logged,
and a log that cannot be written never breaks the command.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

LOG_DIR_VAR = "HYBRID_AUDIO_CLI_LOG_DIR"
LOG_MAX_BYTES_VAR = "LOG_MAX_BYTES"
LOG_NAME = "cli.jsonl"
LOG_BACKUPS = 3
DEFAULT_MAX_BYTES = 10 * 1024 * 1024


@dataclass
class Invocation:
    """What this command did, gathered for its single `cli_call` log line."""

    started: float = field(default_factory=time.perf_counter)
    url: str | None = None
    method: str | None = None
    path: str | None = None
    status: int | None = None
    requests: int = 0
    error: str | None = None

    def record(self, method: str, path: str, status: int | None, *, lookup: bool = False) -> None:
        """Remember the first request (the route the command mirrors); count the rest.

        A lookup that succeeded (the CLI asking for kinds or streams) is only counted, so
        the line names the route the command is about."""
        self.requests += 1
        if lookup and status is not None and status < 400:
            return
        if self.method is None:
            self.method, self.path, self.status = method, path, status


def log_dir() -> Path:
    """The folder of `cli.jsonl`: the override, else the XDG state folder of this user."""
    override = os.environ.get(LOG_DIR_VAR, "").strip()
    if override:
        return Path(override).expanduser()
    state = Path(os.environ.get("XDG_STATE_HOME", "").strip())
    if not state.is_absolute():
        state = Path.home() / ".local" / "state"
    return state / "hybrid-audio"


def _open_locked(path: Path) -> int:
    """The current log file, locked; reopened if another writer rotated it meanwhile."""
    while True:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def append_line(path: Path, line: bytes, max_bytes: int) -> None:
    """Append one whole line under `flock`, rotating `x` → `x.1` → … past `max_bytes`."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = _open_locked(path)
    try:
        size = os.fstat(fd).st_size
        if size and size + len(line) > max_bytes:
            for index in range(LOG_BACKUPS - 1, 0, -1):
                older = path.with_name(f"{path.name}.{index}")
                if older.exists():
                    os.replace(older, path.with_name(f"{path.name}.{index + 1}"))
            os.replace(path, path.with_name(f"{path.name}.1"))
            fd_new = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            fcntl.flock(fd_new, fcntl.LOCK_EX)
            os.close(fd)
            fd = fd_new
        os.write(fd, line)
    finally:
        os.close(fd)


def _max_bytes() -> int:
    try:
        return int(os.environ.get(LOG_MAX_BYTES_VAR, "").strip() or DEFAULT_MAX_BYTES)
    except ValueError:
        return DEFAULT_MAX_BYTES


def write(call: Invocation, command: str, exit_code: int) -> None:
    """Append the invocation's `cli_call` line."""
    record: dict[str, object] = {
        "ts": datetime.now(UTC).isoformat(timespec="microseconds"),
        "event": "cli_call",
        "command": command,
        "url": call.url,
        "method": call.method,
        "path": call.path,
        "status": call.status,
        "requests": call.requests,
        "ms": round((time.perf_counter() - call.started) * 1000, 1),
        "exit_code": exit_code,
    }
    if call.error:
        record["error"] = call.error
    line = (json.dumps(record, ensure_ascii=False) + "\n").encode()
    with contextlib.suppress(OSError, RuntimeError):  # RuntimeError: no home folder
        append_line(log_dir() / LOG_NAME, line, _max_bytes())
