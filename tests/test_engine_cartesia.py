"""The Cartesia engine through the real `cartesia` SDK against a local fake of the HTTP API.

Nothing in the SDK is mocked: the fake (tests/fakes/cartesia.py) is a real HTTP server that
speaks Cartesia's documented contract, and the engine is pointed at it with `base_url`.
Retry backoff is shrunk to milliseconds through constructor options; only `retry-after`
waits are real, and those are asserted only as lower bounds.
"""

from __future__ import annotations

import email.utils
import io
import re
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf
import soxr

from hybrid_audio.codecs import decode, encode
from hybrid_audio.config import DEFAULT_CARTESIA_MODEL, Settings
from hybrid_audio.contract import AudioFormat, Encoding, VoiceContract
from hybrid_audio.engines import (
    EngineConfigError,
    EngineOutputError,
    EngineQuotaError,
    EngineUnavailableError,
    create_engine,
)
from hybrid_audio.engines.cartesia import (
    API_VERSION,
    SDK_VERSION,
    CartesiaEngine,
    InvalidTextError,
    parse_retry_after,
)
from hybrid_audio.generation import Generator
from hybrid_audio.wav import Wav, read_wav, write_wav
from tests.fakes.cartesia import (
    API_KEY,
    DEFAULT_VOICE,
    VOICES,
    FakeCartesia,
    expected_pcm,
    streaming_wav_header,
)

OTHER_VOICE = next(v for v in sorted(VOICES) if v != DEFAULT_VOICE)
REQUEST_ID = re.compile(r"request_id [0-9a-f-]{36}")
#: What the engine sends by default (contract speed and volume 1.0).
NEUTRAL = {"speed": 1.0, "volume": 1.0}


@pytest.fixture
def fake() -> Iterator[FakeCartesia]:
    with FakeCartesia() as server:
        yield server


def settings_for(fake: FakeCartesia, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "tts_engine": "cartesia",
        "cartesia_api_key": API_KEY,
        "cartesia_voice_id": DEFAULT_VOICE,
        "cartesia_base_url": fake.base_url,
    }
    values.update(overrides)
    return Settings(**values)


def engine_for(fake: FakeCartesia, settings: Settings | None = None, **options: Any) -> Any:
    knobs: dict[str, Any] = {
        "max_retries": 3,
        "backoff_base": 0.01,
        "backoff_max": 0.05,
        "timeout": 5.0,
    }
    knobs.update(options)
    return CartesiaEngine.from_settings(settings or settings_for(fake), **knobs)


def contract(
    encoding: Encoding = Encoding.PCM_S16LE, sample_rate: int = 22050, **params: Any
) -> VoiceContract:
    return VoiceContract(engine="cartesia", encoding=encoding, sample_rate=sample_rate, **params)


# --- success --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("encoding", "rate"),
    [
        (Encoding.PCM_S16LE, 22050),
        (Encoding.PCM_F32LE, 44100),
        (Encoding.PCM_MULAW, 8000),
        (Encoding.PCM_ALAW, 16000),
    ],
)
def test_each_encoding_gives_the_exact_samples(
    fake: FakeCartesia, encoding: Encoding, rate: int
) -> None:
    engine = engine_for(fake)
    terms = contract(encoding, rate)
    wav = engine.synthesize("Hi José", terms)

    assert wav.format == terms.audio_format
    assert not wav.repaired
    want = expected_pcm("Hi José", DEFAULT_VOICE, encoding, rate, language="en", **_cfg())
    assert wav.pcm == want
    out = wav.to_bytes()
    assert out == write_wav(terms.audio_format, want)  # canonical header, written by us
    info = sf.info(io.BytesIO(out))
    assert (info.samplerate, info.channels, info.frames) == (rate, 1, wav.frames)

    assert fake.request_count == 1
    sent = fake.requests[0]
    assert sent.headers["authorization"] == f"Bearer {API_KEY}"
    assert sent.headers["cartesia-version"] == API_VERSION
    assert sent.body == {
        "model_id": DEFAULT_CARTESIA_MODEL,
        "transcript": "Hi José",
        "voice": {"mode": "id", "id": DEFAULT_VOICE},
        "output_format": {"container": "raw", "encoding": encoding.value, "sample_rate": rate},
        "generation_config": NEUTRAL,
        "language": "en",
    }


def _cfg(**config: Any) -> dict[str, Any]:
    return {"generation_config": {**NEUTRAL, **config}}


def test_contract_fields_reach_the_request(fake: FakeCartesia) -> None:
    engine = engine_for(fake)
    terms = contract(
        voice=OTHER_VOICE,
        model="sonic-3-2026-01-12",
        language="fr",
        speed=1.2,
        volume=0.8,
        emotion="calm",
    )
    wav = engine.synthesize("  Bonjour  ", terms)
    body = fake.requests[0].body
    assert body["voice"] == {"mode": "id", "id": OTHER_VOICE}
    assert body["model_id"] == "sonic-3-2026-01-12"
    assert body["language"] == "fr"
    assert body["transcript"] == "Bonjour"
    assert body["generation_config"] == {"speed": 1.2, "volume": 0.8, "emotion": "calm"}
    config = _cfg(speed=1.2, volume=0.8, emotion="calm")
    assert wav.pcm == expected_pcm(
        "Bonjour", OTHER_VOICE, "pcm_s16le", 22050, language="fr", **config
    )


def test_wav_container_with_streaming_sizes_is_repaired(fake: FakeCartesia) -> None:
    engine = engine_for(fake, container="wav")
    terms = contract(Encoding.PCM_F32LE, 24000)
    wav = engine.synthesize("Brightwater Homes", terms)
    want = expected_pcm(
        "Brightwater Homes", DEFAULT_VOICE, "pcm_f32le", 24000, language="en", **_cfg()
    )
    assert wav.format == terms.audio_format
    assert wav.pcm == want
    assert wav.repaired  # the cache records what was fixed in the streamed header
    assert all("streaming placeholder" in repair for repair in wav.repairs)
    out = wav.to_bytes()
    assert out == write_wav(terms.audio_format, want)
    assert struct.unpack_from("<I", out, 4)[0] != 0xFFFFFFFF
    assert fake.requests[0].body["output_format"]["container"] == "wav"
    # What the fake streamed declares unknown sizes; read_wav recovers them.
    streamed = read_wav(streaming_wav_header("pcm_f32le", 24000) + want)
    assert streamed.repaired
    assert streamed.pcm == want


def test_a_repaired_stream_is_recorded_in_the_cache(fake: FakeCartesia, tmp_path: Path) -> None:
    """The cache's `repairs` column says when a stem came from a streamed (sizeless) header."""
    settings = settings_for(fake, base_dir=tmp_path)
    generator = Generator.from_settings(
        settings, engine=engine_for(fake, settings, container="wav")
    )
    record = generator.generate_name("Ana")
    assert "streaming placeholder" in record.repairs
    stored = read_wav(Path(settings.stems_dir) / record.path)
    assert not stored.repaired  # the file on disk has the canonical header
    assert generator.cache.lookup(record.stem_id).repairs == record.repairs


def test_rates_cartesia_does_not_offer_are_resampled(fake: FakeCartesia) -> None:
    engine = engine_for(fake)
    terms = contract(Encoding.PCM_MULAW, 11025)
    wav = engine.synthesize("Hilton", terms)
    assert wav.format == terms.audio_format
    fmt = fake.requests[0].body["output_format"]
    assert (fmt["encoding"], fmt["sample_rate"]) == ("pcm_f32le", 16000)
    native = expected_pcm("Hilton", DEFAULT_VOICE, "pcm_f32le", 16000, language="en", **_cfg())
    samples = decode(native, AudioFormat(encoding=Encoding.PCM_F32LE, sample_rate=16000))[:, 0]
    assert wav.pcm == encode(
        soxr.resample(samples, 16000, 11025, quality="VHQ"), terms.audio_format
    )


# --- retries --------------------------------------------------------------------------------


def test_429_waits_for_retry_after_then_succeeds(fake: FakeCartesia) -> None:
    fake.fail_next(429, retry_after=0.3)
    engine = engine_for(fake)
    start = time.monotonic()
    wav = engine.synthesize("Hi", contract())
    assert time.monotonic() - start >= 0.3
    assert wav.pcm == expected_pcm("Hi", DEFAULT_VOICE, "pcm_s16le", 22050, language="en", **_cfg())
    assert fake.request_count == 2
    assert [r.status for r in fake.requests] == [429, 200]


def test_429_retry_after_as_http_date(fake: FakeCartesia) -> None:
    fake.fail_next(429, retry_after=email.utils.formatdate(time.time() + 1, usegmt=True))
    engine_for(fake).synthesize("Hi", contract())
    assert fake.request_count == 2


def test_parse_retry_after_forms() -> None:
    assert parse_retry_after({"retry-after": "2"}) == 2.0
    assert parse_retry_after({"retry-after": "0.25"}) == 0.25
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    future = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= (parse_retry_after({"retry-after": future}) or 0) <= 31
    past = email.utils.formatdate(time.time() - 30, usegmt=True)
    assert parse_retry_after({"retry-after": past}) == 0.0
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


@pytest.mark.parametrize("status", [408, 409, 500, 502, 503])
def test_transient_statuses_are_retried(fake: FakeCartesia, status: int) -> None:
    fake.fail_next(status, n=2)
    engine_for(fake).synthesize("Hi", contract())
    assert fake.request_count == 3
    assert [r.status for r in fake.requests] == [status, status, 200]


def test_dropped_stream_and_timeout_are_retried(fake: FakeCartesia) -> None:
    fake.malform_next("drop")
    fake.hang_next(seconds=3)
    engine = engine_for(fake, timeout=0.3)
    wav = engine.synthesize("Hi", contract())
    assert wav.pcm == expected_pcm("Hi", DEFAULT_VOICE, "pcm_s16le", 22050, language="en", **_cfg())
    assert fake.request_count == 3


def test_429_after_retries_is_a_quota_error(fake: FakeCartesia) -> None:
    fake.fail_next(429, n=10, retry_after=0.01)
    with pytest.raises(EngineQuotaError, match="CARTESIA_MAX_CONCURRENCY") as caught:
        engine_for(fake, max_retries=2).synthesize("Hi", contract())
    assert REQUEST_ID.search(str(caught.value))
    assert "concurrency_limited" in str(caught.value)
    assert fake.request_count == 3


def test_retry_after_longer_than_allowed_is_not_waited_for(fake: FakeCartesia) -> None:
    fake.fail_next(429, retry_after=3600)
    start = time.monotonic()
    with pytest.raises(EngineQuotaError, match="3600s") as caught:
        engine_for(fake, max_retry_after=10).synthesize("Hi", contract())
    assert time.monotonic() - start < 2
    assert fake.request_count == 1
    assert "after 1 attempt(s)" in str(caught.value)  # the attempts made, not the allowance


def test_a_backing_off_request_does_not_hold_its_concurrency_slot(fake: FakeCartesia) -> None:
    """With one slot, a request waiting out a 429 lets another thread's request through."""
    fake.fail_next(429, retry_after=1.0)
    settings = settings_for(fake, cartesia_max_concurrency=1)
    waiting = threading.Thread(target=engine_for(fake, settings).synthesize, args=("A", contract()))
    waiting.start()
    while fake.request_count == 0:  # the first request is answered 429
        time.sleep(0.01)
    engine_for(fake, settings).synthesize("B", contract())
    waiting.join(timeout=30)
    order = [(r.body["transcript"], r.status) for r in fake.requests]
    assert order == [("A", 429), ("B", 200), ("A", 200)]


@pytest.mark.parametrize("status", [500, 503])
def test_server_errors_after_retries_are_unavailable(fake: FakeCartesia, status: int) -> None:
    fake.fail_next(status, n=10)
    with pytest.raises(EngineUnavailableError, match=str(status)) as caught:
        engine_for(fake, max_retries=2).synthesize("Hi", contract())
    assert REQUEST_ID.search(str(caught.value))
    assert fake.request_count == 3


def test_timeouts_after_retries_are_unavailable(fake: FakeCartesia) -> None:
    fake.hang_next(n=10, seconds=3)
    with pytest.raises(EngineUnavailableError, match="timed out"):
        engine_for(fake, max_retries=2, timeout=0.2).synthesize("Hi", contract())
    assert fake.request_count == 3


# --- errors that are not retried ----------------------------------------------------------------


def test_bad_key_is_a_config_error(fake: FakeCartesia) -> None:
    engine = engine_for(fake, settings_for(fake, cartesia_api_key="sk_car_wrong"))
    with pytest.raises(EngineConfigError, match="CARTESIA_API_KEY") as caught:
        engine.synthesize("Hi", contract())
    assert "401" in str(caught.value)
    assert REQUEST_ID.search(str(caught.value))
    assert fake.request_count == 1


def test_unknown_voice_is_a_config_error_naming_it(fake: FakeCartesia) -> None:
    with pytest.raises(EngineConfigError, match="CARTESIA_VOICE_ID") as caught:
        engine_for(fake).synthesize("Hi", contract(voice="no-such-voice"))
    assert "'no-such-voice'" in str(caught.value)
    assert "404" in str(caught.value)
    assert REQUEST_ID.search(str(caught.value))
    assert fake.request_count == 1


@pytest.mark.parametrize(
    ("model", "code"),
    [("sonic-3-2099-01-01", "model_not_found"), ("sonic-2-2025-03-07", "model_sunsetted")],
)
def test_unknown_or_sunset_model_suggests_a_snapshot(
    fake: FakeCartesia, model: str, code: str
) -> None:
    with pytest.raises(EngineConfigError, match="CARTESIA_MODEL_ID") as caught:
        engine_for(fake).synthesize("Hi", contract(model=model))
    message = str(caught.value)
    assert repr(model) in message
    assert code in message
    assert re.search(r"such as sonic-3[.\d]*-\d{4}-\d{2}-\d{2}", message)
    assert REQUEST_ID.search(message)
    assert fake.request_count == 1


@pytest.mark.parametrize(
    ("status", "error", "match"),
    [
        (402, EngineQuotaError, "credits"),
        (403, EngineConfigError, "CARTESIA_API_KEY"),
        (410, EngineConfigError, "CARTESIA_MODEL_ID"),
        (422, EngineConfigError, "rejected the request"),
    ],
)
def test_other_4xx_are_not_retried(
    fake: FakeCartesia, status: int, error: type[Exception], match: str
) -> None:
    fake.fail_next(status, n=5)
    with pytest.raises(error, match=match):
        engine_for(fake).synthesize("Hi", contract())
    assert fake.request_count == 1


def test_request_rejected_by_validation_is_a_config_error(fake: FakeCartesia) -> None:
    with pytest.raises(EngineConfigError, match=r"rejected the request.*grumpy"):
        engine_for(fake).synthesize("Hi", contract(emotion="grumpy"))
    assert fake.request_count == 1


# --- bad audio ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "container", "match"),
    [
        ("odd_bytes", "raw", "whole number"),
        ("empty", "raw", "no audio"),
        ("wrong_format", "wav", "but we asked for"),
        ("garbage", "wav", "unreadable WAV"),
    ],
)
def test_malformed_audio_is_an_output_error(
    fake: FakeCartesia, kind: str, container: str, match: str
) -> None:
    fake.malform_next(kind)
    with pytest.raises(EngineOutputError, match=match):
        engine_for(fake, container=container).synthesize("Hi", contract())
    assert fake.request_count == 1


# --- concurrency --------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [2, 3])
def test_threads_never_exceed_max_concurrency(fake: FakeCartesia, limit: int) -> None:
    fake.latency = 0.04
    settings = settings_for(fake, cartesia_max_concurrency=limit)
    errors: list[BaseException] = []
    results: list[Wav] = []
    lock = threading.Lock()

    def worker(index: int) -> None:
        engine = engine_for(fake, settings)  # one engine per thread: the limit is process-wide
        for j in range(4):
            try:
                out = engine.synthesize(f"name {index}-{j}", contract())
            except BaseException as error:  # report, don't lose, failures in threads
                with lock:
                    errors.append(error)
            else:
                with lock:
                    results.append(out)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors
    assert len(results) == 32
    assert fake.request_count == 32
    assert fake.max_in_flight == limit  # never more, and the limit is actually used


# --- configuration errors before any request --------------------------------------------------


def test_missing_key_fails_before_any_request(fake: FakeCartesia) -> None:
    settings = settings_for(fake, cartesia_api_key="")
    with pytest.raises(EngineConfigError, match="CARTESIA_API_KEY"):
        create_engine(settings)
    with pytest.raises(EngineConfigError, match="CARTESIA_API_KEY"):
        CartesiaEngine.from_settings(settings)
    assert fake.request_count == 0


def test_missing_voice_fails_before_any_request(fake: FakeCartesia) -> None:
    engine = engine_for(fake, settings_for(fake, cartesia_voice_id=""))
    with pytest.raises(EngineConfigError, match="CARTESIA_VOICE_ID"):
        engine.synthesize("Hi", contract())
    assert fake.request_count == 0


@pytest.mark.parametrize(
    ("terms", "text", "error", "match"),
    [
        (contract(speed=1.8), "Hi", EngineConfigError, "speed 0.6..1.5"),
        (contract(model="sonic-3"), "Hi", EngineConfigError, "not a dated snapshot"),
        (VoiceContract(engine="piper"), "Hi", EngineConfigError, "engine 'piper'"),
        (contract(), "   ", InvalidTextError, "empty"),
    ],
)
def test_invalid_requests_fail_before_any_request(
    fake: FakeCartesia, terms: VoiceContract, text: str, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        engine_for(fake).synthesize(text, terms)
    assert fake.request_count == 0


def test_unpinned_model_in_settings_is_refused(fake: FakeCartesia) -> None:
    with pytest.raises(EngineConfigError, match="sonic-3-"):
        CartesiaEngine.from_settings(settings_for(fake, cartesia_model_id="sonic-3"))
    engine = engine_for(
        fake, settings_for(fake, cartesia_model_id="sonic-3"), allow_unpinned_model=True
    )
    engine.synthesize("Hi", contract())
    assert fake.requests[0].body["model_id"] == "sonic-3"


def test_version_and_describe(fake: FakeCartesia) -> None:
    engine = create_engine(settings_for(fake))
    assert engine.name == "cartesia"
    for part in (SDK_VERSION, API_VERSION, DEFAULT_CARTESIA_MODEL):
        assert part in engine.version
    facts = engine.describe()
    assert facts["model"] == DEFAULT_CARTESIA_MODEL
    assert facts["voice"] == DEFAULT_VOICE
    assert facts["api_version"] == API_VERSION
    assert not any(API_KEY in value for value in facts.values())


# --- the fake itself speaks the documented contract --------------------------------------------


def test_fake_enforces_headers_and_streams_wav_with_unknown_sizes(fake: FakeCartesia) -> None:
    body = {
        "model_id": DEFAULT_CARTESIA_MODEL,
        "transcript": "Hi",
        "voice": DEFAULT_VOICE,
        "output_format": {"container": "wav", "encoding": "pcm_s16le", "sample_rate": 8000},
    }
    url = f"{fake.base_url}/tts/bytes"
    auth = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client() as client:
        no_key = client.post(url, json=body, headers={"Cartesia-Version": API_VERSION})
        no_version = client.post(url, json=body, headers=auth)
        ok = client.post(url, json=body, headers={**auth, "Cartesia-Version": API_VERSION})
    assert no_key.status_code == 401
    assert no_version.status_code == 400
    for response in (no_key, no_version):
        assert set(response.json()) == {"error_code", "title", "message", "request_id"}
    assert ok.status_code == 200
    assert ok.headers["transfer-encoding"] == "chunked"
    riff_size, data_size = (
        struct.unpack_from("<I", ok.content, 4),
        struct.unpack_from("<I", ok.content, 40),
    )
    assert riff_size == data_size == (0xFFFFFFFF,)
    pcm = expected_pcm("Hi", DEFAULT_VOICE, "pcm_s16le", 8000)
    assert ok.content[44:] == pcm
    assert np.frombuffer(pcm, "<i2").any()


def test_a_pronunciation_entry_reaches_sonic_as_its_inline_phonemes(
    fake: FakeCartesia, tmp_path: Path
) -> None:
    """Through the real SDK: an entry's Cartesia phonemes are sent in the transcript as
    Sonic's `<<p|h|o|n>>`, a respelling as plain text, and the stem stored is processed
    (at the contract's loudness, starting and ending on silence)."""
    settings = settings_for(fake, base_dir=tmp_path)
    generator = Generator.from_settings(settings, engine=engine_for(fake, settings))
    generator.pronunciations.set("Nguyen", phonemes={"cartesia": "w ɪ n"})
    generator.pronunciations.set("Homes", respelling="Holmes")

    record = generator.generate_developer("Nguyen Homes")

    assert fake.requests[-1].body["transcript"] == "<<w|ɪ|n>> Holmes"
    assert record.spoken_as == "<<w|ɪ|n>> Holmes"
    assert abs(record.loudness_after - generator.contract.loudness_lufs) <= 0.5
    samples = decode(generator.cache.load(record.stem_id).pcm, generator.contract.audio_format)
    assert samples[0, 0] == samples[-1, 0] == 0.0
