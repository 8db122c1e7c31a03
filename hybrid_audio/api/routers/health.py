"""`GET /health`: what is running, without a key."""

from __future__ import annotations

from fastapi import APIRouter

from hybrid_audio.api.models import Health
from hybrid_audio.api.services import Shared, package_version

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health, summary="Engine, contract and version")
def health(shared: Shared) -> Health:
    contract = shared.generator.contract
    return Health(
        version=package_version(),
        engine=contract.engine,
        engine_version=contract.engine_version,
        contract_signature=contract.signature(),
        audio_format=contract.audio_format.describe(),
        auth_required=bool(shared.settings.internal_api_key),
    )
