"""Sound processing at generation: loudness gain → true-peak ceiling → trim → edge fades.

All of it happens once, before a stem is cached, so assembly stays a bit-exact join of
stems that are already fit to be joined (shared/DESIGN.md "Sound"). The steps, for a
contract with `loudness_lufs` set:

1. **Measure** the engine's clip: integrated loudness (ITU-R BS.1770-4, K-weighted, gated,
   with `pyloudnorm`) and true peak (BS.1770 Annex 2: 4× oversampled with `soxr`).
2. **Gain** to the target loudness, then **limit** so the true peak stays under the ceiling:
   a look-ahead gain envelope (minimum filter, then a box average of the same radius, which
   can only lower the gain a peak needs) over the 4× oversampled peaks.
3. **Trim** leading and trailing silence: frames no louder than `TRIM_DBFS` as they will be
   stored (after the gain, the limiter and the encoding), keeping `edge_fade_ms` of room
   before the first and after the last loud frame — so the fades below fall on that room,
   not on speech, and a template's merge-time trim (same threshold, keep ≥ the fade) finds
   nothing left to cut.
4. **Fade** the first and last `edge_fade_ms` with a raised cosine that starts and ends at
   exactly 0, so every stem begins and ends on the encoding's silence value: any join of two
   stems, or of a stem and silence, has no step.
5. **Check** the encoded result — loudness and true peak are measured again on the bytes
   that will be stored; the gain and the limiter's threshold are corrected and steps 2–5
   repeated until the stem is within `TOLERANCE_LU` of the target and under the ceiling.

**Short clips.** BS.1770 gates 400 ms blocks; a clip shorter than one block (a single
short name) is measured as ONE block of its own length, with the absolute −70 LUFS gate
only. The same rule measures it before and after, so "within ±0.5 LU of the target" means
the same thing for every stem.

With `loudness_lufs=None` and `edge_fade_ms>0` the clip is trimmed (at `TRIM_DBFS` of its own
level) and faded only; with both off `process` returns the engine's audio untouched.
"""

from __future__ import annotations

import math
import warnings
from functools import cache
from typing import NamedTuple

import numpy as np
import pyloudnorm
import soxr
from pydantic import BaseModel
from scipy.ndimage import minimum_filter1d, uniform_filter1d

from hybrid_audio import codecs
from hybrid_audio.bitmerge import Manifest
from hybrid_audio.contract import AudioFormat, VoiceContract
from hybrid_audio.wav import Wav

#: BS.1770's gating block (s); shorter clips are one block of their own length.
BLOCK_SECONDS = 0.4
#: Oversampling of the true-peak meter (BS.1770 Annex 2 asks for at least 4× at 48 kHz).
OVERSAMPLING = 4
#: Frames quieter than this (after the gain) at a stem's ends are silence and trimmed; the
#: templates' merge-time trim uses the same default, so it finds nothing more to cut.
TRIM_DBFS = -50.0
#: Radius (ms) of the limiter's look-ahead and of its gain smoothing.
LIMITER_RADIUS_MS = 5.0
#: Largest gain a clip may get: more would lift noise, not speech.
MAX_GAIN_DB = 40.0
#: How close to the target the iteration aims (the tests allow ±0.5 LU).
TOLERANCE_LU = 0.2
#: The limiter aims this far under the ceiling, so rounding to the encoding stays under it.
CEILING_MARGIN_DB = 0.05
#: Rounds of gain/limiter correction before the best result so far is kept.
ROUNDS = 8
#: First guess of dB of loudness per dB of gain once the limiter acts (later rounds use the
#: measured slope): on Piper's stems it is 0.4–0.75; 1.0 took a round more, on most stems.
LIMITED_SLOPE = 0.55


class SoundReport(BaseModel):
    """What processing measured and did to one stem (kept in the stem index)."""

    loudness_before: float | None  # LUFS of the engine's clip; None when it is silent
    loudness_after: float | None  # LUFS of the stored stem
    true_peak_before: float | None  # dBTP; None when silent
    true_peak_after: float | None
    gain_db: float  # gain applied before limiting
    limited: bool  # the limiter lowered some peaks
    trimmed_start_frames: int
    trimmed_end_frames: int
    short_clip: bool  # measured as one block (shorter than BLOCK_SECONDS)


def _db(linear: float) -> float | None:
    return 20 * math.log10(linear) if linear > 0 else None


@cache
def _meter(rate: int, block_seconds: float) -> pyloudnorm.Meter:
    return pyloudnorm.Meter(rate, block_size=block_seconds)


def integrated_loudness(samples: np.ndarray, rate: int) -> float:
    """BS.1770-4 integrated loudness (LUFS) of mono samples; −inf for silence.

    A clip shorter than one 400 ms gating block is measured as one block of its own
    length (see the module docstring).
    """
    x = np.asarray(samples, dtype=np.float64).reshape(-1)
    if x.size == 0 or not np.any(x):
        return -math.inf
    block = min(BLOCK_SECONDS, x.size / rate)
    meter = _meter(rate, block)
    if x.size < meter.block_size * rate:  # float rounding of size/rate·rate
        x = np.append(x, 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # log10(0) of silent blocks; they are gated out
        return float(meter.integrated_loudness(x))


def _oversampled(x: np.ndarray, rate: int) -> np.ndarray:
    """|x| at 4× the rate (soxr's linear-phase HQ filter, flushed at the end)."""
    return np.abs(soxr.resample(x, rate, rate * OVERSAMPLING, quality="HQ"))


def _oversampled_peaks(x: np.ndarray, rate: int) -> np.ndarray:
    """Per frame, the largest |value| of the 4× oversampled signal between it and the next."""
    up = _oversampled(x, rate)
    peaks = np.abs(x)
    for phase in range(OVERSAMPLING):  # strided maxima: far faster than reshape().max(axis=1)
        lane = up[phase::OVERSAMPLING][: x.size]
        np.maximum(peaks[: lane.size], lane, out=peaks[: lane.size])
    return peaks


def true_peak_dbtp(samples: np.ndarray, rate: int) -> float:
    """True peak (dBTP) of mono samples, 4× oversampled; −inf for silence."""
    x = np.asarray(samples, dtype=np.float64).reshape(-1)
    if x.size == 0:
        return -math.inf
    peak = max(float(np.abs(x).max()), float(_oversampled(x, rate).max(initial=0.0)))
    return 20 * math.log10(peak) if peak > 0 else -math.inf


def _limit(x: np.ndarray, peaks: np.ndarray, rate: int, ceiling: float) -> tuple[np.ndarray, bool]:
    """`x` with a smooth gain envelope that keeps its oversampled `peaks` ≤ `ceiling`."""
    if peaks.max() <= ceiling:
        return x, False
    needed = np.minimum(1.0, ceiling / np.maximum(peaks, 1e-12))
    size = 2 * max(1, round(LIMITER_RADIUS_MS * rate / 1000)) + 1
    # The box average of a minimum filter of the same width never exceeds `needed` anywhere.
    gain = uniform_filter1d(minimum_filter1d(needed, size, mode="nearest"), size, mode="nearest")
    return x * np.minimum(gain, needed), True


def _fade_window(frames: int, fade: int) -> np.ndarray:
    """1.0 inside, a raised cosine from exactly 0 over `fade` frames at each edge."""
    window = np.ones(frames)
    fade = min(fade, frames // 2)
    if fade > 0:
        ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(fade) / fade)  # ramp[0] == 0
        window[:fade] = ramp
        window[frames - fade :] = ramp[::-1]
    return window


def _trim_range(x: np.ndarray, threshold: float, keep: int) -> tuple[int, int]:
    """Frames [start, end) from `keep` before the first |x| > threshold to `keep` after
    the last; the whole clip when nothing is that loud."""
    loud = np.flatnonzero(np.abs(x) > threshold)
    if loud.size == 0:
        return 0, x.size
    return max(0, int(loud[0]) - keep), min(x.size, int(loud[-1]) + 1 + keep)


class _Round(NamedTuple):
    """One try at the target: the stored bytes, what they measure, and how they were made."""

    pcm: bytes
    loudness_lufs: float | None  # None for silence
    peak_dbtp: float
    gain_db: float
    limited: bool
    start: int  # the kept range of the engine's clip
    end: int
    error: float = math.inf  # distance to the target (LU), +100 over the ceiling


def _shape(
    source: np.ndarray,
    peaks: np.ndarray,
    fmt: AudioFormat,
    gain_db: float,
    limit_at: float | None,
    fade: int,
) -> _Round:
    """`source` gained, limited (unless `limit_at` is None), trimmed and faded, encoded.

    The trim looks at the samples as they will be stored — after this gain, the limiter and
    the encoding — so a frame the merge-time trim calls loud (same `TRIM_DBFS`) is never
    farther than the fade from a stem's edge, and a trim keeping at least the fade cuts
    nothing. (Trimming with an earlier gain estimate left quiet tails that a later, lower
    gain put under the threshold: the merge trim then cut into the fade.) `peaks` are the
    source's oversampled peaks: oversampling is linear, so the gained clip's are `peaks`
    times the gain, without oversampling it again every round.
    """
    gain = 10 ** (gain_db / 20)
    shaped = source * gain
    limited = False
    if limit_at is not None:
        shaped, limited = _limit(shaped, peaks * gain, fmt.sample_rate, limit_at)
    as_stored = codecs.decode(codecs.encode(shaped, fmt), fmt)[:, 0]
    start, end = _trim_range(as_stored, 10 ** (TRIM_DBFS / 20), fade)
    # + 0.0: a negative sample times the window's 0 is −0.0, which is not float
    # silence (its sign bit is set); the edges must be the encoding's silence value.
    pcm = codecs.encode(shaped[start:end] * _fade_window(end - start, fade) + 0.0, fmt)
    stored = codecs.decode(pcm, fmt)[:, 0]
    loudness = integrated_loudness(stored, fmt.sample_rate)
    return _Round(
        pcm=pcm,
        loudness_lufs=_finite(loudness),
        peak_dbtp=true_peak_dbtp(stored, fmt.sample_rate),
        gain_db=gain_db,
        limited=limited,
        start=start,
        end=end,
    )


def process(wav: Wav, contract: VoiceContract) -> tuple[Wav, SoundReport | None]:
    """The stem `contract` wants from an engine's `wav`, and what was done to it.

    Returns `(wav, None)` unchanged when the contract processes nothing, and for audio the
    cache will refuse anyway (another format than the contract's, a partial frame, none), so
    that refusal names the engine's real fault. The result has the same format as the
    input; only its samples (and length, by the trim) differ.
    """
    fmt = wav.format
    if (
        not contract.processes_sound
        or fmt != contract.audio_format
        or len(wav.pcm) % fmt.block_align
        or not wav.pcm
    ):
        return wav, None
    rate = fmt.sample_rate
    source = codecs.decode(wav.pcm, fmt).mean(axis=1)  # contracts are mono
    target = contract.loudness_lufs
    before = integrated_loudness(source, rate)
    peaks = _oversampled_peaks(source, rate)
    fade = fmt.frames_for_ms(contract.edge_fade_ms)
    gain_db = 0.0
    if target is not None and math.isfinite(before):
        gain_db = _clamp_gain(target - before)
        start, end = _trim_range(source, 10 ** ((TRIM_DBFS - gain_db) / 20), fade)
        # A short clip measures louder trimmed: start from the trimmed clip's measure.
        gain_db = _clamp_gain(target - integrated_loudness(source[start:end], rate))
    ceiling = contract.true_peak_dbtp
    limit_at = 10 ** ((ceiling - CEILING_MARGIN_DB) / 20)
    best: _Round | None = None
    last: tuple[float, float] | None = None  # (gain, loudness) of the previous round
    for _ in range(ROUNDS if target is not None else 1):
        limit = limit_at if target is not None else None
        result = _shape(source, peaks, fmt, gain_db, limit, fade)
        if target is None or result.loudness_lufs is None:
            best = result
            break
        over = result.peak_dbtp > ceiling
        error = abs(result.loudness_lufs - target) + (100.0 if over else 0.0)
        if best is None or error < best.error:
            best = result._replace(error=error)
        if error <= TOLERANCE_LU:
            break
        if over:
            limit_at *= 10 ** ((ceiling - result.peak_dbtp - CEILING_MARGIN_DB) / 20)
        # Secant step: under the limiter a dB of gain buys less than a dB of loudness.
        slope = LIMITED_SLOPE if result.limited else 1.0
        if last is not None and gain_db != last[0]:
            slope = float(np.clip((result.loudness_lufs - last[1]) / (gain_db - last[0]), 0.2, 1.0))
        last = (gain_db, result.loudness_lufs)
        gain_db = _clamp_gain(gain_db + (target - result.loudness_lufs) / slope)
    assert best is not None
    report = SoundReport(
        loudness_before=_finite(before),
        loudness_after=best.loudness_lufs,
        true_peak_before=_db(float(peaks.max(initial=0.0))),
        true_peak_after=_finite(best.peak_dbtp),
        gain_db=round(best.gain_db, 4),
        limited=best.limited,
        trimmed_start_frames=best.start,
        trimmed_end_frames=source.size - best.end,
        short_clip=best.end - best.start < BLOCK_SECONDS * rate,
    )
    pcm = best.pcm
    return Wav(format=fmt, pcm=pcm, repairs=wav.repairs, source=wav.source), report


def _clamp_gain(gain_db: float) -> float:
    return float(np.clip(gain_db, -MAX_GAIN_DB, MAX_GAIN_DB))


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def join_steps_dbfs(wav: Wav, manifest: Manifest) -> list[float]:
    """The jump between neighbouring samples at every join of a merged message, in dBFS.

    Joins are the segment boundaries of `manifest` and the message's two edges (where
    playback starts from and returns to silence). A step of 0 is −inf dBFS.
    """
    samples = codecs.decode(wav.pcm, wav.format)
    frames = samples.shape[0]
    silence = np.zeros((1, samples.shape[1]))
    padded = np.concatenate([silence, samples, silence])
    boundaries = {0, frames} | {s.frame_offset for s in manifest.segments if s.frame_offset > 0}
    steps = []
    for b in sorted(boundaries):
        jump = float(np.abs(padded[b + 1] - padded[b]).max())  # frame b-1 → frame b
        steps.append(20 * math.log10(jump) if jump > 0 else -math.inf)
    return steps


def largest_join_step_dbfs(wav: Wav, manifest: Manifest) -> float:
    """The largest of `join_steps_dbfs` (−inf when every join is silent to silent)."""
    return max(join_steps_dbfs(wav, manifest), default=-math.inf)
