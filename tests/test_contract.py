"""AudioFormat arithmetic and the VoiceContract signature."""

from __future__ import annotations

import hashlib
import json

import pytest
from pydantic import ValidationError

from hybrid_audio.contract import AudioFormat, Encoding, VoiceContract


@pytest.mark.parametrize(
    ("encoding", "bits", "silence"),
    [
        ("pcm_u8", 8, 0x80),
        ("pcm_s16le", 16, 0),
        ("pcm_s24le", 24, 0),
        ("pcm_s32le", 32, 0),
        ("pcm_f32le", 32, 0),
        ("pcm_f64le", 64, 0),
        ("pcm_mulaw", 8, 0xFF),
        ("pcm_alaw", 8, 0xD5),
    ],
)
def test_format_derives_width_and_silence(encoding: str, bits: int, silence: int) -> None:
    fmt = AudioFormat(encoding=encoding, sample_rate=16000, channels=2)
    assert fmt.bits_per_sample == bits
    assert fmt.block_align == 2 * bits // 8
    assert fmt.byte_rate == 16000 * fmt.block_align
    assert fmt.silence_byte == silence


def test_format_rejects_inconsistent_width() -> None:
    with pytest.raises(ValidationError, match="16 bits per sample, not 24"):
        AudioFormat(encoding="pcm_s16le", sample_rate=8000, bits_per_sample=24)


@pytest.mark.parametrize("field", [{"sample_rate": 0}, {"channels": 0}, {"encoding": "mp3"}])
def test_format_rejects_bad_fields(field: dict) -> None:
    with pytest.raises(ValidationError):
        AudioFormat(**{"encoding": "pcm_s16le", "sample_rate": 8000, **field})


def test_formats_are_hashable_values() -> None:
    a = AudioFormat(encoding=Encoding.PCM_S16LE, sample_rate=22050)
    b = AudioFormat(encoding="pcm_s16le", sample_rate=22050, channels=1, bits_per_sample=16)
    assert a == b
    assert len({a, b}) == 1
    assert a != AudioFormat(encoding="pcm_s16le", sample_rate=24000)


def test_frames_for_ms_rounds_to_whole_frames() -> None:
    fmt = AudioFormat(encoding="pcm_s16le", sample_rate=22050)
    assert fmt.frames_for_ms(1000) == 22050
    assert fmt.frames_for_ms(10) == 220  # 220.5 rounds half to even


def test_signature_is_sha256_of_canonical_json() -> None:
    contract = VoiceContract(voice="en_US-joe-medium", engine_version="piper-tts 1.3.0")
    canonical = json.dumps(contract.canonical(), sort_keys=True, separators=(",", ":"))
    assert contract.signature() == hashlib.sha256(canonical.encode()).hexdigest()
    assert contract.signature() == VoiceContract(**contract.param.values()).signature()


@pytest.mark.parametrize(
    "change",
    [
        {"engine": "cartesia"},
        {"engine_version": "2"},
        {"model": "sonic-3-2025-10-27"},
        {"voice": "other"},
        {"language": "es"},
        {"speed": 1.1},
        {"volume": 0.9},
        {"emotion": "positivity"},
        {"encoding": Encoding.PCM_MULAW},
        {"sample_rate": 24000},
    ],
)
def test_every_audio_field_changes_the_signature(change: dict) -> None:
    base = VoiceContract()
    assert VoiceContract(**change).signature() != base.signature()


def test_contract_format_is_mono_in_its_encoding() -> None:
    contract = VoiceContract(encoding=Encoding.PCM_F32LE, sample_rate=44100)
    assert contract.audio_format == AudioFormat(encoding="pcm_f32le", sample_rate=44100)


def test_contract_refuses_unsupported_values() -> None:
    with pytest.raises(ValueError, match="sample_rate"):
        VoiceContract(sample_rate=96000)
    with pytest.raises(ValueError, match="encoding"):
        VoiceContract(encoding=Encoding.PCM_S24LE)
