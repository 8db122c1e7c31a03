"""Deterministic test audio: noise bursts with silent edges, in any format."""

from __future__ import annotations

import numpy as np

from hybrid_audio.codecs import encode
from hybrid_audio.contract import AudioFormat
from hybrid_audio.wav import write_wav


def samples(frames: int, channels: int = 1, seed: int = 0, edge: float = 0.25) -> np.ndarray:
    """Float samples: silence for `edge` of the length at each end, noise (±0.5) between."""
    rng = np.random.default_rng(seed)
    x = np.zeros((frames, channels))
    lo, hi = int(frames * edge), frames - int(frames * edge)
    x[lo:hi] = rng.uniform(-0.5, 0.5, (hi - lo, channels))
    return x


def make_pcm(fmt: AudioFormat, frames: int, seed: int = 0, edge: float = 0.25) -> bytes:
    return encode(samples(frames, fmt.channels, seed, edge), fmt)


def make_wav(fmt: AudioFormat, frames: int, seed: int = 0, edge: float = 0.25) -> bytes:
    return write_wav(fmt, make_pcm(fmt, frames, seed, edge))
