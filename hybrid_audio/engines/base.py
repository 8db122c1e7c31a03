"""The engine protocol and the errors every engine raises.

An engine turns text into audio (a `Wav`) in the contract's `AudioFormat` — converting from its
native format at generation time, never later — and says which version of itself made it
(the version is part of the contract signature). Engines know nothing of the cache.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from hybrid_audio.contract import VoiceContract
from hybrid_audio.wav import Wav


@runtime_checkable
class Engine(Protocol):
    """What the Generator needs from a TTS engine."""

    #: Registry name: "piper", "cartesia".
    name: str

    @property
    def version(self) -> str:
        """Everything about the engine that can change the audio (library, model, API)."""
        ...

    def synthesize(self, text: str, contract: VoiceContract) -> Wav:
        """`text` spoken under `contract`, in `contract.audio_format`.

        A `Wav`, not file bytes: the cache writes the one canonical header, so the audio is
        never serialised and parsed again. An engine that read a WAV from its service keeps
        the header repairs it needed in `Wav.repairs`; the cache records them.
        """
        ...

    def describe(self) -> dict[str, str]:
        """Human-readable facts for the dashboard and `/health` (no secrets)."""
        ...


class EngineError(RuntimeError):
    """Synthesis failed. The message says what happened and what the user can do."""

    #: Whether trying the same request later may succeed.
    retryable: bool = False


class EngineConfigError(EngineError):
    """The engine is set up wrongly: missing or bad key, unknown voice or model, bad request."""


class InvalidTextError(EngineError, ValueError):
    """This text cannot be spoken (empty, blank, NUL, characters outside the voice's
    script). A `ValueError` too, so an API maps it to 422; unlike a configuration error it
    concerns one stem, so a batch goes on. Engines refuse rather than drop what they cannot
    say, so a stem never holds less than its text."""


class EngineQuotaError(EngineError):
    """The account's quota or rate limit is exhausted (and retries did not help)."""

    retryable = True


class EngineUnavailableError(EngineError):
    """The service failed or timed out, even after retries."""

    retryable = True


class EngineOutputError(EngineError):
    """The engine answered, but not with valid audio in the contract's format."""
