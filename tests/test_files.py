"""The file boundary writes files of any size from chunks: held in memory a chunk at a time,
atomic all the same (a source that fails half-way leaves the old file and no temp file)."""

from __future__ import annotations

import csv
import io
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from hybrid_audio.config import Settings
from hybrid_audio.files import TEMP_SUFFIX, atomic_write, write_temp
from hybrid_audio.recipients import parse_recipients
from hybrid_audio.workspace import Workspace
from tests.api_server import make_base_dir

MIB = 1024 * 1024


def _chunks(count: int, size: int = MIB) -> Iterator[bytes]:
    for index in range(count):
        yield bytes([index % 251]) * size


def test_chunks_are_written_in_order_holding_one_at_a_time(tmp_path: Path) -> None:
    target = tmp_path / "big.bin"
    tracemalloc.start()
    try:
        atomic_write(target, _chunks(48))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * MIB  # 48 MiB written; joined first it would be ≥ 48 MiB
    data = target.read_bytes()
    assert len(data) == 48 * MIB
    assert all(data[i * MIB] == i % 251 == data[(i + 1) * MIB - 1] for i in range(48))
    assert not list(tmp_path.glob(f"*{TEMP_SUFFIX}"))


def test_bytes_bytearray_and_chunks_write_the_same_file(tmp_path: Path) -> None:
    pieces = [b"RIFF", bytearray(b"\x00\x01"), memoryview(b"data"), b""]
    atomic_write(tmp_path / "chunks", iter(pieces))
    atomic_write(tmp_path / "bytes", b"".join(pieces))
    atomic_write(tmp_path / "bytearray", bytearray(b"".join(pieces)))
    assert {p.read_bytes() for p in tmp_path.iterdir()} == {b"RIFF\x00\x01data"}


def test_a_chunk_source_failing_half_way_keeps_the_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "messages.csv"
    atomic_write(target, b"the old file")

    def failing() -> Iterator[bytes]:
        yield from _chunks(3)
        raise RuntimeError("the database went away")

    with pytest.raises(RuntimeError, match="went away"):
        atomic_write(target, failing())
    with pytest.raises(RuntimeError, match="went away"):
        write_temp(tmp_path / "other.bin", failing())
    assert target.read_bytes() == b"the old file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["messages.csv"]


def test_a_campaigns_messages_csv_is_written_without_holding_it_whole(tmp_path: Path) -> None:
    """10⁶ rows are ~150 MB of CSV; `_write_manifests` streams it a row chunk at a time, so
    its memory does not grow with the campaign (joined first, it grew with the file)."""
    workspace = Workspace.build(Settings(base_dir=make_base_dir(tmp_path)))
    measured: dict[int, tuple[int, int]] = {}  # rows → (peak bytes allocated, file size)
    try:
        for rows in (8_000, 32_000):
            text = "name,developer\n" + "".join(f"Name{i},Dev {i % 7}\n" for i in range(rows))
            info = workspace.campaigns.create("double_anchor", parse_recipients(text.encode()))
            tracemalloc.start()
            try:
                workspace.campaigns._write_manifests(info)
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            path = workspace.campaigns.folder(info.id) / "messages.csv"
            measured[rows] = (peak, path.stat().st_size)
        listed = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))
    finally:
        workspace.close()
    assert [int(r["row"]) for r in listed] == list(range(1, 32_001))
    assert listed[-1]["name"] == "Name31999"
    (small_peak, small_size), (large_peak, large_size) = measured[8_000], measured[32_000]
    assert large_size > 3.5 * small_size
    assert large_peak < 1.5 * small_peak, measured
    assert large_peak < large_size / 2, measured
