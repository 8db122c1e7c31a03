"""`GroupCommit`: a batch's sync runs while the next batch is made, and rows are committed in
order, only once their files are durable; after a failed sync nothing more is committed."""

from __future__ import annotations

import errno
import threading
from pathlib import Path

import pytest

from hybrid_audio.files import SyncBatch
from hybrid_audio.group_commit import GroupCommit


class GatedBatch(SyncBatch):
    """A real `SyncBatch` whose `sync` waits for the test to open its gate (or fails)."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.started, self.gate, self.fail = threading.Event(), threading.Event(), fail
        self.synced = False

    def sync(self) -> None:
        self.started.set()
        assert self.gate.wait(10)
        if self.fail:
            raise OSError(errno.EIO, "write-back failed")
        super().sync()
        self.synced = True


def written(folder: Path, name: str) -> Path:
    path = folder / name
    path.write_bytes(name.encode())
    return path


def test_a_batch_is_synced_while_the_next_is_made_and_committed_after_it(
    tmp_path: Path,
) -> None:
    batches: list[GatedBatch] = []
    committed: list[list[int]] = []

    def new_batch() -> GatedBatch:
        batches.append(GatedBatch())
        return batches[-1]

    def commit(rows: list[int]) -> None:
        assert all(batch.synced for batch in batches[: len(committed) + 1])
        committed.append(rows)

    group: GroupCommit[int] = GroupCommit(commit, new_batch)
    for row in (1, 2):
        group.files.add(written(tmp_path, f"{row}.wav"))
        group.add(row)
    group.flush()
    first = batches[0]
    assert first.started.wait(10)  # its sync runs on the helper…
    group.files.add(written(tmp_path, "3.wav"))  # …while this thread makes the next batch
    group.add(3)
    assert group.files is batches[1]
    assert committed == []  # not before its files are durable
    first.gate.set()
    group.flush()  # waits for the first batch's sync, commits it, starts the second's
    assert committed == [[1, 2]]
    batches[1].gate.set()
    group.add(4)
    batches[2].gate.set()
    group.close()
    assert committed == [[1, 2], [3], [4]]
    assert [b.synced for b in batches] == [True, True, True]
    assert not [t for t in threading.enumerate() if t.name.startswith("group-commit")]


def test_after_a_failed_sync_no_later_batch_is_committed(tmp_path: Path) -> None:
    batches = [GatedBatch(fail=True), GatedBatch(), GatedBatch()]
    for batch in batches:
        batch.gate.set()
    committed: list[list[int]] = []
    group: GroupCommit[int] = GroupCommit(committed.append, iter(batches).__next__)
    group.add(1)
    group.flush()  # its sync fails on the helper
    group.add(2)
    with pytest.raises(OSError, match="write-back failed"):
        group.flush()
    group.add(3)
    group.close()  # the failure was raised once; rows 2 and 3 stay uncommitted
    assert committed == []
    assert not batches[1].started.is_set()


def test_without_files_to_sync_rows_are_committed_at_once() -> None:
    committed: list[list[str]] = []
    group: GroupCommit[str] = GroupCommit(committed.append, lambda: None)
    group.add("a")
    group.flush()
    assert committed == [["a"]]
    group.add("b")
    group.close()
    assert committed == [["a"], ["b"]]
