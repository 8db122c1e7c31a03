"""`GET /kinds`: the stem kinds this server knows, so clients (the CLI) need no list."""

from __future__ import annotations

from fastapi import APIRouter

from hybrid_audio import kinds
from hybrid_audio.api.deps import WorkspaceDep
from hybrid_audio.api.models import KindInfo
from hybrid_audio.datasets import display_path

router = APIRouter(tags=["kinds"])


@router.get("/kinds", response_model=list[KindInfo], summary="Stem kinds and their datasets")
def list_kinds(workspace: WorkspaceDep) -> list[KindInfo]:
    """Built-ins first, then those of the data folder's kinds.json."""
    settings = workspace.settings
    return [
        KindInfo(
            name=kind.name,
            plural=kind.plural,
            aliases=list(kind.aliases),
            form=kind.form,
            dataset=display_path(kind.dataset_path(settings), settings),
            rotation=kind.rotation,
        )
        for kind in kinds.load(settings)
    ]
