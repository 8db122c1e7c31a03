"""Group commit whose sync of one batch overlaps the making of the next.

A campaign commits its message rows in batches, each only once the batch's files are
durable (`files.SyncBatch`). Making them durable is the kernel's work: writing back a
batch's new WAVs and manifests cost ~0.4 ms of CPU a file on the 2-vCPU VMs measured
(`syncfs`, without the GIL), as much as making the message. Done on a helper thread, it runs
on another core while this thread makes the next batch's messages.

At most one batch is in flight, and its rows are committed (by the caller's `commit`)
before the next batch's sync starts: rows are committed in order, and never before their
files are durable. A batch whose sync failed is never committed, nor any batch after it:
its rows stay pending, and a resume proves their files again (adopts or remakes them).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from hybrid_audio.files import SyncBatch


class GroupCommit[Row]:
    """Rows and their files, batch by batch: `add` rows (their files go to `files`), `flush`
    at the end of a batch, `close` at the end of the run (also after an error: the rows
    whose files are durable are committed)."""

    def __init__(
        self,
        commit: Callable[[list[Row]], None],
        new_batch: Callable[[], SyncBatch | None],
    ) -> None:
        """`commit` records rows whose files are durable; `new_batch` gives each batch's
        `SyncBatch` (None: nothing to make durable, rows are committed at once)."""
        self._commit = commit
        self._new_batch = new_batch
        self.files: SyncBatch | None = new_batch()  # where this batch's files are added
        self.rows: list[Row] = []
        self._in_flight: tuple[Future[None], list[Row]] | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._failed = False

    def add(self, row: Row) -> None:
        self.rows.append(row)

    def flush(self) -> None:
        """Commit the batch in flight (once its sync is done), then start this batch's sync
        on the helper thread; a failed sync raises here."""
        self._settle()
        rows, self.rows = self.rows, []
        if self.files is None:
            self._commit(rows)
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="group-commit")
        self._in_flight = (self._pool.submit(self.files.sync), rows)
        self.files = self._new_batch()

    def close(self) -> None:
        """Commit the batch in flight, then sync and commit the last one on this thread.
        After a failed sync nothing more is committed (and the failure is raised once)."""
        try:
            self._settle()
            if self._failed:
                return
            if self.files is not None:
                self.files.sync()
            rows, self.rows = self.rows, []
            self._commit(rows)
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None

    def _settle(self) -> None:
        """Wait for the batch in flight; commit its rows if its sync succeeded."""
        if self._in_flight is None:
            return
        done, rows = self._in_flight
        self._in_flight = None
        try:
            done.result()
        except BaseException:
            self._failed = True
            raise
        if not self._failed:
            self._commit(rows)
