"""Sample codecs against libsndfile and an independent scalar G.711 reference."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from hybrid_audio.codecs import decode, encode, peak_per_frame
from hybrid_audio.contract import AudioFormat, Encoding
from hybrid_audio.wav import read_wav, write_wav

ALL_CODES = bytes(range(256))
INT16 = np.arange(-32768, 32768, dtype=np.int16)


def _alaw_reference(pcm_val: int) -> int:
    """Sun Microsystems' g711.c linear2alaw, scalar, as published."""
    seg_aend = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF]
    pcm_val >>= 3
    if pcm_val >= 0:
        mask = 0xD5
    else:
        mask = 0x55
        pcm_val = -pcm_val - 1
    seg = next((i for i, end in enumerate(seg_aend) if pcm_val <= end), 8)
    if seg >= 8:
        return 0x7F ^ mask
    aval = seg << 4
    aval |= (pcm_val >> 1) & 0xF if seg < 2 else (pcm_val >> seg) & 0xF
    return aval ^ mask


@pytest.mark.parametrize(("encoding", "subtype"), [("pcm_mulaw", "ULAW"), ("pcm_alaw", "ALAW")])
def test_g711_decode_matches_libsndfile(encoding: str, subtype: str) -> None:
    fmt = AudioFormat(encoding=encoding, sample_rate=8000)
    ours = np.rint(decode(ALL_CODES, fmt)[:, 0] * 32768).astype(np.int16)
    theirs, _ = sf.read(io.BytesIO(write_wav(fmt, ALL_CODES)), dtype="int16")
    assert sf.info(io.BytesIO(write_wav(fmt, ALL_CODES))).subtype == subtype
    np.testing.assert_array_equal(ours, theirs)


def test_mulaw_encode_matches_libsndfile_for_every_int16() -> None:
    fmt = AudioFormat(encoding="pcm_mulaw", sample_rate=8000)
    buffer = io.BytesIO()
    sf.write(buffer, INT16, 8000, subtype="ULAW", format="WAV")
    assert encode(INT16 / 32768, fmt) == read_wav(buffer.getvalue()).pcm


def test_alaw_encode_matches_the_reference_for_every_int16() -> None:
    fmt = AudioFormat(encoding="pcm_alaw", sample_rate=8000)
    expected = bytes(_alaw_reference(int(v)) for v in INT16)
    assert encode(INT16 / 32768, fmt) == expected


@pytest.mark.parametrize("encoding", ["pcm_mulaw", "pcm_alaw"])
def test_g711_codes_survive_decode_encode(encoding: str) -> None:
    fmt = AudioFormat(encoding=encoding, sample_rate=8000)
    back = encode(decode(ALL_CODES, fmt), fmt)
    changed = [code for code in range(256) if back[code] != code]
    # μ-law has two zeros; 0x7F ("negative zero") comes back as 0xFF
    assert changed == ([0x7F] if encoding == "pcm_mulaw" else [])


@pytest.mark.parametrize("encoding", [e for e in Encoding if e not in ("pcm_mulaw", "pcm_alaw")])
def test_linear_codecs_agree_with_libsndfile(encoding: str) -> None:
    fmt = AudioFormat(encoding=encoding, sample_rate=8000, channels=2)
    x = np.random.default_rng(3).uniform(-1, 1, (500, 2))
    pcm = encode(x, fmt)
    assert len(pcm) == 500 * fmt.block_align
    ours = decode(pcm, fmt)
    theirs, _ = sf.read(io.BytesIO(write_wav(fmt, pcm)), dtype="float64", always_2d=True)
    np.testing.assert_array_equal(ours, theirs)
    assert encode(ours, fmt) == pcm


def test_s24_sign_extension_and_clipping() -> None:
    fmt = AudioFormat(encoding="pcm_s24le", sample_rate=8000)
    pcm = encode(np.array([-1.0, -2.0, 1.0, 0.5, -(2.0**-23)]), fmt)
    assert pcm == bytes.fromhex("000080000080ffff7f000040ffffff")
    np.testing.assert_array_equal(
        decode(pcm, fmt)[:, 0], [-1.0, -1.0, 1 - 2.0**-23, 0.5, -(2.0**-23)]
    )


def test_peak_per_frame_takes_the_loudest_channel() -> None:
    fmt = AudioFormat(encoding="pcm_s16le", sample_rate=8000, channels=2)
    pcm = encode(np.array([[0.0, -0.5], [0.25, 0.0]]), fmt)
    np.testing.assert_array_equal(peak_per_frame(pcm, fmt), [0.5, 0.25])
