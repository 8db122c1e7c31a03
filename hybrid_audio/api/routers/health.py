"""`GET /health`: what is running, without a key.

The storage block names the bucket and prefix (no objects, no credentials): enough for an
operator or a second machine to see where this server mirrors its stems.
"""

from __future__ import annotations

from fastapi import APIRouter

from hybrid_audio.api.deps import WorkspaceDep, package_version
from hybrid_audio.api.models import Health

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health, summary="Engine, contract, storage and version")
def health(workspace: WorkspaceDep) -> Health:
    contract = workspace.generator.contract
    return Health(
        version=package_version(),
        engine=contract.engine,
        engine_version=contract.engine_version,
        contract_signature=contract.signature(),
        audio_format=contract.audio_format.describe(),
        auth_required=bool(workspace.settings.internal_api_key),
        storage=workspace.store.describe(),
    )
