"""Fixtures many test modules share."""

from __future__ import annotations

import pytest

from hybrid_audio.config import Settings
from hybrid_audio.engines import Engine, create_engine


@pytest.fixture(scope="module")
def piper() -> Engine:
    """The real Piper engine (voice loaded once per module); tests that count its calls wrap
    it in their own fixture."""
    return create_engine(Settings(tts_engine="piper"))
