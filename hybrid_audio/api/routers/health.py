"""`GET /health`: what is running, without a key.

The storage block names the mode, and — when no key is set — the bucket and prefix: enough
for an operator or a second machine to see where this server mirrors its stems. With a key
set, a keyless caller learns only the mode (a bucket name helps an attacker aim); `GET
/storage`, behind the key, shows the rest. /health checks no key on purpose: it must not
become a way to test guesses beyond the failure limit.
"""

from __future__ import annotations

from contextlib import suppress

from fastapi import APIRouter

from hybrid_audio.api.deps import WorkspaceDep, package_version
from hybrid_audio.api.models import Health
from hybrid_audio.generation import ContractFollowError
from hybrid_audio.storage.base import StorageDescription

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health, summary="Engine, contract, storage and version")
def health(workspace: WorkspaceDep) -> Health:
    with suppress(ContractFollowError):  # the contract this process would use (or refuse)
        workspace.generator.follow_contract()  # another process may have changed it
    contract = workspace.generator.contract
    storage = workspace.store.describe()
    return Health(
        version=package_version(),
        engine=contract.engine,
        engine_version=contract.engine_version,
        contract_signature=contract.signature(),
        audio_format=contract.audio_format.describe(),
        sound=contract.sound(),
        auth_required=bool(workspace.settings.internal_api_key),
        storage=storage
        if not workspace.settings.internal_api_key
        else StorageDescription(mode=storage.mode),
    )
