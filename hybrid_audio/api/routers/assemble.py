"""`/assemble`: messages from templates, their manifests, audio and proof."""

from __future__ import annotations

import functools
import os
from enum import StrEnum
from typing import Annotated, Any

from anyio import CapacityLimiter, to_thread
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import FileResponse
from pydantic import BaseModel

from hybrid_audio.api.audio import VerifiedAudio
from hybrid_audio.api.deps import WorkspaceDep
from hybrid_audio.api.errors import not_found
from hybrid_audio.api.models import (
    AssembleRequest,
    AssembleResponse,
    PageLimit,
    PageOffset,
    model_response,
    set_page_headers,
)
from hybrid_audio.assembly import OutputSummary
from hybrid_audio.bitmerge import VerifyReport
from hybrid_audio.delivery import FORMATS, file_name, read_delivery
from hybrid_audio.workspace import Workspace

router = APIRouter(prefix="/assemble", tags=["assemble"])

#: The delivery formats, an enum in the OpenAPI schema (an unknown one is a 422 naming them).
DeliveryName = StrEnum("DeliveryName", {name: name for name in FORMATS})
_AUDIO_TYPES = {kind.media_type: {} for kind in FORMATS.values()}
#: Read once: `os.cpu_count()` reads a file under /sys on every call.
CORES = os.cpu_count() or 1


class DeliveryFormatInfo(BaseModel):
    """A format `GET /assemble/outputs/{id}/audio?format=` delivers."""

    name: str
    suffix: str
    media_type: str
    description: str


def _known(workspace: Workspace, output_id: str) -> str:
    try:
        workspace.assembler.load_output(output_id)
    except KeyError:
        raise not_found(f"output {output_id!r}") from None
    return output_id


def assembly_slots(request: Request, workspace: Workspace) -> CapacityLimiter:
    """The assemblies this process runs at once: the cores, or the engine's parallel
    syntheses when that is more (a stem missing under Cartesia waits on the network).

    An assembly is Python work under the GIL plus three fsyncs; on FastAPI's default pool
    of 40 threads, 16 clients made 16 threads take turns at the GIL, and each message cost
    more CPU the more threads were awake (benchmarks/bench_scale.py: 2 threads on 2 cores
    served the most messages a second). Requests past the slots wait their turn here,
    holding no thread.
    """
    slots: CapacityLimiter | None = getattr(request.app.state, "assembly_slots", None)
    if slots is None:  # made on the app's own event loop, on first use
        slots = request.app.state.assembly_slots = CapacityLimiter(1)
    wanted = max(CORES, workspace.generator.workers)
    if slots.total_tokens != wanted:  # the engine (its parallel syntheses) may change
        slots.total_tokens = wanted
    return slots


@router.post("/template", response_model=AssembleResponse, summary="Assemble one message")
async def assemble_template(
    body: AssembleRequest, request: Request, workspace: WorkspaceDep
) -> Response:
    assemble = functools.partial(
        workspace.assembler.assemble,
        body.template,
        name=body.name,
        developer=body.developer,
        script=body.script,
        slots=body.slots,
        generate_missing=body.generate_missing,
        mode=body.mode,
    )
    result = await to_thread.run_sync(assemble, limiter=assembly_slots(request, workspace))
    summary = result.summary
    return model_response(
        AssembleResponse(
            id=summary.id,
            duration=summary.duration,
            sha256=summary.sha256,
            verified=result.report.ok,
            summary=summary,
            report=result.report,
            audio_url=f"/assemble/outputs/{summary.id}/audio",
        )
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


@router.get("/formats", response_model=list[DeliveryFormatInfo], summary="Delivery formats")
def list_formats() -> list[DeliveryFormatInfo]:
    """What `?format=` of an output's audio takes (the CLI asks here)."""
    return [
        DeliveryFormatInfo(
            name=k.name, suffix=k.suffix, media_type=k.media_type, description=k.description
        )
        for k in FORMATS.values()
    ]


@router.get(
    "/outputs/{output_id}/audio",
    response_class=FileResponse,
    responses={200: {"content": _AUDIO_TYPES}, 206: {"content": _AUDIO_TYPES}},
    summary="The message's audio: the WAV master or a delivery format (Range requests supported)",
)
def get_output_audio(
    output_id: str,
    workspace: WorkspaceDep,
    fmt: Annotated[
        DeliveryName,
        Query(
            alias="format",
            description="wav: the master; other formats are encoded from it once, cached, "
            "and recorded in the manifest's `deliveries`.",
        ),
    ] = DeliveryName.wav,
) -> FileResponse:
    """The bytes the manifest recorded (a delivery: the bytes its record holds, encoded
    from the proven master): 409 if the master changed or a file is a symbolic link."""
    try:
        record, data, info = read_delivery(workspace.assembler, output_id, fmt.value)
    except KeyError:
        raise not_found(f"output {output_id!r}") from None
    media_type = FORMATS[record.format].media_type
    return VerifiedAudio(data, info, file_name(output_id, record.format), media_type)


# HEAD, for players and caches that probe size and Range support first: `VerifiedAudio`
# answers it with the headers alone. Out of the OpenAPI document, which has the GET.
router.add_api_route(
    "/outputs/{output_id}/audio", get_output_audio, methods=["HEAD"], include_in_schema=False
)


@router.get(
    "/outputs/{output_id}/verify", response_model=VerifyReport, summary="Re-verify from disk"
)
def verify_output(output_id: str, workspace: WorkspaceDep) -> VerifyReport:
    return workspace.assembler.verify_output(_known(workspace, output_id))
