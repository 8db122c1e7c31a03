"""Cartesia Sonic-3 through the official `cartesia` SDK (4.x), over `POST /tts/bytes`.

Choices, and why:

- **Raw PCM, returned as a `Wav`.** We ask for `output_format = {container: "raw", encoding,
  sample_rate}` in the contract's encoding and rate and return the samples as a `Wav`; the
  cache writes the one canonical header, whatever Cartesia's streaming writer does. The
  byte count must be whole frames (else `EngineOutputError`). `container="wav"` is kept as
  an option: the streamed header declares sizes of 0xFFFFFFFF, `read_wav` recovers the real
  size (noted in `Wav.repairs`, which the cache records), and the format it declares must
  equal the one we asked for.
- **Rates Cartesia does not offer.** The API offers 8000, 16000, 22050, 24000, 44100 and
  48000 Hz. For any other contract rate we ask for `pcm_f32le` at the next offered rate up,
  resample with soxr (quality VHQ, deterministic) and encode with `codecs.encode` — the same
  generation-time conversion Piper does. Offered rates are passed through untouched.
- **Pinned versions.** The model must be a dated snapshot (`sonic-3-2025-10-27`): a base
  name such as `sonic-3` moves to new snapshots silently while the contract signature stays
  the same, so the cache would mix voices. We send our own `Cartesia-Version` header
  (`API_VERSION`, the first version with structured JSON errors) instead of whatever the
  installed SDK defaults to, so an SDK upgrade cannot change the API behaviour unnoticed.
  `version` names the SDK, the API version, the model and the resampler: all four go into
  the contract signature.
- **Explicit configuration.** The key, base URL and every knob come from `Settings` or the
  constructor; the SDK would otherwise read `CARTESIA_BASE_URL` from the environment, so the
  production URL is passed explicitly when none is set.
- **Bounded concurrency.** Cartesia counts every HTTP request against the plan's TTS
  concurrency (Free 2, Pro 3, Startup 5, Scale 15); going over answers 429. One
  `BoundedSemaphore` per (base URL, key, limit) is shared by every engine in the process and
  held only while a request is in flight — never while backing off.
- **stamina's retries, not the SDK's.** The SDK (4.2) retries 408/409/429/5xx, timeouts and
  connection errors and honours `retry-after`, but its backoff constants are module globals
  (0.5 s doubling to 8 s, not configurable per client), it ignores a `retry-after` over 60 s
  and it would sleep while holding our concurrency slot. So the client is built with
  `max_retries=0` and each attempt runs inside `stamina.retry_context`, taking the slot only
  for the request itself. The same set is retried (408, 409, 429, 5xx, timeouts, dropped
  connections) with exponential backoff (`backoff_base` doubling to `backoff_max`, plus up
  to `backoff_base` of jitter); a `retry-after` (seconds, `retry-after-ms`, or an HTTP date)
  is honoured exactly through stamina's backoff hook, and a server asking for longer than
  `max_retry_after` is not waited for. Other 4xx are never retried.
- **Errors say what to do.** 401/403 → check CARTESIA_API_KEY; 404 or an unknown voice →
  the voice id; unknown or sunset model (400/404 naming the model, or 410) → a current dated
  snapshot; 402 → quota; 429 after retries → quota/concurrency; 5xx and timeouts after
  retries → unavailable. Cartesia's `request_id` is quoted in every message.
"""

from __future__ import annotations

import email.utils
import hashlib
import logging
import random
import re
import threading
import time
import typing
import unicodedata
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from typing import Any, Literal

import cartesia
import httpx
import numpy as np
import soxr
import stamina
from cartesia.types import TTSModel

from hybrid_audio.codecs import decode, encode
from hybrid_audio.config import DEFAULT_CARTESIA_MODEL, Settings
from hybrid_audio.contract import AudioFormat, Encoding, VoiceContract
from hybrid_audio.engines.base import (
    EngineConfigError,
    EngineError,
    EngineOutputError,
    EngineQuotaError,
    EngineUnavailableError,
    InvalidTextError,
)
from hybrid_audio.wav import Wav, WavError, read_wav

__all__ = [
    "API_VERSION",
    "DEFAULT_BASE_URL",
    "SAMPLE_RATES",
    "CartesiaEngine",
    "InvalidTextError",
]

log = logging.getLogger(__name__)

#: The `Cartesia-Version` header we send (the SDK's own default changes between releases).
API_VERSION = "2026-03-01"
DEFAULT_BASE_URL = "https://api.cartesia.ai"
#: Output sample rates `/tts/bytes` offers.
SAMPLE_RATES = (8000, 16000, 22050, 24000, 44100, 48000)
#: Encodings `/tts/bytes` offers (the contract's encodings).
ENCODINGS = frozenset(
    {Encoding.PCM_S16LE, Encoding.PCM_F32LE, Encoding.PCM_MULAW, Encoding.PCM_ALAW}
)
#: Documented sonic-3 `generation_config` ranges.
SPEED_RANGE = (0.6, 1.5)
VOLUME_RANGE = (0.5, 2.0)
RETRY_STATUSES = frozenset({408, 409, 429})
RESAMPLE_QUALITY = "VHQ"
MODELS_DOC = "https://docs.cartesia.ai/build-with-cartesia/tts-models/latest"
_DATED = re.compile(r"-\d{4}-\d{2}-\d{2}$")
_MODEL_ERROR_CODES = frozenset({"model_not_found", "model_sunsetted", "invalid_model"})
#: Messages that say a model or voice is unknown, for bodies without an `error_code`.
_MODEL_GONE = re.compile(
    r"model.*(sunset|not (valid|found|available|supported)|unknown|deprecat|no longer)", re.I
)
_VOICE_GONE = re.compile(r"voice.*(not found|unknown|does not exist|no longer)", re.I)


def _version_of(distribution: str) -> str:
    try:
        return package_version(distribution)
    except PackageNotFoundError:
        return "unknown"


SDK_VERSION = getattr(cartesia, "__version__", None) or _version_of("cartesia")
SOXR_VERSION = _version_of("soxr")


def _known_snapshots() -> tuple[str, ...]:
    """Dated model ids the installed SDK knows, newest first (for error messages)."""
    try:
        names = typing.get_args(typing.get_args(TTSModel)[0])
    except (IndexError, TypeError):
        names = ()
    dated = [n for n in names if isinstance(n, str) and _DATED.search(n)]
    return tuple(sorted(set(dated) | {DEFAULT_CARTESIA_MODEL}, key=lambda n: n[-10:], reverse=True))


KNOWN_SNAPSHOTS = _known_snapshots()


def suggest_snapshot(model: str) -> str:
    """A current dated snapshot to use instead of `model`: same family, else newest sonic-3.

    Sonic-3 is preferred over newer families because the contract's speed and volume are
    sonic-3 `generation_config` controls.
    """
    others = [m for m in KNOWN_SNAPSHOTS if m != model]
    for family in (_DATED.sub("", model), "sonic-3"):
        same = [m for m in others if _DATED.sub("", m) == family]
        if same:
            return same[0]
    return others[0] if others else DEFAULT_CARTESIA_MODEL


# --- process-wide concurrency -----------------------------------------------------------------

_SLOTS: dict[tuple[str, str, int], threading.BoundedSemaphore] = {}
_SLOTS_LOCK = threading.Lock()


def _slots_for(base_url: str, api_key: str, limit: int) -> threading.BoundedSemaphore:
    """The semaphore every engine of this account and limit shares in this process."""
    account = hashlib.sha256(api_key.encode()).hexdigest()[:16]
    key = (base_url, account, limit)
    with _SLOTS_LOCK:
        slots = _SLOTS.get(key)
        if slots is None:
            slots = _SLOTS[key] = threading.BoundedSemaphore(limit)
        return slots


# --- retry bookkeeping --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Failure:
    """One failed attempt that may be retried."""

    status: int | None  # None: timeout or connection error
    detail: str
    request_id: str = ""
    retry_after: float | None = None
    timeout: bool = False


def parse_retry_after(headers: Mapping[str, str] | httpx.Headers) -> float | None:
    """Seconds the server asks us to wait: `retry-after-ms`, `retry-after` seconds or date."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def _error_fields(error: cartesia.APIStatusError) -> tuple[str, str, str, str]:
    """(error_code, title, message, request_id) from Cartesia's JSON error body."""
    body = error.body if isinstance(error.body, dict) else {}
    code = str(body.get("error_code") or "")
    title = str(body.get("title") or "")
    message = str(body.get("message") or body.get("error") or "")
    if not (title or message) and isinstance(error.body, str):
        message = error.body.strip()[:300]
    request_id = str(body.get("request_id") or error.response.headers.get("x-request-id") or "")
    return code, title, message, request_id


def _with_id(text: str, request_id: str) -> str:
    return f"{text} (Cartesia request_id {request_id})" if request_id else text


class CartesiaEngine:
    """Sonic-3 over HTTP with bounded concurrency, retries and actionable errors."""

    name = "cartesia"
    api_version = API_VERSION

    def __init__(
        self,
        api_key: str,
        *,
        voice_id: str = "",
        model_id: str = DEFAULT_CARTESIA_MODEL,
        base_url: str = "",
        max_concurrency: int = 2,
        max_retries: int = 4,
        backoff_base: float = 0.5,
        backoff_max: float = 8.0,
        max_retry_after: float = 60.0,
        timeout: float = 60.0,
        container: Literal["raw", "wav"] = "raw",
        allow_unpinned_model: bool = False,
    ) -> None:
        api_key = (api_key or "").strip()
        if not api_key:
            raise EngineConfigError(
                "the Cartesia engine needs an API key: set CARTESIA_API_KEY "
                "(create one at https://play.cartesia.ai/keys), or use TTS_ENGINE=piper"
            )
        if max_concurrency < 1:
            raise EngineConfigError("CARTESIA_MAX_CONCURRENCY must be at least 1")
        if max_retries < 0:
            raise EngineConfigError("max_retries must be 0 or more")
        if container not in ("raw", "wav"):
            raise EngineConfigError(f"container must be 'raw' or 'wav', not {container!r}")
        self.voice_id = voice_id.strip()
        self.model_id = (model_id or DEFAULT_CARTESIA_MODEL).strip()
        self.allow_unpinned_model = allow_unpinned_model
        self._check_model(self.model_id)
        self.base_url = (base_url or DEFAULT_BASE_URL).rstrip("/")
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.max_retry_after = max_retry_after
        self.timeout = timeout
        self.container = container
        self._slots = _slots_for(self.base_url, api_key, max_concurrency)
        # The client is thread-safe (one pooled httpx.Client). Passing the version header
        # under the SDK's own lower-case key replaces its default instead of adding a second.
        self._client = cartesia.Cartesia(
            api_key=api_key,
            base_url=self.base_url,
            max_retries=0,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            default_headers={"cartesia-version": API_VERSION},
        )

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> CartesiaEngine:
        """The engine `settings` describe; `options` override constructor knobs (tests)."""
        return cls(
            settings.cartesia_api_key,
            voice_id=settings.cartesia_voice_id,
            model_id=settings.cartesia_model_id,
            base_url=settings.cartesia_base_url,
            max_concurrency=settings.cartesia_max_concurrency,
            **options,
        )

    # --- protocol -------------------------------------------------------------------------

    @property
    def version(self) -> str:
        """SDK, API version, model and resampler: each can change the bytes."""
        return (
            f"cartesia-python {SDK_VERSION}; Cartesia-Version {API_VERSION}; "
            f"model {self.model_id}; soxr {SOXR_VERSION} {RESAMPLE_QUALITY}"
        )

    def describe(self) -> dict[str, str]:
        return {
            "engine": self.name,
            "version": self.version,
            "sdk": f"cartesia-python {SDK_VERSION}",
            "api_version": API_VERSION,
            "model": self.model_id,
            "voice": self.voice_id,
            "base_url": self.base_url,
            "container": self.container,
            "max_concurrency": str(self.max_concurrency),
            "retries": f"{self.max_retries} (backoff {self.backoff_base}s..{self.backoff_max}s)",
            "timeout": f"{self.timeout}s",
            "sample_rates": ", ".join(map(str, SAMPLE_RATES)) + " (others resampled)",
        }

    def synthesize(self, text: str, contract: VoiceContract) -> Wav:
        """`text` spoken by Cartesia, in `contract.audio_format` (header repairs kept)."""
        fmt = contract.audio_format
        request = self._request_for(text, contract)
        native = AudioFormat(
            encoding=request["output_format"]["encoding"],
            sample_rate=request["output_format"]["sample_rate"],
        )
        body = self._call_with_retries(request)
        audio = self._audio_from(body, native, request)
        if native == fmt:
            return audio
        pcm = self._convert(audio.pcm, native, fmt)
        return Wav(format=fmt, pcm=pcm, repairs=audio.repairs, source=audio.source)

    # --- request --------------------------------------------------------------------------

    def _check_model(self, model: str) -> None:
        if not model:
            raise EngineConfigError(
                f"no Cartesia model: set CARTESIA_MODEL_ID to a dated snapshot such as "
                f"{suggest_snapshot(model)}"
            )
        if not self.allow_unpinned_model and not _DATED.search(model):
            raise EngineConfigError(
                f"Cartesia model {model!r} is not a dated snapshot; a base name moves to new "
                f"snapshots silently and cached stems would no longer match their signature. "
                f"Set CARTESIA_MODEL_ID to a pinned id such as {suggest_snapshot(model)} "
                f"(see {MODELS_DOC})"
            )

    def _request_for(self, text: str, contract: VoiceContract) -> dict[str, Any]:
        """The `/tts/bytes` body for this text and contract; configuration errors first."""
        if contract.engine != self.name:
            raise EngineConfigError(
                f"contract is for engine {contract.engine!r}, but this is the Cartesia engine"
            )
        spoken = unicodedata.normalize("NFC", text or "").strip()
        if not spoken:
            raise InvalidTextError("nothing to say: the text is empty or blank")
        voice = (contract.voice or self.voice_id).strip()
        if not voice:
            raise EngineConfigError(
                "no Cartesia voice: set CARTESIA_VOICE_ID (a voice id from "
                "https://play.cartesia.ai/voices) or the contract's voice"
            )
        model = (contract.model or self.model_id).strip()
        self._check_model(model)
        fmt = contract.audio_format
        if fmt.encoding not in ENCODINGS or fmt.channels != 1:
            raise EngineConfigError(
                f"Cartesia produces mono {', '.join(sorted(ENCODINGS))}; "
                f"the contract asks for {fmt.describe()}"
            )
        speed, volume = float(contract.speed), float(contract.volume)
        for label, value, (low, high) in (
            ("speed", speed, SPEED_RANGE),
            ("volume", volume, VOLUME_RANGE),
        ):
            if not low <= value <= high:
                raise EngineConfigError(
                    f"Cartesia sonic-3 accepts {label} {low}..{high}; the contract has {value}"
                )
        if fmt.sample_rate in SAMPLE_RATES:
            encoding, rate = fmt.encoding, fmt.sample_rate
        else:  # next offered rate up, as float, converted here (see module docstring)
            encoding = Encoding.PCM_F32LE
            rate = next((r for r in SAMPLE_RATES if r >= fmt.sample_rate), SAMPLE_RATES[-1])
        generation: dict[str, Any] = {"speed": speed, "volume": volume}
        if contract.emotion:
            generation["emotion"] = contract.emotion
        request: dict[str, Any] = {
            "model_id": model,
            "transcript": spoken,
            "voice": {"mode": "id", "id": voice},
            "output_format": {
                "container": self.container,
                "encoding": str(encoding),
                "sample_rate": rate,
            },
            "generation_config": generation,
        }
        if contract.language:
            request["language"] = contract.language
        return request

    # --- transport and retries ----------------------------------------------------------------

    @contextmanager
    def _slot(self) -> Iterator[None]:
        with self._slots:
            yield

    def _call_with_retries(self, request: dict[str, Any]) -> bytes:
        """The response body; each attempt holds a concurrency slot, no backoff ever does."""
        attempts = stamina.retry_context(
            on=self._backoff_for,
            attempts=self.max_retries + 1,
            timeout=None,  # bounded by attempts and `max_retry_after`, not by a clock
            wait_initial=self.backoff_base,
            wait_max=self.backoff_max,
            wait_jitter=self.backoff_base,
        )
        made = 0
        try:
            for attempt in attempts:
                made = attempt.num
                with attempt, self._slot():
                    return self._call_once(request, attempt.num - 1)
        except _RetryableError as error:
            raise self._exhausted(error.failure, request, made) from error
        raise AssertionError("stamina ended without an outcome")  # pragma: no cover

    def _backoff_for(self, error: Exception) -> bool | float:
        """stamina's hook: retry? True → exponential backoff; seconds → the server's word.

        stamina asks after every failed attempt, the last one too (then it stops).
        """
        if not isinstance(error, _RetryableError):
            return False
        failure = error.failure
        if failure.retry_after is None:
            log.info("Cartesia %s (retryable with backoff)", failure.detail)
            return True
        if failure.retry_after > self.max_retry_after:
            log.warning(
                "Cartesia asked to wait %.0fs (more than %.0fs); not retrying",
                failure.retry_after,
                self.max_retry_after,
            )
            return False
        # At least what the server asked, plus a little jitter so waiting threads spread.
        delay = failure.retry_after + random.uniform(0, min(0.1 * failure.retry_after, 1.0))
        log.info("Cartesia %s (retryable after %.2fs, as asked)", failure.detail, delay)
        return delay

    def _call_once(self, request: dict[str, Any], attempt: int) -> bytes:
        try:
            response = self._client.tts.generate(
                **request,
                extra_headers={"x-stainless-retry-count": str(attempt)},
            )
            return response.read()
        except cartesia.APITimeoutError as error:
            raise _RetryableError(
                _Failure(None, f"request timed out after {self.timeout}s", timeout=True)
            ) from error
        except cartesia.APIConnectionError as error:
            cause = error.__cause__ or error
            raise _RetryableError(
                _Failure(None, f"connection failed ({type(cause).__name__}: {cause})")
            ) from error
        except cartesia.APIStatusError as error:
            status = error.status_code
            code, title, message, request_id = _error_fields(error)
            summary = ": ".join(part for part in (title, message) if part) or "no details"
            detail = f"answered {status} ({code + ', ' if code else ''}{summary})"
            if status in RETRY_STATUSES or status >= 500:
                raise _RetryableError(
                    _Failure(
                        status,
                        detail,
                        request_id=request_id,
                        retry_after=parse_retry_after(error.response.headers),
                    )
                ) from error
            raise self._client_error(status, code, detail, request_id, request) from error
        except cartesia.APIError as error:
            raise EngineUnavailableError(f"Cartesia request failed: {error}") from error

    # --- errors -----------------------------------------------------------------------------

    def _client_error(
        self, status: int, code: str, detail: str, request_id: str, request: dict[str, Any]
    ) -> EngineError:
        """The error for a 4xx that retrying cannot fix, saying what to change."""
        model = request["model_id"]
        voice = request["voice"]["id"]
        if status in (401, 403):
            text = (
                f"Cartesia {detail}: check CARTESIA_API_KEY (is it current, and does the plan "
                f"allow model {model!r}?)"
            )
            return EngineConfigError(_with_id(text, request_id))
        if status == 402 or any(word in code for word in ("quota", "credit", "payment")):
            text = (
                f"Cartesia {detail}: the account is out of credits or quota; "
                "top up or upgrade at https://play.cartesia.ai, then retry"
            )
            return EngineQuotaError(_with_id(text, request_id))
        if status == 410 or code in _MODEL_ERROR_CODES or (not code and _MODEL_GONE.search(detail)):
            suggestion = suggest_snapshot(model)
            text = (
                f"Cartesia does not serve model {model!r} ({detail}): set CARTESIA_MODEL_ID "
                f"(or the contract's model) to a current dated snapshot such as {suggestion} "
                f"(see {MODELS_DOC}); stems made with the old model keep its signature"
            )
            return EngineConfigError(_with_id(text, request_id))
        if status == 404 or code.startswith("voice") or _VOICE_GONE.search(detail):
            text = (
                f"Cartesia voice {voice!r} not found or not usable ({detail}): set "
                "CARTESIA_VOICE_ID (or the contract's voice) to a voice id from "
                "https://play.cartesia.ai/voices that this API key can use"
            )
            return EngineConfigError(_with_id(text, request_id))
        fmt = request["output_format"]
        text = (
            f"Cartesia rejected the request: {detail}. Check the contract (model {model!r}, "
            f"voice {voice!r}, language {request.get('language')!r}, "
            f"{fmt['encoding']} {fmt['sample_rate']} Hz, "
            f"generation_config {request.get('generation_config')})"
        )
        return EngineConfigError(_with_id(text, request_id))

    def _exhausted(self, failure: _Failure, request: dict[str, Any], made: int) -> EngineError:
        """The error once retries are used up (or the server asked for too long a wait)."""
        tries = f"after {made} attempt(s)"
        if failure.status == 429:
            wait = (
                f"; it asked to wait {failure.retry_after:.0f}s"
                if failure.retry_after is not None
                else ""
            )
            text = (
                f"Cartesia {failure.detail} {tries}{wait}: the plan's rate or concurrency limit "
                f"is exhausted. Lower CARTESIA_MAX_CONCURRENCY (now {self.max_concurrency}) "
                "to your plan's limit, make sure no other process shares the key, or retry later"
            )
            return EngineQuotaError(_with_id(text, failure.request_id))
        if failure.timeout:
            text = (
                f"Cartesia {failure.detail} {tries} (model {request['model_id']!r}); "
                "the service is slow or unreachable, retry later or raise the timeout"
            )
        elif failure.status is None:
            text = (
                f"Cartesia at {self.base_url}: {failure.detail} {tries}; check the network "
                "and CARTESIA_BASE_URL, or retry later"
            )
        else:
            text = (
                f"Cartesia {failure.detail} {tries}; the service is failing, retry later "
                "(status: https://status.cartesia.ai)"
            )
        return EngineUnavailableError(_with_id(text, failure.request_id))

    # --- audio ----------------------------------------------------------------------------

    def _audio_from(self, body: bytes, native: AudioFormat, request: dict[str, Any]) -> Wav:
        """The response as audio, checked against the format we asked for."""
        asked = f"{native.encoding.value} {native.sample_rate} Hz"
        if self.container == "wav":
            try:
                audio = read_wav(body)
            except WavError as error:
                raise EngineOutputError(
                    f"Cartesia returned an unreadable WAV for {asked} ({len(body)} bytes): {error}"
                ) from None
            if audio.format != native:
                raise EngineOutputError(
                    f"Cartesia returned {audio.format.describe()} but we asked for "
                    f"{native.describe()}; refusing to store audio in the wrong format"
                )
        else:
            audio = Wav(format=native, pcm=body)
        if not audio.pcm:
            raise EngineOutputError(
                f"Cartesia returned no audio for {request['transcript']!r} ({asked})"
            )
        if len(audio.pcm) % native.block_align:
            raise EngineOutputError(
                f"Cartesia returned {len(audio.pcm)} bytes of {asked}, not a whole number of "
                f"{native.block_align}-byte frames: the stream was cut or is not that format"
            )
        return replace(audio, source=f"Cartesia {request['model_id']}")

    @staticmethod
    def _convert(pcm: bytes, native: AudioFormat, fmt: AudioFormat) -> bytes:
        """Resample (soxr) and re-encode to the contract's format, at generation time."""
        samples = decode(pcm, native)[:, 0]
        if not np.all(np.isfinite(samples)):
            raise EngineOutputError("Cartesia returned float samples that are NaN or infinite")
        if native.sample_rate != fmt.sample_rate:
            samples = soxr.resample(
                samples, native.sample_rate, fmt.sample_rate, quality=RESAMPLE_QUALITY
            )
        return encode(samples, fmt)


class _RetryableError(Exception):
    """Internal: an attempt failed in a way a later attempt may not."""

    def __init__(self, failure: _Failure) -> None:
        super().__init__(failure.detail)
        self.failure = failure
