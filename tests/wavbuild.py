"""Build WAV bytes chunk by chunk, well-formed or deliberately broken, for the reader tests.

Nothing here imports `hybrid_audio`: the bytes are laid out from the RIFF/WAVE spec so the
tests do not check the reader against itself.
"""

from __future__ import annotations

import struct

TAG_PCM = 0x0001
TAG_FLOAT = 0x0003
TAG_ALAW = 0x0006
TAG_MULAW = 0x0007
TAG_EXTENSIBLE = 0xFFFE

#: Bytes 2..16 of a KSDATAFORMAT_SUBTYPE GUID derived from a WAVE format tag.
KS_GUID_SUFFIX = bytes.fromhex("000000001000800000aa00389b71")

#: Offset of the RIFF size field.
RIFF_SIZE_OFFSET = 4


def u16(value: int) -> bytes:
    return struct.pack("<H", value)


def u32(value: int) -> bytes:
    return struct.pack("<I", value)


def chunk(
    chunk_id: bytes, body: bytes = b"", *, size: int | None = None, pad: bool = True
) -> bytes:
    """A chunk: id, size (the body length unless given), body and, if odd, a pad byte."""
    assert len(chunk_id) == 4, chunk_id
    declared = len(body) if size is None else size
    return chunk_id + u32(declared) + body + (b"\x00" if pad and len(body) % 2 else b"")


def fmt_body(
    tag: int,
    channels: int,
    rate: int,
    bits: int,
    *,
    block_align: int | None = None,
    byte_rate: int | None = None,
    cb_size: int | None = None,
) -> bytes:
    """A WAVEFORMAT(EX) body; block align and byte rate are consistent unless given."""
    if block_align is None:
        block_align = channels * (bits // 8)
    if byte_rate is None:
        byte_rate = rate * block_align
    body = struct.pack("<HHIIHH", tag, channels, rate, byte_rate, block_align, bits)
    if cb_size is not None:
        body += u16(cb_size)
    return body


def ks_guid(tag: int) -> bytes:
    """The KSDATAFORMAT_SUBTYPE GUID (as stored on disk) for a WAVE format tag."""
    return u16(tag) + KS_GUID_SUFFIX


def extensible_body(
    sub_tag: int,
    channels: int,
    rate: int,
    bits: int,
    *,
    valid_bits: int | None = None,
    channel_mask: int = 0,
    cb_size: int = 22,
    guid: bytes | None = None,
) -> bytes:
    """A 40-byte WAVEFORMATEXTENSIBLE body whose sub-format is `sub_tag` (or `guid`)."""
    head = fmt_body(TAG_EXTENSIBLE, channels, rate, bits, cb_size=cb_size)
    guid = ks_guid(sub_tag) if guid is None else guid
    assert len(guid) == 16
    tail = u16(bits if valid_bits is None else valid_bits) + u32(channel_mask) + guid
    return head + tail


def fmt_chunk(tag: int, channels: int, rate: int, bits: int, **kwargs: int) -> bytes:
    return chunk(b"fmt ", fmt_body(tag, channels, rate, bits, **kwargs))


def data_chunk(pcm: bytes, *, size: int | None = None, pad: bool = True) -> bytes:
    return chunk(b"data", pcm, size=size, pad=pad)


def riff(
    *chunks: bytes,
    size: int | None = None,
    magic: bytes = b"RIFF",
    form: bytes = b"WAVE",
) -> bytes:
    """A RIFF file holding `chunks` in order; its size field counts them unless given."""
    body = form + b"".join(chunks)
    return magic + u32(len(body) if size is None else size) + body


def simple_wav(
    pcm: bytes = b"\x01\x00\x02\x00\x03\x00",
    *,
    tag: int = TAG_PCM,
    channels: int = 1,
    rate: int = 8000,
    bits: int = 16,
) -> bytes:
    """The smallest well-formed file: RIFF, a 16-byte `fmt `, then `data`."""
    return riff(fmt_chunk(tag, channels, rate, bits), data_chunk(pcm))


def walk_chunks(data: bytes) -> list[tuple[bytes, int, int]]:
    """(id, header offset, declared size) of each chunk, honouring pad bytes; no checks."""
    found = []
    end = min(len(data), 8 + int.from_bytes(data[4:8], "little"))
    pos = 12
    while pos + 8 <= end:
        size = int.from_bytes(data[pos + 4 : pos + 8], "little")
        found.append((data[pos : pos + 4], pos, size))
        pos += 8 + size + (size & 1)
    return found


def find_chunk(data: bytes, chunk_id: bytes) -> int:
    """Offset of the header of the first chunk called `chunk_id`."""
    for found_id, offset, _size in walk_chunks(data):
        if found_id == chunk_id:
            return offset
    raise LookupError(chunk_id)


def with_u32(data: bytes, offset: int, value: int) -> bytes:
    """`data` with the little-endian u32 at `offset` replaced by `value`."""
    return data[:offset] + u32(value) + data[offset + 4 :]
