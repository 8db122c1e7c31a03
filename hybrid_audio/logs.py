"""JSON-lines audit logs: one object per line (`ts`, `event`, fields), rotated by size.

Every writer appends whole lines under an exclusive `flock` on the log file, so lines from
threads and processes never interleave, and rotation (`x.jsonl` → `x.jsonl.1` → …) happens
under the same lock. Values that are not JSON (paths, enums) are written as strings.
Callers must not pass secrets; nothing here can tell a key from a name.
"""

from __future__ import annotations

import fcntl
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


class JsonlLog:
    """An append-only JSON-lines file with size-based rotation."""

    def __init__(self, path: Path | str, max_bytes: int = 10 * 1024 * 1024, backups: int = 3):
        self.path = Path(path)
        self._name = os.fspath(self.path)  # os calls take it as is: no Path work per line
        self.max_bytes = max_bytes
        self.backups = backups

    def write(self, event: str, **fields: Any) -> None:
        """Append `{"ts", "event", **fields}` as one line."""
        record = {"ts": datetime.now(UTC).isoformat(timespec="microseconds"), "event": event}
        record.update(fields)
        line = (json.dumps(record, ensure_ascii=False, default=str) + "\n").encode()
        fd = self._open_locked()
        try:
            size = os.fstat(fd).st_size
            if size and size + len(line) > self.max_bytes:
                fd = self._rotate(fd)
            os.write(fd, line)
        finally:
            os.close(fd)  # releases the lock

    def _open_locked(self) -> int:
        """The current file, locked. Another writer may rotate it while we wait for the
        lock; then the descriptor points at a backup and we open the new file instead."""
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
        while True:
            try:
                fd = os.open(self._name, flags, 0o644)
            except FileNotFoundError:  # the folder is made on first use (or made again)
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self._name, flags, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                if os.stat(self._name).st_ino == os.fstat(fd).st_ino:
                    return fd
            except FileNotFoundError:
                pass
            os.close(fd)

    def _rotate(self, fd: int) -> int:
        """Shift backups up by one and start a fresh file; returns its locked descriptor.

        Called holding the lock on the old file (`fd`), which is released at the end.
        """
        for index in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{index + 1}"))
        if self.backups:
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink(missing_ok=True)
        fresh = self._open_locked()
        os.close(fd)
        return fresh

    def read(self) -> list[dict[str, Any]]:
        """The current file's records (not the rotated backups)."""
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line]
