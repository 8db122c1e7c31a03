"""`/pronunciations`: the dictionary of how words are said, fixes and what they make stale.

A fix (`PUT`) sets an entry and makes every stem using it again (unless `regenerate` is
false); the answer lists the stems made, those that failed (they keep what was stored) and
the messages that now say something else than a new assembly would. `DELETE` undoes a fix
— the stems come back byte for byte. `GET /assemble/outputs/{id}/stale` says which stems
of one message changed since it was assembled, and why (`staleness.py`).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from hybrid_audio import staleness
from hybrid_audio.api.deps import WorkspaceDep
from hybrid_audio.api.errors import not_found
from hybrid_audio.api.models import PageOffset, PronunciationRequest
from hybrid_audio.cache import StemRecord
from hybrid_audio.pronunciation import Pronounced, PronunciationEntry
from hybrid_audio.stems import MAX_TEXT, spoken_text

router = APIRouter(tags=["pronunciations"])

TextQuery = Annotated[
    str, Query(min_length=1, max_length=MAX_TEXT, description="A word or phrase, any case.")
]
RegenerateQuery = Annotated[bool, Query(description="Make the entry's stems again now.")]
#: Stale messages a page lists at most (each page reads every manifest up to it).
MAX_STALE_PAGE = 500
StaleLimit = Annotated[
    int, Query(ge=1, le=MAX_STALE_PAGE, description=f"Messages, at most {MAX_STALE_PAGE}.")
]


@router.get(
    "/pronunciations", response_model=list[PronunciationEntry], summary="Dictionary entries"
)
def list_entries(workspace: WorkspaceDep) -> list[PronunciationEntry]:
    """Every entry, ordered by text."""
    return workspace.pronunciations.list()


@router.put("/pronunciations", response_model=staleness.FixReport, summary="Fix a pronunciation")
def set_entry(body: PronunciationRequest, workspace: WorkspaceDep) -> staleness.FixReport:
    """Add or replace the entry for `text` (422 naming the problem for text that cannot be
    spoken, an entry that says nothing, or the engines' `[[`/`<<` syntax), then make its
    stems again: a stem that fails is listed in `failed` and keeps its audio."""
    return staleness.apply_fix(
        workspace,
        body.text,
        respelling=body.respelling,
        phonemes=body.phonemes,
        note=body.note,
        regenerate=body.regenerate,
    )


@router.delete(
    "/pronunciations", response_model=staleness.FixReport, summary="Remove a pronunciation"
)
def remove_entry(
    workspace: WorkspaceDep, text: TextQuery, regenerate: RegenerateQuery = True
) -> staleness.FixReport:
    """Remove the entry (404 when there is none) and make its stems again as written."""
    report = staleness.remove_fix(workspace, text, regenerate=regenerate)
    if not report.removed:
        raise not_found(f"pronunciation entry {text!r}")
    return report


@router.get(
    "/pronunciations/stems",
    response_model=list[StemRecord],
    summary="Cached stems an entry for this text applies to",
)
def stems_using(workspace: WorkspaceDep, text: TextQuery) -> list[StemRecord]:
    """Stems of the active contract whose text holds `text` as a whole word or phrase, and
    those the dictionary would now make differently (regenerating fixes them)."""
    spoken_text(text)  # 422 for text that cannot be spoken
    return staleness.stems_using(workspace, text)


@router.get(
    "/pronunciations/preview",
    response_model=Pronounced,
    summary="What the engine would be given for a text",
)
def preview(workspace: WorkspaceDep, text: TextQuery) -> Pronounced:
    """The dictionary applied to `text` for the active engine: `engine_text`, the entries
    applied and their hash (the one a stem made now records)."""
    return workspace.generator.pronounce(spoken_text(text))


@router.get(
    "/pronunciations/stale-outputs",
    response_model=list[staleness.StaleOutput],
    summary="Messages whose stems changed since they were assembled",
)
def stale_outputs(
    workspace: WorkspaceDep, offset: PageOffset = 0, limit: StaleLimit = 100
) -> list[staleness.StaleOutput]:
    """Newest first, only the stale ones; `offset` and `limit` count stale messages."""
    return staleness.stale_outputs(workspace, offset, limit)


@router.get(
    "/assemble/outputs/{output_id}/stale",
    response_model=list[staleness.StaleStem],
    summary="The stems of a message that changed since it was assembled",
    tags=["assemble"],
)
def stale_stems(output_id: str, workspace: WorkspaceDep) -> list[staleness.StaleStem]:
    """Empty when a new assembly would use the same stems; otherwise each changed stem once,
    in the order heard, with why: no longer cached, made again, or its entry changed."""
    try:
        document = workspace.assembler.load_output(output_id)
    except KeyError:
        raise not_found(f"output {output_id!r}") from None
    return staleness.stale_stems_of(workspace, document)
