"""sound.py: the BS.1770 meter, the short-clip rule, true peak, and `process` per encoding.

Synthetic signals only (fast): each test states the reference value it is held to.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pyloudnorm
import pytest
from scipy.signal import resample_poly

from hybrid_audio import codecs, sound
from hybrid_audio.bitmerge import Trim, _trim_range
from hybrid_audio.cache import StemCache
from hybrid_audio.contract import AudioFormat, Encoding, VoiceContract
from hybrid_audio.wav import Wav

#: (encoding, rate) of every contract encoding; G.711 at its telephone rate.
CONTRACT_FORMATS = [
    (Encoding.PCM_S16LE, 22050),
    (Encoding.PCM_F32LE, 22050),
    (Encoding.PCM_MULAW, 8000),
    (Encoding.PCM_ALAW, 8000),
]


def _tone(freq: float, seconds: float, rate: int, amplitude: float) -> np.ndarray:
    return amplitude * np.sin(2 * np.pi * freq * np.arange(round(seconds * rate)) / rate)


def _voice_like(rate: int, level_db: float, seed: int = 0) -> np.ndarray:
    """Leading silence, noise bursts and harmonic tones at different levels, a pause and
    trailing silence. The "silence" is an engine's floor: noise riding on a small negative
    DC offset (−75 dBFS at most), so the samples a trim keeps at the edges are not zeros."""
    rng = np.random.default_rng(seed)

    def burst(seconds: float, db: float) -> np.ndarray:
        noise = rng.standard_normal(round(seconds * rate))
        return noise / np.abs(noise).max() * 10 ** (db / 20)

    def vowel(freq: float, seconds: float, db: float) -> np.ndarray:
        harmonics = sum(_tone(freq * k, seconds, rate, 1 / k) for k in (1, 2, 3, 5))
        return harmonics / np.abs(harmonics).max() * 10 ** (db / 20)

    pieces = [
        np.zeros(round(0.25 * rate)),
        burst(0.08, level_db - 6),
        vowel(140, 0.35, level_db),
        burst(0.05, level_db - 12),
        vowel(180, 0.25, level_db - 8),
        np.zeros(round(0.12 * rate)),
        vowel(120, 0.4, level_db - 3),
        burst(0.1, level_db - 10),
        np.zeros(round(0.3 * rate)),
    ]
    x = np.concatenate(pieces)
    floor = 10 ** (-85 / 20)
    return x - floor * (1.5 + 0.5 * np.abs(rng.standard_normal(x.size)))


def _wav(samples: np.ndarray, encoding: Encoding, rate: int) -> Wav:
    fmt = AudioFormat(encoding=encoding, sample_rate=rate)
    return Wav(format=fmt, pcm=codecs.encode(samples, fmt))


def _samples(wav: Wav) -> np.ndarray:
    return codecs.decode(wav.pcm, wav.format)[:, 0]


def _contract(encoding: Encoding, rate: int, **sound_settings: object) -> VoiceContract:
    return VoiceContract(encoding=encoding, sample_rate=rate, **sound_settings)


def _independent_true_peak(x: np.ndarray) -> float:
    """dBTP with another 4× oversampler (scipy's polyphase FIR), not the one `sound` uses."""
    return 20 * math.log10(max(np.abs(resample_poly(x, 4, 1)).max(), np.abs(x).max()))


# --- the meter ----------------------------------------------------------------------------


def test_full_scale_997_hz_sine_measures_minus_3_01_lufs() -> None:
    """BS.1770-4 §2.1: a 0 dBFS 997 Hz sine in one channel reads −3.01 LKFS. pyloudnorm's
    K-weighting (filters designed from BS.1770's parameters) reads −3.05 at 48 kHz."""
    rate = 48000
    loudness = sound.integrated_loudness(_tone(997, 3.0, rate, 1.0), rate)
    assert loudness == pytest.approx(-3.01, abs=0.1)


def test_a_clip_shorter_than_a_gating_block_is_one_block_of_its_own_length() -> None:
    """The short-clip rule: a 200 ms tone is measured as one 200 ms block, so it reads what
    the same tone reads when it lasts 3 s (a steady tone has the same loudness in every
    block). Padded with silence to one 400 ms block, BS.1770 as written would read it
    10·log10(400/200) = 3.01 dB quieter: the rule is what makes a short name reach the
    target like a long one."""
    rate = 22050
    short = _tone(440, 0.2, rate, 0.3)
    steady = sound.integrated_loudness(_tone(440, 3.0, rate, 0.3), rate)
    measured = sound.integrated_loudness(short, rate)
    assert measured == pytest.approx(steady, abs=0.05)
    one_block = pyloudnorm.Meter(rate, block_size=0.2).integrated_loudness(short)
    assert measured == pytest.approx(one_block, abs=1e-9)
    padded = np.concatenate([short, np.zeros(round(0.2 * rate))])
    as_written = pyloudnorm.Meter(rate).integrated_loudness(padded)
    assert measured - as_written == pytest.approx(10 * math.log10(2), abs=0.05)


def test_a_clip_of_400_ms_or_more_is_gated_as_bs1770_says() -> None:
    """At and above one block the meter is pyloudnorm's BS.1770-4 meter, unchanged."""
    rate = 22050
    clip = _voice_like(rate, -12.0)
    assert sound.integrated_loudness(clip, rate) == pytest.approx(
        pyloudnorm.Meter(rate).integrated_loudness(clip), abs=1e-9
    )


def test_true_peak_finds_the_peak_between_samples() -> None:
    """A sine at fs/4 sampled at 45° phase has every sample at ±A·√½: the sample peak is
    3.01 dB under the true peak A. Raised-cosine edges (50 ms) keep the oversampling
    filter's edge ringing out of the measure; the middle holds the analytic peak."""
    rate, amplitude = 48000, 0.5
    n = np.arange(rate)
    x = amplitude * np.sin(np.pi / 2 * n + np.pi / 4)
    edge = round(0.05 * rate)
    ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(edge) / edge)
    x[:edge] *= ramp
    x[-edge:] *= ramp[::-1]
    sample_peak = 20 * math.log10(np.abs(x).max())
    true_peak = sound.true_peak_dbtp(x, rate)
    assert true_peak == pytest.approx(20 * math.log10(amplitude), abs=0.05)
    assert true_peak - sample_peak == pytest.approx(10 * math.log10(2), abs=0.05)


def test_silence_measures_minus_infinity() -> None:
    assert sound.integrated_loudness(np.zeros(22050), 22050) == -math.inf
    assert sound.true_peak_dbtp(np.zeros(22050), 22050) == -math.inf


# --- process ------------------------------------------------------------------------------


@pytest.mark.parametrize(("encoding", "rate"), CONTRACT_FORMATS)
@pytest.mark.parametrize("level_db", [-36.0, -14.0, -2.0])
def test_process_reaches_the_target_under_the_ceiling(
    encoding: Encoding, rate: int, level_db: float
) -> None:
    """Quiet (gain up, the limiter must act on the peaks), moderate and hot clips all end
    within ±0.5 LU of −16 LUFS, with a true peak under −1 dBTP by two meters."""
    contract = _contract(encoding, rate)
    out, report = sound.process(_wav(_voice_like(rate, level_db), encoding, rate), contract)
    assert report is not None
    assert out.format == contract.audio_format
    x = _samples(out)
    assert sound.integrated_loudness(x, rate) == pytest.approx(-16.0, abs=0.5)
    assert report.loudness_after == pytest.approx(sound.integrated_loudness(x, rate))
    assert sound.true_peak_dbtp(x, rate) <= -1.0
    assert _independent_true_peak(x) <= -1.0 + 0.1
    assert report.loudness_before == pytest.approx(
        sound.integrated_loudness(_samples(_wav(_voice_like(rate, level_db), encoding, rate)), rate)
    )


@pytest.mark.parametrize(("encoding", "rate"), CONTRACT_FORMATS)
def test_a_processed_stem_starts_and_ends_on_the_encodings_silence(
    encoding: Encoding, rate: int
) -> None:
    """The first and last frame are the bytes of digital silence (0xFF μ-law, 0xD5 A-law,
    zero bytes for PCM — a float −0.0 would not be), and the trim cut the engine's leading
    and trailing silence down to the fade's room."""
    fmt = AudioFormat(encoding=encoding, sample_rate=rate)
    silence = bytes([fmt.silence_byte]) * fmt.block_align
    source = _voice_like(rate, -20.0)
    for contract in (_contract(encoding, rate), _contract(encoding, rate, loudness_lufs=None)):
        out, report = sound.process(_wav(source, encoding, rate), contract)
        assert out.pcm[: fmt.block_align] == silence
        assert out.pcm[-fmt.block_align :] == silence
        assert report is not None
        assert report.trimmed_start_frames > 0.2 * rate
        assert report.trimmed_end_frames > 0.25 * rate
        fade = fmt.frames_for_ms(contract.edge_fade_ms)
        x = np.abs(_samples(out))
        # Inside the fade the level rises from silence; right after it, the speech is there.
        assert np.all(x[: fade // 4] < x[fade : 2 * fade].max() / 4)


@pytest.mark.parametrize(("encoding", "rate"), CONTRACT_FORMATS)
def test_fades_only_keep_the_level_but_fade_and_trim(encoding: Encoding, rate: int) -> None:
    """loudness_lufs=None, fades on: no gain, no limiter — the samples between the fades
    are the source's own (bit for bit), only the edges are trimmed and faded."""
    source = _wav(_voice_like(rate, -20.0), encoding, rate)
    contract = _contract(encoding, rate, loudness_lufs=None, edge_fade_ms=5.0)
    out, report = sound.process(source, contract)
    assert report is not None
    assert report.gain_db == 0.0
    assert not report.limited
    before, after = _samples(source), _samples(out)
    assert after.size < before.size - 0.4 * rate  # trimmed
    # The level is the peak's (the integrated loudness of the trimmed clip reads ~0.4 LU
    # higher: BS.1770's blocks that straddled speech and silence are gone, not the gain).
    assert 20 * math.log10(np.abs(after).max()) == pytest.approx(
        20 * math.log10(np.abs(before).max()), abs=0.1
    )
    fade = out.format.frames_for_ms(5.0)
    start = report.trimmed_start_frames
    inner = before[start + fade : start + after.size - fade]
    assert np.array_equal(after[fade:-fade], inner)
    assert not np.array_equal(after[:fade], before[start : start + fade])  # faded


def test_processing_off_returns_the_engines_bytes_untouched() -> None:
    source = _wav(_voice_like(22050, -20.0), Encoding.PCM_S16LE, 22050)
    contract = _contract(Encoding.PCM_S16LE, 22050, loudness_lufs=None, edge_fade_ms=0.0)
    out, report = sound.process(source, contract)
    assert report is None
    assert out.pcm == source.pcm


@pytest.mark.parametrize(("encoding", "rate"), CONTRACT_FORMATS)
def test_a_silent_clip_comes_back_silent_without_a_measure(encoding: Encoding, rate: int) -> None:
    source = _wav(np.zeros(rate // 2), encoding, rate)
    out, report = sound.process(source, _contract(encoding, rate))
    assert report is not None
    assert report.loudness_before is None
    assert report.loudness_after is None
    assert report.gain_db == 0.0
    assert out.pcm == source.pcm


def test_a_short_clip_is_gained_by_the_short_clip_rule() -> None:
    """A 150 ms "name" (shorter than one gating block after its silence is trimmed) ends
    at −16 LUFS as the rule measures it, and the report says it was a short clip."""
    rate = 22050
    clip = np.concatenate([np.zeros(2000), _tone(200, 0.15, rate, 0.05), np.zeros(2000)])
    out, report = sound.process(_wav(clip, Encoding.PCM_S16LE, rate), _contract("pcm_s16le", rate))
    assert report is not None
    assert report.short_clip
    x = _samples(out)
    assert x.size < sound.BLOCK_SECONDS * rate
    assert sound.integrated_loudness(x, rate) == pytest.approx(-16.0, abs=0.5)
    assert sound.true_peak_dbtp(x, rate) <= -1.0


# --- the contract -------------------------------------------------------------------------


def test_changing_the_loudness_target_re_keys_the_stems(tmp_path: Path) -> None:
    contract = VoiceContract(voice="v1", engine_version="test 1")
    cache = StemCache(
        stems_dir=tmp_path / "stems", database_path=tmp_path / "index.sqlite3", contract=contract
    )
    out, report = sound.process(_wav(_voice_like(22050, -20.0), "pcm_s16le", 22050), contract)
    cache.store("stem.name.ann", "Ann", out, sound=report)
    assert cache.lookup("stem.name.ann") is not None
    before = contract.signature()
    contract.loudness_lufs = -18.0
    assert contract.signature() != before
    assert cache.lookup("stem.name.ann") is None
    assert cache.get("stem.name.ann").loudness_after == pytest.approx(-16.0, abs=0.5)
    contract.loudness_lufs = -16.0
    assert cache.lookup("stem.name.ann") is not None


@pytest.mark.parametrize(
    "changes", [{"true_peak_dbtp": -2.0}, {"edge_fade_ms": 10.0}, {"loudness_lufs": None}]
)
def test_every_sound_setting_is_in_the_signature(changes: dict) -> None:
    contract = VoiceContract()
    assert contract.copy(**changes).signature() != contract.signature()


def test_processing_off_keeps_the_signature_of_a_contract_made_before_processing() -> None:
    """The canonical JSON and sha256 a contract had before issue #13 (computed with that
    commit's contract.py), so caches made with processing off stay valid."""
    contract = VoiceContract(
        engine="piper",
        engine_version="1.3.0",
        voice="en_US-joe-medium",
        sample_rate=22050,
        loudness_lufs=None,
        edge_fade_ms=0.0,
    )
    assert "sound" not in contract.canonical()
    text = (
        '{"audio_format":{"bits_per_sample":16,"channels":1,"encoding":"pcm_s16le",'
        '"sample_rate":22050},"emotion":"","engine":"piper","engine_version":"1.3.0",'
        '"language":"en","model":"","speed":1.0,"voice":"en_US-joe-medium","volume":1.0}'
    )
    assert json.dumps(contract.canonical(), sort_keys=True, separators=(",", ":")) == text
    expected = "f12eb772d9f487e8fae8352b7883cb679de55a6b5321eb2513e863fa29ec363e"
    assert hashlib.sha256(text.encode()).hexdigest() == expected
    assert contract.signature() == expected
    assert VoiceContract(**{**contract.values(), "edge_fade_ms": 5.0}).signature() != expected


@pytest.mark.parametrize(("encoding", "rate"), CONTRACT_FORMATS)
def test_the_merge_time_trim_finds_nothing_to_cut_in_a_processed_stem(
    encoding: Encoding, rate: int
) -> None:
    """Short words with soft endings (the gain settles lower once the clip is trimmed):
    the default merge-time trim (−50 dBFS, keep 10 ms ≥ the 5 ms fade) must keep every
    frame — cutting anything would cut into a fade and leave a step at the join."""
    for seconds in (0.15, 0.3, 0.35):
        for decay in (0.01, 0.03, 0.06):
            n = np.arange(round(seconds * rate))
            envelope = np.minimum(1, n / (0.01 * rate))
            envelope *= np.exp(-np.maximum(0, n - n.size / 2) / (decay * rate))
            word = 0.1 * np.sin(2 * np.pi * 160 * n / rate) * envelope
            clip = np.concatenate([np.zeros(rate // 8), word, np.zeros(rate // 8)])
            out, _ = sound.process(_wav(clip, encoding, rate), _contract(encoding, rate))
            assert _trim_range(out, Trim()) == (0, out.frames), (seconds, decay)
