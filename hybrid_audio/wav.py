"""Strict RIFF/WAVE reading and canonical writing: bytes in, bytes out.

`read_wav` walks the RIFF chunks (never assuming a 44-byte header), takes the `fmt ` and
`data` chunks, skips every other chunk (LIST, fact, PEAK, cue…) honouring pad bytes, and
checks the header against itself. Anything malformed or unsupported raises `WavError`
naming the source, the rule broken and the byte offset; no other exception escapes for bad
bytes, and no size field is trusted before it is checked against the bytes present.

Streaming writers (TTS services, ffmpeg or sox on a pipe) put placeholder sizes
0xFFFFFFFF or 0x7FFFFFFF (sox: the whole frames in 0x7FFFF000 bytes) in the RIFF
and/or data header because they do not know the length yet. When such a size points past
the bytes received, the real size is taken from what is present and the repair is listed
in `Wav.repairs`. Any other size that points past the end is a truncation.

Deliberate choices: chunks may come in any order; a missing pad byte after the very last
chunk is tolerated (many writers omit it), whether or not the RIFF size counts it; bytes
after the RIFF chunk are ignored; a data chunk with a placeholder size runs to the end of
the bytes (a stream's length is unknowable, so a chunk after it would read as samples); the
`fact` chunk is informational and not checked (writers disagree on it and it never changes
how samples are laid out). RIFX (big-endian), RF64/BW64 and compressed codecs (ADPCM, GSM,
MP3…) are rejected as unsupported. This module never converts samples.
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from hybrid_audio.contract import AudioFormat, encoding_for

#: Sizes streaming writers use as "unknown length".
STREAMING_SIZES = frozenset({0xFFFFFFFF, 0x7FFFFFFF})
#: sox on a pipe declares the whole frames that fit in 0x7FFFF000 bytes as its data size,
#: and a RIFF size consistent with that.
_SOX_UNKNOWN_LENGTH = 0x7FFFF000


def _is_placeholder_data_size(size: int, block_align: int) -> bool:
    """Does this data size mean "unknown length" rather than a real length?"""
    if size in STREAMING_SIZES:
        return True
    return block_align > 0 and size == _SOX_UNKNOWN_LENGTH // block_align * block_align


WAVE_FORMAT_EXTENSIBLE = 0xFFFE
#: Bytes 2..16 of every KSDATAFORMAT_SUBTYPE GUID derived from a WAVE format tag.
_KSDATAFORMAT_SUFFIX = bytes.fromhex("000000001000800000aa00389b71")

#: Names of codecs people meet in the wild, for error messages.
_CODEC_NAMES = {
    0x0002: "MS ADPCM",
    0x0011: "IMA ADPCM",
    0x0016: "ITU G.723 ADPCM",
    0x0031: "GSM 6.10",
    0x0040: "ITU G.721 ADPCM",
    0x0050: "MPEG",
    0x0055: "MPEG Layer 3",
    0x0092: "Dolby AC3 SPDIF",
    0x1610: "AAC",
    0x674F: "Ogg Vorbis",
    0xF1AC: "FLAC",
}


class WavError(ValueError):
    """Malformed or unsupported WAV input.

    `rule` names the rule broken, `offset` the byte offset where it was found and
    `source` the file (or "<bytes>").
    """

    def __init__(self, rule: str, offset: int, detail: str, source: str = "<bytes>") -> None:
        self.rule = rule
        self.offset = offset
        self.detail = detail
        self.source = source
        super().__init__(f"{source}: {detail} [rule: {rule}; byte offset {offset}]")


@dataclass(frozen=True)
class Chunk:
    """One RIFF chunk as found: id, offset of its 8-byte header, declared body size."""

    id: bytes
    offset: int
    size: int


@dataclass(frozen=True, eq=False)
class Wav:
    """A parsed WAV: its format and the exact bytes of its data chunk."""

    format: AudioFormat
    pcm: bytes
    data_offset: int = 0
    repairs: tuple[str, ...] = ()
    chunks: tuple[Chunk, ...] = field(default=(), repr=False)
    source: str = "<bytes>"

    @property
    def frames(self) -> int:
        return len(self.pcm) // self.format.block_align

    @property
    def duration(self) -> float:
        """Seconds of audio."""
        return self.frames / self.format.sample_rate

    @property
    def repaired(self) -> bool:
        """True when streaming placeholder sizes were replaced by the real ones."""
        return bool(self.repairs)

    @cached_property
    def sha256(self) -> str:
        """sha256 (hex) of the sample bytes; computed once per object."""
        return hashlib.sha256(self.pcm).hexdigest()

    def to_bytes(self) -> bytes:
        """This audio as a canonical WAV file."""
        return write_wav(self.format, self.pcm)


def _u16(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset : offset + 2], "little")


def _u32(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset : offset + 4], "little")


def _chunk_name(chunk_id: bytes) -> str:
    """Printable form of a chunk id, whatever bytes it holds."""
    return chunk_id.decode("latin-1").encode("unicode_escape").decode("ascii")


def _load(source: bytes | bytearray | memoryview | os.PathLike | str) -> tuple[bytes, str]:
    if isinstance(source, bytes | bytearray | memoryview):
        return bytes(source), "<bytes>"
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        return path.read_bytes(), str(path)
    raise TypeError(f"read_wav takes bytes or a path, not {type(source).__name__}")


def read_wav(source: bytes | bytearray | memoryview | os.PathLike | str) -> Wav:
    """Parse a WAV file (bytes or a path) strictly; see the module docstring for the rules."""
    data, label = _load(source)
    return _Walker(data, label).walk()


class _Walker:
    """One pass over the RIFF chunks of one input."""

    def __init__(self, data: bytes, source: str) -> None:
        self.data = data
        self.source = source
        self.repairs: list[str] = []
        self.chunks: list[Chunk] = []
        self.format: AudioFormat | None = None
        self.data_chunk: tuple[int, int] | None = None  # (body offset, body size)
        self.missing_final_pad = False  # RIFF size counts a pad byte the file lacks

    def fail(self, rule: str, offset: int, detail: str) -> WavError:
        return WavError(rule, offset, detail, self.source)

    def walk(self) -> Wav:
        data = self.data
        end = self._riff_end()
        pos = 12
        while pos < end:
            if end - pos < 8:
                raise self.fail(
                    "truncated chunk header",
                    pos,
                    f"{end - pos} byte(s) left at the end of the RIFF chunk, "
                    "too few for an 8-byte chunk header",
                )
            chunk_id = data[pos : pos + 4]
            size = _u32(data, pos + 4)
            body = pos + 8
            if chunk_id == b"data":
                size = self._data_size(pos, body, size, end)
            if size > end - body:
                if self.missing_final_pad:  # the missing byte was not a pad after all
                    raise self._truncated(end)
                raise self.fail(
                    "truncated chunk",
                    pos,
                    f"chunk '{_chunk_name(chunk_id)}' declares {size} bytes "
                    f"but only {end - body} are present",
                )
            self.chunks.append(Chunk(chunk_id, pos, size))
            if chunk_id == b"fmt ":
                self._read_fmt(pos, body, size)
            elif chunk_id == b"data":
                if self.data_chunk is not None:
                    raise self.fail("single data chunk", pos, "a second 'data' chunk")
                self.data_chunk = (body, size)
            # Odd-sized chunks are followed by a pad byte; a missing one after the last
            # chunk ends the loop (pos == end + 1), which we accept.
            pos = body + size + (size & 1)
        if self.missing_final_pad and pos != end + 1:
            raise self._truncated(end)
        return self._finish()

    def _truncated(self, end: int) -> WavError:
        return self.fail(
            "truncated file",
            4,
            f"RIFF chunk declares {end - 7} bytes but only {end - 8} are present",
        )

    def _riff_end(self) -> int:
        """Offset just past the RIFF chunk, after checking the 12-byte file header."""
        data = self.data
        if len(data) < 12:
            raise self.fail(
                "RIFF header", 0, f"{len(data)} bytes is shorter than the 12-byte RIFF header"
            )
        magic = data[:4]
        if magic == b"RIFX":
            raise self.fail("unsupported container", 0, "RIFX (big-endian) WAV is not supported")
        if magic in (b"RF64", b"BW64"):
            raise self.fail(
                "unsupported container", 0, f"{magic.decode()} (64-bit WAV) is not supported"
            )
        if magic != b"RIFF":
            raise self.fail("RIFF header", 0, f"starts with {magic!r}, not b'RIFF'")
        if data[8:12] != b"WAVE":
            raise self.fail("RIFF header", 8, f"form type is {data[8:12]!r}, not b'WAVE'")
        riff_size = _u32(data, 4)
        if riff_size < 4:
            raise self.fail("RIFF size", 4, f"RIFF size {riff_size} cannot hold the form type")
        present = len(data) - 8
        if riff_size > present:
            if riff_size in STREAMING_SIZES or self._streamed_data_explains(riff_size):
                self.repairs.append(
                    f"RIFF size 0x{riff_size:08X} is a streaming placeholder; "
                    f"used the {present} bytes present"
                )
                return len(data)
            if riff_size == present + 1:
                # Only the final pad byte may be missing; `walk` checks that it is.
                self.missing_final_pad = True
                return len(data)
            raise self.fail(
                "truncated file",
                4,
                f"RIFF chunk declares {riff_size} bytes but only {present} are present",
            )
        return 8 + riff_size

    def _streamed_data_explains(self, riff_size: int) -> bool:
        """Is an oversized RIFF size just a placeholder data size plus the header?"""
        data, pos, block_align = self.data, 12, 0
        while pos + 8 <= len(data):
            size = _u32(data, pos + 4)
            if data[pos : pos + 4] == b"fmt " and pos + 22 <= len(data):
                block_align = _u16(data, pos + 20)
            if data[pos : pos + 4] == b"data":
                placeholder = _is_placeholder_data_size(size, block_align)
                return placeholder and riff_size == pos + size + (size & 1)
            pos += 8 + size + (size & 1)
        return False

    def _data_size(self, pos: int, body: int, size: int, end: int) -> int:
        """The data chunk's real size: a streaming placeholder becomes the bytes present."""
        available = end - body
        block_align = self.format.block_align if self.format else 0
        if size > available and _is_placeholder_data_size(size, block_align):
            self.repairs.append(
                f"data size 0x{size:08X} at byte {pos + 4} is a streaming placeholder; "
                f"used the {available} bytes present"
            )
            return available
        return size

    def _read_fmt(self, pos: int, body: int, size: int) -> None:
        data = self.data
        if self.format is not None:
            raise self.fail("single fmt chunk", pos, "a second 'fmt ' chunk")
        if size < 16:
            raise self.fail("fmt size", pos + 4, f"'fmt ' chunk is {size} bytes; at least 16")
        tag, channels, rate, byte_rate, block_align, bits = struct.unpack_from(
            "<HHIIHH", data, body
        )
        if tag == WAVE_FORMAT_EXTENSIBLE:
            tag = self._extensible_tag(pos, body, size, bits)
        if channels == 0:
            raise self.fail("channel count", body + 2, "0 channels")
        if rate == 0:
            raise self.fail("sample rate", body + 4, "sample rate 0 Hz")
        encoding = encoding_for(tag, bits)
        if encoding is None:
            name = _CODEC_NAMES.get(tag)
            what = f"{name} (format tag 0x{tag:04X})" if name else f"format tag 0x{tag:04X}"
            raise self.fail(
                "unsupported codec",
                body,
                f"{what} with {bits} bits per sample is not supported; "
                "supported: PCM 8/16/24/32-bit, IEEE float 32/64-bit, μ-law, A-law",
            )
        expected_align = channels * (bits // 8)
        if block_align != expected_align:
            raise self.fail(
                "block align",
                body + 12,
                f"block_align is {block_align} but {channels} channel(s) × {bits // 8} "
                f"byte(s) = {expected_align}",
            )
        if byte_rate != rate * block_align:
            raise self.fail(
                "byte rate",
                body + 8,
                f"byte_rate is {byte_rate} but {rate} Hz × {block_align} = {rate * block_align}",
            )
        self.format = AudioFormat(
            encoding=encoding, sample_rate=rate, channels=channels, bits_per_sample=bits
        )

    def _extensible_tag(self, pos: int, body: int, size: int, bits: int) -> int:
        """The format tag inside a WAVE_FORMAT_EXTENSIBLE sub-format GUID."""
        data = self.data
        if size < 40 or _u16(data, body + 16) < 22:
            raise self.fail(
                "extensible fmt size",
                pos + 4,
                f"WAVE_FORMAT_EXTENSIBLE needs a 40-byte 'fmt ' with cbSize >= 22; "
                f"got {size} bytes, cbSize {_u16(data, body + 16) if size >= 18 else 'absent'}",
            )
        valid_bits = _u16(data, body + 18)
        if valid_bits > bits:
            raise self.fail(
                "valid bits",
                body + 18,
                f"{valid_bits} valid bits per sample exceed the {bits}-bit container",
            )
        guid = data[body + 24 : body + 40]
        if guid[2:] != _KSDATAFORMAT_SUFFIX:
            raise self.fail("unsupported codec", body + 24, f"unknown sub-format GUID {guid.hex()}")
        return _u16(guid, 0)

    def _finish(self) -> Wav:
        if self.format is None:
            raise self.fail("fmt chunk required", 12, "no 'fmt ' chunk")
        if self.data_chunk is None:
            raise self.fail("data chunk required", 12, "no 'data' chunk")
        body, size = self.data_chunk
        align = self.format.block_align
        if size % align:
            raise self.fail(
                "whole frames",
                body - 4,
                f"data holds {size} bytes, not a whole number of {align}-byte frames",
            )
        return Wav(
            format=self.format,
            pcm=self.data[body : body + size],
            data_offset=body,
            repairs=tuple(self.repairs),
            chunks=tuple(self.chunks),
            source=self.source,
        )


def wav_header(fmt: AudioFormat, data_bytes: int) -> bytes:
    """The canonical header for `data_bytes` of sample data in format `fmt`.

    PCM gets the 16-byte `fmt `; float and G.711 get the 18-byte form (cbSize 0) and a
    `fact` chunk, as the WAVE spec asks of non-PCM data. Plain (not extensible) `fmt ` is
    used for every channel count and width: libsndfile, the stdlib and browsers read it.
    """
    if data_bytes % fmt.block_align:
        raise WavError(
            "whole frames",
            0,
            f"{data_bytes} bytes of sample data are not whole {fmt.block_align}-byte frames",
            "<write>",
        )
    fmt_body = struct.pack(
        "<HHIIHH",
        fmt.format_tag,
        fmt.channels,
        fmt.sample_rate,
        fmt.byte_rate,
        fmt.block_align,
        fmt.bits_per_sample,
    )
    chunks = b""
    if fmt.format_tag != 1:
        fmt_body += b"\x00\x00"
        chunks = b"fact" + struct.pack("<II", 4, data_bytes // fmt.block_align)
    chunks = b"fmt " + struct.pack("<I", len(fmt_body)) + fmt_body + chunks
    riff_size = 4 + len(chunks) + 8 + data_bytes + (data_bytes & 1)
    if riff_size > 0xFFFFFFFF:
        raise WavError(
            "RIFF size", 4, f"{data_bytes} bytes of audio exceed the 4 GiB RIFF limit", "<write>"
        )
    return (
        b"RIFF"
        + struct.pack("<I", riff_size)
        + b"WAVE"
        + chunks
        + b"data"
        + struct.pack("<I", data_bytes)
    )


def write_wav(fmt: AudioFormat, pcm: bytes | bytearray | memoryview) -> bytes:
    """A canonical WAV file holding exactly `pcm` (plus a pad byte if its length is odd)."""
    header = wav_header(fmt, len(pcm))
    return b"".join([header, pcm, b"\x00" * (len(pcm) & 1)])
