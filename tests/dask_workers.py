"""What the Dask tests do to a real cluster's workers."""

from __future__ import annotations

import os
import signal

from distributed import Client


def kill_busy_worker(client: Client) -> int | None:
    """SIGKILL the process of a worker that is running a task now; its pid, or None when no
    worker is busy (nothing is killed)."""
    busy = [address for address, keys in client.processing().items() if keys]
    if not busy:
        return None
    pid = client.run(os.getpid, workers=[busy[0]])[busy[0]]
    os.kill(pid, signal.SIGKILL)
    return pid
