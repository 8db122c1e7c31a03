"""Property tests: whatever bytes arrive, read_wav returns a consistent Wav or raises WavError.

Each property runs twice: ~100 examples in the fast suite and ~2000 under `-m slow` (a
quarter of that where every example is read once per possible cut).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hybrid_audio.contract import BITS, FORMAT_TAG, AudioFormat, Encoding
from hybrid_audio.wav import Wav, WavError, read_wav, write_wav
from tests.wavbuild import (
    TAG_EXTENSIBLE,
    chunk,
    data_chunk,
    extensible_body,
    find_chunk,
    fmt_body,
    riff,
    u16,
    u32,
    walk_chunks,
    with_u32,
)

#: Every rule read_wav may report; a new rule should be a conscious addition here.
KNOWN_RULES = frozenset(
    {
        "RIFF header",
        "RIFF size",
        "unsupported container",
        "truncated file",
        "truncated chunk header",
        "truncated chunk",
        "fmt size",
        "single fmt chunk",
        "single data chunk",
        "channel count",
        "sample rate",
        "unsupported codec",
        "block align",
        "byte rate",
        "extensible fmt size",
        "valid bits",
        "fmt chunk required",
        "data chunk required",
        "whole frames",
    }
)

SPEEDS = pytest.mark.parametrize(
    "examples",
    [pytest.param(100, id="fast"), pytest.param(2000, id="thorough", marks=pytest.mark.slow)],
)


def run(examples: int, *strategies: st.SearchStrategy) -> Callable:
    """Decorator: run the property now with `examples` examples (settings shared by all)."""

    def decorate(prop: Callable) -> Callable:
        configured = settings(
            max_examples=examples,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )(given(*strategies)(prop))
        configured()
        return configured

    return decorate


# --- strategies ------------------------------------------------------------------------

#: Size fields worth trying: tiny, header-sized, sox's 'unknown length' for frames of 1, 3,
#: 2 or 4, and 6 bytes, the other placeholders and their neighbours.
U32_EDGES = [0, 1, 2, 3, 4, 7, 8, 15, 16, 17, 39, 40, 0x7FFFEFFC, 0x7FFFEFFF, 0x7FFFF000]
U32_EDGES += [0x7FFFFFFE, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF]
u32s = st.one_of(st.sampled_from(U32_EDGES), st.integers(0, 300), st.integers(0, 2**32 - 1))


@st.composite
def formats(draw: st.DrawFn) -> AudioFormat:
    """Any AudioFormat a WAV header can hold (block_align ≤ u16, byte_rate ≤ u32)."""
    encoding = draw(st.sampled_from(Encoding))
    width = BITS[encoding] // 8
    channels = draw(st.integers(1, 8) | st.integers(1, 0xFFFF // width))
    block_align = channels * width
    common = st.sampled_from([8000, 16000, 22050, 24000, 44100, 48000])
    rate = draw(
        common.filter(lambda r: r * block_align <= 0xFFFFFFFF)
        | st.integers(1, 0xFFFFFFFF // block_align)
    )
    return AudioFormat(encoding=encoding, sample_rate=rate, channels=channels)


@st.composite
def audio(draw: st.DrawFn, max_bytes: int = 512) -> tuple[AudioFormat, bytes]:
    """A format and whole frames of arbitrary sample bytes (NaN floats included)."""
    fmt = draw(formats())
    frames = draw(st.integers(0, max(1, max_bytes // fmt.block_align)))
    size = frames * fmt.block_align
    return fmt, draw(st.binary(min_size=size, max_size=size))


EXTRA_IDS = st.sampled_from([b"LIST", b"JUNK", b"PEAK", b"cue ", b"fact", b"bext", b"x\x00\xff "])
extra_chunks = st.lists(
    st.builds(chunk, EXTRA_IDS, st.binary(max_size=13)),
    max_size=3,
)


@st.composite
def wav_files(draw: st.DrawFn, max_bytes: int = 512) -> tuple[bytes, AudioFormat, bytes]:
    """A valid file: write_wav output, or fmt (plain or extensible), data and extra chunks
    in any order. Returns (file, format, pcm); the RIFF size counts every byte."""
    fmt, pcm = draw(audio(max_bytes))
    if draw(st.booleans()):
        return write_wav(fmt, pcm), fmt, pcm
    args = (fmt.channels, fmt.sample_rate, fmt.bits_per_sample)
    if draw(st.booleans()):
        body = extensible_body(fmt.format_tag, *args)
    else:
        body = fmt_body(fmt.format_tag, *args, cb_size=draw(st.sampled_from([None, 0])))
    chunks = [chunk(b"fmt ", body), data_chunk(pcm), *draw(extra_chunks)]
    return riff(*draw(st.permutations(chunks))), fmt, pcm


def check_wav_error(error: WavError, data: bytes) -> None:
    """A WavError names a known rule, an offset inside the input, and both in its message."""
    assert error.rule in KNOWN_RULES, error.rule
    assert 0 <= error.offset <= len(data)
    rule, offset = re.escape(error.rule), error.offset
    assert re.search(rf"\[rule: {rule}; byte offset {offset}\]$", str(error)), str(error)


def read_or_error(data: bytes) -> Wav | None:
    """read_wav(data), checking whichever outcome against the promises of the module.

    Any exception other than WavError propagates and fails the property.
    """
    try:
        wav = read_wav(data)
    except WavError as error:
        check_wav_error(error, data)
        return None
    assert len(wav.pcm) % wav.format.block_align == 0
    assert wav.data_offset + len(wav.pcm) <= len(data)
    assert data[wav.data_offset : wav.data_offset + len(wav.pcm)] == wav.pcm
    assert wav.repaired == bool(wav.repairs)
    again = read_wav(wav.to_bytes())  # what was read can always be written back
    assert (again.format, again.pcm) == (wav.format, wav.pcm)
    return wav


# --- properties ------------------------------------------------------------------------


@SPEEDS
def test_round_trip(examples: int) -> None:
    """read_wav(write_wav(f, pcm)) gives back f and pcm for every representable format."""

    @run(examples, audio())
    def prop(case: tuple[AudioFormat, bytes]) -> None:
        fmt, pcm = case
        wav = read_wav(write_wav(fmt, pcm))
        assert wav.format == fmt
        assert wav.pcm == pcm
        assert not wav.repaired
        assert wav.frames * fmt.block_align == len(pcm)


@SPEEDS
def test_hand_built_files_read_exactly(examples: int) -> None:
    """Chunk order, extensible fmt and metadata chunks never change the samples read."""

    @run(examples, wav_files())
    def prop(case: tuple[bytes, AudioFormat, bytes]) -> None:
        data, fmt, pcm = case
        wav = read_or_error(data)
        assert wav is not None
        assert (wav.format, wav.pcm) == (fmt, pcm)


@SPEEDS
def test_truncation_raises_unless_nothing_is_lost(examples: int) -> None:
    """Every cut of a valid file (every length 0..len) is an error, except no cut at all
    (or, if the reader chooses, a cut of nothing but the final pad byte)."""

    @run(examples // 4, wav_files(max_bytes=256))
    def prop(case: tuple[bytes, AudioFormat, bytes]) -> None:
        data, fmt, pcm = case
        last_size = walk_chunks(data)[-1][2]
        only_pad = len(data) - 1 if last_size % 2 else None  # cutting it loses no content
        for length in range(len(data)):
            if length == only_pad:
                wav = read_or_error(data[:length])
                assert wav is None or (wav.format, wav.pcm) == (fmt, pcm)
                continue
            with pytest.raises(WavError):
                read_wav(data[:length])
        wav = read_wav(data)
        assert (wav.format, wav.pcm) == (fmt, pcm)


@SPEEDS
def test_truncated_stream_gives_whole_frames_received(examples: int) -> None:
    """A stream with placeholder sizes (ffmpeg's or sox's), cut anywhere: the frames
    present, or WavError exactly when the cut splits the header or a frame."""

    @run(examples // 4, audio(max_bytes=96), st.sampled_from([0xFFFFFFFF, 0x7FFFFFFF, "sox"]))
    def prop(case: tuple[AudioFormat, bytes], writer: int | str) -> None:
        fmt, pcm = case
        data = write_wav(fmt, pcm)[: len(write_wav(fmt, b"")) + len(pcm)]  # no pad: a stream
        data_body = find_chunk(data, b"data") + 8
        if writer == "sox":  # the whole frames in 0x7FFFF000 bytes, and a RIFF size to match
            data_size = 0x7FFFF000 // fmt.block_align * fmt.block_align
            riff_size = data_body - 8 + data_size + (data_size & 1)
        else:
            data_size = riff_size = writer
        data = with_u32(with_u32(data, 4, riff_size), data_body - 4, data_size)
        for length in range(len(data) + 1):
            received = length - data_body
            if received < 0 or received % fmt.block_align:
                with pytest.raises(WavError):
                    read_wav(data[:length])
            else:
                wav = read_wav(data[:length])
                assert wav.pcm == pcm[:received]
                assert wav.repaired


@SPEEDS
def test_corrupted_bytes_raise_wav_error_or_read_consistently(examples: int) -> None:
    """1–8 bytes overwritten anywhere: a WavError or a self-consistent Wav, nothing else."""
    corruption = st.lists(
        st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=8
    )

    @run(examples, wav_files(), corruption)
    def prop(case: tuple[bytes, AudioFormat, bytes], changes: list[tuple[float, int]]) -> None:
        data = bytearray(case[0])
        for where, value in changes:
            data[int(where * len(data))] = value
        read_or_error(bytes(data))


@SPEEDS
def test_rewritten_size_fields_raise_wav_error_or_read_consistently(examples: int) -> None:
    """RIFF, fmt and data sizes set to anything (0, placeholders, huge) are never trusted."""
    rewrites = st.lists(
        st.tuples(st.sampled_from(["RIFF", "fmt ", "data"]), u32s), min_size=1, max_size=3
    )

    @run(examples, wav_files(), rewrites)
    def prop(case: tuple[bytes, AudioFormat, bytes], changes: list[tuple[str, int]]) -> None:
        data = case[0]
        size_at = {
            "RIFF": 4,
            "fmt ": find_chunk(data, b"fmt ") + 4,
            "data": find_chunk(data, b"data") + 4,
        }
        for field, value in changes:
            data = with_u32(data, size_at[field], value)
        wav = read_or_error(data)
        if wav is not None and all(field == "RIFF" for field, _ in changes):
            assert wav.pcm == case[2]  # the RIFF size only moves the end, never the data


@SPEEDS
def test_random_bytes_are_rejected(examples: int) -> None:
    """Noise is never mistaken for audio and never escapes as another exception."""

    @run(examples, st.binary(max_size=600))
    def prop(data: bytes) -> None:
        with pytest.raises(WavError) as caught:
            read_wav(data)
        read_or_error(data)  # checks the rule and message
        assert caught.value.source == "<bytes>"


@SPEEDS
def test_random_bytes_after_a_riff_wave_header_are_rejected(examples: int) -> None:
    """A plausible RIFF/WAVE header followed by noise is still only a WavError."""
    sizes = st.one_of(st.none(), u32s)

    @run(examples, sizes, st.binary(max_size=600))
    def prop(size: int | None, tail: bytes) -> None:
        data = b"RIFF" + u32(len(tail) + 4 if size is None else size) + b"WAVE" + tail
        with pytest.raises(WavError):
            read_wav(data)
        read_or_error(data)


FMT_TAGS = st.sampled_from([1, 3, 6, 7, 2, 0x11, 0x55, TAG_EXTENSIBLE]) | st.integers(0, 0xFFFF)
SMALL = st.sampled_from([0, 1, 2, 3, 4, 8, 16, 24, 32, 64]) | st.integers(0, 0xFFFF)


def usually(draw: st.DrawFn) -> bool:
    """True about seven times in eight: keeps generated files near the valid ones."""
    return draw(st.integers(0, 7)) != 7  # shrinks towards True


@st.composite
def fmt_bodies(draw: st.DrawFn) -> bytes:
    """fmt bodies near the valid ones: mostly real tag/width pairs and consistent fields,
    plain or extensible (with a possibly short or lying extension)."""
    if usually(draw):
        encoding = draw(st.sampled_from(Encoding))
        tag, bits = FORMAT_TAG[encoding], BITS[encoding]
    else:
        tag, bits = draw(FMT_TAGS), draw(SMALL)
    channels = draw(st.integers(1, 6)) if usually(draw) else draw(SMALL)
    rate = draw(st.sampled_from([8000, 44100]) if usually(draw) else u32s)
    align = channels * (bits // 8)
    if align > 0xFFFF or not usually(draw):
        align = draw(SMALL)
    byte_rate = rate * align
    if byte_rate >= 2**32 or not usually(draw):
        byte_rate = draw(u32s)
    extensible = draw(st.booleans())
    outer_tag = TAG_EXTENSIBLE if extensible else tag
    body = fmt_body(outer_tag, channels, rate, bits, block_align=align, byte_rate=byte_rate)
    if extensible or not usually(draw):
        sub_tag = tag if usually(draw) else draw(FMT_TAGS)
        cb_size = 22 if usually(draw) else draw(st.sampled_from([0, 21, 100]) | SMALL)
        valid_bits = bits if usually(draw) else draw(SMALL)
        guid = extensible_body(sub_tag, 1, 1, 8)[24:]  # KSDATAFORMAT GUID for sub_tag
        if not usually(draw):
            guid = draw(st.binary(min_size=16, max_size=16))
        extension = u16(cb_size) + u16(valid_bits) + u32(draw(u32s)) + guid
        if not usually(draw):
            extension = extension[: draw(st.integers(0, len(extension)))]
        body += extension
    return body


DATA_BODIES = st.sampled_from([0, 12, 24, 48, 96]).flatmap(
    lambda n: st.binary(min_size=n, max_size=n)
) | st.binary(max_size=64)


@st.composite
def soup_chunk(draw: st.DrawFn, kind: str) -> bytes:
    """One chunk: fmt (near-valid body), data, or anything else; its size sometimes lies."""
    if kind == "fmt":
        chunk_id, body = b"fmt ", draw(fmt_bodies())
    elif kind == "data":
        chunk_id, body = b"data", draw(DATA_BODIES)
    else:
        chunk_id = draw(EXTRA_IDS | st.binary(min_size=4, max_size=4))
        body = draw(st.binary(max_size=64))
    if usually(draw):
        return chunk(chunk_id, body)
    return chunk(chunk_id, body, size=draw(u32s), pad=draw(st.booleans()))


@st.composite
def chunk_soups(draw: st.DrawFn) -> bytes:
    """A RIFF/WAVE file of mostly one fmt, mostly one data and other chunks, in any order,
    with a RIFF size that sometimes lies and sometimes trailing bytes."""
    chunks = draw(st.lists(soup_chunk("other"), max_size=3))
    for kind in ("fmt", "data"):
        if usually(draw):
            chunks.append(draw(soup_chunk(kind)))
    if not usually(draw):
        kinds = st.sampled_from(["fmt", "data", "other"])
        chunks += draw(st.lists(kinds.flatmap(soup_chunk), max_size=2))
    size = None if usually(draw) else draw(u32s)
    trailer = b"" if usually(draw) else draw(st.binary(max_size=8))
    return riff(*draw(st.permutations(chunks)), size=size) + trailer


@SPEEDS
def test_random_chunk_soup_raises_wav_error_or_reads_consistently(examples: int) -> None:
    """Chunks with real and random ids, near-valid fmt bodies and lying sizes."""

    @run(examples, chunk_soups())
    def prop(data: bytes) -> None:
        read_or_error(data)
