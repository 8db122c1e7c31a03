"""One error envelope for every failure: `{"error": {"code", "message", "details"?}}`.

Core exceptions are mapped to statuses here, once, so routes just call the core. Anything
unexpected becomes a 500 with a generic message and an id that points at the server log;
no stack trace ever reaches a client. Stored state that cannot be trusted is a 409 (a stem
or output changed on disk: `corrupt_audio`; a stored file that is a symbolic link:
`unsafe_file`); a disk that refuses a write is a 507 when full and a 503 when read-only,
with a message naming the folder. A bucket that refuses or cannot be reached is a 503
`storage_unavailable` naming the bucket (also in `details`); an upload that would overwrite
an object is a 409 `object_exists`, bytes that fail their CRC32C a 409 `checksum_mismatch`.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from hybrid_audio.assembly import AssemblyError, CorruptOutputError
from hybrid_audio.cache import CorruptStemError
from hybrid_audio.database import StateDatabaseError
from hybrid_audio.datasets import DatasetError
from hybrid_audio.engines import (
    EngineConfigError,
    EngineError,
    EngineQuotaError,
    InvalidTextError,
)
from hybrid_audio.files import StorageError, UnsafeFileError
from hybrid_audio.jobs import JobCancelledError
from hybrid_audio.storage.base import (
    ChecksumMismatchError,
    ObjectExistsError,
    ObjectMissingError,
    StorageUnavailableError,
)
from hybrid_audio.templates import TemplateError
from hybrid_audio.wav import WavError

_HTTP_CODES = {
    400: "bad_request",
    500: "internal_error",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    416: "range_not_satisfiable",
    422: "validation_error",
    429: "rate_limited",
    503: "unavailable",
    507: "insufficient_storage",
}
#: Exceptions that are expected outcomes (bad input, engine down, state gone), not bugs.
CORE_ERRORS = (
    ValueError,
    EngineError,
    JobCancelledError,
    StateDatabaseError,
    StorageUnavailableError,
    ObjectMissingError,
)


class ApiError(Exception):
    """An error a route raises on purpose, with its status and code."""

    def __init__(self, status: int, message: str, code: str | None = None, details: Any = None):
        super().__init__(message)
        self.status = status
        self.code = code or _HTTP_CODES.get(status, "error")
        self.message = message
        self.details = details


def not_found(what: str) -> ApiError:
    return ApiError(404, f"{what} not found")


def envelope_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    return {"error": body}


def envelope(status: int, code: str, message: str, details: Any = None) -> JSONResponse:
    return JSONResponse(envelope_body(code, message, details), status_code=status)


def code_for(status: int) -> str:
    return _HTTP_CODES.get(status, "internal_error" if status >= 500 else "error")


def _status_for(error: Exception) -> tuple[int, str]:
    """Status and code of a core exception (order matters: subclasses first)."""
    if isinstance(error, TemplateError):
        return (
            (404, "not_found")
            if str(error).startswith("unknown template")
            else (422, "invalid_template")
        )
    if isinstance(error, WavError | CorruptStemError | CorruptOutputError):
        return 409, "corrupt_audio"
    if isinstance(error, InvalidTextError | AssemblyError | DatasetError):
        return 422, "validation_error"
    if isinstance(error, EngineQuotaError):
        return 429, "rate_limited"
    if isinstance(error, EngineConfigError):
        return 503, "engine_misconfigured"
    if isinstance(error, EngineError):
        return 503, "engine_unavailable"
    if isinstance(error, JobCancelledError):
        return 409, "cancelled"
    if isinstance(error, StateDatabaseError):
        return 503, "state_unavailable"
    if isinstance(error, StorageUnavailableError):
        return 503, "storage_unavailable"
    if isinstance(error, ObjectMissingError):
        return 404, "not_found"
    if isinstance(error, ObjectExistsError):
        return 409, "object_exists"
    if isinstance(error, ChecksumMismatchError):
        return 409, "checksum_mismatch"
    return 422, "validation_error"  # any other ValueError: the input was not acceptable


def _details_for(error: Exception) -> dict[str, str] | None:
    """What a client may act on besides the message: the bucket that is unavailable."""
    if isinstance(error, StorageUnavailableError):
        return {"bucket": error.bucket}
    return None


def _storage_status(error: StorageError) -> tuple[int, str]:
    return (507, "insufficient_storage") if error.no_space else (503, "storage_read_only")


def ndjson_response(lines: Iterable[str]) -> StreamingResponse:
    """NDJSON whose first line is made before the status is sent.

    An error before the first line is an ordinary error response (a 503 when the state is
    gone, say). Once streaming the status is out, so a core error becomes a last line
    `{"error": {"code", "message"}}` and the stream ends cleanly: a client never has to
    guess why a body stopped.
    """
    iterator = iter(lines)
    first = next(iterator, None)

    def stream() -> Iterator[str]:
        if first is None:
            return
        yield first
        try:
            yield from iterator
        except CORE_ERRORS as error:
            _, code = _status_for(error)
            body = envelope_body(code, str(error), _details_for(error))
            yield json.dumps(body, ensure_ascii=False) + "\n"

    return StreamingResponse(stream(), media_type="application/x-ndjson")


def install(app: FastAPI, *, guard: Callable[[Request], Awaitable[None]] | None = None) -> None:
    """Register the handlers that turn every failure into the envelope.

    `guard` is the access check every route with inputs depends on (the one public
    route, `/health`, takes none, so it never fails validation). FastAPI reads and decodes
    a JSON body before it solves a route's dependencies, so a malformed body reached the
    client as a 422 before the key was looked at; an invalid request is checked by `guard`
    first, and a caller without access gets its 401 (403, 429) instead.
    """

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, error: ApiError) -> JSONResponse:
        return envelope(error.status, error.code, error.message, error.details)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(error.status_code, "error")
        response = envelope(error.status_code, code, str(error.detail))
        response.headers.update(error.headers or {})  # e.g. Allow on a 405
        return response

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        if guard is not None:
            try:
                await guard(request)
            except ApiError as refused:
                return await _api_error(request, refused)
            except StarletteHTTPException as refused:
                return await _http_error(request, refused)
        problems = [
            {"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]}
            for e in error.errors()
        ]
        first = problems[0] if problems else {"field": "", "message": "invalid request"}
        return envelope(422, "validation_error", f"{first['field']}: {first['message']}", problems)

    async def _core_error(request: Request, error: Exception) -> JSONResponse:
        status, code = _status_for(error)
        return envelope(status, code, str(error), _details_for(error))

    # Core exceptions are expected outcomes (bad input, engine down): no traceback logged.
    for kind in CORE_ERRORS:
        app.add_exception_handler(kind, _core_error)

    @app.exception_handler(UnsafeFileError)
    async def _unsafe_file(request: Request, error: UnsafeFileError) -> JSONResponse:
        return envelope(409, "unsafe_file", str(error))

    @app.exception_handler(StorageError)
    async def _storage(request: Request, error: StorageError) -> JSONResponse:
        status, code = _storage_status(error)
        base = request.app.state.workspace.settings.base_dir
        return envelope(status, code, error.describe(base))

    # Unexpected exceptions are answered by `middleware.CatchAll`, not by a handler for
    # Exception: Starlette would re-raise after such a handler, and uvicorn would then drop
    # the keep-alive connection under the client.
