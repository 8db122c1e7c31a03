"""Crash-safe file writes: temp file in the same folder, fsync, then rename or link.

Temp names carry the writer's pid (`.<name>.<pid>.<random>.tmp`) so a sweep can tell the
leftovers of a killed writer from a write in progress.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

TEMP_SUFFIX = ".tmp"


def write_temp(target: Path, data: bytes) -> Path:
    """`data` in a fsynced temp file beside `target` (same folder, so rename is atomic)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex}{TEMP_SUFFIX}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def fsync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Replace `path` with `data`: readers see the old file or the new one, never half."""
    tmp = write_temp(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)


def writer_is_gone(temp: Path) -> bool:
    """Was this temp file left by a process that no longer exists?"""
    try:
        pid = int(temp.name.split(".")[-3])
        os.kill(pid, 0)
    except (ValueError, IndexError, ProcessLookupError):
        return True
    except PermissionError:
        return False  # alive, owned by someone else
    return False
