"""JSON-lines logs: one object per line, whole lines under concurrency, size rotation."""

from __future__ import annotations

import json
import multiprocessing
import shutil
from pathlib import Path

import pytest

from hybrid_audio.logs import JsonlLog


def test_lines_are_json_with_ts_and_event(tmp_path: Path) -> None:
    log = JsonlLog(tmp_path / "logs" / "x.jsonl")
    log.write("stem_made", stem_id="stem.name.jose", path=tmp_path, n=3)
    (record,) = log.read()
    assert record["event"] == "stem_made"
    assert record["stem_id"] == "stem.name.jose"
    assert record["path"] == str(tmp_path)
    assert record["ts"].endswith("+00:00")


def test_a_removed_log_folder_is_made_again(tmp_path: Path) -> None:
    """The folder is made when the file cannot be opened, on first use and after a sweep."""
    folder = tmp_path / "logs" / "deep"
    log = JsonlLog(folder / "x.jsonl")
    log.write("first")
    shutil.rmtree(tmp_path / "logs")
    log.write("second")
    assert [r["event"] for r in log.read()] == ["second"]


def test_a_log_whose_folder_cannot_be_made_raises(tmp_path: Path) -> None:
    """A dangling link as the log file: an error, not an endless retry."""
    (tmp_path / "x.jsonl").symlink_to(tmp_path / "missing" / "target.jsonl")
    with pytest.raises(FileNotFoundError):
        JsonlLog(tmp_path / "x.jsonl").write("lost")


def test_rotation_keeps_backups(tmp_path: Path) -> None:
    log = JsonlLog(tmp_path / "r.jsonl", max_bytes=300, backups=2)
    for i in range(30):
        log.write("step", i=i)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["r.jsonl", "r.jsonl.1", "r.jsonl.2"]
    for path in tmp_path.iterdir():
        assert path.stat().st_size <= 300
    last = [r["i"] for r in log.read()]
    assert last[-1] == 29
    assert last == sorted(last)


def _hammer(path: str, worker: int) -> None:
    log = JsonlLog(path, max_bytes=4000, backups=50)
    for i in range(200):
        log.write("step", worker=worker, i=i, pad="x" * 20)


def test_processes_never_interleave_or_lose_lines(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    spawn = multiprocessing.get_context("spawn")  # fork in a threaded pytest can deadlock
    procs = [spawn.Process(target=_hammer, args=(str(path), w)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    records = []
    for file in tmp_path.iterdir():
        records += [json.loads(line) for line in file.read_text().splitlines()]
    assert sorted((r["worker"], r["i"]) for r in records) == [
        (w, i) for w in range(4) for i in range(200)
    ]
