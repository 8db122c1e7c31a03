"""TTS engines behind one protocol, and the registry that picks one from the settings.

Engines are imported lazily: Piper is GPL-3.0 and ships as the `piper` extra, and the
Cartesia SDK is only needed in production.
"""

from __future__ import annotations

from hybrid_audio.config import Settings
from hybrid_audio.engines.base import (
    Engine,
    EngineConfigError,
    EngineError,
    EngineOutputError,
    EngineQuotaError,
    EngineUnavailableError,
    InvalidTextError,
)

__all__ = [
    "Engine",
    "EngineConfigError",
    "EngineError",
    "EngineOutputError",
    "EngineQuotaError",
    "EngineUnavailableError",
    "InvalidTextError",
    "create_engine",
]


def create_engine(settings: Settings, name: str | None = None) -> Engine:
    """The engine named `name` (default `settings.tts_engine`), configured from `settings`."""
    name = name or settings.tts_engine
    if name == "piper":
        try:
            from hybrid_audio.engines.piper import PiperEngine
        except ImportError as error:
            raise EngineConfigError(
                f"Piper is not installed ({error}); install the extra: "
                "pip install 'hybrid-audio[piper]' (make run/make test do)"
            ) from None
        return PiperEngine.from_settings(settings)
    if name == "cartesia":
        from hybrid_audio.engines.cartesia import CartesiaEngine

        return CartesiaEngine.from_settings(settings)
    raise EngineConfigError(f"unknown TTS engine {name!r}; choose piper or cartesia")
