"""Building one large `bytes` object fast, and sharing a job between two cores.

Why this exists: a merge's unavoidable work is one copy of every source and one SHA-256
pass over it. `b"".join` of 50 MB into a fresh allocation costs more in page faults (one
per 4 KiB page) than in copying, and holds the GIL while it copies, so nothing else runs
beside it. Here the output is a `bytes` object created uninitialised
(`PyBytes_FromStringAndSize(NULL, n)`, public C API), advised onto transparent huge pages
when large (`madvise(MADV_HUGEPAGE)`: 512× fewer faults), and filled with `memmove` /
`memset` through ctypes, which release the GIL. Until `new_bytes`' caller has written every
byte, the object must not escape: a `bytes` never changes once shared.

`run_split` runs one half of a job on a persistent helper thread while the caller runs the
other (hashlib, `memmove`, `memset` and `memcmp` release the GIL). The helper is made
lazily, remade in a forked child (`os.register_at_fork`), and never queued behind another
caller: when it is busy, the caller does the whole job itself.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys
import threading
from collections.abc import Callable, Sequence

import numpy as np

_new_bytes = ctypes.pythonapi.PyBytes_FromStringAndSize
_new_bytes.restype = ctypes.py_object
_new_bytes.argtypes = [ctypes.c_void_p, ctypes.c_ssize_t]
_bytes_buffer = ctypes.pythonapi.PyBytes_AsString
_bytes_buffer.restype = ctypes.c_void_p
_bytes_buffer.argtypes = [ctypes.py_object]

_libc = ctypes.CDLL(ctypes.util.find_library("c") if sys.platform != "linux" else None)
_memcmp = _libc.memcmp
_memcmp.restype = ctypes.c_int
_memcmp.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
_madvise = getattr(_libc, "madvise", None) if sys.platform == "linux" else None
if _madvise is not None:
    _madvise.restype = ctypes.c_int
    _madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]

_MADV_HUGEPAGE = 14  # Linux
_HUGE_PAGE = 2 * 1024 * 1024
#: Below this size huge pages are not asked for: too few whole 2 MiB pages to matter.
HUGE_PAGE_MIN_BYTES = 4 * _HUGE_PAGE


def new_bytes(size: int) -> tuple[bytes, int]:
    """A new, uninitialised `bytes` of `size` and the address of its first byte.

    The caller must write every byte (`copy_into`, `fill`) before the object is shared.
    """
    if size < 2:
        raise ValueError("new_bytes is for buffers of at least 2 bytes")  # 0, 1: singletons
    out = _new_bytes(None, size)
    address = _bytes_buffer(out)
    if _madvise is not None and size >= HUGE_PAGE_MIN_BYTES:
        start = -(-address // _HUGE_PAGE) * _HUGE_PAGE
        end = (address + size) // _HUGE_PAGE * _HUGE_PAGE
        if end > start:
            _madvise(start, end - start, _MADV_HUGEPAGE)  # advice: failure changes nothing
    return out, address


def address_of(buffer: bytes | bytearray | memoryview) -> int:
    """Address of a (possibly read-only) contiguous buffer's first byte.

    Valid while `buffer`'s owner is alive and unchanged.
    """
    return np.frombuffer(buffer, np.uint8).ctypes.data if len(buffer) else 0


def copy_into(address: int, source: bytes | bytearray | memoryview) -> None:
    """Copy `source` to `address` (GIL released)."""
    if len(source):
        ctypes.memmove(address, address_of(source), len(source))


def fill(address: int, byte: int, count: int) -> None:
    """Set `count` bytes at `address` to `byte` (GIL released)."""
    if count:
        ctypes.memset(address, byte, count)


def equal(a: bytes | memoryview, offset: int, b: bytes | memoryview) -> bool:
    """`a[offset:offset+len(b)] == b`, compared with `memcmp` (GIL released)."""
    n = len(b)
    if offset < 0 or offset + n > len(a):
        return False
    return n == 0 or _memcmp(address_of(a) + offset, address_of(b), n) == 0


class _Helper:
    """One daemon thread that runs a task each time it is woken.

    Woken and waited for through two bare locks: a `ThreadPoolExecutor` hand-over (future,
    work item, queue, condition) cost ~28 µs of CPU here, this one ~16 µs.
    """

    def __init__(self) -> None:
        self._wake, self._done = threading.Lock(), threading.Lock()
        self._wake.acquire()
        self._done.acquire()
        self._task: Callable[[], None] | None = None
        self._error: BaseException | None = None
        threading.Thread(target=self._serve, name="hybrid-audio-split", daemon=True).start()

    def _serve(self) -> None:
        while True:
            self._wake.acquire()
            try:
                self._task()  # type: ignore[misc]
            except BaseException as error:  # handed to the waiting caller
                self._error = error
            self._done.release()

    def start(self, task: Callable[[], None]) -> None:
        self._task = task
        self._wake.release()

    def wait(self) -> None:
        """Until the task has finished; re-raises its error."""
        self._done.acquire()
        error, self._task, self._error = self._error, None, None
        if error is not None:
            raise error


_helper: _Helper | None = None
_helper_free = threading.Lock()  # held while a job runs on the helper


def _forget_helper() -> None:
    """In a forked child the helper thread does not exist: make a new one when needed."""
    global _helper, _helper_free
    _helper, _helper_free = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_helper)


def run_split(jobs: Sequence[tuple[int, Callable[[], None]]], min_weight: int) -> None:
    """Run every one of `jobs` (weight, callable) once, on two threads when they weigh at
    least `min_weight` in all and the helper is free.

    The helper takes jobs from the front, the caller from the back, each claiming the next
    one as it finishes the last: when the other core is busy elsewhere, the caller simply
    does more of them. Returns once every job has finished; re-raises the first error.
    """
    global _helper
    total = sum(weight for weight, _ in jobs)
    if total < min_weight or len(jobs) < 2 or not _helper_free.acquire(blocking=False):
        for _, job in jobs:
            job()
        return
    try:
        if _helper is None:
            _helper = _Helper()
        ends = _TwoEnds([job for _, job in jobs])
        _helper.start(functools.partial(ends.run, True))
        try:
            ends.run(False)
        finally:
            _helper.wait()
    finally:
        _helper_free.release()


class _TwoEnds:
    """A list of jobs eaten from both ends by two threads."""

    def __init__(self, jobs: list[Callable[[], None]]) -> None:
        self._jobs = jobs
        self._front, self._back = 0, len(jobs)
        self._lock = threading.Lock()
        self._failed = False

    def run(self, front: bool) -> None:
        while not self._failed:
            with self._lock:
                if self._front >= self._back:
                    return
                if front:
                    job = self._jobs[self._front]
                    self._front += 1
                else:
                    self._back -= 1
                    job = self._jobs[self._back]
            try:
                job()
            except BaseException:
                self._failed = True  # the other thread stops at its next claim
                raise
