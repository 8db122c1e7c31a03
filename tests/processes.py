"""Process ids for the crash tests' leftovers."""

from __future__ import annotations

from pathlib import Path


def dead_pid() -> int:
    """A pid no process has, now or later in the test: Linux gives out pids below `pid_max`
    only. (The pid of a process that has exited is given out again once pids wrap around —
    at pid_max 32768 a suite that starts browsers, servers and workers does — so a leftover
    named after one could look like a live writer's.)"""
    return int(Path("/proc/sys/kernel/pid_max").read_text())
