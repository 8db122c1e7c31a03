"""The bit-exact join and its byte-level proof, checked by independent readers."""

from __future__ import annotations

import hashlib
import io
import re
import wave
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hybrid_audio.bitmerge import (
    FormatMismatchError,
    Manifest,
    MergeError,
    MergeResult,
    Part,
    Silence,
    Trim,
    bitmerge_semantic,
    verify,
)
from hybrid_audio.contract import AudioFormat, Encoding
from hybrid_audio.wav import WavError, read_wav, write_wav
from tests.audio_factory import make_pcm, make_wav

S16 = AudioFormat(encoding="pcm_s16le", sample_rate=22050)


def _stems(fmt: AudioFormat = S16, lengths: tuple[int, ...] = (900, 1300, 700)) -> list[bytes]:
    return [make_wav(fmt, n, seed=i) for i, n in enumerate(lengths)]


def test_data_chunk_is_the_concatenation_read_by_the_stdlib() -> None:
    stems = _stems()
    result = bitmerge_semantic(stems)
    with wave.open(io.BytesIO(result.wav)) as reader:
        frames = reader.readframes(reader.getnframes())
        assert (reader.getframerate(), reader.getsampwidth()) == (22050, 2)
    assert frames == b"".join(read_wav(s).pcm for s in stems)


def test_samples_read_by_libsndfile_equal_the_sources() -> None:
    stems = _stems()
    merged, rate = sf.read(io.BytesIO(bitmerge_semantic(stems).wav), dtype="int16")
    sources = [sf.read(io.BytesIO(s), dtype="int16")[0] for s in stems]
    assert rate == 22050
    np.testing.assert_array_equal(merged, np.concatenate(sources))


def test_same_stem_twice_appears_twice() -> None:
    name, dev = _stems(lengths=(800, 1200))[:2]
    result = bitmerge_semantic([Part(name, "stem.name.jose"), dev, Part(name, "stem.name.jose")])
    pcm = read_wav(name).pcm
    data = read_wav(result.wav).pcm
    assert data.count(pcm) == 2
    first, _, third = result.manifest.segments
    assert (first.id, third.id) == ("stem.name.jose", "stem.name.jose")
    assert result.wav[third.byte_offset : third.byte_offset + third.byte_length] == pcm


@pytest.mark.parametrize(
    ("encoding", "byte"),
    [
        ("pcm_s16le", 0x00),
        ("pcm_f32le", 0x00),
        ("pcm_u8", 0x80),
        ("pcm_mulaw", 0xFF),
        ("pcm_alaw", 0xD5),
    ],
)
def test_silence_uses_the_encodings_own_zero(encoding: str, byte: int) -> None:
    fmt = AudioFormat(encoding=encoding, sample_rate=8000)
    result = bitmerge_semantic([make_wav(fmt, 100), Silence(ms=25), make_wav(fmt, 100)])
    silence = result.manifest.segments[1]
    assert silence.frames == 200
    run = result.wav[silence.byte_offset : silence.byte_offset + silence.byte_length]
    assert run == bytes([byte]) * (200 * fmt.block_align)


def test_gap_goes_between_neighbours_only() -> None:
    stems = _stems()
    result = bitmerge_semantic(stems, gap_ms=10)
    kinds = [s.kind for s in result.manifest.segments]
    assert kinds == ["audio", "gap", "audio", "gap", "audio"]
    assert all(s.frames == 220 for s in result.manifest.segments if s.kind == "gap")
    assert verify(result.wav, result.manifest, stems).ok


@pytest.mark.parametrize(
    ("field", "other"),
    [
        ("sample_rate", AudioFormat(encoding="pcm_s16le", sample_rate=24000)),
        ("encoding", AudioFormat(encoding="pcm_f32le", sample_rate=22050)),
        ("channels", AudioFormat(encoding="pcm_s16le", sample_rate=22050, channels=2)),
        ("width", AudioFormat(encoding="pcm_s24le", sample_rate=22050)),
    ],
)
def test_format_mismatch_is_an_error_never_a_conversion(field: str, other: AudioFormat) -> None:
    with pytest.raises(FormatMismatchError, match="never converts") as info:
        bitmerge_semantic([Part(make_wav(S16, 100), "a"), Part(make_wav(other, 100), "b")])
    message = str(info.value)
    assert "part 1 (b)" in message
    assert "part 0 (a)" in message
    assert other.describe() in message


def test_requested_format_is_enforced() -> None:
    with pytest.raises(FormatMismatchError, match="the requested format"):
        bitmerge_semantic(_stems(), format=AudioFormat(encoding="pcm_s16le", sample_rate=8000))


def test_silence_only_needs_a_format() -> None:
    with pytest.raises(MergeError, match="no audio parts"):
        bitmerge_semantic([Silence(ms=10)])
    result = bitmerge_semantic([Silence(ms=10)], format=S16)
    assert read_wav(result.wav).pcm == bytes(220 * 2)


@pytest.mark.parametrize(
    ("parts", "kwargs", "message"),
    [
        ([], {}, "no audio parts"),
        ([Silence(ms=-5)], {"format": S16}, "non-negative"),
        ([Silence(ms=float("nan"))], {"format": S16}, "finite"),
        ([Silence(frames=-1)], {"format": S16}, "negative"),
        ([Silence(ms=1)], {"format": S16, "gap_ms": -1}, "non-negative"),
        ([Silence(ms=1)], {"format": S16, "mode": "fancy"}, "mode must be"),
        ([Silence(ms=1)], {"format": S16, "mode": "hybrid", "crossfade_ms": -2}, "crossfade_ms"),
        ([Silence(ms=100 * 60 * 60 * 1000)], {"format": S16}, "4 GiB"),
    ],
)
def test_bad_requests_are_merge_errors(parts: list, kwargs: dict, message: str) -> None:
    with pytest.raises(MergeError, match=message):
        bitmerge_semantic(parts, **kwargs)


def test_bad_trim_settings() -> None:
    with pytest.raises(MergeError, match="threshold"):
        Trim(threshold_dbfs=3)
    with pytest.raises(MergeError, match="keep_ms"):
        Trim(keep_ms=-1)


def test_unknown_part_type_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="part 0"):
        bitmerge_semantic([42])  # type: ignore[list-item]


def test_a_malformed_part_raises_wav_error_naming_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "stem.name.broken.wav"
    bad.write_bytes(make_wav(S16, 100)[:-10])
    with pytest.raises(WavError, match=re.escape("stem.name.broken.wav")):
        bitmerge_semantic([make_wav(S16, 100), bad])


def test_paths_are_read_and_named_by_file_stem(tmp_path: Path) -> None:
    paths = []
    for i, data in enumerate(_stems()):
        path = tmp_path / f"stem.name.n{i}.wav"
        path.write_bytes(data)
        paths.append(path)
    result = bitmerge_semantic(paths)
    assert [s.id for s in result.manifest.segments] == [
        "stem.name.n0",
        "stem.name.n1",
        "stem.name.n2",
    ]
    out = tmp_path / "out.wav"
    out.write_bytes(result.wav)
    assert verify(out, result.manifest, [str(p) for p in paths]).ok


def test_trim_keeps_whole_frames_bit_exact() -> None:
    fmt = AudioFormat(encoding="pcm_s16le", sample_rate=8000, channels=2)
    stem = make_wav(fmt, 1000, edge=0.3)  # loud frames 300..699
    result = bitmerge_semantic([stem], trim=Trim(threshold_dbfs=-60, keep_ms=5))
    seg = result.manifest.segments[0]
    assert (seg.trim_start_frame, seg.trim_end_frame) == (260, 740)  # 5 ms = 40 frames
    pcm = read_wav(stem).pcm
    assert read_wav(result.wav).pcm == pcm[260 * 4 : 740 * 4]
    assert seg.kept_sha256 != seg.source_sha256
    assert verify(result.wav, result.manifest, [stem]).ok


def test_trim_of_a_silent_stem_keeps_nothing() -> None:
    silent = make_wav(S16, 500, edge=0.5)
    result = bitmerge_semantic([silent, make_wav(S16, 100)], trim=Trim())
    assert result.manifest.segments[0].frames == 0
    assert verify(result.wav, result.manifest, [silent, make_wav(S16, 100)]).ok


def test_odd_length_data_gets_a_pad_byte() -> None:
    fmt = AudioFormat(encoding="pcm_u8", sample_rate=8000)
    result = bitmerge_semantic([make_wav(fmt, 101), make_wav(fmt, 100, seed=1)])
    assert result.manifest.data_bytes == 201
    assert len(result.wav) == result.manifest.data_offset + 202
    assert read_wav(result.wav).frames == 201
    assert verify(result.wav, result.manifest, [make_wav(fmt, 101), make_wav(fmt, 100, seed=1)]).ok


def test_manifest_survives_json() -> None:
    stems = _stems()
    result = bitmerge_semantic(stems, gap_ms=5, trim=Trim())
    reloaded = Manifest.model_validate_json(result.manifest.model_dump_json())
    assert reloaded == result.manifest
    assert verify(result.wav, reloaded, stems).ok


def test_offsets_are_absolute_file_offsets() -> None:
    stems = _stems()
    result = bitmerge_semantic(stems)
    m = result.manifest
    assert m.data_offset == 44
    for seg, stem in zip(m.segments, stems, strict=True):
        assert seg.byte_offset == m.data_offset + seg.frame_offset * 2
        assert result.wav[seg.byte_offset : seg.byte_offset + seg.byte_length] == read_wav(stem).pcm


def assert_every_flipped_byte_is_named(fmt: AudioFormat) -> MergeResult:
    """Two stems of `fmt` around a silence, merged; each byte of the output flipped in turn
    is reported as the first difference, at its own offset. Returns the merge."""
    parts = [make_wav(fmt, 61), Silence(frames=20), make_wav(fmt, 40, seed=2)]
    result = bitmerge_semantic(parts, gap_ms=1)
    for offset in range(len(result.wav)):
        tampered = bytearray(result.wav)
        tampered[offset] ^= 0x01
        report = verify(bytes(tampered), result.manifest, parts)
        assert not report.ok
        assert report.first_diff_offset == offset, offset
    return result


def test_every_flipped_byte_is_named_exactly() -> None:
    result = assert_every_flipped_byte_is_named(AudioFormat(encoding="pcm_mulaw", sample_rate=8000))
    assert len(result.wav) % 2 == 0  # includes the pad byte


def test_segment_report_names_the_segment_and_offset() -> None:
    stems = _stems()
    result = bitmerge_semantic(stems)
    target = result.manifest.segments[1]
    tampered = bytearray(result.wav)
    tampered[target.byte_offset + 7] ^= 0xFF
    report = verify(bytes(tampered), result.manifest, stems)
    exact = [s.exact for s in report.segments]
    assert exact == [True, False, True]
    assert report.segments[1].first_diff_offset == target.byte_offset + 7
    assert report.header_exact


def test_truncated_output_is_reported() -> None:
    stems = _stems()
    result = bitmerge_semantic(stems)
    report = verify(result.wav[:-100], result.manifest, stems)
    assert not report.ok
    assert any("manifest implies" in e for e in report.errors)
    assert report.first_diff_offset == len(result.wav) - 100


def test_changed_source_is_reported_not_trusted() -> None:
    stems = _stems()
    result = bitmerge_semantic(stems)
    other = list(stems)
    other[2] = make_wav(S16, 700, seed=99)
    report = verify(result.wav, result.manifest, other)
    assert not report.ok
    assert "source changed" in report.segments[2].detail


def test_missing_sources_are_reported() -> None:
    stems = _stems()
    result = bitmerge_semantic(stems)
    report = verify(result.wav, result.manifest, stems[:2])
    assert not report.ok
    assert "no source given" in report.segments[2].detail


def test_hybrid_differs_only_inside_declared_crossfades() -> None:
    stems = _stems()
    result = bitmerge_semantic(stems, mode="hybrid", crossfade_ms=8)
    m = result.manifest
    assert len(m.crossfades) == 2
    assert all(c.frames == 176 for c in m.crossfades)
    assert m.frames == sum(read_wav(s).frames for s in stems) - 2 * 176
    report = verify(result.wav, m, stems)
    assert report.ok
    # independent check: outside the crossfades every byte is the source's
    touched = np.zeros(len(result.wav), bool)
    for c in m.crossfades:
        touched[c.byte_offset : c.byte_offset + c.byte_length] = True
    expected = np.frombuffer(result.wav, np.uint8).copy()
    for seg, stem in zip(m.segments, stems, strict=True):
        expected[seg.byte_offset : seg.byte_offset + seg.byte_length] = np.frombuffer(
            read_wav(stem).pcm, np.uint8
        )
    differs = np.frombuffer(result.wav, np.uint8) != expected
    assert not (differs & ~touched).any()
    assert differs[touched].any(), "the crossfade should actually change bytes"


def test_hybrid_crossfade_bytes_are_checked_too() -> None:
    stems = _stems()
    result = bitmerge_semantic(stems, mode="hybrid")
    fade = result.manifest.crossfades[0]
    tampered = bytearray(result.wav)
    tampered[fade.byte_offset + 10] ^= 0x40
    report = verify(bytes(tampered), result.manifest, stems)
    assert not report.ok
    assert not report.crossfades[0].matches
    assert report.first_diff_offset == fade.byte_offset + 10


FORMATS = st.builds(
    AudioFormat,
    encoding=st.sampled_from(list(Encoding)),
    sample_rate=st.sampled_from([8000, 16000, 22050, 44100]),
    channels=st.integers(1, 2),
)


@st.composite
def part_lists(draw: st.DrawFn) -> tuple[AudioFormat, list]:
    fmt = draw(FORMATS)
    parts = []
    for i in range(draw(st.integers(1, 6))):
        if draw(st.booleans()):
            parts.append(Silence(frames=draw(st.integers(0, 300))))
        else:
            frames = draw(st.integers(0, 400))
            wav = make_wav(fmt, frames, seed=draw(st.integers(0, 2**16)))
            parts.append(Part(wav, f"stem.name.p{i}") if draw(st.booleans()) else wav)
    return fmt, parts


@pytest.mark.slow
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    spec=part_lists(),
    gap=st.sampled_from([0, 0, 3.5]),
    trim=st.sampled_from([None, Trim(), Trim(-30, 0)]),
    mode=st.sampled_from(["exact", "hybrid"]),
    data=st.data(),
)
def test_merge_then_verify_holds_for_random_part_lists(spec, gap, trim, mode, data) -> None:
    fmt, parts = spec
    result = bitmerge_semantic(parts, gap_ms=gap, trim=trim, mode=mode, format=fmt)
    report = verify(result.wav, result.manifest, parts)
    assert report.ok, report
    parsed = read_wav(result.wav)
    assert parsed.format == fmt
    assert parsed.frames == result.manifest.frames
    if mode == "exact":
        expected = b"".join(
            result.wav[s.byte_offset : s.byte_offset + s.byte_length]
            for s in result.manifest.segments
        )
        assert parsed.pcm == expected
    offset = data.draw(st.integers(0, len(result.wav) - 1))
    tampered = bytearray(result.wav)
    tampered[offset] ^= data.draw(st.integers(1, 255))
    bad = verify(bytes(tampered), result.manifest, parts)
    assert not bad.ok
    assert bad.first_diff_offset == offset


def test_exact_merge_keeps_source_bytes_for_random_pcm() -> None:
    fmt = AudioFormat(encoding="pcm_s24le", sample_rate=48000, channels=2)
    pcms = [make_pcm(fmt, n, seed=n) for n in (1, 17, 480)]
    result = bitmerge_semantic([write_wav(fmt, p) for p in pcms])
    assert read_wav(result.wav).pcm == b"".join(pcms)


def test_large_sources_hashed_alongside_the_join_are_recorded_right() -> None:
    """Large sources are copied and hashed on two threads; the manifest must not care."""
    fmt = AudioFormat(encoding="pcm_s16le", sample_rate=44100)
    wavs = [read_wav(make_wav(fmt, 1_200_000, seed=s)) for s in (1, 2)]  # 2 × 2.4 MB
    result = bitmerge_semantic(wavs)
    for seg, wav in zip(result.manifest.segments, wavs, strict=True):
        assert seg.source_sha256 == hashlib.sha256(wav.pcm).hexdigest()
    assert verify(result.wav, result.manifest, wavs).ok
