"""Delivery formats: an assembled message encoded for its channel, traceable to its master.

The assembled WAV is the master: proven byte by byte against its stems, and never changed.
A delivery is encoded from the master's bytes after they are checked against the manifest's
sha256 (`Assembler.read_output`), written atomically to `output/deliveries/<id>.<ext>`, and
recorded in the message manifest under `deliveries[<format>]`: format, parameters, size,
sha256 of the delivered bytes, `master_sha256`, path, encoder, created_at. A lossy delivery
is traceable to its master by hash, not identical to it.

Why a subfolder and not beside the master: the output folder's own rules (manifests listed
by `*.json`, WAVs without a manifest removed by recovery, every file mirrored to the bucket
and audited as an output object) are about masters; derived files, which can be made again
from the master at any time, stay out of them.

Encoded once: a later request returns the stored file after checking its sha256 against the
record; a file that is missing, changed, or made from another master or preset is encoded
again, never served. The check, the encoding and the manifest rewrite run under the
output's lock (`Assembler.manifest_lock`), so concurrent deliveries of one output, from
threads or processes, encode once and never lose each other's record.

Presets (voice): `flac` at the master's rate, 16-bit for 16-bit and G.711 masters (the
decoded samples equal the master's), 24-bit for float masters (libsndfile's FLAC has no
float: within 2**-24, not identical); `mp3` 64 kbit/s CBR at the master's rate when MPEG
audio has it, else at the next rate it has; `ogg` Opus ~32 kbit/s (VBR) at 48 kHz (Opus
takes 8/12/16/24/48 kHz; resampled with soxr); `mulaw`/`alaw` mono 8 kHz G.711 WAV,
resampled with soxr and encoded by `hybrid_audio.codecs` (the project's bit-exact G.711).
FLAC, MP3 and G.711 encode to the same bytes from the same master; libsndfile's Ogg/Opus
does not (each file gets a random Ogg stream serial number, so page headers and CRCs differ,
the Opus packets do not) — the cache still makes it encoded once.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import soundfile as sf
import soxr
from pydantic import BaseModel, ValidationError

from hybrid_audio import codecs
from hybrid_audio.contract import AudioFormat, Encoding
from hybrid_audio.files import atomic_write, discard, leftovers, read_inside
from hybrid_audio.wav import Wav, read_wav, write_wav

if TYPE_CHECKING:
    from hybrid_audio.assembly import Assembler

#: Folder (inside the output folder) of the delivered files.
DELIVERIES = "deliveries"
#: The master itself: served from the output folder, no copy, no record.
MASTER = "wav"
#: MPEG audio sample rates (MPEG-1, -2 and -2.5 layer III).
MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
MP3_KBPS = 64
OPUS_RATE = 48000
OPUS_KBPS = 32
TELEPHONY_RATE = 8000


class Delivery(BaseModel):
    """One delivered file as its manifest records it (`deliveries[format]`)."""

    format: str
    parameters: dict[str, Any]
    size: int
    sha256: str
    master_sha256: str
    path: str  # relative to the output folder
    encoder: str
    created_at: str


@dataclass(frozen=True)
class DeliveryFormat:
    """A format a message can be delivered in: how it is named, served and encoded."""

    name: str
    suffix: str  # file name ending, with its dot(s): ".mp3", ".mulaw.wav"
    media_type: str
    description: str
    encoder: str
    #: Parameters for a master of this audio format (recorded as they are).
    parameters: Callable[[AudioFormat], dict[str, Any]] = lambda fmt: {}
    #: The encoded bytes of the master's samples (float64, frames × channels); None for
    #: the master itself.
    encode: Callable[[np.ndarray, AudioFormat, dict[str, Any]], bytes] | None = None


#: Who encodes: recorded with each delivery, so a file can be traced to the tools that made it.
SOUNDFILE = f"soundfile {sf.__version__}, libsndfile {sf.__libsndfile_version__}"
SOXR = f"soxr {soxr.__version__}"


def _resampled(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    """`samples` at `target` Hz (soxr, high quality); unchanged when already there."""
    if rate == target:
        return samples
    return soxr.resample(samples, rate, target).reshape(-1, samples.shape[1])


def _sf_bytes(samples: np.ndarray, rate: int, **options: Any) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, **options)
    return buffer.getvalue()


def _two_channels_at_most(fmt: AudioFormat, name: str) -> None:
    if fmt.channels > 2:
        raise ValueError(f"{name} takes mono or stereo, not {fmt.channels} channels")


# --- flac ---------------------------------------------------------------------------------

#: FLAC sample width for each master encoding: never fewer bits than the master has.
_FLAC_SUBTYPE = {8: "PCM_S8", 16: "PCM_16"}


def _flac_parameters(fmt: AudioFormat) -> dict[str, Any]:
    bits = 16 if fmt.encoding in (Encoding.PCM_MULAW, Encoding.PCM_ALAW) else fmt.bits_per_sample
    subtype = _FLAC_SUBTYPE.get(bits, "PCM_24")
    return {"sample_rate": fmt.sample_rate, "channels": fmt.channels, "subtype": subtype}


def _flac(samples: np.ndarray, fmt: AudioFormat, params: dict[str, Any]) -> bytes:
    return _sf_bytes(samples, fmt.sample_rate, format="FLAC", subtype=params["subtype"])


# --- mp3 ----------------------------------------------------------------------------------


def _mp3_parameters(fmt: AudioFormat) -> dict[str, Any]:
    _two_channels_at_most(fmt, "mp3")
    rate = next((r for r in MP3_RATES if r >= fmt.sample_rate), MP3_RATES[-1])
    return {
        "sample_rate": rate,
        "channels": fmt.channels,
        "bitrate_kbps": MP3_KBPS,
        "bitrate_mode": "CONSTANT",
    }


def _mp3_compression_level(rate: int, kbps: int) -> float:
    """libsndfile's CBR `compression_level` for `kbps` at `rate`: it picks
    int(max - level × (max - min)) kbit/s, with [min, max] [32, 320] for MPEG-1 (≥ 32 kHz),
    [8, 160] for MPEG-2 (≥ 16 kHz), [8, 64] for MPEG-2.5 (src/mpeg_l3_encode.c)."""
    low, high = (32, 320) if rate >= 32000 else (8, 160) if rate >= 16000 else (8, 64)
    return min(max((high - kbps - 0.5) / (high - low), 0.0), 1.0)


def _mp3(samples: np.ndarray, fmt: AudioFormat, params: dict[str, Any]) -> bytes:
    rate = params["sample_rate"]
    return _sf_bytes(
        _resampled(samples, fmt.sample_rate, rate).astype(np.float32),
        rate,
        format="MP3",
        subtype="MPEG_LAYER_III",
        bitrate_mode="CONSTANT",
        compression_level=_mp3_compression_level(rate, params["bitrate_kbps"]),
    )


# --- ogg / opus ---------------------------------------------------------------------------


def _opus_parameters(fmt: AudioFormat) -> dict[str, Any]:
    _two_channels_at_most(fmt, "ogg")
    return {
        "sample_rate": OPUS_RATE,
        "channels": fmt.channels,
        "codec": "opus",
        "bitrate_kbps": OPUS_KBPS,
        "bitrate_mode": "VARIABLE",
    }


def _opus(samples: np.ndarray, fmt: AudioFormat, params: dict[str, Any]) -> bytes:
    # libsndfile's Opus target is max - level × (max - 6 kbit/s), max 256 kbit/s a channel.
    top = 256 * fmt.channels
    level = (top - params["bitrate_kbps"] * fmt.channels) / (top - 6)
    return _sf_bytes(
        _resampled(samples, fmt.sample_rate, OPUS_RATE).astype(np.float32),
        OPUS_RATE,
        format="OGG",
        subtype="OPUS",
        compression_level=level,
    )


# --- G.711 --------------------------------------------------------------------------------


def _g711_parameters(encoding: Encoding) -> Callable[[AudioFormat], dict[str, Any]]:
    def parameters(fmt: AudioFormat) -> dict[str, Any]:
        return {"sample_rate": TELEPHONY_RATE, "channels": 1, "encoding": encoding.value}

    return parameters


def _g711(samples: np.ndarray, fmt: AudioFormat, params: dict[str, Any]) -> bytes:
    mono = samples.mean(axis=1, keepdims=True)
    target = AudioFormat(encoding=params["encoding"], sample_rate=TELEPHONY_RATE)
    pcm = codecs.encode(_resampled(mono, fmt.sample_rate, TELEPHONY_RATE), target)
    return write_wav(target, pcm)


FORMATS: dict[str, DeliveryFormat] = {
    MASTER: DeliveryFormat(
        MASTER, ".wav", "audio/wav", "The master itself: the proven WAV, byte for byte.", ""
    ),
    "flac": DeliveryFormat(
        "flac",
        ".flac",
        "audio/flac",
        "FLAC at the master's rate: lossless for 16-bit and G.711 masters, 24-bit for float.",
        SOUNDFILE,
        _flac_parameters,
        _flac,
    ),
    "mp3": DeliveryFormat(
        "mp3",
        ".mp3",
        "audio/mpeg",
        f"MP3, {MP3_KBPS} kbit/s CBR (LAME through libsndfile).",
        f"{SOUNDFILE}, {SOXR}",
        _mp3_parameters,
        _mp3,
    ),
    "ogg": DeliveryFormat(
        "ogg",
        ".ogg",
        "audio/ogg",
        f"Ogg Opus, ~{OPUS_KBPS} kbit/s VBR, 48 kHz.",
        f"{SOUNDFILE}, {SOXR}",
        _opus_parameters,
        _opus,
    ),
    "mulaw": DeliveryFormat(
        "mulaw",
        ".mulaw.wav",
        "audio/wav",
        "Telephony: 8 kHz mono G.711 μ-law WAV.",
        f"hybrid_audio.codecs G.711, {SOXR}",
        _g711_parameters(Encoding.PCM_MULAW),
        _g711,
    ),
    "alaw": DeliveryFormat(
        "alaw",
        ".alaw.wav",
        "audio/wav",
        "Telephony: 8 kHz mono G.711 A-law WAV.",
        f"hybrid_audio.codecs G.711, {SOXR}",
        _g711_parameters(Encoding.PCM_ALAW),
        _g711,
    ),
}
FORMAT_NAMES = tuple(FORMATS)


def get_format(name: str) -> DeliveryFormat:
    """The format called `name`; a clear ValueError listing the formats otherwise."""
    try:
        return FORMATS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown delivery format {name!r}: choose one of {', '.join(FORMAT_NAMES)}"
        ) from None


def file_name(output_id: str, fmt: str) -> str:
    """The delivered file's name (also the download's name): `<id>.mp3`, `<id>.mulaw.wav`."""
    return f"{output_id}{get_format(fmt).suffix}"


def deliver(assembler: Assembler, output_id: str, fmt: str) -> Delivery:
    """The delivery of one output in `fmt`, encoded from the proven master if not yet made
    (see the module docstring); `wav` is the master itself and records nothing."""
    return read_delivery(assembler, output_id, fmt)[0]


def read_delivery(
    assembler: Assembler, output_id: str, fmt: str
) -> tuple[Delivery, bytes, os.stat_result]:
    """The delivery's record and its bytes, proven against the record (`wav`: the master,
    proven against its manifest). Raises ValueError for an unknown format, KeyError for an
    unknown output, `CorruptOutputError` when the master no longer matches its manifest."""
    kind = get_format(fmt)
    if kind.encode is None:
        data, info = assembler.read_output(output_id)
        output = assembler.load_output(output_id)["output"]
        return _master_record(output, info), data, info
    assembler.load_output(output_id)  # an unknown output is a KeyError before any lock
    with assembler.manifest_lock(output_id):
        document = assembler.load_output(output_id)
        # The master is proven first, also for a delivery made before: a message whose WAV
        # changed on disk is refused in every format, as the WAV itself is.
        master, _ = assembler.read_output(output_id)
        recorded = _recorded(document, kind.name)
        if recorded is not None:
            stored = _stored(assembler.output_dir, recorded, document, output_id)
            if stored is not None:
                return stored
        record, data = _encode(kind, output_id, master, document["output"]["sha256"])
        folder = assembler.output_dir / DELIVERIES
        if folder.is_dir():
            for leftover in leftovers(folder):
                discard(leftover)
        atomic_write(assembler.output_dir / record.path, data)
        assembler.record_in_manifest(output_id, "deliveries", kind.name, record.model_dump())
        _, info = read_inside(assembler.output_dir, record.path)
        return record, data, info


def _master_record(output: dict[str, Any], info: os.stat_result) -> Delivery:
    return Delivery(
        format=MASTER,
        parameters={},
        size=output["bytes"],
        sha256=output["sha256"],
        master_sha256=output["sha256"],
        path=output["path"],
        encoder="",
        created_at=datetime.fromtimestamp(info.st_mtime, UTC).isoformat(),
    )


def _recorded(document: dict[str, Any], fmt: str) -> Delivery | None:
    """The manifest's record of `fmt`; None when there is none or it does not read (a
    cache entry to make again, not the client's error)."""
    deliveries = document.get("deliveries")
    if not isinstance(deliveries, dict):
        return None
    try:
        record = Delivery.model_validate(deliveries.get(fmt))
    except ValidationError:
        return None
    return record if record.format == fmt else None


def _stored(
    folder: Path, record: Delivery, document: dict[str, Any], output_id: str
) -> tuple[Delivery, bytes, os.stat_result] | None:
    """The recorded file, if it is still the one recorded, of this master, at this output's
    delivery path (a record naming another file, the master say, is not trusted), and made
    with today's preset; None → encode it again."""
    if record.master_sha256 != document["output"]["sha256"]:
        return None
    if record.path != f"{DELIVERIES}/{file_name(output_id, record.format)}":
        return None
    try:
        master = AudioFormat(**document["contract"]["audio_format"])
        if get_format(record.format).parameters(master) != record.parameters:
            return None
        data, info = read_inside(folder, record.path)
    except (KeyError, TypeError, ValueError, FileNotFoundError):
        return None
    if hashlib.sha256(data).hexdigest() != record.sha256:
        return None
    return record, data, info


def _encode(
    kind: DeliveryFormat, output_id: str, master: bytes, master_sha256: str
) -> tuple[Delivery, bytes]:
    assert kind.encode is not None
    wav: Wav = read_wav(master)
    params = kind.parameters(wav.format)
    data = kind.encode(codecs.decode(wav.pcm, wav.format), wav.format, params)
    record = Delivery(
        format=kind.name,
        parameters=params,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        master_sha256=master_sha256,
        path=f"{DELIVERIES}/{file_name(output_id, kind.name)}",
        encoder=kind.encoder,
        created_at=datetime.now(UTC).isoformat(timespec="microseconds"),
    )
    return record, data


def encode_seconds_per_minute(fmt: str, seconds: float = 60.0, rate: int = 22050) -> float:
    """Seconds `fmt` takes to encode one minute of 16-bit mono audio at `rate` (a speech-like
    test signal of `seconds`, scaled to a minute): for the sound benchmark."""
    master = AudioFormat(encoding=Encoding.PCM_S16LE, sample_rate=rate)
    t = np.arange(int(seconds * rate)) / rate
    signal = 0.3 * np.sin(2 * np.pi * 180 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    samples = codecs.decode(codecs.encode(signal, master), master)
    kind = get_format(fmt)
    if kind.encode is None:
        return 0.0
    started = time.perf_counter()
    kind.encode(samples, master, kind.parameters(master))
    return (time.perf_counter() - started) * 60.0 / seconds


__all__ = [
    "DELIVERIES",
    "FORMATS",
    "FORMAT_NAMES",
    "Delivery",
    "DeliveryFormat",
    "deliver",
    "encode_seconds_per_minute",
    "file_name",
    "get_format",
    "read_delivery",
]
