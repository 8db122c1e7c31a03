"""The strict WAV reader and canonical writer, checked against libsndfile, the stdlib `wave`
module and hand-built files (tests/wavbuild.py), good and bad."""

from __future__ import annotations

import io
import re
import struct
import wave
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from hybrid_audio.contract import AudioFormat, Encoding
from hybrid_audio.wav import WavError, read_wav, wav_header, write_wav
from tests.wavbuild import (
    KS_GUID_SUFFIX,
    TAG_ALAW,
    TAG_EXTENSIBLE,
    TAG_FLOAT,
    TAG_MULAW,
    TAG_PCM,
    chunk,
    data_chunk,
    extensible_body,
    find_chunk,
    fmt_body,
    fmt_chunk,
    riff,
    simple_wav,
    with_u32,
)

RNG_SEED = 20240611
PLACEHOLDERS = (0xFFFFFFFF, 0x7FFFFFFF)

# Offsets in `simple_wav()`: RIFF header, `fmt ` at 12 (body at 20), `data` at 36.
FMT_AT, FMT_BODY, DATA_AT = 12, 20, 36

SOUNDFILE_SUBTYPE = {
    Encoding.PCM_U8: "PCM_U8",
    Encoding.PCM_S16LE: "PCM_16",
    Encoding.PCM_S24LE: "PCM_24",
    Encoding.PCM_S32LE: "PCM_32",
    Encoding.PCM_F32LE: "FLOAT",
    Encoding.PCM_F64LE: "DOUBLE",
    Encoding.PCM_MULAW: "ULAW",
    Encoding.PCM_ALAW: "ALAW",
}
ENCODING_OF_SUBTYPE = {subtype: encoding for encoding, subtype in SOUNDFILE_SUBTYPE.items()}


# --- independent decoders -------------------------------------------------------------


def ulaw_to_linear(code: int) -> int:
    """ITU-T G.711 μ-law expansion (the Sun reference `ulaw2linear`)."""
    code = ~code & 0xFF
    magnitude = (((code & 0x0F) << 3) + 0x84) << ((code & 0x70) >> 4)
    return 0x84 - magnitude if code & 0x80 else magnitude - 0x84


def alaw_to_linear(code: int) -> int:
    """ITU-T G.711 A-law expansion (the Sun reference `alaw2linear`)."""
    code ^= 0x55
    segment = (code & 0x70) >> 4
    magnitude = (code & 0x0F) << 4
    if segment == 0:
        magnitude += 8
    else:
        magnitude = (magnitude + 0x108) << (segment - 1)
    return magnitude if code & 0x80 else -magnitude


ULAW_TABLE = np.array([ulaw_to_linear(c) for c in range(256)], dtype=np.int16)
ALAW_TABLE = np.array([alaw_to_linear(c) for c in range(256)], dtype=np.int16)


def s24_to_int32(pcm: bytes) -> np.ndarray:
    """Little-endian signed 24-bit samples, sign-extended to int32."""
    triples = np.frombuffer(pcm, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
    value = triples[:, 0] | (triples[:, 1] << 8) | (triples[:, 2] << 16)
    return np.where(value >= 1 << 23, value - (1 << 24), value).astype(np.int32)


def decode_for_soundfile(encoding: Encoding, pcm: bytes) -> tuple[np.ndarray, str]:
    """What libsndfile should return for `pcm`, and the dtype to ask it for."""
    match encoding:
        case Encoding.PCM_U8:
            u8 = np.frombuffer(pcm, dtype=np.uint8).astype(np.int16)
            return (u8 - 128) << 8, "int16"
        case Encoding.PCM_S16LE:
            return np.frombuffer(pcm, dtype="<i2"), "int16"
        case Encoding.PCM_S24LE:
            return s24_to_int32(pcm) << 8, "int32"
        case Encoding.PCM_S32LE:
            return np.frombuffer(pcm, dtype="<i4"), "int32"
        case Encoding.PCM_F32LE:
            return np.frombuffer(pcm, dtype="<f4"), "float32"
        case Encoding.PCM_F64LE:
            return np.frombuffer(pcm, dtype="<f8"), "float64"
        case Encoding.PCM_MULAW:
            return ULAW_TABLE[np.frombuffer(pcm, dtype=np.uint8)], "int16"
        case Encoding.PCM_ALAW:
            return ALAW_TABLE[np.frombuffer(pcm, dtype=np.uint8)], "int16"
    raise AssertionError(encoding)


def sample_bytes(fmt: AudioFormat, frames: int, seed: int = RNG_SEED) -> bytes:
    """Random sample bytes; floats are finite values in [-1, 1) so decoders agree exactly."""
    rng = np.random.default_rng(seed)
    count = frames * fmt.channels
    if fmt.encoding is Encoding.PCM_F32LE:
        return rng.uniform(-1, 1, count).astype("<f4").tobytes()
    if fmt.encoding is Encoding.PCM_F64LE:
        return rng.uniform(-1, 1, count).astype("<f8").tobytes()
    return rng.bytes(count * fmt.sample_width)


def assert_wav_error(data: bytes, rule: str, offset: int | None = None) -> WavError:
    """`read_wav(data)` raises WavError for `rule` (at `offset`) with a message saying so."""
    with pytest.raises(WavError) as caught:
        read_wav(data)
    error = caught.value
    assert error.rule == rule, str(error)
    assert f"rule: {rule}" in str(error)
    assert re.search(rf"byte offset {error.offset}\b", str(error))
    if offset is not None:
        assert error.offset == offset, str(error)
    assert error.source == "<bytes>"
    return error


def pcm16(*samples: int) -> bytes:
    return struct.pack(f"<{len(samples)}h", *samples)


ALL_FORMATS = [
    pytest.param(AudioFormat(encoding=e, sample_rate=rate, channels=ch), id=f"{e.value}-{ch}ch")
    for e, rate in zip(Encoding, (8000, 11025, 16000, 22050, 44100, 48000, 8000, 8000), strict=True)
    for ch in (1, 2)
]


# --- round trip ------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_round_trip_keeps_format_and_bytes(fmt: AudioFormat) -> None:
    """What write_wav writes, read_wav gives back byte for byte."""
    pcm = sample_bytes(fmt, frames=37)
    wav = read_wav(write_wav(fmt, pcm))
    assert wav.pcm == pcm
    assert wav.format == fmt
    assert wav.frames == 37
    assert wav.duration == pytest.approx(37 / fmt.sample_rate)
    assert not wav.repaired
    assert wav.repairs == ()


@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_libsndfile_decodes_write_wav_output(fmt: AudioFormat) -> None:
    """An independent reader (libsndfile) sees the same format and the same samples."""
    pcm = sample_bytes(fmt, frames=41)
    data = write_wav(fmt, pcm)
    info = sf.info(io.BytesIO(data))
    assert (info.samplerate, info.channels, info.frames) == (fmt.sample_rate, fmt.channels, 41)
    assert info.subtype == SOUNDFILE_SUBTYPE[fmt.encoding]
    expected, dtype = decode_for_soundfile(fmt.encoding, pcm)
    samples, rate = sf.read(io.BytesIO(data), dtype=dtype, always_2d=True)
    assert rate == fmt.sample_rate
    np.testing.assert_array_equal(samples.reshape(-1), expected)


def test_g711_reference_tables_match_known_values() -> None:
    """The reference decoders above are right (0xFF/0xD5 are the zero codewords)."""
    assert ULAW_TABLE[0xFF] == 0
    assert ULAW_TABLE[0x00] == -32124
    assert ULAW_TABLE[0x80] == 32124
    assert ALAW_TABLE[0xD5] == 8
    assert ALAW_TABLE[0x55] == -8
    assert ALAW_TABLE[0xAA] == 32256


def test_empty_data_round_trips() -> None:
    """Zero frames is a valid file, not an error."""
    fmt = AudioFormat(encoding=Encoding.PCM_S16LE, sample_rate=16000)
    wav = read_wav(write_wav(fmt, b""))
    assert (wav.pcm, wav.frames, wav.duration) == (b"", 0, 0.0)


@pytest.mark.parametrize("encoding", [Encoding.PCM_U8, Encoding.PCM_MULAW, Encoding.PCM_ALAW])
def test_odd_length_data_gets_a_pad_byte(encoding: Encoding) -> None:
    """Odd data is followed by a pad byte counted in the RIFF size, and still round-trips."""
    fmt = AudioFormat(encoding=encoding, sample_rate=8000)
    pcm = bytes([1, 2, 3, 4, 5])
    data = write_wav(fmt, pcm)
    header = wav_header(fmt, len(pcm))
    assert data == header + pcm + b"\x00"
    assert struct.unpack_from("<I", data, 4)[0] == len(data) - 8
    assert struct.unpack_from("<I", header, len(header) - 4)[0] == 5  # pad not in data size
    assert read_wav(data).pcm == pcm
    assert sf.info(io.BytesIO(data)).frames == 5


def test_wav_header_is_the_prefix_of_write_wav() -> None:
    fmt = AudioFormat(encoding=Encoding.PCM_F32LE, sample_rate=24000, channels=2)
    pcm = sample_bytes(fmt, frames=3)
    assert write_wav(fmt, pcm) == wav_header(fmt, len(pcm)) + pcm


@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_write_wav_layout_is_canonical(fmt: AudioFormat) -> None:
    """PCM: 16-byte fmt then data. Float and G.711: 18-byte fmt (cbSize 0), a fact chunk
    with the frame count, then data — as the WAVE spec asks of non-PCM data."""
    pcm = sample_bytes(fmt, frames=7)
    args = (fmt.channels, fmt.sample_rate, fmt.bits_per_sample)
    if fmt.encoding in (Encoding.PCM_F32LE, Encoding.PCM_F64LE):
        tag = TAG_FLOAT
    else:
        tag = {Encoding.PCM_MULAW: TAG_MULAW, Encoding.PCM_ALAW: TAG_ALAW}.get(
            fmt.encoding, TAG_PCM
        )
    if tag == TAG_PCM:
        expected = riff(fmt_chunk(tag, *args), data_chunk(pcm))
    else:
        fmt_ex = chunk(b"fmt ", fmt_body(tag, *args, cb_size=0))
        expected = riff(fmt_ex, chunk(b"fact", struct.pack("<I", 7)), data_chunk(pcm))
    assert write_wav(fmt, pcm) == expected


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_bytes_like_inputs_are_accepted(kind: type) -> None:
    pcm = pcm16(1, -1, 300)
    assert read_wav(kind(simple_wav(pcm))).pcm == pcm


@pytest.mark.parametrize("as_str", [False, True], ids=["Path", "str"])
def test_read_from_a_path(tmp_path: Path, as_str: bool) -> None:
    """A path (Path or str) is read from disk and recorded as the source."""
    fmt = AudioFormat(encoding=Encoding.PCM_S24LE, sample_rate=48000, channels=2)
    pcm = sample_bytes(fmt, frames=9)
    path = tmp_path / "voice.wav"
    path.write_bytes(write_wav(fmt, pcm))
    wav = read_wav(str(path) if as_str else path)
    assert wav.pcm == pcm
    assert wav.format == fmt
    assert wav.source == str(path)


def test_error_from_a_path_names_the_file(tmp_path: Path) -> None:
    """Someone reading the error must learn which file is broken."""
    path = tmp_path / "broken take.wav"
    path.write_bytes(simple_wav()[:-3])
    with pytest.raises(WavError) as caught:
        read_wav(path)
    assert caught.value.source == str(path)
    assert str(path) in str(caught.value)
    assert caught.value.rule == "truncated file"


def test_neither_bytes_nor_path_is_a_type_error() -> None:
    """A programming error, not bad audio: it must not look like a WavError."""
    with pytest.raises(TypeError):
        read_wav(12345)  # type: ignore[arg-type]


def test_wav_error_is_a_value_error() -> None:
    """Callers that catch ValueError for bad input also catch WavError."""
    with pytest.raises(ValueError, match="RIFF header"):
        read_wav(b"not a wav file at all")


def test_wav_header_refuses_partial_frames() -> None:
    fmt = AudioFormat(encoding=Encoding.PCM_S16LE, sample_rate=8000, channels=2)
    with pytest.raises(WavError) as caught:
        wav_header(fmt, 6)
    assert caught.value.rule == "whole frames"
    with pytest.raises(WavError):
        write_wav(fmt, b"\x00" * 5)


def test_wav_header_refuses_more_than_4_gib() -> None:
    """The 32-bit RIFF size cannot describe it; the writer must say so, not wrap around."""
    fmt = AudioFormat(encoding=Encoding.PCM_U8, sample_rate=8000)
    for too_big in (2**32, 0xFFFFFFFF - 36):  # the second fits only without its pad byte
        with pytest.raises(WavError) as caught:
            wav_header(fmt, too_big)
        assert caught.value.rule == "RIFF size"
    header = wav_header(fmt, 0xFFFFFFFF - 37)  # the largest that fits
    assert struct.unpack_from("<I", header, 4)[0] == 0xFFFFFFFF - 1


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"encoding": Encoding.PCM_F64LE, "channels": 65535}, "bytes per frame"),
        ({"encoding": Encoding.PCM_S16LE, "sample_rate": 0xFFFFFFFF}, "bytes per second"),
    ],
    ids=["block_align-over-u16", "byte_rate-over-u32"],
)
def test_formats_a_header_cannot_hold_do_not_exist(fields: dict, message: str) -> None:
    """A format whose frame or byte rate overflows the header's fields is refused up front,
    so `wav_header` can never meet one (no struct.error can escape)."""
    with pytest.raises(ValueError, match=message):
        AudioFormat(**{"sample_rate": 8000, **fields})


# --- files the project did not write ---------------------------------------------------


def raw_samples_via_soundfile(data: bytes, subtype: str) -> bytes:
    """The data chunk bytes libsndfile's decode implies, in the file's own layout."""
    buf = io.BytesIO(data)
    match subtype:
        case "PCM_U8":
            s16 = sf.read(buf, dtype="int16")[0]
            return ((s16.astype(np.int32) >> 8) + 128).astype(np.uint8).tobytes()
        case "PCM_16":
            return sf.read(buf, dtype="int16")[0].astype("<i2").tobytes()
        case "PCM_24":
            s32 = sf.read(buf, dtype="int32")[0].astype("<i4").reshape(-1)
            return s32.view(np.uint8).reshape(-1, 4)[:, 1:].tobytes()
        case "PCM_32":
            return sf.read(buf, dtype="int32")[0].astype("<i4").tobytes()
        case "FLOAT":
            return sf.read(buf, dtype="float32")[0].astype("<f4").tobytes()
        case "DOUBLE":
            return sf.read(buf, dtype="float64")[0].astype("<f8").tobytes()
    raise AssertionError(subtype)


@pytest.mark.parametrize("rate", [8000, 11025, 44100, 96000])
@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("subtype", list(ENCODING_OF_SUBTYPE))
@pytest.mark.parametrize("container", ["WAV", "WAVEX"])
def test_libsndfile_files_are_read(container: str, subtype: str, channels: int, rate: int) -> None:
    """libsndfile's plain and extensible files (with its fact/PEAK chunks) read exactly."""
    rng = np.random.default_rng(rate + channels)
    frames = 53  # odd: 8-bit mono files get a pad byte
    samples = rng.uniform(-0.9, 0.9, (frames, channels))
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format=container, subtype=subtype)
    data = buf.getvalue()
    info = sf.info(io.BytesIO(data))

    wav = read_wav(data)

    encoding = ENCODING_OF_SUBTYPE[subtype]
    assert wav.format == AudioFormat(encoding=encoding, sample_rate=rate, channels=channels)
    assert (wav.format.sample_rate, wav.format.channels) == (info.samplerate, info.channels)
    assert wav.frames == info.frames == frames
    assert not wav.repaired
    if encoding in (Encoding.PCM_MULAW, Encoding.PCM_ALAW):
        expected, dtype = decode_for_soundfile(encoding, wav.pcm)
        decoded = sf.read(io.BytesIO(data), dtype=dtype, always_2d=True)[0]
        np.testing.assert_array_equal(decoded.reshape(-1), expected)
    else:
        assert wav.pcm == raw_samples_via_soundfile(data, subtype)


@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24", "FLOAT"])
@pytest.mark.parametrize("container", ["WAV", "WAVEX"])
def test_libsndfile_multichannel_files_are_read(container: str, subtype: str) -> None:
    """Six channels, plain and extensible (where libsndfile sets a 5.1 channel mask)."""
    samples = np.random.default_rng(6).uniform(-0.5, 0.5, (20, 6))
    buf = io.BytesIO()
    sf.write(buf, samples, 48000, format=container, subtype=subtype)
    wav = read_wav(buf.getvalue())
    assert wav.format.channels == 6
    assert wav.format.encoding == ENCODING_OF_SUBTYPE[subtype]
    assert wav.pcm == raw_samples_via_soundfile(buf.getvalue(), subtype)


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize(
    ("width", "encoding"),
    [
        (1, Encoding.PCM_U8),
        (2, Encoding.PCM_S16LE),
        (3, Encoding.PCM_S24LE),
        (4, Encoding.PCM_S32LE),
    ],
)
def test_stdlib_wave_files_are_read(width: int, encoding: Encoding, channels: int) -> None:
    """The stdlib writes no pad byte after odd data and leaves it out of the RIFF size."""
    pcm = np.random.default_rng(width).bytes(width * channels * 11)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as writer:
        writer.setnchannels(channels)
        writer.setsampwidth(width)
        writer.setframerate(22050)
        writer.writeframes(pcm)
    wav = read_wav(buf.getvalue())
    assert wav.format == AudioFormat(encoding=encoding, sample_rate=22050, channels=channels)
    assert wav.pcm == pcm
    assert wav.frames == 11


@pytest.mark.parametrize("subtype", ["IMA_ADPCM", "MS_ADPCM", "GSM610"])
def test_compressed_libsndfile_files_are_unsupported(subtype: str) -> None:
    """Compressed codecs have no fixed sample layout: refused, naming the format tag."""
    buf = io.BytesIO()
    sf.write(buf, np.zeros(640), 8000, format="WAV", subtype=subtype)
    error = assert_wav_error(buf.getvalue(), "unsupported codec", FMT_BODY)
    assert "format tag 0x" in str(error)


@pytest.mark.parametrize("subtype", ["PCM_16", "FLOAT"])
def test_rf64_is_an_unsupported_container(subtype: str) -> None:
    buf = io.BytesIO()
    sf.write(buf, np.zeros(16), 8000, format="RF64", subtype=subtype)
    assert buf.getvalue()[:4] == b"RF64"
    assert_wav_error(buf.getvalue(), "unsupported container", 0)


@pytest.mark.parametrize("magic", [b"RIFX", b"BW64"])
def test_big_endian_and_64_bit_containers_are_unsupported(magic: bytes) -> None:
    """RIFX is big-endian and BW64 is RF64's twin; both are named, not called corrupt."""
    body = b"WAVE" + b"fmt " + struct.pack(">IHHIIHH", 16, 1, 1, 8000, 16000, 2, 16)
    body += b"data" + struct.pack(">I", 4) + b"\x00\x01\x00\x02"
    data = magic + struct.pack(">I", len(body)) + body
    assert_wav_error(data, "unsupported container", 0)


def test_unknown_format_tag_is_unsupported() -> None:
    data = riff(fmt_chunk(0x1234, 1, 8000, 16), data_chunk(pcm16(1, 2)))
    error = assert_wav_error(data, "unsupported codec", FMT_BODY)
    assert "0x1234" in str(error)


def test_extensible_with_unknown_sub_format_guid_is_unsupported() -> None:
    """A GUID outside the KSDATAFORMAT family (here: random bytes) is an unknown codec."""
    guid = bytes.fromhex("0123456789abcdef0123456789abcdef")
    fmt = chunk(b"fmt ", extensible_body(0, 1, 8000, 16, guid=guid))
    data = riff(fmt, data_chunk(pcm16(1, 2)))
    assert_wav_error(data, "unsupported codec", FMT_BODY + 24)


def test_extensible_with_compressed_sub_format_is_unsupported() -> None:
    fmt = chunk(b"fmt ", extensible_body(0x0002, 1, 8000, 16))
    assert_wav_error(riff(fmt, data_chunk(pcm16(1, 2))), "unsupported codec")


@pytest.mark.parametrize(
    ("sub_tag", "bits", "valid_bits", "encoding"),
    [
        (TAG_PCM, 24, 20, Encoding.PCM_S24LE),
        (TAG_PCM, 32, 24, Encoding.PCM_S32LE),
        (TAG_FLOAT, 32, 32, Encoding.PCM_F32LE),
        (TAG_MULAW, 8, 8, Encoding.PCM_MULAW),
        (TAG_ALAW, 8, 8, Encoding.PCM_ALAW),
    ],
)
def test_extensible_fmt_is_read_by_container_width(
    sub_tag: int, bits: int, valid_bits: int, encoding: Encoding
) -> None:
    """Fewer valid bits than the container (e.g. 20 in 24) keep the container's layout."""
    width = bits // 8
    pcm = bytes(range(6 * width))
    fmt = chunk(b"fmt ", extensible_body(sub_tag, 2, 32000, bits, valid_bits=valid_bits))
    wav = read_wav(riff(fmt, data_chunk(pcm)))
    assert wav.format == AudioFormat(encoding=encoding, sample_rate=32000, channels=2)
    assert wav.pcm == pcm


def test_ks_guid_suffix_in_builder_matches_spec() -> None:
    """KSDATAFORMAT_SUBTYPE_PCM is 00000001-0000-0010-8000-00AA00389B71."""
    guid = b"\x01\x00" + KS_GUID_SUFFIX
    assert guid.hex() == "0100000000001000800000aa00389b71"


# --- chunks the reader must skip -------------------------------------------------------

PCM = pcm16(100, -100, 200, -200, 300, -300)  # three stereo frames
FMT = fmt_chunk(TAG_PCM, 2, 44100, 16)

INFO_LIST = chunk(b"LIST", b"INFO" + chunk(b"INAM", b"Hello\x00x") + chunk(b"ISFT", b"test\x00"))
PEAK = chunk(b"PEAK", struct.pack("<II", 1, 0) + struct.pack("<fI", 0.5, 3) * 2)
CUE = chunk(b"cue ", struct.pack("<I", 1) + struct.pack("<II4sIII", 1, 0, b"data", 0, 0, 0))
JUNK = chunk(b"JUNK", b"\x00" * 28)
ODD = chunk(b"odd ", b"\xaa\xbb\xcc")  # size 3 + pad byte
FACT_WRONG = chunk(b"fact", struct.pack("<I", 999))  # fact is informational


@pytest.mark.parametrize(
    "chunks",
    [
        pytest.param((INFO_LIST, FMT, data_chunk(PCM)), id="LIST-INFO-first"),
        pytest.param((FMT, INFO_LIST, data_chunk(PCM)), id="LIST-INFO-between"),
        pytest.param((FMT, PEAK, data_chunk(PCM)), id="PEAK"),
        pytest.param((FMT, CUE, data_chunk(PCM)), id="cue"),
        pytest.param((JUNK, FMT, data_chunk(PCM)), id="JUNK"),
        pytest.param((FMT, ODD, data_chunk(PCM)), id="odd-size-with-pad"),
        pytest.param((FMT, data_chunk(PCM), INFO_LIST, CUE), id="chunks-after-data"),
        pytest.param((FMT, data_chunk(PCM), ODD), id="odd-chunk-last-with-pad"),
        pytest.param((data_chunk(PCM), FMT), id="fmt-after-data"),
        pytest.param((INFO_LIST, data_chunk(PCM), JUNK, FMT, PEAK), id="scrambled"),
        pytest.param((FMT, FACT_WRONG, data_chunk(PCM)), id="fact-with-wrong-count"),
        pytest.param((FMT, chunk(b"\x00\xff\x01x", b"?"), data_chunk(PCM)), id="binary-id"),
    ],
)
def test_extra_chunks_are_skipped(chunks: tuple[bytes, ...]) -> None:
    """Metadata chunks anywhere, in any order, never leak into the samples."""
    data = riff(*chunks)
    wav = read_wav(data)
    assert wav.pcm == PCM
    assert wav.format == AudioFormat(encoding=Encoding.PCM_S16LE, sample_rate=44100, channels=2)
    assert wav.data_offset == find_chunk(data, b"data") + 8
    assert not wav.repaired


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(fmt_body(TAG_PCM, 2, 44100, 16, cb_size=0), id="18-bytes-cbSize-0"),
        pytest.param(fmt_body(TAG_PCM, 2, 44100, 16, cb_size=2) + b"\x00\x00", id="20-bytes"),
        pytest.param(fmt_body(TAG_PCM, 2, 44100, 16) + b"\x00", id="17-bytes-odd"),
    ],
)
def test_plain_fmt_with_extra_bytes_is_read(body: bytes) -> None:
    """Writers differ on the PCM fmt size (16, 18, …); the first 16 bytes decide."""
    wav = read_wav(riff(chunk(b"fmt ", body), data_chunk(PCM)))
    assert wav.pcm == PCM
    assert wav.format == AudioFormat(encoding=Encoding.PCM_S16LE, sample_rate=44100, channels=2)


def test_odd_data_before_other_chunks_honours_its_pad_byte() -> None:
    """Without the pad byte the next chunk header would be read one byte off."""
    pcm = b"\x10\x20\x30"
    data = riff(fmt_chunk(TAG_PCM, 1, 8000, 8), data_chunk(pcm), INFO_LIST)
    assert read_wav(data).pcm == pcm


@pytest.mark.parametrize(
    ("last_chunks", "pcm"),
    [
        pytest.param((data_chunk(b"\x01\x02\x03", pad=False),), b"\x01\x02\x03", id="data-last"),
        pytest.param(
            (data_chunk(b"\x01\x02"), chunk(b"note", b"x", pad=False)),
            b"\x01\x02",
            id="other-chunk-last",
        ),
    ],
)
def test_missing_pad_byte_after_the_last_chunk_is_tolerated(
    last_chunks: tuple[bytes, ...], pcm: bytes
) -> None:
    """Documented choice: many writers (the stdlib among them) omit the final pad byte."""
    data = riff(fmt_chunk(TAG_PCM, 1, 8000, 8), *last_chunks)
    assert len(data) % 2 == 1
    assert read_wav(data).pcm == pcm


def test_missing_final_pad_counted_by_the_riff_size_is_tolerated() -> None:
    """`write_wav` output for odd data, with the pad byte lost: the RIFF size counts it."""
    fmt = AudioFormat(encoding=Encoding.PCM_U8, sample_rate=8000)
    full = write_wav(fmt, b"\x01\x02\x03")
    assert len(full) % 2 == 0
    assert full[-1] == 0
    assert read_wav(full[:-1]).pcm == b"\x01\x02\x03"


def test_one_missing_byte_that_is_not_a_pad_is_a_truncation() -> None:
    fmt = AudioFormat(encoding=Encoding.PCM_U8, sample_rate=8000)
    assert_wav_error(write_wav(fmt, b"\x01\x02\x03\x04")[:-1], "truncated file", 4)


@pytest.mark.parametrize(
    "trailer",
    [b"\x00", b"garbage after the file", data_chunk(b"\x99" * 10), b"RIFF\x04\x00\x00\x00WAVE"],
)
def test_bytes_after_the_riff_chunk_are_ignored(trailer: bytes) -> None:
    """Documented choice: only the bytes the RIFF size covers are parsed."""
    fmt = AudioFormat(encoding=Encoding.PCM_S16LE, sample_rate=8000, channels=2)
    wav = read_wav(write_wav(fmt, PCM) + trailer)
    assert wav.pcm == PCM
    assert not wav.repaired


# --- malformed files, one rule each ----------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"R", b"RIFF\x04\x00\x00\x00WAV"], ids=["0", "1", "11"])
def test_shorter_than_the_riff_header(data: bytes) -> None:
    assert_wav_error(data, "RIFF header", 0)


@pytest.mark.parametrize("magic", [b"riff", b"FORM", b"\x00\x00\x00\x00", b"OggS"])
def test_not_riff(magic: bytes) -> None:
    assert_wav_error(magic + simple_wav()[4:], "RIFF header", 0)


@pytest.mark.parametrize("form", [b"AVI ", b"wave", b"WAV "])
def test_not_wave(form: bytes) -> None:
    assert_wav_error(riff(FMT, data_chunk(PCM), form=form), "RIFF header", 8)


@pytest.mark.parametrize("size", [0, 1, 2, 3])
def test_riff_size_too_small_for_the_form_type(size: int) -> None:
    assert_wav_error(with_u32(simple_wav(), 4, size), "RIFF size", 4)


@pytest.mark.parametrize("cut", [1, 2, 10, 40])
def test_truncated_file(cut: int) -> None:
    """A RIFF size past the end of the bytes (not a streaming placeholder) is a cut file."""
    fmt = AudioFormat(encoding=Encoding.PCM_S16LE, sample_rate=8000)
    data = write_wav(fmt, pcm16(*range(40)))
    assert_wav_error(data[:-cut], "truncated file", 4)


def test_riff_size_one_past_the_end() -> None:
    data = simple_wav()
    assert_wav_error(with_u32(data, 4, len(data) - 7), "truncated file", 4)


@pytest.mark.parametrize("leftover", [1, 4, 7])
def test_truncated_chunk_header(leftover: int) -> None:
    """Fewer than 8 bytes left inside the RIFF chunk cannot be a chunk header."""
    good = riff(FMT, data_chunk(PCM))
    data = riff(FMT, data_chunk(PCM)) + b"LIST\x00\x00\x00"[:leftover]
    data = with_u32(data, 4, len(data) - 8)
    assert_wav_error(data, "truncated chunk header", len(good))


def test_truncated_data_chunk() -> None:
    """A data size past the end (and not a placeholder) must not be silently shortened."""
    data = riff(FMT, data_chunk(PCM, size=len(PCM) + 4))
    error = assert_wav_error(data, "truncated chunk", DATA_AT)
    assert "'data'" in str(error)


def test_truncated_other_chunk() -> None:
    data = riff(FMT, chunk(b"LIST", b"INFO", size=1000), data_chunk(PCM))
    assert_wav_error(data, "truncated chunk", DATA_AT)


@pytest.mark.parametrize("size", [0, 14, 15])
def test_fmt_smaller_than_16_bytes(size: int) -> None:
    body = fmt_body(TAG_PCM, 2, 44100, 16)[:size]
    assert_wav_error(riff(chunk(b"fmt ", body), data_chunk(PCM)), "fmt size", FMT_AT + 4)


def test_no_fmt_chunk() -> None:
    assert_wav_error(riff(INFO_LIST, data_chunk(PCM)), "fmt chunk required", 12)


@pytest.mark.parametrize("chunks", [(FMT,), (FMT, INFO_LIST)], ids=["fmt-only", "fmt-and-list"])
def test_no_data_chunk(chunks: tuple[bytes, ...]) -> None:
    assert_wav_error(riff(*chunks), "data chunk required", 12)


def test_empty_riff_has_no_fmt() -> None:
    assert_wav_error(riff(), "fmt chunk required", 12)


def test_two_fmt_chunks() -> None:
    """Which one would apply? Ambiguous, so refused (even when both agree)."""
    data = riff(FMT, data_chunk(PCM), FMT)
    assert_wav_error(data, "single fmt chunk", DATA_AT + 8 + len(PCM))


def test_two_data_chunks() -> None:
    data = riff(FMT, data_chunk(PCM), data_chunk(PCM))
    assert_wav_error(data, "single data chunk", DATA_AT + 8 + len(PCM))


def test_zero_channels() -> None:
    data = riff(fmt_chunk(TAG_PCM, 0, 8000, 16), data_chunk(PCM))
    assert_wav_error(data, "channel count", FMT_BODY + 2)


def test_zero_sample_rate() -> None:
    data = riff(fmt_chunk(TAG_PCM, 2, 0, 16), data_chunk(PCM))
    assert_wav_error(data, "sample rate", FMT_BODY + 4)


@pytest.mark.parametrize("block_align", [0, 2, 3, 8])
def test_inconsistent_block_align(block_align: int) -> None:
    """Stereo 16-bit frames are 4 bytes; any other block_align contradicts the header."""
    data = riff(
        fmt_chunk(TAG_PCM, 2, 8000, 16, block_align=block_align, byte_rate=32000),
        data_chunk(PCM),
    )
    assert_wav_error(data, "block align", FMT_BODY + 12)


@pytest.mark.parametrize("byte_rate", [0, 16000, 31999, 64000])
def test_inconsistent_byte_rate(byte_rate: int) -> None:
    data = riff(fmt_chunk(TAG_PCM, 2, 8000, 16, byte_rate=byte_rate), data_chunk(PCM))
    assert_wav_error(data, "byte rate", FMT_BODY + 8)


@pytest.mark.parametrize("extra", [1, 2, 3])
def test_data_not_whole_frames(extra: int) -> None:
    data = riff(FMT, data_chunk(PCM + b"\x00" * extra))
    assert_wav_error(data, "whole frames", DATA_AT + 4)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(fmt_body(TAG_EXTENSIBLE, 1, 8000, 16), id="16-bytes"),
        pytest.param(fmt_body(TAG_EXTENSIBLE, 1, 8000, 16, cb_size=0), id="18-bytes-cb0"),
        pytest.param(extensible_body(TAG_PCM, 1, 8000, 16)[:39], id="39-bytes"),
        pytest.param(extensible_body(TAG_PCM, 1, 8000, 16, cb_size=0), id="40-bytes-cb0"),
        pytest.param(extensible_body(TAG_PCM, 1, 8000, 16, cb_size=21), id="40-bytes-cb21"),
    ],
)
def test_extensible_fmt_too_short(body: bytes) -> None:
    """WAVE_FORMAT_EXTENSIBLE promises a 22-byte extension; without it there is no GUID."""
    data = riff(chunk(b"fmt ", body), data_chunk(pcm16(1, 2)))
    assert_wav_error(data, "extensible fmt size", FMT_AT + 4)


def test_extensible_valid_bits_beyond_container() -> None:
    body = extensible_body(TAG_PCM, 1, 8000, 16, valid_bits=17)
    data = riff(chunk(b"fmt ", body), data_chunk(pcm16(1, 2)))
    assert_wav_error(data, "valid bits", FMT_BODY + 18)


@pytest.mark.parametrize(
    ("tag", "bits", "block_align"),
    [
        pytest.param(TAG_PCM, 12, 2, id="pcm-12-bit"),
        pytest.param(TAG_PCM, 20, 3, id="pcm-20-bit"),
        pytest.param(TAG_PCM, 0, 0, id="pcm-0-bit"),
        pytest.param(TAG_FLOAT, 16, 2, id="float-16-bit"),
        pytest.param(TAG_FLOAT, 24, 3, id="float-24-bit"),
        pytest.param(TAG_MULAW, 16, 2, id="mulaw-16-bit"),
        pytest.param(TAG_ALAW, 16, 2, id="alaw-16-bit"),
    ],
)
def test_unsupported_width_for_the_format_tag(tag: int, bits: int, block_align: int) -> None:
    """Each encoding has one container width in a plain fmt; others are refused, not guessed."""
    fmt = fmt_chunk(tag, 1, 8000, bits, block_align=block_align, byte_rate=8000 * block_align)
    data = riff(fmt, data_chunk(b"\x00" * 12))
    error = assert_wav_error(data, "unsupported codec", FMT_BODY)
    assert f"{bits} bits" in str(error)


# --- streaming placeholder sizes -------------------------------------------------------


def streaming_file(
    riff_size: int | None, data_size: int | None, fmt: AudioFormat, pcm: bytes
) -> bytes:
    """write_wav output with the RIFF and/or data size replaced (None: left alone)."""
    data = write_wav(fmt, pcm)
    data_size_at = find_chunk(data, b"data") + 4
    if riff_size is not None:
        data = with_u32(data, 4, riff_size)
    if data_size is not None:
        data = with_u32(data, data_size_at, data_size)
    return data


STREAM_CASES = [
    pytest.param(
        None if where == "data" else placeholder,
        None if where == "riff" else placeholder,
        id=f"{where}-0x{placeholder:08X}",
    )
    for placeholder in PLACEHOLDERS
    for where in ("riff", "data", "both")
]


@pytest.mark.parametrize("encoding", [Encoding.PCM_S16LE, Encoding.PCM_F32LE])
@pytest.mark.parametrize(("riff_size", "data_size"), STREAM_CASES)
def test_streaming_placeholder_sizes_are_repaired(
    riff_size: int | None, data_size: int | None, encoding: Encoding
) -> None:
    """TTS services and ffmpeg pipes write 'unknown length'; the bytes present are the audio."""
    fmt = AudioFormat(encoding=encoding, sample_rate=24000)
    pcm = sample_bytes(fmt, frames=50)
    wav = read_wav(streaming_file(riff_size, data_size, fmt, pcm))
    assert wav.pcm == pcm
    assert wav.format == fmt
    assert wav.repaired
    assert len(wav.repairs) == (riff_size is not None) + (data_size is not None)
    assert all("placeholder" in repair for repair in wav.repairs)
    if riff_size is not None:
        assert any("RIFF size" in r and f"0x{riff_size:08X}" in r for r in wav.repairs)
    if data_size is not None:
        assert any("data size" in r and f"0x{data_size:08X}" in r for r in wav.repairs)


@pytest.mark.parametrize("placeholder", PLACEHOLDERS)
@pytest.mark.parametrize("frames_received", [0, 1, 17])
def test_stream_cut_on_a_frame_boundary_gives_the_frames_received(
    placeholder: int, frames_received: int
) -> None:
    """A live stream read before it ends holds as many frames as have arrived."""
    fmt = AudioFormat(encoding=Encoding.PCM_S16LE, sample_rate=22050, channels=2)
    pcm = sample_bytes(fmt, frames=40)
    full = streaming_file(placeholder, placeholder, fmt, pcm)
    kept = 44 + frames_received * fmt.block_align
    wav = read_wav(full[:kept])
    assert wav.pcm == pcm[: frames_received * fmt.block_align]
    assert wav.repaired


@pytest.mark.parametrize("placeholder", PLACEHOLDERS)
def test_stream_ending_mid_frame_is_an_error(placeholder: int) -> None:
    """The size came from the bytes present, so a partial frame cannot be trusted."""
    fmt = AudioFormat(encoding=Encoding.PCM_S16LE, sample_rate=22050, channels=2)
    full = streaming_file(placeholder, placeholder, fmt, sample_bytes(fmt, frames=10))
    assert_wav_error(full[:-1], "whole frames", DATA_AT + 4)


def test_streaming_data_placeholder_with_genuine_riff_size() -> None:
    """The RIFF size bounds the data even when the data size is a placeholder."""
    fmt = AudioFormat(encoding=Encoding.PCM_S16LE, sample_rate=8000)
    pcm = pcm16(5, 6, 7, 8)
    data = streaming_file(None, 0xFFFFFFFF, fmt, pcm) + b"trailing bytes"
    assert read_wav(data).pcm == pcm


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(simple_wav(), id="hand-built"),
        pytest.param(
            write_wav(AudioFormat(encoding=Encoding.PCM_MULAW, sample_rate=8000), b"\xff" * 9),
            id="write_wav",
        ),
    ],
)
def test_genuine_file_is_not_flagged_repaired(data: bytes) -> None:
    wav = read_wav(data)
    assert not wav.repaired
    assert wav.repairs == ()


def test_size_next_to_a_placeholder_is_truncation_not_streaming() -> None:
    """Only placeholder values are repaired; 0x7FFFFFFE is an honest, wrong size."""
    fmt = AudioFormat(encoding=Encoding.PCM_U8, sample_rate=8000)
    data = streaming_file(None, 0x7FFFFFFE, fmt, b"\x80" * 4)
    assert_wav_error(data, "truncated chunk", DATA_AT)


# sox on a pipe: data size = the whole frames in 0x7FFFF000 bytes, RIFF size to match.
SOX_UNKNOWN = 0x7FFFF000

SOX_FORMATS = [
    pytest.param(AudioFormat(encoding=e, sample_rate=8000, channels=ch), id=f"{e.value}-{ch}ch")
    for e, ch in [
        (Encoding.PCM_S16LE, 1),  # block_align 2: 0x7FFFF000 itself
        (Encoding.PCM_S24LE, 1),  # 3: odd size 0x7FFFEFFF, RIFF size counts a pad byte
        (Encoding.PCM_U8, 3),
        (Encoding.PCM_S16LE, 3),  # 6: 0x7FFFEFFC
        (Encoding.PCM_F64LE, 2),
        (Encoding.PCM_MULAW, 1),
    ]
]


def sox_pipe_file(fmt: AudioFormat, pcm: bytes, *, data_size: int | None = None) -> bytes:
    """What sox writes to a pipe: write_wav's layout with its 'unknown length' sizes."""
    data = write_wav(fmt, pcm)[: len(wav_header(fmt, 0)) + len(pcm)]  # a stream has no pad
    data_at = find_chunk(data, b"data")
    if data_size is None:
        data_size = SOX_UNKNOWN // fmt.block_align * fmt.block_align
    data = with_u32(data, data_at + 4, data_size)
    return with_u32(data, 4, data_at + data_size + (data_size & 1))


@pytest.mark.parametrize("fmt", SOX_FORMATS)
def test_sox_pipe_sizes_are_repaired(fmt: AudioFormat) -> None:
    """sox's 'unknown length' depends on the frame size; both its sizes are placeholders."""
    pcm = sample_bytes(fmt, frames=25)
    wav = read_wav(sox_pipe_file(fmt, pcm))
    assert (wav.format, wav.pcm) == (fmt, pcm)
    assert len(wav.repairs) == 2
    assert any(r.startswith("RIFF size") for r in wav.repairs)
    assert any(r.startswith("data size") for r in wav.repairs)


@pytest.mark.parametrize("fmt", SOX_FORMATS)
@pytest.mark.parametrize("shift", [-1, 1], ids=["frame-less", "frame-more"])
def test_sizes_near_the_sox_placeholder_are_truncation(fmt: AudioFormat, shift: int) -> None:
    """One frame off sox's value is a real (wrong) size: the file is cut, not streamed."""
    pcm = sample_bytes(fmt, frames=25)
    size = (SOX_UNKNOWN // fmt.block_align + shift) * fmt.block_align
    assert_wav_error(sox_pipe_file(fmt, pcm, data_size=size), "truncated file", 4)


def test_0x7ffff000_is_not_a_placeholder_when_frames_do_not_divide_it() -> None:
    """For 3-byte frames sox writes 0x7FFFEFFF; 0x7FFFF000 would be a partial frame."""
    fmt = AudioFormat(encoding=Encoding.PCM_S24LE, sample_rate=8000)
    data = with_u32(write_wav(fmt, b"\x00" * 9), DATA_AT + 4, SOX_UNKNOWN)
    assert_wav_error(data, "truncated chunk", DATA_AT)


def test_sox_data_placeholder_with_genuine_riff_size() -> None:
    """A RIFF size patched after the fact does not stop the data size being repaired."""
    fmt = AudioFormat(encoding=Encoding.PCM_S16LE, sample_rate=8000)
    pcm = pcm16(1, 2, 3)
    data = with_u32(write_wav(fmt, pcm), DATA_AT + 4, SOX_UNKNOWN)
    wav = read_wav(data)
    assert wav.pcm == pcm
    assert len(wav.repairs) == 1


@pytest.mark.parametrize("data_size", [0xFFFFFFFF, SOX_UNKNOWN], ids=["ffmpeg", "sox"])
def test_placeholder_data_size_does_not_excuse_any_riff_size(data_size: int) -> None:
    """A RIFF size that is neither a placeholder nor consistent with one is a truncation."""
    fmt = AudioFormat(encoding=Encoding.PCM_S16LE, sample_rate=8000)
    data = with_u32(write_wav(fmt, pcm16(1, 2, 3)), DATA_AT + 4, data_size)
    assert_wav_error(with_u32(data, 4, len(data) - 8 + 10), "truncated file", 4)


def test_sox_riff_size_is_excused_only_by_a_placeholder_data_size() -> None:
    """A RIFF size matching sox's but an honest data size: the file really is cut."""
    fmt = AudioFormat(encoding=Encoding.PCM_S16LE, sample_rate=8000)
    data = with_u32(write_wav(fmt, pcm16(1, 2, 3)), 4, DATA_AT + SOX_UNKNOWN)
    assert_wav_error(data, "truncated file", 4)
