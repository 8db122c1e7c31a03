"""`/rotation`: the deterministic walk over names, developers, scripts and pairs.

`next_*` are GETs because clients read them like a feed; each call advances a cursor.
Streams are NDJSON, one step per line, written as each step is taken.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from hybrid_audio.api.errors import ndjson_response
from hybrid_audio.api.models import GeneratePairRequest, ResetRequest
from hybrid_audio.api.services import Shared
from hybrid_audio.rotation import PairMessage, RotationStep, StreamState

router = APIRouter(prefix="/rotation", tags=["rotation"])
Count = Annotated[int, Query(ge=1, le=100_000, description="How many steps to stream.")]
_NDJSON = {200: {"content": {"application/x-ndjson": {}}, "description": "One step per line."}}


@router.get("/next_name", response_model=RotationStep, summary="The next name")
def next_name(shared: Shared) -> RotationStep:
    return shared.rotation.step("name")


@router.get("/next_developer", response_model=RotationStep, summary="The next developer")
def next_developer(shared: Shared) -> RotationStep:
    return shared.rotation.step("developer")


@router.get("/next_script", response_model=RotationStep, summary="The next script key")
def next_script(shared: Shared) -> RotationStep:
    return shared.rotation.step("script")


@router.get("/next_pair", response_model=RotationStep, summary="The next name × developer")
def next_pair(shared: Shared) -> RotationStep:
    return shared.rotation.next_pair_step()


@router.post("/generate_pair", response_model=PairMessage, summary="Next pair → message")
def generate_pair(body: GeneratePairRequest, shared: Shared) -> PairMessage:
    return shared.rotation.generate_pair(body.template)


def _ndjson(steps: Iterator[RotationStep]) -> StreamingResponse:
    return ndjson_response(step.model_dump_json() + "\n" for step in steps)


@router.get("/pairs_stream", response_class=StreamingResponse, responses=_NDJSON)
def pairs_stream(count: Count, shared: Shared) -> StreamingResponse:
    """`count` pairs, each taken and sent as it is produced."""
    return _ndjson(shared.rotation.steps("pair", count))


@router.get("/scripts_stream", response_class=StreamingResponse, responses=_NDJSON)
def scripts_stream(count: Count, shared: Shared) -> StreamingResponse:
    """`count` script keys, each taken and sent as it is produced."""
    return _ndjson(shared.rotation.steps("script", count))


@router.get("/state", response_model=dict[str, StreamState], summary="Every stream's cursor")
def state(shared: Shared) -> dict[str, StreamState]:
    return shared.rotation.state()


@router.post("/reset", response_model=StreamState, summary="Start a stream again")
def reset(body: ResetRequest, shared: Shared) -> StreamState:
    return shared.rotation.reset(body.stream)
