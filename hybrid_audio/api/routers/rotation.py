"""`/rotation`: the deterministic walk over names, developers, scripts and pairs.

`next_*` are GETs because clients read them like a feed; each call advances a cursor.
Streams are NDJSON, one step per line. They follow the reader (backpressure): a chunk of
`STREAM_CHUNK` positions is reserved only once the previous chunk has been handed to the
connection, and the server's socket keeps little unsent (`server.SEND_LOWAT_BYTES`), so a
reader that takes 10 of 100,000 lines and hangs up costs the rotation at most
`STREAM_LOSS_BOUND` positions, not the whole count.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from hybrid_audio.api.deps import WorkspaceDep
from hybrid_audio.api.errors import ndjson_response
from hybrid_audio.api.models import GeneratePairRequest, ResetRequest, StreamPath
from hybrid_audio.rotation import STREAM_CHUNK, RotationStep, StreamState
from hybrid_audio.workspace import PairMessage

router = APIRouter(prefix="/rotation", tags=["rotation"])
#: Most positions a reader that stalls and hangs up can cost the rotation beyond the lines it
#: read, not counting what its own receive buffers held: one chunk reserved but not yet
#: written (`STREAM_CHUNK`) plus the lines the server's buffers hold (`server.py`: at most
#: WRITE_BUFFER_BYTES in uvicorn and the kernel's last unsent segment, each plus one write).
#: Measured on Linux loopback with a 4 KiB client receive buffer: 214 (pairs and scripts);
#: a default httpx reader adds ~450 of its own (its 128 KiB receive buffer) for ~670;
#: without those limits it was ~14,000.
STREAM_LOSS_BOUND = 256
Count = Annotated[int, Query(ge=1, le=100_000, description="How many steps to stream.")]
_NDJSON = {200: {"content": {"application/x-ndjson": {}}, "description": "One step per line."}}


@router.get("/next_name", response_model=RotationStep, summary="The next name")
def next_name(workspace: WorkspaceDep) -> RotationStep:
    return workspace.rotation.step("name")


@router.get("/next_developer", response_model=RotationStep, summary="The next developer")
def next_developer(workspace: WorkspaceDep) -> RotationStep:
    return workspace.rotation.step("developer")


@router.get("/next_script", response_model=RotationStep, summary="The next script key")
def next_script(workspace: WorkspaceDep) -> RotationStep:
    return workspace.rotation.step("script")


@router.get("/next_pair", response_model=RotationStep, summary="The next name × developer")
def next_pair(workspace: WorkspaceDep) -> RotationStep:
    return workspace.rotation.next_pair_step()


@router.get("/next/{stream}", response_model=RotationStep, summary="The next step of any stream")
def next_step(stream: StreamPath, workspace: WorkspaceDep) -> RotationStep:
    """Any stream of `GET /rotation/state` (added kinds too); the `next_*` routes name the
    built-in ones."""
    return workspace.rotation.step(stream)


@router.post("/generate_pair", response_model=PairMessage, summary="Next pair → message")
def generate_pair(body: GeneratePairRequest, workspace: WorkspaceDep) -> PairMessage:
    return workspace.generate_pair(body.template, join=body.mode)


def _ndjson(chunks: Iterator[list[RotationStep]]) -> StreamingResponse:
    """One body message per chunk: the generator is resumed (and the next chunk reserved)
    only after the previous message was accepted by the connection."""
    return ndjson_response("".join(s.model_dump_json() + "\n" for s in chunk) for chunk in chunks)


@router.get("/pairs_stream", response_class=StreamingResponse, responses=_NDJSON)
def pairs_stream(count: Count, workspace: WorkspaceDep) -> StreamingResponse:
    """`count` pairs, taken `STREAM_CHUNK` at a time as the reader consumes them."""
    return _ndjson(workspace.rotation.chunks("pair", count, STREAM_CHUNK))


@router.get("/scripts_stream", response_class=StreamingResponse, responses=_NDJSON)
def scripts_stream(count: Count, workspace: WorkspaceDep) -> StreamingResponse:
    """`count` script keys, taken `STREAM_CHUNK` at a time as the reader consumes them."""
    return _ndjson(workspace.rotation.chunks("script", count, STREAM_CHUNK))


@router.get("/state", response_model=dict[str, StreamState], summary="Every stream's cursor")
def state(workspace: WorkspaceDep) -> dict[str, StreamState]:
    return workspace.rotation.state()


@router.post("/reset", response_model=StreamState, summary="Start a stream again")
def reset(body: ResetRequest, workspace: WorkspaceDep) -> StreamState:
    return workspace.rotation.reset(body.stream)
