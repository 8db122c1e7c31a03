"""The speed-ups of issue #14 keep every guarantee: memoised index rows, parses, trim
ranges and hashes never hide a change, and an assembly's files are all in place."""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import threading
from pathlib import Path

import pytest

from hybrid_audio import bitmerge
from hybrid_audio import cache as cache_module
from hybrid_audio import files as files_module
from hybrid_audio.assembly import Assembler
from hybrid_audio.bitmerge import Silence, Trim, bitmerge_semantic, verify
from hybrid_audio.cache import CorruptStemError, StemCache
from hybrid_audio.config import Settings
from hybrid_audio.contract import AudioFormat, VoiceContract
from hybrid_audio.engines import create_engine
from hybrid_audio.files import SYNC_CHUNK_FILES, TEMP_SUFFIX, StorageError, SyncBatch
from hybrid_audio.generation import Generator
from hybrid_audio.wav import read_wav, write_wav
from tests.api_server import make_base_dir
from tests.audio_factory import make_pcm, make_wav

FMT = AudioFormat(encoding="pcm_s16le", sample_rate=22050)


@pytest.fixture
def cache(tmp_path: Path) -> StemCache:
    return StemCache(
        stems_dir=tmp_path / "stems",
        database_path=tmp_path / "state" / "index.sqlite3",
        contract=VoiceContract(voice="v1", engine_version="test 1"),
    )


def test_a_row_stored_again_by_another_cache_is_seen_at_once(cache: StemCache) -> None:
    first = cache.store("stem.name.ana", "Ana", read_wav(make_wav(FMT, 2205, seed=1)))
    assert cache.lookup("stem.name.ana").sha256 == first.sha256
    other = StemCache(
        stems_dir=cache.stems_dir, database_path=cache.database_path, contract=cache.contract
    )  # another process's view of the same index
    again = other.store("stem.name.ana", "Ana", read_wav(make_wav(FMT, 2205, seed=2)))
    assert again.sha256 != first.sha256
    assert cache.lookup("stem.name.ana").sha256 == again.sha256  # no refresh needed


def test_a_looked_up_record_is_the_callers_own_copy(cache: StemCache) -> None:
    cache.store("stem.name.ana", "Ana", read_wav(make_wav(FMT, 2205)))
    record = cache.lookup("stem.name.ana")
    record.text = "changed by a caller"
    assert cache.lookup("stem.name.ana").text == "Ana"


def test_compatibility_follows_a_new_contract(cache: StemCache) -> None:
    cache.store("stem.name.ana", "Ana", read_wav(make_wav(FMT, 2205)))
    assert cache.lookup("stem.name.ana") is not None
    cache.contract = VoiceContract(voice="v2", engine_version="test 1")
    assert cache.lookup("stem.name.ana") is None
    assert cache.get("stem.name.ana").compatible is False


def test_a_new_stems_folder_is_used_at_once(cache: StemCache, tmp_path: Path) -> None:
    cache.store("stem.name.ana", "Ana", read_wav(make_wav(FMT, 2205)))
    cache.stems_dir = tmp_path / "elsewhere"  # the file is not there
    assert cache.lookup("stem.name.ana") is None


def test_verify_given_other_bytes_with_one_changed_sample_refuses_that_segment() -> None:
    parts = [make_wav(FMT, 4000, seed=s) for s in range(3)]
    merged = bitmerge_semantic(parts)
    assert verify(merged.wav, merged.manifest, parts).ok
    changed = bytearray(parts[1])
    changed[-2] ^= 0x01  # the last sample of part 1
    report = verify(merged.wav, merged.manifest, [parts[0], bytes(changed), parts[2]])
    assert not report.ok
    assert [s.exact for s in report.segments] == [True, False, True]
    assert "sha256 differs" in report.segments[1].detail


def test_a_bytearray_changed_after_the_merge_is_parsed_again() -> None:
    source = bytearray(make_wav(FMT, 4000, seed=4))
    merged = bitmerge_semantic([source])
    source[-2] ^= 0x01
    report = verify(merged.wav, merged.manifest, [source])
    assert not report.ok
    assert "sha256 differs" in report.segments[0].detail


def test_the_first_changed_output_byte_is_named_with_the_same_sources() -> None:
    parts = [make_wav(FMT, 3000, seed=s) for s in range(2)]
    merged = bitmerge_semantic([parts[0], Silence(ms=20), parts[1]])
    broken = bytearray(merged.wav)
    target = merged.manifest.segments[2].byte_offset + 10
    broken[target] ^= 0xFF
    report = verify(bytes(broken), merged.manifest, [parts[0], Silence(ms=20), parts[1]])
    assert report.first_diff_offset == target


def test_concurrent_hashing_records_the_same_hashes_as_hashlib(monkeypatch) -> None:
    pcms = [make_pcm(FMT, 20_000 + 1000 * s, seed=s) for s in range(5)]
    parts = [write_wav(FMT, pcm) for pcm in pcms]
    monkeypatch.setattr(bitmerge, "_CONCURRENT_HASH_BYTES", 1)  # every merge in two threads
    merged = bitmerge_semantic(parts)
    assert [s.source_sha256 for s in merged.manifest.segments] == [
        hashlib.sha256(pcm).hexdigest() for pcm in pcms
    ]
    monkeypatch.setattr(bitmerge, "_CONCURRENT_HASH_BYTES", 1 << 62)  # none
    serial = bitmerge_semantic([bytes(bytearray(p)) for p in parts])
    assert serial.wav == merged.wav
    assert serial.manifest == merged.manifest


def test_a_kept_trim_range_is_the_one_computed_afresh_for_each_trim() -> None:
    wav = read_wav(make_wav(FMT, 8000, seed=5, edge=0.3))
    loose, tight = Trim(threshold_dbfs=-60.0, keep_ms=0.0), Trim(threshold_dbfs=-6.0, keep_ms=0.0)
    for trim in (loose, tight, loose, tight):
        assert bitmerge._trim_range(wav, trim) == bitmerge._find_trim_range(wav, trim)
    assert bitmerge._find_trim_range(wav, loose) != bitmerge._find_trim_range(wav, tight)


def test_an_assembly_leaves_its_wav_and_manifest_and_no_temp_file(tmp_path: Path) -> None:
    settings = Settings(base_dir=make_base_dir(tmp_path))
    generator = Generator.from_settings(settings, engine=create_engine(settings))
    assembler = Assembler(
        settings=settings, cache=generator.cache, contract=generator.contract, generator=generator
    )
    results = [
        assembler.assemble("double_anchor", name="José", developer="Brightwater Homes")
        for _ in range(3)
    ]
    folder = Path(settings.output_dir)
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        name for r in results for name in (Path(r.wav_path).name, Path(r.manifest_path).name)
    )
    assert not list(folder.glob(f"*{TEMP_SUFFIX}"))
    for result in results:
        assert result.report.ok
        assert assembler.verify_output(result.summary.id).ok
        assert hashlib.sha256(Path(result.wav_path).read_bytes()).hexdigest() == (
            result.summary.sha256
        )


def test_a_canonical_file_is_read_as_read_wav_reads_it_and_others_by_read_wav() -> None:
    canonical = make_wav(FMT, 3000, seed=6)
    fast = bitmerge._canonical_s16(canonical)
    assert fast is not None
    parsed = read_wav(canonical)
    assert (fast.format, bytes(fast.pcm), fast.data_offset) == (
        parsed.format,
        parsed.pcm,
        parsed.data_offset,
    )
    odd = bytearray(canonical)
    odd[4:8] = b"\xff\xff\xff\xff"  # a streaming placeholder: read_wav repairs it
    extra = canonical + b"LIST\x04\x00\x00\x00abcd"  # a chunk after the data
    truncated = canonical[:-1]  # half a frame
    stereo8 = make_wav(AudioFormat(encoding="pcm_u8", sample_rate=8000, channels=2), 100)
    for other in (bytes(odd), extra, truncated, stereo8):
        assert bitmerge._canonical_s16(other) is None


def test_merges_of_canonical_and_other_files_of_the_same_samples_are_identical() -> None:
    canonical = make_wav(FMT, 3000, seed=7)
    with_chunk = canonical + b"LIST\x04\x00\x00\x00abcd"
    fixed = bytearray(with_chunk)
    fixed[4:8] = (len(with_chunk) - 8).to_bytes(4, "little")
    one = bitmerge_semantic([canonical, canonical], trim=Trim())
    two = bitmerge_semantic([bytes(fixed), bytes(fixed)], trim=Trim())
    assert one.wav == two.wav
    assert verify(one.wav, one.manifest, [bytes(fixed), canonical]).ok


@pytest.fixture
def warm(tmp_path: Path) -> Assembler:
    """An assembler whose double_anchor message for José has been made twice: its stems
    exist, and the second assembly's resolved stems are kept (`Assembler._resolve`)."""
    settings = Settings(base_dir=make_base_dir(tmp_path))
    generator = Generator.from_settings(settings, engine=create_engine(settings))
    assembler = Assembler(
        settings=settings, cache=generator.cache, contract=generator.contract, generator=generator
    )
    for _ in range(2):
        assert _message(assembler).report.ok
    return assembler


def _message(assembler: Assembler):
    return assembler.assemble("double_anchor", name="José", developer="Brightwater Homes")


def _source_hashes(assembler: Assembler, result) -> dict[str, str]:
    """stem id → the sha256 the manifest's merge recorded for it (a result or a manifest)."""
    document = result if isinstance(result, dict) else assembler.load_output(result.summary.id)
    return {s["id"]: s["source_sha256"] for s in document["merge"]["segments"] if s["id"]}


def test_kept_stems_follow_a_stem_stored_again_by_another_process(warm: Assembler) -> None:
    name = warm.generator.current("name", "José")
    other = StemCache(  # another process's view of the same index
        stems_dir=warm.cache.stems_dir,
        database_path=warm.cache.database_path,
        contract=warm.contract,
    )
    fmt = warm.contract.audio_format
    again = other.store(name.stem_id, name.text, read_wav(make_wav(fmt, 9000, seed=11)))
    assert again.sha256 != name.sha256
    result = _message(warm)
    assert result.report.ok
    assert _source_hashes(warm, result)[name.stem_id] == again.sha256


def test_kept_stems_follow_a_deleted_stem_file(warm: Assembler) -> None:
    name = warm.generator.current("name", "José")
    (Path(warm.settings.stems_dir) / name.path).unlink()
    result = _message(warm)
    assert result.report.ok
    assert warm.generator.current("name", "José") is not None  # made again
    assert warm.verify_output(result.summary.id).ok


def test_kept_stems_never_hide_a_stem_changed_on_disk(warm: Assembler) -> None:
    name = warm.generator.current("name", "José")
    path = Path(warm.settings.stems_dir) / name.path
    data = bytearray(path.read_bytes())
    data[-2] ^= 0x7F  # same size: the index still finds the file usable
    path.write_bytes(bytes(data))
    before = sorted(Path(warm.settings.output_dir).iterdir())
    with pytest.raises(CorruptStemError, match="changed on disk"):
        _message(warm)
    assert sorted(Path(warm.settings.output_dir).iterdir()) == before


def test_a_just_written_stem_is_read_every_time_but_parsed_once(
    warm: Assembler, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Within `SETTLED_NS` of a stem file's last change its identity proves nothing: it is
    read for every message and its bytes compared with those already proven (no parse, no
    hash again); bytes changed in place, at the same size, are parsed and refused."""
    stems = Path(warm.settings.stems_dir)
    sources = [s for s in warm.load_output(_message(warm).summary.id)["sources"] if "path" in s]
    for source in sources:
        os.utime(stems / source["path"])  # changed just now
    assert _message(warm).report.ok  # read and proven again: the identity changed
    parses: list[bytes] = []
    reads: list[str] = []
    read_wav_, read_inside = cache_module.read_wav, cache_module.read_inside
    monkeypatch.setattr(
        cache_module, "read_wav", lambda data: parses.append(data) or read_wav_(data)
    )
    monkeypatch.setattr(
        cache_module, "read_inside", lambda *args: reads.append(args[1]) or read_inside(*args)
    )
    assert _message(warm).report.ok
    assert parses == []
    assert sorted(reads) == sorted(2 * [s["path"] for s in sources])  # merge and proof
    path = stems / sources[0]["path"]
    data = bytearray(path.read_bytes())
    data[-2] ^= 0x7F
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptStemError, match="changed on disk"):
        _message(warm)
    assert len(parses) == 1


def test_the_manifest_names_the_contract_in_force(warm: Assembler) -> None:
    first = warm.load_output(_message(warm).summary.id)
    assert first["contract"] == warm.contract.canonical()
    warm.generator.change_contract(speed=1.25)  # the stems are made again under it
    second = warm.load_output(_message(warm).summary.id)
    assert second["contract"] == warm.contract.canonical() != first["contract"]
    assert second["contract_signature"] == warm.contract.signature()
    assert _source_hashes(warm, second) != _source_hashes(warm, first)


def _sync_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("sync-batch")]


def test_a_sync_batch_fsyncs_on_a_helper_and_reports_its_failure(tmp_path: Path) -> None:
    good, gone = tmp_path / "a.wav", tmp_path / "b.json"
    good.write_bytes(b"a")
    gone.write_bytes(b"b")
    link = tmp_path / "link.wav"
    link.symlink_to(good)  # opened without following links: its fsync fails
    batch = SyncBatch(per_file=True)
    batch.add(good, gone)
    gone.unlink()  # removed since (a manifest-only message): needs only its folder
    batch.sync()
    assert _sync_threads() == []
    batch.add(good)
    batch.add(link)
    with pytest.raises(OSError, match="symbolic links") as failure:
        batch.sync()
    assert failure.value.errno == errno.ELOOP
    assert _sync_threads() == []
    batch.add(good)  # the next round starts afresh
    batch.sync()
    assert _sync_threads() == []


def test_a_sync_batch_hands_a_busy_helper_whole_chunks_of_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An idle helper gets each message's files at once; a busy one gets them
    `SYNC_CHUNK_FILES` at a time (one hand-over per chunk, not per message), and the rest
    at `sync()`: every file is fsynced."""
    synced: list[tuple[Path, ...]] = []
    entered, busy = threading.Event(), threading.Event()
    fsync_files = files_module._fsync_files

    def held(paths: tuple[Path, ...]) -> None:
        synced.append(paths)
        entered.set()
        busy.wait(timeout=60)  # the disk is slow: the helper stays busy
        fsync_files(paths)

    monkeypatch.setattr(files_module, "_fsync_files", held)
    paths = [tmp_path / f"{index}.wav" for index in range(SYNC_CHUNK_FILES + 4)]
    for path in paths:
        path.write_bytes(b"x")
    batch = SyncBatch(per_file=True)
    batch.add(paths[0])  # the helper is idle: at once
    assert len(_sync_threads()) == 1
    batch.add(*paths[1:SYNC_CHUNK_FILES])  # it is busy: gathered
    assert entered.wait(timeout=60)
    assert synced == [(paths[0],)]
    batch.add(paths[SYNC_CHUNK_FILES])  # a whole chunk gathered: handed over
    batch.add(*paths[SYNC_CHUNK_FILES + 1 :])
    busy.set()
    batch.sync()
    assert synced == [
        (paths[0],),
        tuple(paths[1 : SYNC_CHUNK_FILES + 1]),
        tuple(paths[SYNC_CHUNK_FILES + 1 :]),
    ]
    assert _sync_threads() == []


@pytest.mark.skipif(files_module.SYNCFS is None, reason="no syncfs (Linux >= 5.8) here")
def test_a_sync_batch_is_one_syncfs_per_file_system(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With `syncfs` the batch starts no helper, and `sync()` calls it once per file
    system, on a folder of the batch (a file removed since needs nothing more)."""
    calls: list[int] = []
    real = files_module.SYNCFS

    def counted(fd: int) -> int:
        calls.append(os.fstat(fd).st_dev)
        return real(fd)

    monkeypatch.setattr(files_module, "SYNCFS", counted)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    paths = [tmp_path / "a" / "1.wav", tmp_path / "a" / "1.json", tmp_path / "b" / "2.wav"]
    for path in paths:
        path.write_bytes(b"x")
    batch = SyncBatch()
    batch.add(*paths[:2])
    batch.add(paths[2])
    paths[1].unlink()
    assert _sync_threads() == []
    batch.sync()
    assert calls == [tmp_path.stat().st_dev]
    batch.sync()  # nothing added since: nothing to do
    assert calls == [tmp_path.stat().st_dev]


@pytest.mark.skipif(files_module.SYNCFS is None, reason="no syncfs (Linux >= 5.8) here")
@pytest.mark.parametrize(("code", "raised"), [(errno.EIO, OSError), (errno.ENOSPC, StorageError)])
def test_a_failed_syncfs_fails_the_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, raised: type[OSError]
) -> None:
    """A write-back the kernel reports failed raises (a full disk as a `StorageError`
    naming the folder), so the batch's records are not committed."""

    def failing(fd: int) -> int:
        ctypes.set_errno(code)
        return -1

    monkeypatch.setattr(files_module, "SYNCFS", failing)
    path = tmp_path / "1.wav"
    path.write_bytes(b"x")
    batch = SyncBatch()
    batch.add(path)
    with pytest.raises(raised) as failure:
        batch.sync()
    assert failure.value.errno == code
    assert str(tmp_path) in str(failure.value)
