"""Waveform envelopes: exact min/max per column, exact segment boundaries, bounded size."""

from __future__ import annotations

import numpy as np
import pytest

from hybrid_audio.bitmerge import AudioFormat
from hybrid_audio.contract import Encoding
from hybrid_audio.wav import read_wav, write_wav
from hybrid_audio.waveform import column_edges, envelope, segment_boundaries, segment_spans

RATE = 22050


def _wav(samples: np.ndarray, encoding: Encoding = Encoding.PCM_S16LE):
    fmt = AudioFormat(encoding=encoding, sample_rate=RATE, channels=1)
    dtype = "<i2" if encoding is Encoding.PCM_S16LE else "<f4"
    return read_wav(write_wav(fmt, samples.astype(dtype).tobytes()))


def test_min_max_per_column_are_exact() -> None:
    rng = np.random.default_rng(1)
    samples = rng.standard_normal(100_003)
    env = envelope(samples, 97, sample_rate=RATE)
    assert env.start[0] == 0
    assert env.stop[-1] == len(samples)
    assert np.array_equal(env.start[1:], env.stop[:-1])
    for start, stop, low, high in zip(env.start, env.stop, env.ymin, env.ymax, strict=True):
        assert low == samples[start:stop].min()
        assert high == samples[start:stop].max()


@pytest.mark.parametrize("encoding", [Encoding.PCM_S16LE, Encoding.PCM_F32LE])
def test_wav_input_is_scaled_to_full_scale(encoding: Encoding) -> None:
    rng = np.random.default_rng(2)
    if encoding is Encoding.PCM_S16LE:
        raw = rng.integers(-32768, 32768, 5000)
        expected = raw / 32768.0
    else:
        raw = rng.uniform(-1, 1, 5000).astype(np.float32)
        expected = raw.astype(np.float64)
    env = envelope(_wav(raw, encoding), 50)
    for start, stop, low, high in zip(env.start, env.stop, env.ymin, env.ymax, strict=True):
        assert low == expected[start:stop].min()
        assert high == expected[start:stop].max()
    assert env.x[1] == env.start[1] / RATE


def test_segment_boundaries_fall_on_column_edges() -> None:
    frames = 1_000_000
    boundaries = [1, 12_345, 12_346, 500_001, 999_999]
    edges = column_edges(frames, 300, boundaries)
    assert np.all(np.diff(edges) > 0)
    assert set(boundaries) <= set(edges.tolist())
    assert edges[0] == 0
    assert edges[-1] == frames
    assert len(edges) - 1 <= 300 + len(boundaries) + 1


def test_manifest_spans_and_boundaries() -> None:
    manifest = {
        "format": {"encoding": "pcm_s16le", "sample_rate": 100, "channels": 1},
        "segments": [
            {"id": "stem.script.hello", "kind": "audio", "frame_offset": 0, "frames": 150},
            {"id": "silence", "kind": "silence", "frame_offset": 150, "frames": 50},
            {"id": "stem.name.ann", "kind": "audio", "frame_offset": 200, "frames": 25},
        ],
    }
    assert segment_spans({"merge": manifest}) == [
        (0.0, 1.5, "stem.script.hello", "audio"),
        (1.5, 2.0, "silence", "silence"),
        (2.0, 2.25, "stem.name.ann", "audio"),
    ]
    assert segment_boundaries(manifest) == [0, 150, 200, 225]
    env = envelope(np.zeros(225), 10, sample_rate=100, boundaries=segment_boundaries(manifest))
    assert {150, 200} <= set(env.edges.tolist())


def test_ten_minutes_is_bounded() -> None:
    """The size stays bounded; the time (< 150 ms) is measured in benchmarks/bench_dashboard.py."""
    rng = np.random.default_rng(3)
    frames = 10 * 60 * RATE
    wav = _wav(rng.integers(-32768, 32768, frames, dtype=np.int16))
    boundaries = list(range(0, frames, frames // 40))
    env = envelope(wav, 1500, boundaries=boundaries)
    assert 2 * len(env) <= 2 * (1500 + len(boundaries) + 1)


def test_empty_and_short_inputs() -> None:
    empty = envelope(np.zeros(0), 100, sample_rate=RATE)
    assert len(empty) == 0
    assert len(empty.edges) == 0
    short = np.array([3.0, -1.0, 2.0])
    env = envelope(short, 100, sample_rate=RATE)  # fewer frames than columns: one per frame
    assert env.ymin.tolist() == [3.0, -1.0, 2.0]
    assert env.ymax.tolist() == [3.0, -1.0, 2.0]
    one = envelope(short, 1, sample_rate=RATE)
    assert (one.ymin.tolist(), one.ymax.tolist()) == ([-1.0], [3.0])


def test_bad_arguments_are_errors() -> None:
    with pytest.raises(ValueError, match="sample_rate"):
        envelope(np.zeros(10), 5)
    with pytest.raises(ValueError, match="width"):
        envelope(np.zeros(10), 0, sample_rate=RATE)
