"""`/campaigns`: a recipient list (or the next N rotation pairs) + a template → a job that
makes every message, proves it, and keeps it for export as one zip.

`POST /campaigns` and `POST /campaigns/preview` take a JSON body (`recipients` or
`rotation`) or a multipart upload (`file`: the CSV or JSON list as it is on disk,
`template`, optional `join`). Their bodies may be up to `MAX_CAMPAIGN_BYTES` (32 MiB, or
MAX_BODY_BYTES if larger: `app.py` gives these two paths their own limit) and hold at most
`MAX_RECIPIENTS` rows. A file that cannot be read as a list is a 422 naming the problem; a
refused row is listed by row number and the others go on; a list with no row that can be
made is a 422 whose `details` are the refused rows. The work (parsing, planning, writing
the rows) runs in the threadpool, never on the event loop.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field, TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from hybrid_audio.api.deps import WorkspaceDep
from hybrid_audio.api.errors import ApiError, not_found
from hybrid_audio.api.models import (
    MAX_PAGE,
    CampaignBody,
    CampaignDetail,
    CampaignStarted,
    PageLimit,
    PageOffset,
    RecipientsCampaign,
    set_page_headers,
)
from hybrid_audio.api.routers.assemble import DeliveryName
from hybrid_audio.campaign import (
    CampaignError,
    CampaignInfo,
    CampaignPlan,
    CampaignState,
    MessageRow,
)
from hybrid_audio.recipients import RecipientList, parse_recipients, recipients_from_dicts
from hybrid_audio.workspace import Workspace

#: Largest campaign body (upload or JSON): above the general limit, for long lists.
MAX_CAMPAIGN_BYTES = 32 * 1024 * 1024
#: Refused rows a 422 for "no row can be made" lists in `details`.
MAX_DETAILS = 100

router = APIRouter(prefix="/campaigns", tags=["campaigns"])
_BODY = TypeAdapter(CampaignBody)


class _FormFields(BaseModel):
    template: str = Field(min_length=1, max_length=80)
    join: Literal["exact", "hybrid"] | None = None


def _inline(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` with its `$defs` references replaced by the definitions (an operation's
    request body cannot point into a model's own `$defs`)."""
    definitions = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return resolve(definitions[ref.removeprefix("#/$defs/")])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(value) for value in node]
        return node

    return resolve(schema)


#: The two request forms, published as the operations' request body.
_REQUEST_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": _inline(_BODY.json_schema())},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "template"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "The list: CSV with a header (name, developer, "
                            "optional script and id) or a JSON list of objects, UTF-8.",
                        },
                        "template": {"type": "string", "minLength": 1, "maxLength": 80},
                        "join": {"type": "string", "enum": ["exact", "hybrid"]},
                    },
                }
            },
        },
    }
}
_UNSUPPORTED = {415: {"description": "A body that is neither JSON nor multipart/form-data"}}


def _invalid(error: ValidationError, prefix: tuple[str, ...] = ("body",)) -> RequestValidationError:
    """A pydantic error as FastAPI's own 422 (the envelope's field/message list)."""
    return RequestValidationError(
        [{**e, "loc": (*prefix, *e["loc"])} for e in error.errors(include_url=False)]
    )


async def _read(request: Request) -> tuple[str, str | None, RecipientList | None, Any]:
    """(template, join, recipients or None, rotation or None) from either request form."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media == "multipart/form-data":
        async with request.form(max_files=1, max_fields=8) as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise ApiError(422, "file: upload the recipient list as the `file` part")
            try:
                fields = _FormFields.model_validate(
                    {k: v for k, v in form.items() if k in ("template", "join")}
                )
            except ValidationError as error:
                raise _invalid(error) from None
            data = await upload.read()
            name = upload.filename
        recipients = await run_in_threadpool(parse_recipients, data, name)
        return fields.template, fields.join, recipients, None
    if media == "application/json" or media.endswith("+json"):
        return await run_in_threadpool(_from_json, await request.body())
    raise ApiError(
        415,
        f"send the campaign as application/json or multipart/form-data, not {media or 'nothing'}",
        code="unsupported_media_type",
    )


def _from_json(data: bytes) -> tuple[str, str | None, RecipientList | None, Any]:
    """`_read`'s answer for a JSON body: validating and checking 100,000 rows takes
    seconds, so this runs in the threadpool."""
    try:
        body = _BODY.validate_json(data)
    except ValidationError as error:
        raise _invalid(error) from None
    if isinstance(body, RecipientsCampaign):
        items = [r.model_dump(exclude_none=True) for r in body.recipients]
        return body.template, body.join, recipients_from_dicts(items), None
    return body.template, body.join, None, body.rotation


def _usable(recipients: RecipientList) -> RecipientList:
    """The list, unless no row of it can be made (then a 422 naming the refused rows)."""
    if recipients.rows:
        return recipients
    if not recipients.problems:
        raise ApiError(422, "the recipient list holds no recipients")
    problems = [p.model_dump() for p in recipients.problems[:MAX_DETAILS]]
    raise ApiError(
        422,
        f"no row of the recipient list can be made: {len(recipients.problems)} refused, "
        f"the first on row {problems[0]['row']}: {problems[0]['message']}",
        details=problems,
    )


def _campaign(workspace: Workspace, campaign_id: str) -> CampaignInfo:
    try:
        return workspace.campaigns.get(campaign_id)
    except KeyError:
        raise not_found(f"campaign {campaign_id!r}") from None


def _conflict[T](call: Callable[[], T]) -> T:
    """`call()`, its CampaignError (already running, done, contract changed) as a 409."""
    try:
        return call()
    except CampaignError as error:
        raise ApiError(409, str(error)) from None


def _started(workspace: Workspace, campaign_id: str, job: Any, response: Response) -> Any:
    response.headers["Location"] = f"/campaigns/{campaign_id}"
    return CampaignStarted(campaign=workspace.campaigns.get(campaign_id), job=job.info())


_LOCATION = {
    202: {
        "headers": {
            "Location": {
                "description": "The campaign: /campaigns/{id}",
                "schema": {"type": "string"},
            }
        }
    }
}


@router.post(
    "",
    response_model=CampaignStarted,
    status_code=202,
    summary="Start a campaign from a recipient list (JSON or uploaded file) or rotation pairs",
    openapi_extra=_REQUEST_BODY,
    responses={**_UNSUPPORTED, **_LOCATION},
)
async def create_campaign(
    request: Request,
    response: Response,
    workspace: WorkspaceDep,
    store: Annotated[
        Literal["wav", "manifest"],
        Query(
            description="wav: keep each message's WAV; manifest: keep only its manifest "
            "(~1 KB) and render the audio from the cached stems on request.",
        ),
    ] = "wav",
) -> CampaignStarted:
    template, join, recipients, rotation = await _read(request)

    def create() -> CampaignStarted:
        campaigns = workspace.campaigns
        if recipients is not None:
            info = campaigns.create(template, _usable(recipients), join=join, store=store)
        else:
            info = campaigns.create(
                template, rotation_count=rotation.count, seed=rotation.seed, join=join, store=store
            )
        job = campaigns.start(info.id, source="api")
        return _started(workspace, info.id, job, response)

    return await run_in_threadpool(create)


@router.post(
    "/preview",
    response_model=CampaignPlan,
    summary="What a campaign would make: rows accepted and refused, stems to make vs cached",
    openapi_extra=_REQUEST_BODY,
    responses=_UNSUPPORTED,
)
async def preview_campaign(request: Request, workspace: WorkspaceDep) -> CampaignPlan:
    """Nothing is written; a rotation source previews pairs without taking them."""
    template, join, recipients, rotation = await _read(request)

    def plan() -> CampaignPlan:
        campaigns = workspace.campaigns
        listed = recipients or campaigns.rotation_preview(template, rotation.count, rotation.seed)
        return campaigns.plan(template, listed, join=join)

    return await run_in_threadpool(plan)


@router.get("", response_model=list[CampaignInfo], summary="Campaigns, newest first")
def list_campaigns(
    workspace: WorkspaceDep, response: Response, offset: PageOffset = 0, limit: PageLimit = 100
) -> list[CampaignInfo]:
    campaigns = workspace.campaigns.list(offset, limit)
    set_page_headers(response, offset, len(campaigns), workspace.campaigns.count())
    return campaigns


@router.get(
    "/{campaign_id}", response_model=CampaignDetail, summary="State, counts and failed rows"
)
def get_campaign(campaign_id: str, workspace: WorkspaceDep) -> CampaignDetail:
    info = _campaign(workspace, campaign_id)
    problems = workspace.campaigns.problems(campaign_id, MAX_PAGE)
    return CampaignDetail(**info.model_dump(), problems=problems)


@router.get(
    "/{campaign_id}/messages",
    response_model=list[MessageRow],
    summary="A page of the campaign's messages, by row number",
)
def campaign_messages(
    campaign_id: str,
    workspace: WorkspaceDep,
    response: Response,
    offset: PageOffset = 0,
    limit: PageLimit = 100,
    state: Literal["pending", "done", "failed"] | None = None,
    search: str | None = Query(
        default=None, max_length=256, description="Part of a name, developer, script or id."
    ),
) -> list[MessageRow]:
    """`X-Total-Count`/`X-Next-Offset` as for `/jobs`; with `search` the total is not
    known, so only `X-Next-Offset` is sent, whenever the page is full."""
    info = _campaign(workspace, campaign_id)
    rows = workspace.campaigns.messages(campaign_id, offset, limit, state, search or None)
    if search:
        if len(rows) == limit:
            response.headers["X-Next-Offset"] = str(offset + limit)
    else:
        total = {"pending": info.pending, "done": info.done, "failed": info.failed}
        set_page_headers(response, offset, len(rows), total.get(state or "", info.total))
    return rows


@router.get(
    "/{campaign_id}/export.zip",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/zip": {}}, "description": "The campaign zip"}},
    summary="The campaign as a zip: audio by recipient, messages.csv, manifests (streamed)",
)
def export_campaign(
    campaign_id: str,
    workspace: WorkspaceDep,
    fmt: Annotated[
        DeliveryName,
        Query(
            alias="format",
            description="Each message's audio: wav (the masters) or a delivery format, "
            "encoded once from the master and recorded in its manifest.",
        ),
    ] = DeliveryName.wav,
) -> StreamingResponse:
    info = _campaign(workspace, campaign_id)
    if info.done == 0:
        raise ApiError(409, f"campaign {campaign_id} has no finished message yet")
    chunks = workspace.campaigns.export_zip(campaign_id, fmt.value)
    first = next(chunks, b"")  # a message that fails its check before any byte: an error status
    return StreamingResponse(
        itertools.chain([first], chunks),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{campaign_id}.zip"'},
    )


@router.post(
    "/{campaign_id}/cancel",
    response_model=CampaignInfo,
    summary="Stop a campaign after its current message (resume continues it)",
)
def cancel_campaign(campaign_id: str, workspace: WorkspaceDep) -> CampaignInfo:
    info = _campaign(workspace, campaign_id)
    if info.state in (CampaignState.DONE, CampaignState.FAILED):
        raise ApiError(409, f"campaign {campaign_id} is {info.state.value}: nothing to cancel")
    return _conflict(lambda: workspace.campaigns.cancel(campaign_id))


@router.post(
    "/{campaign_id}/resume",
    response_model=CampaignStarted,
    status_code=202,
    responses=_LOCATION,
    summary="Continue a cancelled, paused or interrupted campaign (finished messages kept)",
)
def resume_campaign(
    campaign_id: str, workspace: WorkspaceDep, response: Response
) -> CampaignStarted:
    """409 while it runs, once it is done, and while the voice contract differs from the
    one the campaign was started with (the message says so)."""
    _campaign(workspace, campaign_id)
    job = _conflict(lambda: workspace.campaigns.resume(campaign_id, source="api"))
    return _started(workspace, campaign_id, job, response)


@router.delete(
    "/{campaign_id}",
    status_code=204,
    response_class=Response,
    summary="Erase a campaign: its recipients, messages, exports and jobs (409 while running)",
)
def delete_campaign(campaign_id: str, workspace: WorkspaceDep) -> Response:
    _campaign(workspace, campaign_id)
    _conflict(lambda: workspace.campaigns.delete(campaign_id))
    return Response(status_code=204)
