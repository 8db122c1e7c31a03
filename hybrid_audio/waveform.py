"""Waveform envelopes: any length of audio → min/max per pixel column, for plotting.

`envelope()` reduces samples to at most about `width` columns (two values each, so a plot
gets ≤ ~2×width points however long the message). Columns are exact: each column's
`ymin`/`ymax` is the true minimum/maximum of the samples in its frame range
`[start, stop)`, computed with `np.minimum.reduceat`/`np.maximum.reduceat` on the raw
sample values (scaled afterwards, so a 10-minute message is never converted to float as a
whole). Segment boundaries are preserved exactly: the columns are laid out per segment,
so every boundary frame is a column edge and no column straddles two segments.
`segment_spans()` turns a bitmerge manifest into (start, end, label, kind) spans.

This module is core code: it never imports Panel or Bokeh and never changes audio.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from hybrid_audio.codecs import decode
from hybrid_audio.contract import Encoding
from hybrid_audio.wav import Wav

#: Full-scale divisors of the encodings read without `decode()` (the fast path).
_FAST_SCALE = {Encoding.PCM_S16LE: ("<i2", 32768.0), Encoding.PCM_F32LE: ("<f4", 1.0)}


@dataclass(frozen=True)
class Envelope:
    """Min/max per column. Column `i` covers frames `[start[i], stop[i])`."""

    start: np.ndarray  # first frame of each column (int64)
    stop: np.ndarray  # one past the last frame of each column (int64)
    ymin: np.ndarray  # float64, full scale ±1
    ymax: np.ndarray
    sample_rate: int

    @property
    def x(self) -> np.ndarray:
        """Column start times in seconds."""
        return self.start / self.sample_rate

    @property
    def x_end(self) -> np.ndarray:
        """Column end times in seconds."""
        return self.stop / self.sample_rate

    @property
    def edges(self) -> np.ndarray:
        """Column edges in frames: `start` followed by the last `stop`."""
        if not len(self.start):
            return np.zeros(0, dtype=np.int64)
        return np.append(self.start, self.stop[-1])

    def __len__(self) -> int:
        return len(self.start)


def _samples(source: Wav | np.ndarray) -> tuple[np.ndarray, float]:
    """A 1-D array of the first channel's raw values and the divisor to full scale."""
    if isinstance(source, Wav):
        fmt = source.format
        fast = _FAST_SCALE.get(fmt.encoding)
        if fast is not None:
            count = len(source.pcm) // fmt.block_align * fmt.channels
            raw = np.frombuffer(source.pcm, dtype=fast[0], count=count)
            return raw[:: fmt.channels], fast[1]
        return decode(source.pcm, fmt)[:, 0], 1.0
    array = np.asarray(source)
    if array.ndim == 2:
        array = array[:, 0]
    if array.ndim != 1:
        raise ValueError(f"samples must be 1-D or (frames, channels); got shape {array.shape}")
    return array, 1.0


def column_edges(frames: int, width: int, boundaries: Iterable[int] = ()) -> np.ndarray:
    """Strictly increasing frame edges from 0 to `frames`, including every boundary.

    Each stretch between boundaries gets columns in proportion to its length (at least
    one), never more columns than frames, so there are at most `width + stretches` columns.
    """
    if width < 1:
        raise ValueError(f"width must be ≥ 1, got {width}")
    if frames <= 0:
        return np.zeros(0, dtype=np.int64)
    cuts = sorted({0, frames, *(int(b) for b in boundaries if 0 < int(b) < frames)})
    pieces = []
    for left, right in itertools.pairwise(cuts):
        length = right - left
        columns = min(length, max(1, (width * length) // frames))
        pieces.append(left + (np.arange(columns, dtype=np.int64) * length) // columns)
    pieces.append(np.array([frames], dtype=np.int64))
    return np.concatenate(pieces)


def envelope(
    source: Wav | np.ndarray,
    width: int = 1000,
    *,
    sample_rate: int | None = None,
    boundaries: Iterable[int] = (),
) -> Envelope:
    """Min/max per column of `source` (a `Wav` or an array of samples), ~`width` columns.

    `boundaries` are frame indices (segment starts) that must fall on column edges.
    Arrays are taken as they are (no scaling); `sample_rate` is needed for arrays only.
    """
    if isinstance(source, Wav):
        sample_rate = source.format.sample_rate
    if not sample_rate or sample_rate <= 0:
        raise ValueError("sample_rate is required (and > 0) for an array of samples")
    samples, scale = _samples(source)
    edges = column_edges(len(samples), width, boundaries)
    if len(edges) < 2:
        empty = np.zeros(0)
        return Envelope(empty.astype(np.int64), empty.astype(np.int64), empty, empty, sample_rate)
    starts = edges[:-1]
    ymin = np.minimum.reduceat(samples, starts).astype(np.float64) / scale
    ymax = np.maximum.reduceat(samples, starts).astype(np.float64) / scale
    return Envelope(starts, edges[1:], ymin, ymax, sample_rate)


def _merge_section(manifest: Mapping[str, Any]) -> Mapping[str, Any]:
    """The bitmerge manifest, given it or the output document that holds it under "merge"."""
    return manifest.get("merge", manifest)


def segment_spans(manifest: Mapping[str, Any]) -> list[tuple[float, float, str, str]]:
    """(start_s, end_s, label, kind) per segment of a bitmerge manifest (or output document)."""
    merge = _merge_section(manifest)
    rate = merge["format"]["sample_rate"]
    spans = []
    for segment in merge["segments"]:
        start, frames = segment["frame_offset"], segment["frames"]
        kind = segment["kind"]
        label = segment["id"] if kind == "audio" else kind
        spans.append((start / rate, (start + frames) / rate, label, kind))
    return spans


def segment_boundaries(manifest: Mapping[str, Any]) -> list[int]:
    """Frame offsets where segments start and end: the edges `envelope()` must keep."""
    merge = _merge_section(manifest)
    edges: set[int] = set()
    for segment in merge["segments"]:
        edges.update((segment["frame_offset"], segment["frame_offset"] + segment["frames"]))
    return sorted(edges)
