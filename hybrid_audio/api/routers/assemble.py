"""`/assemble`: messages from templates, their manifests, audio and proof."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import FileResponse

from hybrid_audio.api.audio import VerifiedAudio
from hybrid_audio.api.deps import WorkspaceDep
from hybrid_audio.api.errors import not_found
from hybrid_audio.api.models import (
    AssembleRequest,
    AssembleResponse,
    PageLimit,
    PageOffset,
    set_page_headers,
)
from hybrid_audio.assembly import OutputSummary
from hybrid_audio.bitmerge import VerifyReport
from hybrid_audio.workspace import Workspace

router = APIRouter(prefix="/assemble", tags=["assemble"])


def _known(workspace: Workspace, output_id: str) -> str:
    try:
        workspace.assembler.load_output(output_id)
    except KeyError:
        raise not_found(f"output {output_id!r}") from None
    return output_id


@router.post("/template", response_model=AssembleResponse, summary="Assemble one message")
def assemble_template(body: AssembleRequest, workspace: WorkspaceDep) -> AssembleResponse:
    result = workspace.assembler.assemble(
        body.template,
        name=body.name,
        developer=body.developer,
        script=body.script,
        slots=body.slots,
        generate_missing=body.generate_missing,
        mode=body.mode,
    )
    summary = result.summary
    return AssembleResponse(
        id=summary.id,
        duration=summary.duration,
        sha256=summary.sha256,
        verified=result.report.ok,
        summary=summary,
        report=result.report,
        audio_url=f"/assemble/outputs/{summary.id}/audio",
    )


@router.get("/outputs", response_model=list[OutputSummary], summary="Assembled messages")
def list_outputs(
    workspace: WorkspaceDep, response: Response, offset: PageOffset = 0, limit: PageLimit = 100
) -> list[OutputSummary]:
    """A page of messages, newest first; `X-Total-Count` and `X-Next-Offset` headers say
    how many there are and where the next page starts."""
    total = len(workspace.assembler.output_ids())
    set_page_headers(response, offset, min(limit, max(total - offset, 0)), total)
    return workspace.assembler.list_outputs(offset, limit)


@router.get("/outputs/{output_id}", response_model=dict[str, Any], summary="A manifest")
def get_output(output_id: str, workspace: WorkspaceDep) -> dict[str, Any]:
    try:
        return workspace.assembler.load_output(output_id)
    except KeyError:
        raise not_found(f"output {output_id!r}") from None


@router.get(
    "/outputs/{output_id}/audio",
    response_class=FileResponse,
    responses={200: {"content": {"audio/wav": {}}}, 206: {"content": {"audio/wav": {}}}},
    summary="The WAV file (Range requests supported)",
)
def get_output_audio(output_id: str, workspace: WorkspaceDep) -> FileResponse:
    """The bytes the manifest recorded: 409 if the file changed or is a symbolic link."""
    try:
        data, info = workspace.assembler.read_output(output_id)
    except KeyError:
        raise not_found(f"output {output_id!r}") from None
    return VerifiedAudio(data, info, f"{output_id}.wav")


@router.get(
    "/outputs/{output_id}/verify", response_model=VerifyReport, summary="Re-verify from disk"
)
def verify_output(output_id: str, workspace: WorkspaceDep) -> VerifyReport:
    return workspace.assembler.verify_output(_known(workspace, output_id))
