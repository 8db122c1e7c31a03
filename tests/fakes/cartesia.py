"""A local fake of Cartesia's TTS HTTP API, written from Cartesia's public documentation.

Why a fake server and not a mock: the engine must be tested through the real `cartesia` SDK
(its request building, headers, error classes and body handling), so the fake speaks HTTP on
a loopback port and the SDK is pointed at it with `base_url`. It is written from the
documented contract, not from our client, so a client that drifts from the docs fails here:

- `POST /tts/bytes` (https://docs.cartesia.ai/api-reference/tts/bytes): JSON body with
  `model_id`, `transcript`, `voice` (a voice id string, `{"id": ...}` or
  `{"mode": "id", "id": ...}`; embeddings are no longer accepted), `output_format`
  (`container` raw | wav | mp3, `encoding` pcm_f32le | pcm_s16le | pcm_mulaw | pcm_alaw,
  `sample_rate` one of 8000, 16000, 22050, 24000, 44100, 48000 — see
  https://docs.cartesia.ai/build-with-cartesia/capability-guides/tts-output-audio-format),
  optional `language` and, for sonic-3, `generation_config` {speed 0.6–1.5, volume 0.5–2.0,
  emotion} (https://docs.cartesia.ai/build-with-cartesia/sonic-3/volume-speed-emotion).
- Headers (https://docs.cartesia.ai/api-reference): `Authorization: Bearer <key>` and a
  dated `Cartesia-Version` (YYYY-MM-DD) on every request.
- Errors (https://docs.cartesia.ai/use-the-api/api-errors): JSON
  `{"error_code", "title", "message", "request_id"}`; sunset models answer
  `error_code: model_sunsetted`
  (https://docs.cartesia.ai/build-with-cartesia/tts-models/api-changes); going over the
  plan's concurrency answers 429 `concurrency_limited`
  (https://docs.cartesia.ai/use-the-api/concurrency-limits-and-timeouts).
- The audio is streamed: a chunked body, and for `container: wav` a header whose RIFF and
  data sizes are 0xFFFFFFFF because the length is unknown when the header is sent.

Audio is deterministic: two tones derived from a hash of (voice, transcript, language,
emotion), a few hundred ms long (shorter for higher `speed`, louder for higher `volume`),
encoded by `hybrid_audio.codecs.encode`. `expected_pcm()` gives tests the same bytes.

Fault injection (each queued fault is consumed by one `/tts/bytes` request, after the auth
and version checks, in order): `fail_next` (any status, optional `retry-after`), `hang_next`
(sleep longer than the client's timeout), `malform_next` (odd byte count, connection dropped
mid-body, empty body, a WAV header in another format, garbage instead of WAV). Counters:
`request_count`, `max_in_flight` (the most requests being served at once), `requests` (the
recorded headers and bodies); `latency` slows every request so concurrency becomes visible.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import struct
import threading
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest

from hybrid_audio.codecs import encode
from hybrid_audio.contract import AudioFormat, Encoding

API_KEY = "sk_car_fake_test_key"
#: Voices the fake knows (ids shaped like Cartesia's UUIDs).
VOICES = frozenset(
    {
        "a0e99841-438c-4a64-b679-ae501e7d6091",
        "694f9389-aac1-45b6-b726-9d9369183238",
    }
)
DEFAULT_VOICE = "a0e99841-438c-4a64-b679-ae501e7d6091"
#: Base names and dated snapshots the docs list as serving.
KNOWN_MODELS = frozenset(
    {
        "sonic-3",
        "sonic-3-2025-10-27",
        "sonic-3-2026-01-12",
        "sonic-3-latest",
        "sonic-3.5",
        "sonic-3.5-2026-05-04",
        "sonic-latest",
    }
)
#: Models the deprecation page says stopped serving.
SUNSET_MODELS = frozenset(
    {
        "sonic",
        "sonic-english",
        "sonic-multilingual",
        "sonic-2024-10-19",
        "sonic-2024-12-12",
        "sonic-2-2025-03-07",
        "sonic-turbo-2025-03-07",
    }
)
SAMPLE_RATES = frozenset({8000, 16000, 22050, 24000, 44100, 48000})
ENCODINGS = frozenset({"pcm_f32le", "pcm_s16le", "pcm_mulaw", "pcm_alaw"})
CONTAINERS = frozenset({"raw", "wav", "mp3"})
#: Documented word lists, kept as text to stay readable.
LANGUAGES = frozenset(
    "en fr de es pt zh ja hi it ko nl pl ru sv tr tl bg ro ar cs el fi hr ms sk da ta uk hu no "  # noqa: SIM905
    "vi bn th he ka id te gu kn ml mr pa".split()
)
EMOTIONS = frozenset(
    "neutral happy excited enthusiastic elated euphoric triumphant amazed surprised "  # noqa: SIM905
    "flirtatious joking/comedic curious content peaceful serene calm grateful affectionate "
    "trust sympathetic anticipation mysterious angry mad outraged frustrated agitated "
    "threatened disgusted contempt envious sarcastic ironic sad dejected melancholic "
    "disappointed hurt guilty bored tired rejected nostalgic wistful apologetic hesitant "
    "insecure confused resigned anxious panicked alarmed scared proud confident distant "
    "skeptical contemplative determined".split()
)
_VERSION_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_OLDEST_VERSION = "2024-06-10"
#: WAVE format tags of the four encodings (PCM, IEEE float, A-law, μ-law).
_FORMAT_TAGS = {"pcm_s16le": 1, "pcm_f32le": 3, "pcm_alaw": 6, "pcm_mulaw": 7}
_BITS = {"pcm_s16le": 16, "pcm_f32le": 32, "pcm_alaw": 8, "pcm_mulaw": 8}
MALFORMATIONS = frozenset({"odd_bytes", "drop", "empty", "wrong_format", "garbage"})


# --- deterministic audio --------------------------------------------------------------------


def synthesize_samples(
    transcript: str,
    voice_id: str,
    sample_rate: int,
    *,
    language: str | None = None,
    generation_config: dict[str, Any] | None = None,
) -> np.ndarray:
    """The float samples (±1 full scale) the fake speaks for a request."""
    config = generation_config or {}
    speed = float(config.get("speed", 1.0))
    volume = float(config.get("volume", 1.0))
    key = "\0".join([voice_id, transcript, language or "", str(config.get("emotion", ""))])
    digest = hashlib.sha256(key.encode()).digest()
    f1 = 180.0 + 2 * digest[0]  # 180–690 Hz: below Nyquist at 8 kHz
    f2 = f1 * (1.5 + digest[1] / 512)
    seconds = min(0.2 + 0.02 * len(transcript), 0.6) / speed
    n = round(sample_rate * seconds)
    index = np.arange(n)
    t = index / sample_rate
    fade = np.minimum(1.0, np.minimum(index, n - 1 - index) / (0.005 * sample_rate))
    tones = np.sin(2 * np.pi * f1 * t) + 0.5 * np.sin(2 * np.pi * f2 * t)
    return 0.3 * volume * fade * tones


def expected_pcm(
    transcript: str,
    voice_id: str,
    encoding: str,
    sample_rate: int,
    *,
    language: str | None = None,
    generation_config: dict[str, Any] | None = None,
) -> bytes:
    """The exact sample bytes the fake returns for these request fields."""
    samples = synthesize_samples(
        transcript,
        voice_id,
        sample_rate,
        language=language,
        generation_config=generation_config,
    )
    return encode(samples, AudioFormat(encoding=Encoding(encoding), sample_rate=sample_rate))


def streaming_wav_header(encoding: str, sample_rate: int) -> bytes:
    """A WAV header as a streaming server writes it: RIFF and data sizes 0xFFFFFFFF."""
    bits = _BITS[encoding]
    align = bits // 8
    fmt = struct.pack(
        "<HHIIHH", _FORMAT_TAGS[encoding], 1, sample_rate, sample_rate * align, align, bits
    )
    return (
        b"RIFF"
        + struct.pack("<I", 0xFFFFFFFF)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"data"
        + struct.pack("<I", 0xFFFFFFFF)
    )


# --- the server -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    """One injected misbehaviour, consumed by one request."""

    kind: str  # "status", "hang" or one of MALFORMATIONS
    status: int = 0
    retry_after: str | None = None
    error_code: str | None = None
    message: str | None = None
    seconds: float = 0.0


@dataclass(frozen=True)
class RecordedRequest:
    """What the fake received: enough for tests to check the client's wire format."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    status: int = 0


@dataclass
class _Reply:
    status: int
    payload: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)


class _ApiError(Exception):
    def __init__(self, status: int, error_code: str | None, title: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.title = title
        self.message = message


class FakeCartesia:
    """A Cartesia TTS server on 127.0.0.1, started in a thread; use as a context manager."""

    def __init__(
        self,
        *,
        api_key: str = API_KEY,
        voices: frozenset[str] = VOICES,
        latency: float = 0.0,
        chunks: int = 4,
    ) -> None:
        self.api_key = api_key
        self.voices = voices
        #: Seconds each successful request takes before its first byte (per request).
        self.latency = latency
        self.chunks = chunks
        self.requests: list[RecordedRequest] = []
        self.request_count = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self._faults: deque[Fault] = deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # lifecycle

    def start(self) -> FakeCartesia:
        handler = type("_BoundHandler", (_Handler,), {"fake": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.02},  # so stop() returns at once
            name="fake-cartesia",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes hanging handlers
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeCartesia:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start() the fake first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # fault injection

    def fail_next(
        self,
        status: int,
        n: int = 1,
        *,
        retry_after: float | str | None = None,
        error_code: str | None = None,
        message: str | None = None,
    ) -> None:
        """The next `n` requests answer `status` with a documented JSON error body."""
        after = None if retry_after is None else str(retry_after)
        self._queue(
            n, Fault("status", status, retry_after=after, error_code=error_code, message=message)
        )

    def hang_next(self, n: int = 1, seconds: float = 5.0) -> None:
        """The next `n` requests send nothing for `seconds` (longer than the client waits)."""
        self._queue(n, Fault("hang", seconds=seconds))

    def malform_next(self, kind: str, n: int = 1) -> None:
        """The next `n` requests answer 200 with broken audio of this kind."""
        if kind not in MALFORMATIONS:
            raise ValueError(f"unknown malformation {kind!r}; one of {sorted(MALFORMATIONS)}")
        self._queue(n, Fault(kind))

    def _queue(self, n: int, fault: Fault) -> None:
        with self._lock:
            self._faults.extend([fault] * n)

    def _next_fault(self) -> Fault | None:
        with self._lock:
            return self._faults.popleft() if self._faults else None

    @property
    def pending_faults(self) -> int:
        with self._lock:
            return len(self._faults)

    # bookkeeping used by the handler

    def _enter(self) -> None:
        with self._lock:
            self.request_count += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def _leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)


class _Handler(BaseHTTPRequestHandler):
    """One HTTP/1.1 connection to the fake (keep-alive, chunked bodies)."""

    fake: FakeCartesia
    protocol_version = "HTTP/1.1"
    _finished = True  # only /tts/bytes requests are recorded
    _body: Any = None
    server_version = "FakeCartesia/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read counters, not logs."""

    def do_GET(self) -> None:
        self._drain()
        self._send_json(_error_reply(404, "not_found", "Not found", f"No route GET {self.path}"))

    def do_POST(self) -> None:
        raw = self._drain()
        if self.path.split("?", 1)[0] != "/tts/bytes":
            self._send_json(
                _error_reply(404, "not_found", "Not found", f"No route POST {self.path}")
            )
            return
        try:
            body: Any = json.loads(raw or b"null")
        except ValueError:
            body = raw.decode("latin-1")
        self._body = body
        self._finished = False
        self.fake._enter()
        try:
            self._tts_bytes(body)
        finally:
            self._finish(0)

    def _finish(self, status: int) -> None:
        """Record the request and leave the in-flight count before the last byte goes out.

        Done before, not after, the response ends: a client that already holds its answer
        may send its next request at once, and must not be counted twice.
        """
        if self._finished:
            return
        self._finished = True
        self.fake._leave()
        self.fake._record(
            RecordedRequest(
                method="POST",
                path=self.path,
                headers={k.lower(): v for k, v in self.headers.items()},
                body=self._body,
                status=status,
            )
        )

    # request handling

    def _drain(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _tts_bytes(self, body: Any) -> None:
        fake = self.fake
        try:
            self._check_headers()
            fault = fake._next_fault()
            if fault is not None and fault.kind in {"status", "hang"}:
                self._misbehave(fault)
                return
            request = _validate(body, fake.voices)
        except _ApiError as error:
            self._send_json(
                _error_reply(error.status, error.error_code, error.title, error.message)
            )
            return
        if fake.latency and fake._stopping.wait(fake.latency):
            return
        self._send_audio(request, fault)

    def _check_headers(self) -> None:
        auth = self.headers.get("Authorization", "")
        if auth != f"Bearer {self.fake.api_key}":
            raise _ApiError(
                401,
                "unauthorized",
                "Unauthorized",
                "Invalid or missing API key. Send 'Authorization: Bearer <api_key>'.",
            )
        versions = self.headers.get_all("Cartesia-Version") or []
        if len(versions) != 1:
            raise _ApiError(
                400,
                "invalid_request",
                "Invalid Cartesia-Version",
                f"Send exactly one Cartesia-Version header (YYYY-MM-DD); got {versions}.",
            )
        version = versions[0].strip()
        if not _VERSION_RE.match(version) or version < _OLDEST_VERSION:
            raise _ApiError(
                400,
                "invalid_request",
                "Invalid Cartesia-Version",
                f"Cartesia-Version must be a date on or after {_OLDEST_VERSION}; got {version!r}.",
            )

    def _misbehave(self, fault: Fault) -> None:
        if fault.kind == "hang":
            self.fake._stopping.wait(fault.seconds)
            self.close_connection = True
            return
        titles = {
            402: ("payment_required", "Payment required", "Your account is out of credits."),
            408: ("request_timeout", "Request timeout", "The request timed out."),
            409: ("conflict", "Conflict", "A conflicting request is in progress."),
            429: (
                "concurrency_limited",
                "Too many concurrent requests",
                "You have exceeded your plan's concurrency limit.",
            ),
            500: ("internal_error", "Internal server error", "Something went wrong."),
            503: ("service_unavailable", "Service unavailable", "Please try again later."),
        }
        code, title, message = titles.get(fault.status, (None, "Error", "Injected error."))
        reply = _error_reply(
            fault.status, fault.error_code or code, title, fault.message or message
        )
        if fault.retry_after is not None:
            reply.headers["Retry-After"] = fault.retry_after
        self._send_json(reply)

    # responses

    def _send_json(self, reply: _Reply) -> None:
        data = json.dumps(reply.payload).encode()
        self._finish(reply.status)
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _send_audio(self, request: dict[str, Any], fault: Fault | None) -> None:
        fmt = request["output_format"]
        encoding, rate, container = fmt["encoding"], fmt["sample_rate"], fmt["container"]
        pcm = expected_pcm(
            request["transcript"],
            request["voice_id"],
            encoding,
            rate,
            language=request.get("language"),
            generation_config=request.get("generation_config"),
        )
        header = streaming_wav_header(encoding, rate) if container == "wav" else b""
        kind = fault.kind if fault else ""
        if kind == "odd_bytes":
            pcm += b"\x01"
        elif kind == "empty":
            pcm = b""
        elif kind == "wrong_format":
            other = 16000 if rate != 16000 else 24000
            header = streaming_wav_header(encoding, other)
        elif kind == "garbage":
            header, pcm = b"", b"<html>502 Bad Gateway</html>\n"
        payload = header + pcm

        self.send_response(200)
        self.send_header("Content-Type", "audio/wav" if container == "wav" else "audio/pcm")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        # Cut at offsets that are deliberately not frame boundaries.
        pieces = max(1, self.fake.chunks)
        cuts = sorted(
            {0, len(payload), *(len(payload) * k // pieces + 1 for k in range(1, pieces))}
        )
        cuts = [c for c in cuts if c <= len(payload)]
        for start, end in itertools.pairwise(cuts):
            chunk = payload[start:end]
            if kind == "drop" and start > 0:
                self._finish(200)
                self.wfile.flush()
                self.close_connection = True
                return  # the socket closes mid-body: an incomplete chunked stream
            if chunk:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        self._finish(200)
        self.wfile.write(b"0\r\n\r\n")


def _error_reply(status: int, error_code: str | None, title: str, message: str) -> _Reply:
    return _Reply(
        status,
        {
            "error_code": error_code,
            "title": title,
            "message": message,
            "request_id": str(uuid.uuid4()),
        },
    )


def _bad(title: str, message: str, error_code: str = "invalid_request") -> _ApiError:
    return _ApiError(400, error_code, title, message)


def _validate(body: Any, voices: frozenset[str]) -> dict[str, Any]:
    """The request fields after the checks the docs describe; raises `_ApiError`."""
    if not isinstance(body, dict):
        raise _bad("Invalid request", "The request body must be a JSON object.")
    model = body.get("model_id")
    if not isinstance(model, str) or not model:
        raise _bad("Invalid request", "model_id is required.")
    if model in SUNSET_MODELS:
        raise _bad(
            "Model sunsetted",
            f"The requested model {model!r} has been sunsetted and is no longer available.",
            "model_sunsetted",
        )
    if model not in KNOWN_MODELS:
        raise _bad(
            "Invalid model",
            f"The model {model!r} is not valid, make sure it is a valid model ID.",
            "model_not_found",
        )
    transcript = body.get("transcript")
    if not isinstance(transcript, str) or not transcript.strip():
        raise _bad("Invalid request", "transcript must be a non-empty string.")

    voice = body.get("voice")
    if isinstance(voice, str):
        voice_id = voice
    elif isinstance(voice, dict):
        mode = voice.get("mode", "id")
        if mode != "id":
            raise _bad("Invalid voice", f"voice.mode {mode!r} is not supported; use 'id'.")
        voice_id = voice.get("id")
    else:
        raise _bad("Invalid voice", "voice must be a voice id or an object with an 'id'.")
    if not isinstance(voice_id, str) or not voice_id:
        raise _bad("Invalid voice", "voice.id is required.")
    if voice_id not in voices:
        raise _ApiError(
            404, "voice_not_found", "Voice not found", f"Voice {voice_id!r} was not found."
        )

    fmt = body.get("output_format")
    if not isinstance(fmt, dict):
        raise _bad("Invalid output format", "output_format is required.")
    container = fmt.get("container")
    if container not in CONTAINERS:
        raise _bad(
            "Invalid output format", f"container must be raw, wav or mp3; got {container!r}."
        )
    if container == "mp3":
        raise _bad("Invalid output format", "This fake server does not produce mp3.")
    if fmt.get("encoding") not in ENCODINGS:
        raise _bad(
            "Invalid output format",
            f"encoding must be one of {sorted(ENCODINGS)}; got {fmt.get('encoding')!r}.",
        )
    rate = fmt.get("sample_rate")
    if type(rate) is not int or rate not in SAMPLE_RATES:
        raise _bad(
            "Invalid output format",
            f"sample_rate must be one of {sorted(SAMPLE_RATES)}; got {rate!r}.",
        )

    language = body.get("language")
    if language is not None and language not in LANGUAGES:
        raise _bad("Invalid language", f"Language {language!r} is not supported.")
    config = body.get("generation_config")
    if config is not None:
        _validate_generation_config(config)
    return {
        "transcript": transcript,
        "voice_id": voice_id,
        "output_format": fmt,
        "language": language,
        "generation_config": config,
    }


def _validate_generation_config(config: Any) -> None:
    if not isinstance(config, dict):
        raise _bad("Invalid generation_config", "generation_config must be an object.")
    for name, low, high in (("speed", 0.6, 1.5), ("volume", 0.5, 2.0)):
        value = config.get(name)
        if value is None:
            continue
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not low <= value <= high
        ):
            raise _bad(
                "Invalid generation_config",
                f"generation_config.{name} must be between {low} and {high}; got {value!r}.",
            )
    emotion = config.get("emotion")
    if emotion is not None and emotion not in EMOTIONS:
        raise _bad("Invalid generation_config", f"Unknown emotion {emotion!r}.")


@pytest.fixture
def cartesia_fake() -> Iterator[FakeCartesia]:
    """A started fake Cartesia server, stopped after the test."""
    with FakeCartesia() as fake:
        yield fake
