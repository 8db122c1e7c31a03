"""Sample codecs: sample bytes ⇄ float arrays for every `Encoding`.

Used where audio must be *looked at* or *made*: finding silence to trim, computing a
crossfade, converting an engine's output to the contract's format. The bit-exact join never
goes through here — it only moves bytes. G.711 follows the ITU reference (Sun's g711.c):
μ-law with bias 0x84 and clip 32635, A-law with segment ends 0x1F…0xFFF, both on 16-bit
linear values, so encode(decode(code)) == code for every code word (but μ-law 0x7F,
"negative zero", which comes back as 0xFF).
"""

from __future__ import annotations

from functools import cache

import numpy as np

from hybrid_audio.contract import AudioFormat, Encoding

#: Full-scale divisor of each linear integer encoding (maps to [-1, 1)).
_SCALE = {
    Encoding.PCM_U8: 2.0**7,
    Encoding.PCM_S16LE: 2.0**15,
    Encoding.PCM_S24LE: 2.0**23,
    Encoding.PCM_S32LE: 2.0**31,
    Encoding.PCM_MULAW: 2.0**15,
    Encoding.PCM_ALAW: 2.0**15,
}


@cache
def _mulaw_decode_table() -> np.ndarray:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(u & 0x80, -magnitude, magnitude).astype(np.int16)


@cache
def _alaw_decode_table() -> np.ndarray:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    t = (a & 0x0F) << 4
    segment = (a & 0x70) >> 4
    t = np.where(segment == 0, t + 8, t + 0x108)
    t = np.where(segment > 1, t << np.maximum(segment - 1, 0), t)
    return np.where(a & 0x80, t, -t).astype(np.int16)


@cache
def _mulaw_encode_table() -> np.ndarray:
    """Code word for every int16 value, indexed by the value viewed as uint16."""
    x = np.arange(65536, dtype=np.int32).astype(np.uint16).view(np.int16).astype(np.int32)
    sign = np.where(x < 0, 0x80, 0)
    magnitude = np.minimum(np.abs(x), 32635) + 0x84
    exponent = sum((magnitude >= (0x80 << e)).astype(np.int32) for e in range(1, 8))
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8)


@cache
def _alaw_encode_table() -> np.ndarray:
    """Code word for every int16 value, indexed by the value viewed as uint16."""
    x = np.arange(65536, dtype=np.int32).astype(np.uint16).view(np.int16).astype(np.int32) >> 3
    mask = np.where(x >= 0, 0xD5, 0x55)
    x = np.where(x >= 0, x, -x - 1)
    segment_ends = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF])
    segment = np.searchsorted(segment_ends, x, side="left")
    shift = np.where(segment < 2, 1, segment)
    code = (np.minimum(segment, 7) << 4) | ((x >> shift) & 0x0F)
    code = np.where(segment >= 8, 0x7F, code)
    return (code ^ mask).astype(np.uint8)


def _int24_to_int32(raw: np.ndarray) -> np.ndarray:
    b = raw.reshape(-1, 3).astype(np.int32)
    value = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
    return (value << 8) >> 8  # sign-extend bit 23


def decode(pcm: bytes | memoryview, fmt: AudioFormat) -> np.ndarray:
    """Samples as float64 of shape (frames, channels), linear, full scale ±1."""
    enc = fmt.encoding
    if enc is Encoding.PCM_F32LE:
        x = np.frombuffer(pcm, dtype="<f4").astype(np.float64)
    elif enc is Encoding.PCM_F64LE:
        x = np.frombuffer(pcm, dtype="<f8").astype(np.float64)
    else:
        raw = np.frombuffer(pcm, dtype=np.uint8)
        if enc is Encoding.PCM_U8:
            ints = raw.astype(np.int32) - 128
        elif enc is Encoding.PCM_S16LE:
            ints = np.frombuffer(pcm, dtype="<i2")
        elif enc is Encoding.PCM_S24LE:
            ints = _int24_to_int32(raw)
        elif enc is Encoding.PCM_S32LE:
            ints = np.frombuffer(pcm, dtype="<i4")
        elif enc is Encoding.PCM_MULAW:
            ints = _mulaw_decode_table()[raw]
        else:
            ints = _alaw_decode_table()[raw]
        x = ints.astype(np.float64) / _SCALE[enc]
    return x.reshape(-1, fmt.channels)


def _to_int(x: np.ndarray, bits: int) -> np.ndarray:
    top = 2.0 ** (bits - 1)
    return np.clip(np.rint(x * top), -top, top - 1).astype(np.int64)


def encode(samples: np.ndarray, fmt: AudioFormat) -> bytes:
    """Sample bytes in `fmt` for float samples (frames × channels, or 1-D for mono).

    Integer encodings round to nearest (ties to even) and clip at full scale; floats are
    stored as they are.
    """
    x = np.asarray(samples, dtype=np.float64).reshape(-1)
    enc = fmt.encoding
    if enc is Encoding.PCM_F32LE:
        return x.astype("<f4").tobytes()
    if enc is Encoding.PCM_F64LE:
        return x.astype("<f8").tobytes()
    if enc is Encoding.PCM_U8:
        return (_to_int(x, 8) + 128).astype(np.uint8).tobytes()
    if enc is Encoding.PCM_S16LE:
        return _to_int(x, 16).astype("<i2").tobytes()
    if enc is Encoding.PCM_S24LE:
        v = _to_int(x, 24).astype(np.int32)
        out = np.empty((v.size, 3), dtype=np.uint8)
        out[:, 0], out[:, 1], out[:, 2] = v & 0xFF, (v >> 8) & 0xFF, (v >> 16) & 0xFF
        return out.tobytes()
    if enc is Encoding.PCM_S32LE:
        return _to_int(x, 32).astype("<i4").tobytes()
    index = _to_int(x, 16).astype(np.int16).view(np.uint16)
    table = _mulaw_encode_table() if enc is Encoding.PCM_MULAW else _alaw_encode_table()
    return table[index].tobytes()


def peak_per_frame(pcm: bytes | memoryview, fmt: AudioFormat) -> np.ndarray:
    """Absolute peak over channels for each frame, full scale 1.0."""
    return np.abs(decode(pcm, fmt)).max(axis=1)
