"""The merge's fast paths: output filled in place (huge pages when large), copy and hash
split over two threads, byte comparison by `memcmp` on two threads, and the persistent
helper thread behind them (fork-safe, never queued behind another merge).

Small inputs take these paths when the thresholds are forced down (`split` fixture), so
every proof guarantee is checked on them byte by byte; one test runs a real > 8 MB merge
with the default thresholds.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import threading

import pytest

from hybrid_audio import bitmerge, bytefill
from hybrid_audio.bitmerge import Silence, Trim, bitmerge_semantic, verify
from hybrid_audio.contract import AudioFormat
from hybrid_audio.wav import read_wav, write_wav
from tests.audio_factory import make_pcm, make_wav
from tests.test_bitmerge import assert_every_flipped_byte_is_named

S16 = AudioFormat(encoding="pcm_s16le", sample_rate=22050)
U8 = AudioFormat(encoding="pcm_u8", sample_rate=8000)


@pytest.fixture(params=["join", "in_place"])
def split(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every merge hashes and verify compares on two threads; the output is joined
    (small outputs) or, for "in_place", filled in place as large outputs are."""
    monkeypatch.setattr(bitmerge, "_CONCURRENT_HASH_BYTES", 1)
    if request.param == "in_place":
        monkeypatch.setattr(bytefill, "HUGE_PAGE_MIN_BYTES", 0)


def _expected(fmt: AudioFormat, pcms: list[bytes]) -> bytes:
    return write_wav(fmt, b"".join(pcms))


@pytest.mark.usefixtures("split")
def test_output_equals_header_plus_joined_sources() -> None:
    pcms = [make_pcm(S16, n, seed=n) for n in (900, 1, 1300, 700, 33)]
    parts = [write_wav(S16, p) for p in pcms]
    result = bitmerge_semantic(parts)
    assert type(result.wav) is bytes
    assert result.wav == _expected(S16, pcms)
    for seg, pcm in zip(result.manifest.segments, pcms, strict=True):
        assert seg.source_sha256 == seg.kept_sha256 == hashlib.sha256(pcm).hexdigest()
    assert verify(result.wav, result.manifest, parts).ok


@pytest.mark.usefixtures("split")
def test_in_place_silence_gaps_and_pad_byte() -> None:
    pcms = [make_pcm(U8, 61, seed=1), make_pcm(U8, 40, seed=2)]
    parts = [write_wav(U8, pcms[0]), Silence(frames=20), write_wav(U8, pcms[1])]
    result = bitmerge_semantic(parts, gap_ms=1)  # 8 frames of gap between neighbours
    gap = b"\x80" * 8
    data = pcms[0] + gap + b"\x80" * 20 + gap + pcms[1]
    assert len(data) % 2 == 1
    assert result.wav == write_wav(U8, data)  # silence is 0x80 for u8; pad byte is 0
    assert verify(result.wav, result.manifest, parts).ok


@pytest.mark.usefixtures("split")
def test_every_flipped_byte_is_named_exactly_on_the_memcmp_path() -> None:
    assert_every_flipped_byte_is_named(U8)


@pytest.mark.usefixtures("split")
def test_changed_or_truncated_source_is_caught_on_the_fast_path() -> None:
    parts = [make_wav(S16, n, seed=n) for n in (900, 1300, 700)]
    result = bitmerge_semantic(parts)
    changed = list(parts)
    changed[1] = make_wav(S16, 1300, seed=99)
    report = verify(result.wav, result.manifest, changed)
    assert not report.ok
    assert "source changed" in report.segments[1].detail
    report = verify(result.wav[:-100], result.manifest, parts)
    assert not report.ok
    assert report.first_diff_offset == len(result.wav) - 100


@pytest.mark.usefixtures("split")
def test_trimmed_kept_hash_is_the_hash_of_the_kept_bytes_and_stays_so() -> None:
    wav = read_wav(make_wav(S16, 4000, seed=3, edge=0.3))
    trim = Trim(threshold_dbfs=-30.0, keep_ms=5.0)
    for _ in range(2):  # the second merge takes the kept hash from the cache
        result = bitmerge_semantic([wav, wav], trim=trim)
        seg = result.manifest.segments[0]
        assert 0 < seg.trim_start_frame < seg.trim_end_frame < wav.frames
        kept = wav.pcm[seg.trim_start_frame * 2 : seg.trim_end_frame * 2]
        assert seg.kept_sha256 == hashlib.sha256(kept).hexdigest()
        assert seg.source_sha256 == hashlib.sha256(wav.pcm).hexdigest()
        assert verify(result.wav, result.manifest, [wav, wav]).ok


@pytest.mark.usefixtures("split")
def test_hybrid_mode_hashes_on_two_threads_and_verifies() -> None:
    pcms = [make_pcm(S16, n, seed=n) for n in (900, 1300, 700)]
    parts = [write_wav(S16, p) for p in pcms]
    result = bitmerge_semantic(parts, mode="hybrid", crossfade_ms=5.0)
    assert result.manifest.crossfades
    assert [s.source_sha256 for s in result.manifest.segments] == [
        hashlib.sha256(p).hexdigest() for p in pcms
    ]
    assert verify(result.wav, result.manifest, parts).ok


def test_a_large_merge_with_default_thresholds_is_exact_and_verifies() -> None:
    """12 MB of sources: huge-page output, copy and hash on two threads, memcmp verify."""
    pcms = [make_pcm(S16, 300_000, seed=s) for s in range(20)]
    parts = [write_wav(S16, p) for p in pcms]
    assert len(parts[0]) * len(parts) > bytefill.HUGE_PAGE_MIN_BYTES
    result = bitmerge_semantic(parts)
    assert result.wav == _expected(S16, pcms)
    assert [s.source_sha256 for s in result.manifest.segments] == [
        hashlib.sha256(p).hexdigest() for p in pcms
    ]
    assert verify(result.wav, result.manifest, parts).ok
    tampered = bytearray(result.wav)
    last = result.manifest.segments[-1]
    tampered[last.byte_offset + last.byte_length - 1] ^= 0xFF
    report = verify(bytes(tampered), result.manifest, parts)
    assert not report.ok
    assert report.first_diff_offset == last.byte_offset + last.byte_length - 1


@pytest.mark.usefixtures("split")
def test_concurrent_merges_all_come_out_right() -> None:
    """Many threads merge at once: one gets the helper, the others work alone."""
    inputs = [[make_pcm(S16, 500 + 37 * i, seed=i + k) for k in range(4)] for i in range(8)]
    outputs: dict[int, bytes] = {}

    def merge(i: int) -> None:
        for _ in range(5):
            result = bitmerge_semantic([write_wav(S16, p) for p in inputs[i]])
            outputs[i] = result.wav

    threads = [threading.Thread(target=merge, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    assert outputs == {i: _expected(S16, inputs[i]) for i in range(8)}


def _merge_in_child(queue: multiprocessing.Queue) -> None:
    bitmerge._CONCURRENT_HASH_BYTES = 1
    pcms = [make_pcm(S16, 800, seed=s) for s in range(4)]
    result = bitmerge_semantic([write_wav(S16, p) for p in pcms])
    queue.put(result.wav == _expected(S16, pcms))


@pytest.mark.usefixtures("split")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_gets_its_own_helper_thread() -> None:
    """The parent's helper thread does not exist in a forked child; the child must not
    wait for it forever."""
    bitmerge_semantic([make_wav(S16, 800, seed=s) for s in range(4)])  # parent's helper made
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_merge_in_child, args=(queue,))
    child.start()
    try:
        child.join(timeout=120)
        assert child.exitcode == 0
        assert queue.get(timeout=10) is True
    finally:
        if child.is_alive():
            child.kill()
            child.join()


def test_run_split_runs_every_job_once_and_reraises() -> None:
    done: list[int] = []
    lock = threading.Lock()

    def job(i: int) -> None:
        with lock:
            done.append(i)

    bytefill.run_split([(10, lambda i=i: job(i)) for i in range(50)], min_weight=1)
    assert sorted(done) == list(range(50))

    def boom() -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        bytefill.run_split([(10, boom), (10, boom), (10, boom)], min_weight=1)
    done.clear()
    bytefill.run_split([(10, lambda i=i: job(i)) for i in range(3)], min_weight=1)
    assert sorted(done) == [0, 1, 2]  # the helper is free again after an error


def test_equal_and_new_bytes_edges() -> None:
    data = b"abcdef"
    assert bytefill.equal(data, 2, memoryview(b"cde"))
    assert not bytefill.equal(data, 2, b"cdx")
    assert not bytefill.equal(data, 4, b"efg")  # past the end
    assert bytefill.equal(data, 6, b"")
    with pytest.raises(ValueError, match="at least 2 bytes"):
        bytefill.new_bytes(1)
    out, address = bytefill.new_bytes(3 * bytefill.HUGE_PAGE_MIN_BYTES)
    bytefill.fill(address, 7, len(out))
    assert out == b"\x07" * len(out)


def test_verify_reuses_the_merges_parse_of_the_same_bytes_while_the_manifest_lives(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The very `bytes` objects merged are not parsed (nor hashed) again by `verify`; equal
    bytes in other objects are; nothing is held once the manifest is gone."""
    parts = [make_wav(S16, n, seed=n) for n in (900, 1300, 700)]
    result = bitmerge_semantic(parts)
    parses: list[bytes] = []
    canonical = bitmerge._canonical_s16

    def counted(data: bytes) -> object:
        parses.append(data)
        return canonical(data)

    monkeypatch.setattr(bitmerge, "_canonical_s16", counted)
    assert verify(result.wav, result.manifest, parts).ok
    assert parses == []
    copies = [bytes(bytearray(p)) for p in parts]
    assert verify(result.wav, result.manifest, copies).ok
    assert [p is c for p, c in zip(parses, copies, strict=True)] == [True] * 3
    key = id(result.manifest)
    assert key in bitmerge._MERGED_PARTS
    del result
    assert key not in bitmerge._MERGED_PARTS
