"""The one file boundary: crash-safe writes, and reads that stay inside their folder.

Writes go to a temp file in the same folder, are fsynced, then renamed or linked into place.
Temp names carry the writer's pid (`.<name>.<pid>.<random>.tmp`) so a sweep can tell the
leftovers of a killed writer from a write in progress. A write the disk refuses (read-only,
full, over quota, not permitted) raises `StorageError`, which names the folder, and leaves
no temp file behind when the disk lets it be removed.

Reads of stored files (`read_inside`) never follow a symbolic link below their folder and
refuse anything that is not a regular file, so a link planted in `stems/` or `output/`
cannot make the server hand out another file.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import fnmatch
import itertools
import os
import platform
import re
import stat
import sys
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path, PurePosixPath

TEMP_SUFFIX = ".tmp"
#: Files a `SyncBatch` gathers for its fsync helper while the helper is busy: one hand-over
#: per message (a task, a wake-up, the helper taking the GIL) cost more CPU than the
#: fsyncs' Python around them. An idle helper is handed the files at once.
SYNC_CHUNK_FILES = 16


def _load_syncfs() -> Callable[[int], int] | None:
    """libc's `syncfs` where it reports write-back errors (Linux 5.8 and later), else None.

    One `syncfs` makes every file written to a file system durable with one journal commit,
    where an fsync per file commits once per file; PostgreSQL offers it for the same reason
    (`recovery_init_sync_method = syncfs`). Before 5.8 it did not report a failed write-back.
    """
    if sys.platform != "linux":
        return None
    release = tuple(int(part) for part in re.findall(r"\d+", platform.release())[:2])
    function = getattr(ctypes.CDLL(None, use_errno=True), "syncfs", None)
    if release < (5, 8) or function is None:
        return None
    function.argtypes, function.restype = [ctypes.c_int], ctypes.c_int
    return function


#: `syncfs(fd)`, or None where a `SyncBatch` fsyncs file by file.
SYNCFS = _load_syncfs()

#: Why a disk refuses a write, in words an operator acts on.
_REASONS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is used up",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}
#: The refusals that mean "no space" (507) rather than "not writable" (503).
NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


class StorageError(OSError):
    """A folder cannot take a write: full, over quota, read-only or not permitted."""

    def __init__(self, folder: Path, cause: OSError) -> None:
        super().__init__(cause.errno, _REASONS[cause.errno], str(folder))
        self.folder = Path(folder)

    @property
    def no_space(self) -> bool:
        return self.errno in NO_SPACE

    def describe(self, base: Path | None = None) -> str:
        """The message, with the folder shown relative to `base` when it is inside it."""
        folder = self.folder
        if base is not None and folder.is_relative_to(base):
            folder = folder.relative_to(base)
        return f"cannot write to the folder {folder}/: {self.strerror}; nothing was stored"

    def __str__(self) -> str:
        return self.describe()


class UnsafeFileError(OSError):
    """A stored file is a symbolic link, not a regular file, or reached through a link."""


@contextmanager
def storage_errors(folder: Path) -> Iterator[None]:
    """Turn the disk's refusals inside the block into `StorageError` naming `folder`."""
    try:
        yield
    except StorageError:
        raise
    except OSError as error:
        if error.errno not in _REASONS:
            raise
        raise StorageError(folder, error) from error


def discard(path: Path) -> None:
    """Remove `path` if the disk lets us; a leftover temp file is swept later."""
    with suppress(OSError):
        path.unlink(missing_ok=True)


def _unique() -> str:
    """A name part no other temp file of this process has (with its pid: of any process)."""
    return f"{next(_TEMP_NUMBERS)}{_TEMP_SALT}"


#: (the salt keeps a forked child, whose pid differs but counter is a copy, unique too)
_TEMP_NUMBERS = itertools.count()
_TEMP_SALT = uuid.uuid4().hex[:8]


def write_temp(target: Path, data: bytes | Iterable[bytes], *, sync: bool = True) -> Path:
    """`data` (bytes, or chunks of them: written as they come, so a file of any size is
    never held whole in memory) in a temp file beside `target` (same folder, so rename is
    atomic), fsynced unless `sync` is False (its durability then owed by a `SyncBatch`).
    A chunk source that raises leaves no temp file."""
    folder = target.parent
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{_unique()}{TEMP_SUFFIX}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    with storage_errors(folder):
        try:
            try:
                fd = os.open(tmp, flags, 0o666)
            except FileNotFoundError:  # the folder is made once, not checked every write
                folder.mkdir(parents=True, exist_ok=True)
                fd = os.open(tmp, flags, 0o666)
            try:
                chunks = (data,) if isinstance(data, bytes | bytearray | memoryview) else data
                for chunk in chunks:
                    with memoryview(chunk) as view:
                        while view:
                            view = view[os.write(fd, view) :]
                if sync:
                    os.fsync(fd)
            finally:
                os.close(fd)
        except BaseException:
            discard(tmp)
            raise
    return tmp


class SyncBatch:
    """Files written without fsync, made durable together before their records are
    committed (group commit).

    Where the kernel has `syncfs` (`SYNCFS`), `sync()` is one `syncfs` per file system the
    files' folders are on: the whole batch, files and folder entries, in one journal
    commit. A campaign on ext4 made ~25 % more messages a second so, with ~40 % less CPU
    per message: with a helper thread fsyncing each file while the next messages were
    made, each fsync forced a journal commit that the next file's creation then waited
    for. It also makes durable whatever else was written to that file system, so on a
    disk busy with other writers a batch waits for their data too.

    Elsewhere (or with `per_file=True`) added files are fsynced on a helper thread (fsync
    waits for the disk without the GIL), handed over at once while the helper is idle,
    else `SYNC_CHUNK_FILES` at a time; `sync()` hands over the rest, waits for those
    fsyncs, raises the first that failed, then fsyncs the folders.
    Whoever commits a record naming these files calls `sync()` first; a crash before that
    leaves files whose records were never committed, which the resume checks again.
    """

    def __init__(self, *, per_file: bool = False) -> None:
        self._syncfs = None if per_file else SYNCFS
        self._files: list[Path] = []
        self._unsent: list[Path] = []  # added, not yet handed to the helper
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None  # started by the first hand-over
        self._pending: list[Future[None]] = []

    def add(self, *paths: Path) -> None:
        with self._lock:
            self._files.extend(paths)
            if self._syncfs is not None:
                return
            self._unsent.extend(paths)
            idle = not self._pending or self._pending[-1].done()
            if idle or len(self._unsent) >= SYNC_CHUNK_FILES:
                self._hand_over()

    def _hand_over(self) -> None:
        """Under the lock: the helper fsyncs the files added since the last hand-over."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="sync-batch")
        paths, self._unsent = tuple(self._unsent), []
        self._pending.append(self._pool.submit(_fsync_files, paths))

    def sync(self) -> None:
        """Make every added file and its folder entry durable; a file removed since (a
        message kept as its manifest only) needs only its folder."""
        with self._lock:
            if self._unsent:
                self._hand_over()
            files, self._files = self._files, []
            pending, self._pending = self._pending, []
            pool, self._pool = self._pool, None
        try:
            for done in pending:
                done.result()
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
        folders = dict.fromkeys(path.parent for path in files)
        if self._syncfs is not None:
            _syncfs_folders(self._syncfs, folders)
            return
        for folder in folders:
            with storage_errors(folder):
                fsync_folder(folder)


def _syncfs_folders(syncfs: Callable[[int], int], folders: Iterable[Path]) -> None:
    """One `syncfs` per file system among `folders`."""
    synced: set[int] = set()
    for folder in folders:
        with storage_errors(folder):
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                device = os.fstat(fd).st_dev
                if device not in synced:
                    if syncfs(fd) != 0:
                        code = ctypes.get_errno()
                        raise OSError(code, os.strerror(code), str(folder))
                    synced.add(device)
            finally:
                os.close(fd)


def _fsync_files(paths: tuple[Path, ...]) -> None:
    """fsync each file (one that is gone needs nothing: its folder is synced later)."""
    for path in paths:
        with storage_errors(path.parent):
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def fsync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes | Iterable[bytes], *, sync: bool = True) -> None:
    """Replace `path` with `data` (bytes or chunks, as `write_temp` takes them): readers see
    the old file or the new one, never half.
    Made durable (file and folder fsynced) unless `sync` is False: then a `SyncBatch` owes it."""
    tmp = write_temp(path, data, sync=sync)
    with storage_errors(path.parent):
        try:
            os.replace(tmp, path)
        except BaseException:
            discard(tmp)
            raise
        if sync:
            fsync_folder(path.parent)


def create_new(path: Path, data: bytes, *, sync: bool = True) -> bool:
    """Write `path` atomically unless a file has that name: False then, nothing overwritten
    (the temp file is linked, and `os.link` fails on a taken name). Made durable (file and
    folder fsynced) unless `sync` is False: then a `SyncBatch` owes it."""
    tmp = write_temp(path, data, sync=sync)
    try:
        with storage_errors(path.parent):
            os.link(tmp, path)  # atomic, and fails if the name is taken
            if sync:
                fsync_folder(path.parent)
    except FileExistsError:
        return False
    finally:
        discard(tmp)
    return True


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


def leftovers(
    folder: Path, pattern: str = f".*{TEMP_SUFFIX}", names: Iterable[str] | None = None
) -> list[Path]:
    """The files matching `pattern` in `folder` (pid-named like temp files) whose writing
    process is gone: what a killed writer left, never a write in progress. `names` (the
    folder's entries, when the caller has listed it) are matched instead of listing again."""
    found = (
        folder.glob(pattern)
        if names is None
        else (folder / name for name in fnmatch.filter(names, pattern))
    )
    return [path for path in found if writer_is_gone(path)]


def read_inside(folder: Path, relative: str | os.PathLike[str]) -> tuple[bytes, os.stat_result]:
    """The bytes of `folder/relative` and its stat, read through one descriptor.

    Each component below `folder` is opened with `O_NOFOLLOW` relative to its parent, so a
    symbolic link anywhere below the folder (the file itself or a subfolder), a `..`, or
    anything but a regular file raises `UnsafeFileError`; a missing file raises
    `FileNotFoundError`. `folder` itself is the operator's setting and may be a link.
    """
    parts = PurePosixPath(relative).parts
    if not parts or parts[0] == "/" or ".." in parts:
        raise UnsafeFileError(f"{relative} is not a path inside {folder.name}/")
    refused = (
        f"{relative} in {folder.name}/ is not a regular file of that folder (a symbolic "
        "link, or reached through one); refusing to read it"
    )
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    fds = [os.open(folder, os.O_RDONLY | os.O_DIRECTORY)]
    try:
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            try:
                # O_NONBLOCK: a planted FIFO must not hang the read (no effect on files)
                kind = os.O_NONBLOCK if last else os.O_DIRECTORY
                fds.append(os.open(part, flags | kind, dir_fd=fds[-1]))
            except OSError as error:
                if error.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise UnsafeFileError(refused) from None
                raise
        info = os.fstat(fds[-1])
        if not stat.S_ISREG(info.st_mode):
            raise UnsafeFileError(refused)
        data = _read_all(fds[-1], info.st_size)
    finally:
        for fd in fds:
            os.close(fd)
    return data, info


def _read_all(fd: int, size: int) -> bytes:
    """Everything `fd` holds from its offset to the end (`size` expected: one read and one
    that finds the end, without the buffered file object a read used to build)."""
    chunks = []
    while chunk := os.read(fd, max(size, 0) + 1):
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)  # (one chunk: that very object, not a copy)


@contextmanager
def stem_lock(state_dir: Path | str, stem_id: object) -> Iterator[None]:
    """Hold the lock of one stem: whoever writes that stem's file (generation, a pull from
    the bucket) takes it, in this process or another — a `flock` on
    `<state_dir>/locks/<stem id>.lock`; each call opens its own file description, so threads
    exclude each other too."""
    folder = Path(state_dir) / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / f"{stem_id}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
