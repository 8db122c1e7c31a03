"""Audio formats and voice contracts: what a stem's bytes are and how they were made.

`AudioFormat` describes sample bytes (encoding, rate, channels, width); two stems can be
bit-merged only if their formats are equal. `VoiceContract` adds everything else that
changes the audio an engine produces, and `signature()` condenses it into one sha256 so the
cache can tell whether a stored stem was made under the active contract. This module never
touches audio bytes.
"""

from __future__ import annotations

import hashlib
import json
from enum import StrEnum
from functools import cached_property
from typing import Any

import param
from pydantic import BaseModel, ConfigDict, model_validator


class Encoding(StrEnum):
    """Sample encodings the WAV layer reads and writes (names follow Cartesia's)."""

    PCM_U8 = "pcm_u8"
    PCM_S16LE = "pcm_s16le"
    PCM_S24LE = "pcm_s24le"
    PCM_S32LE = "pcm_s32le"
    PCM_F32LE = "pcm_f32le"
    PCM_F64LE = "pcm_f64le"
    PCM_MULAW = "pcm_mulaw"
    PCM_ALAW = "pcm_alaw"


#: WAVE format tag of each encoding (1 PCM, 3 IEEE float, 6 A-law, 7 μ-law).
FORMAT_TAG: dict[Encoding, int] = {
    Encoding.PCM_U8: 1,
    Encoding.PCM_S16LE: 1,
    Encoding.PCM_S24LE: 1,
    Encoding.PCM_S32LE: 1,
    Encoding.PCM_F32LE: 3,
    Encoding.PCM_F64LE: 3,
    Encoding.PCM_MULAW: 7,
    Encoding.PCM_ALAW: 6,
}

#: Bits per sample of each encoding (one container size per encoding).
BITS: dict[Encoding, int] = {
    Encoding.PCM_U8: 8,
    Encoding.PCM_S16LE: 16,
    Encoding.PCM_S24LE: 24,
    Encoding.PCM_S32LE: 32,
    Encoding.PCM_F32LE: 32,
    Encoding.PCM_F64LE: 64,
    Encoding.PCM_MULAW: 8,
    Encoding.PCM_ALAW: 8,
}

#: The byte that encodes a zero sample. Unsigned 8-bit PCM centres on 0x80; G.711 codes
#: 0xFF (μ-law) and 0xD5 (A-law) are their "zero" codewords.
SILENCE_BYTE: dict[Encoding, int] = {
    Encoding.PCM_U8: 0x80,
    Encoding.PCM_MULAW: 0xFF,
    Encoding.PCM_ALAW: 0xD5,
}

#: Sound processing defaults (see `sound`): −16 LUFS is what mobile and ad-delivery tools
#: target; −1 dBTP leaves room for lossy encoders' overshoot; 5 ms fades hide no speech.
DEFAULT_LOUDNESS_LUFS = -16.0
DEFAULT_TRUE_PEAK_DBTP = -1.0
DEFAULT_EDGE_FADE_MS = 5.0
#: Version of the processing algorithm (`sound.process`): part of the signature, so a
#: change of the algorithm re-keys the stems it made, as a change of its settings does.
SOUND_VERSION = 1

#: TTS engines a contract can name.
ENGINES = ("piper", "cartesia")

#: Encodings an engine may be asked to produce (what Cartesia offers; Piper is converted).
CONTRACT_ENCODINGS = (
    Encoding.PCM_S16LE,
    Encoding.PCM_F32LE,
    Encoding.PCM_MULAW,
    Encoding.PCM_ALAW,
)


def encoding_for(format_tag: int, bits_per_sample: int) -> Encoding | None:
    """The encoding with this WAVE format tag and container width, if we support it."""
    for encoding, tag in FORMAT_TAG.items():
        if tag == format_tag and BITS[encoding] == bits_per_sample:
            return encoding
    return None


class AudioFormat(BaseModel):
    """How sample bytes are laid out. Immutable and hashable; equal formats can be joined."""

    model_config = ConfigDict(frozen=True)

    encoding: Encoding
    sample_rate: int
    channels: int = 1
    bits_per_sample: int = 0  # 0 → the encoding's width, filled in by the validator

    @model_validator(mode="before")
    @classmethod
    def _fill_bits(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("bits_per_sample"):
            encoding = data.get("encoding")
            if encoding in set(Encoding):
                data = {**data, "bits_per_sample": BITS[Encoding(encoding)]}
        return data

    @model_validator(mode="after")
    def _check(self) -> AudioFormat:
        if self.bits_per_sample != BITS[self.encoding]:
            raise ValueError(
                f"{self.encoding} has {BITS[self.encoding]} bits per sample, "
                f"not {self.bits_per_sample}"
            )
        if not 1 <= self.sample_rate <= 0xFFFFFFFF:
            raise ValueError(f"sample_rate must be positive, got {self.sample_rate}")
        if not 1 <= self.channels <= 0xFFFF:
            raise ValueError(f"channels must be 1..65535, got {self.channels}")
        # A WAV header stores these in 16 and 32 bits; a format it cannot describe is invalid.
        if self.block_align > 0xFFFF:
            raise ValueError(f"{self.block_align} bytes per frame exceed the WAV limit of 65535")
        if self.byte_rate > 0xFFFFFFFF:
            raise ValueError(f"{self.byte_rate} bytes per second exceed the WAV limit of 2³²-1")
        return self

    @property
    def sample_width(self) -> int:
        """Bytes per sample of one channel."""
        return self.bits_per_sample // 8

    @cached_property
    def block_align(self) -> int:
        """Bytes per frame (one sample of every channel); cached, it is on every hot path."""
        return self.sample_width * self.channels

    @property
    def byte_rate(self) -> int:
        return self.block_align * self.sample_rate

    @property
    def format_tag(self) -> int:
        return FORMAT_TAG[self.encoding]

    @property
    def silence_byte(self) -> int:
        """The byte value that, repeated, is digital silence in this encoding."""
        return SILENCE_BYTE.get(self.encoding, 0)

    def frames_for_ms(self, ms: float) -> int:
        """Whole frames closest to `ms` milliseconds at this rate."""
        return round(ms * self.sample_rate / 1000)

    def describe(self) -> str:
        """Short human form, e.g. `pcm_s16le 22050 Hz mono`."""
        layout = "mono" if self.channels == 1 else f"{self.channels} ch"
        return f"{self.encoding.value} {self.sample_rate} Hz {layout}"


class VoiceContract(param.Parameterized):
    """Everything that determines the bytes an engine returns for a text.

    Parameters are the inputs a user can change (the dashboard renders them); `signature()`
    is the identity of the contract. The engine version is part of the signature because a
    new engine release may speak the same text differently.
    """

    engine = param.Selector(default="piper", objects=list(ENGINES), doc="TTS engine.")
    engine_version = param.String(
        default="", doc="Version of the engine that produced the audio (part of the signature)."
    )
    model = param.String(
        default="", doc="Model id; for Cartesia a pinned dated snapshot such as sonic-3-2025-10-27."
    )
    voice = param.String(default="", doc="Voice id as the engine knows it (or a voice file).")
    language = param.String(default="en", doc="Language code passed to the engine.")
    speed = param.Number(default=1.0, bounds=(0.5, 2.0), doc="Speaking rate multiplier.")
    volume = param.Number(default=1.0, bounds=(0.5, 2.0), doc="Loudness multiplier.")
    emotion = param.String(default="", doc="Emotion control (Cartesia); empty for neutral.")
    encoding = param.Selector(
        default=Encoding.PCM_S16LE,
        objects=list(CONTRACT_ENCODINGS),
        doc="Sample encoding of every stem made under this contract.",
    )
    sample_rate = param.Integer(
        default=22050, bounds=(8000, 48000), doc="Sample rate (Hz) of every stem."
    )
    loudness_lufs = param.Number(
        default=DEFAULT_LOUDNESS_LUFS,
        bounds=(-40.0, -5.0),
        allow_None=True,
        doc="Integrated loudness (ITU-R BS.1770, LUFS) every stem is gained to at "
        "generation; None leaves the engine's level as it is.",
    )
    true_peak_dbtp = param.Number(
        default=DEFAULT_TRUE_PEAK_DBTP,
        bounds=(-12.0, 0.0),
        doc="True-peak ceiling (dBTP, 4× oversampled) a loudness-gained stem is limited to.",
    )
    edge_fade_ms = param.Number(
        default=DEFAULT_EDGE_FADE_MS,
        bounds=(0.0, 50.0),
        doc="Fade to silence at each edge of a stem (ms), so no join clicks; 0 = none.",
    )

    def __setattr__(self, name: str, value: Any) -> None:
        """Every assignment of a parameter drops the memoized format and signature.

        Done here rather than in a watcher: a value set with events discarded (or restored
        after a failed change) can never leave a stale signature behind, so a stem is always
        stamped with the contract it was made under.
        """
        if name in CONTRACT_PARAMETERS:
            self.__dict__.pop("_memo", None)
        super().__setattr__(name, value)

    def _derived(self) -> dict[str, Any]:
        """Memo of the format and signature (both are on every cache lookup)."""
        return self.__dict__.setdefault("_memo", {})

    @property
    def audio_format(self) -> AudioFormat:
        """The format every stem made under this contract has (mono)."""
        memo = self._derived()
        if "format" not in memo:
            memo["format"] = AudioFormat(
                encoding=self.encoding, sample_rate=self.sample_rate, channels=1
            )
        return memo["format"]

    def values(self) -> dict[str, Any]:
        """The contract's parameters (without param's `name`), e.g. to copy it."""
        return {name: getattr(self, name) for name in CONTRACT_PARAMETERS}

    def copy(self, **changes: Any) -> VoiceContract:
        """A new contract with `changes` applied; raises ValueError on an invalid value."""
        return VoiceContract(**{**self.values(), **changes})

    @property
    def processes_sound(self) -> bool:
        """Is any processing (loudness, fades, and the trim that goes with them) on?"""
        return self.loudness_lufs is not None or self.edge_fade_ms > 0

    def sound(self) -> dict[str, Any] | None:
        """The processing settings as plain JSON values, or None when processing is off."""
        if not self.processes_sound:
            return None
        loudness = self.loudness_lufs
        return {
            "version": SOUND_VERSION,
            "loudness_lufs": None if loudness is None else float(loudness),
            # The ceiling only acts with a loudness target; without one it changes nothing.
            "true_peak_dbtp": None if loudness is None else float(self.true_peak_dbtp),
            "edge_fade_ms": float(self.edge_fade_ms),
        }

    def canonical(self) -> dict[str, Any]:
        """Every field that changes the audio bytes, as plain JSON values.

        `sound` is present only when processing is on: a contract with loudness off and no
        fades has the signature it had before processing existed, so such caches stay valid.
        """
        sound = self.sound()
        return {
            **({"sound": sound} if sound is not None else {}),
            "engine": self.engine,
            "engine_version": self.engine_version,
            "model": self.model,
            "voice": self.voice,
            "language": self.language,
            "speed": float(self.speed),
            "volume": float(self.volume),
            "emotion": self.emotion,
            "audio_format": self.audio_format.model_dump(mode="json"),
        }

    def signature(self) -> str:
        """sha256 (hex) of the canonical JSON (sorted keys, no whitespace)."""
        memo = self._derived()
        if "signature" not in memo:
            text = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))
            memo["signature"] = hashlib.sha256(text.encode()).hexdigest()
        return memo["signature"]


#: The parameters of a contract, in a fixed order (all of them change the audio).
CONTRACT_PARAMETERS = (
    "engine",
    "engine_version",
    "model",
    "voice",
    "language",
    "speed",
    "volume",
    "emotion",
    "encoding",
    "sample_rate",
    "loudness_lufs",
    "true_peak_dbtp",
    "edge_fade_ms",
)
