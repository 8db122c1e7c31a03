"""StemCache: real SQLite and real files; compatibility, atomicity, audit."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from hybrid_audio.cache import StemCache
from hybrid_audio.contract import AudioFormat, Encoding, VoiceContract
from hybrid_audio.wav import Wav, WavError, read_wav, write_wav
from tests.audio_factory import make_pcm, make_wav
from tests.processes import dead_pid

FMT = AudioFormat(encoding="pcm_s16le", sample_rate=22050)


@pytest.fixture
def cache(tmp_path: Path) -> StemCache:
    return StemCache(
        stems_dir=tmp_path / "stems",
        database_path=tmp_path / "state" / "index.sqlite3",
        contract=VoiceContract(voice="v1", engine_version="test 1"),
    )


def test_store_writes_file_and_row(cache: StemCache) -> None:
    record = cache.store("stem.name.jose", "José", read_wav(make_wav(FMT, 2205)))
    path = Path(cache.stems_dir) / "name" / "stem.name.jose.wav"
    assert record.path == "name/stem.name.jose.wav"
    assert path.is_file()
    assert read_wav(path).sha256 == record.sha256
    assert record.text == "José"
    assert (record.encoding, record.sample_rate, record.frames) == ("pcm_s16le", 22050, 2205)
    assert record.duration == pytest.approx(0.1)
    assert record.contract_signature == cache.contract.signature()
    assert record.compatible is True
    assert record.created_at == record.updated_at


def test_index_is_plain_sqlite_in_wal_mode(cache: StemCache) -> None:
    cache.store("stem.name.ana", "Ana", read_wav(make_wav(FMT, 100)))
    db = sqlite3.connect(cache.database_path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    row = db.execute("SELECT text, engine_version, voice FROM stems").fetchone()
    assert row == ("Ana", "test 1", "v1")


def test_streaming_header_is_stored_canonical_and_the_repair_recorded(cache: StemCache) -> None:
    data = bytearray(make_wav(FMT, 300))
    data[4:8] = b"\xff\xff\xff\xff"
    data[40:44] = b"\xff\xff\xff\xff"
    record = cache.store("stem.name.ana", "Ana", read_wav(bytes(data)))
    assert "placeholder" in record.repairs
    on_disk = (Path(cache.stems_dir) / record.path).read_bytes()
    assert on_disk == write_wav(FMT, make_pcm(FMT, 300))


@pytest.mark.parametrize(
    "bad",
    [
        Wav(format=FMT, pcm=b"\1\2\3"),
        read_wav(make_wav(AudioFormat(encoding="pcm_s16le", sample_rate=8000), 100)),
        Wav(format=FMT, pcm=b""),
    ],
    ids=["cut-frame", "wrong-rate", "empty"],
)
def test_bad_audio_stores_nothing(cache: StemCache, bad: Wav) -> None:
    with pytest.raises(WavError):
        cache.store("stem.name.ana", "Ana", bad)
    assert cache.list() == []
    assert not any(Path(cache.stems_dir).rglob("*.wav"))


def test_another_contract_makes_stems_incompatible(cache: StemCache) -> None:
    cache.store("stem.name.ana", "Ana", read_wav(make_wav(FMT, 100)))
    assert cache.lookup("stem.name.ana") is not None
    cache.contract.voice = "v2"
    assert cache.lookup("stem.name.ana") is None
    assert [r.compatible for r in cache.list()] == [False]
    assert cache.list(compatible=True) == []
    assert len(cache.list(compatible=False)) == 1


def test_format_change_is_incompatible_and_store_checks_it(cache: StemCache) -> None:
    cache.store("stem.name.ana", "Ana", read_wav(make_wav(FMT, 100)))
    cache.contract.encoding = Encoding.PCM_MULAW
    assert cache.lookup("stem.name.ana") is None
    with pytest.raises(WavError, match="contract wants pcm_mulaw"):
        cache.store("stem.name.ana", "Ana", read_wav(make_wav(FMT, 100)))


def test_regenerating_replaces_file_and_row(cache: StemCache) -> None:
    first = cache.store("stem.name.ana", "Ana", read_wav(make_wav(FMT, 100, seed=1)))
    cache.contract.voice = "v2"
    second = cache.store("stem.name.ana", "Ana", read_wav(make_wav(FMT, 120, seed=2)))
    assert second.created_at == first.created_at
    assert second.updated_at > first.updated_at
    assert second.frames == 120
    assert second.compatible
    assert len(cache.list()) == 1


def test_list_filters_by_kind(cache: StemCache) -> None:
    cache.store("stem.name.ana", "Ana", read_wav(make_wav(FMT, 100)))
    cache.store("stem.developer.hilton", "Hilton", read_wav(make_wav(FMT, 100)))
    assert [r.stem_id for r in cache.list(kind="developer")] == ["stem.developer.hilton"]
    assert len(cache.list()) == 2
    with pytest.raises(ValueError, match="unknown stem kind"):
        cache.list(kind="voice")


def test_invalidate_removes_row_and_file(cache: StemCache) -> None:
    record = cache.store("stem.name.ana", "Ana", read_wav(make_wav(FMT, 100)))
    assert cache.invalidate("stem.name.ana")
    assert cache.get("stem.name.ana") is None
    assert not (Path(cache.stems_dir) / record.path).exists()
    assert not cache.invalidate("stem.name.ana")


@pytest.mark.parametrize("bad_id", ["../etc/passwd", "stem.name.../x", "stem.name.A"])
def test_hostile_ids_are_refused(cache: StemCache, bad_id: str) -> None:
    with pytest.raises(ValueError, match="stem id"):
        cache.store(bad_id, "x", read_wav(make_wav(FMT, 10)))
    with pytest.raises(ValueError, match="stem id"):
        cache.invalidate(bad_id)


def test_lookup_misses_when_the_file_is_gone_or_changed(cache: StemCache) -> None:
    record = cache.store("stem.name.ana", "Ana", read_wav(make_wav(FMT, 100)))
    path = Path(cache.stems_dir) / record.path
    path.write_bytes(path.read_bytes() + b"\0\0")
    assert cache.lookup("stem.name.ana") is None
    path.unlink()
    assert cache.lookup("stem.name.ana") is None


def test_verify_is_clean_then_finds_every_problem(cache: StemCache) -> None:
    for name in ("ana", "bob", "cy", "dee"):
        cache.store(f"stem.name.{name}", name, read_wav(make_wav(FMT, 200)))
    assert cache.verify().ok
    root = Path(cache.stems_dir)
    (root / "name" / "stem.name.ana.wav").unlink()  # missing
    bob = root / "name" / "stem.name.bob.wav"
    data = bytearray(bob.read_bytes())
    data[-1] ^= 0xFF
    bob.write_bytes(bytes(data))  # hash mismatch
    (root / "name" / "stem.name.cy.wav").write_bytes(b"RIFF")  # unreadable
    (root / "name" / "stem.name.orphan.wav").write_bytes(make_wav(FMT, 10))
    (root / "name" / ".stem.name.dee.wav.999999999.abc.tmp").write_bytes(b"half")  # dead writer
    report = cache.verify()
    assert not report.ok
    assert report.missing_files == ["stem.name.ana"]
    assert report.hash_mismatches == ["stem.name.bob"]
    assert [u.split(":")[0] for u in report.unreadable] == ["stem.name.cy"]
    assert report.orphan_files == ["name/stem.name.orphan.wav"]
    assert report.temp_files == ["name/.stem.name.dee.wav.999999999.abc.tmp"]
    assert cache.sweep_temp_files() == 1
    assert cache.verify().temp_files == []


def test_a_live_writers_temp_file_is_not_a_leftover(cache: StemCache) -> None:
    folder = Path(cache.stems_dir) / "name"
    folder.mkdir(parents=True)
    (folder / f".stem.name.x.wav.{os.getpid()}.abc.tmp").write_bytes(b"in progress")
    assert cache.verify().temp_files == []
    assert cache.sweep_temp_files() == 0


def test_two_cache_objects_share_one_index(cache: StemCache) -> None:
    other = StemCache(
        stems_dir=cache.stems_dir, database_path=cache.database_path, contract=cache.contract
    )
    cache.store("stem.name.ana", "Ana", read_wav(make_wav(FMT, 100)))
    assert other.lookup("stem.name.ana") is not None


@pytest.mark.parametrize("committed", [False, True])
def test_an_interrupted_invalidate_is_finished_at_start(
    cache: StemCache, tmp_path: Path, committed: bool
) -> None:
    """A file moved aside by a killed invalidate goes back if its row survived, else goes."""
    record = cache.store("stem.name.ana", "Ana", read_wav(make_wav(FMT, 100)))
    path = Path(cache.stems_dir) / record.path
    aside = path.with_name(f".{path.name}.{dead_pid()}.{'0' * 32}.aside")
    path.rename(aside)  # the crash came after the rename...
    if committed:  # ...and after the row's delete was committed
        sqlite3.connect(cache.database_path).execute("DELETE FROM stems").connection.commit()
    reopened = StemCache(
        stems_dir=cache.stems_dir, database_path=cache.database_path, contract=cache.contract
    )
    assert not aside.exists()
    assert path.exists() is not committed
    assert (reopened.lookup("stem.name.ana") is None) is committed
    assert reopened.verify().ok
