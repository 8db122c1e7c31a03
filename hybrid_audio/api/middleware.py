"""ASGI middleware: a request-body size limit and one JSON line per request.

The limit counts the bytes actually received, so a client that lies in Content-Length or
streams a chunked body cannot get past it. The request log records method, route template,
status and milliseconds — never headers, so no key can reach it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hybrid_audio.api.errors import code_for, envelope_body
from hybrid_audio.logs import JsonlLog

log = logging.getLogger("hybrid_audio.api")


async def send_json(send: Send, status: int, document: dict, headers: list | None = None) -> None:
    body = json.dumps(document, ensure_ascii=False).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """Answer 413 (in the error envelope) to bodies larger than `max_bytes`.

    `larger` gives single paths their own, larger limit (path → bytes: campaign uploads);
    every other path keeps `max_bytes`. A declared Content-Length over the limit is refused
    before reading; a declared body is also counted as it arrives, in case the declaration
    lies. A body without a length (chunked) is read completely — at most the limit — before
    the app sees any of it, so an oversized request never runs, not even on the part that
    arrived.
    """

    def __init__(
        self, app: ASGIApp, max_bytes: int, larger: Mapping[str, int] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.larger = dict(larger or {})

    @staticmethod
    def _refusal(limit: int) -> dict:
        return envelope_body("payload_too_large", f"request body larger than {limit} bytes")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.larger.get(scope["path"], self.max_bytes)
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit():
            if int(declared) > limit:
                await send_json(send, 413, self._refusal(limit))
                return
            await self._counted(scope, receive, send, limit)
            return
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > limit:
                await send_json(send, 413, self._refusal(limit))
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _counted(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        """A declared body: pass it through, stopping it at the limit if it lies."""
        received, too_large = 0, False

        async def counting_receive() -> Message:
            nonlocal received, too_large
            if too_large:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    too_large = True
                    return {"type": "http.request", "body": b"", "more_body": False}
            return message

        async def replacing_send(message: Message) -> None:
            if not too_large:
                await send(message)
            elif message["type"] == "http.response.start":
                await send_json(send, 413, self._refusal(limit))

        await self.app(scope, counting_receive, replacing_send)


class ReadTimeout:
    """Answer 408 to a request whose body stops arriving for `seconds`.

    uvicorn bounds idle connections and slow headers (see `server.py`), but once the headers
    are in, the app waits for the body as long as the client likes; a client trickling a
    body (or sending none after declaring one) would hold a worker thread forever. Each
    wait for the next body part is bounded; after the last part (`more_body` false) reads
    pass through untouched, so a streamed response can still wait for the disconnect.
    """

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body_done, started, timed_out = False, False, False

        async def bounded_receive() -> Message:
            nonlocal body_done, started, timed_out
            if body_done:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.seconds)
            except TimeoutError:
                timed_out = True
                if not started:
                    started = True
                    text = f"the request body did not arrive within {self.seconds:g} s"
                    await send_json(
                        send,
                        408,
                        envelope_body("request_timeout", text),
                        [(b"connection", b"close")],
                    )
                return {"type": "http.disconnect"}  # the app stops as if the client left
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if timed_out:
                return  # answered with 408 already
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, bounded_receive, tracking_send)


class EnvelopeErrors:
    """Give every error response the envelope, and never let an exception escape.

    Some errors are answered below FastAPI's handlers (Starlette's FileResponse answers a
    bad Range with text/plain 400/416); their bodies are rewritten here. An unexpected
    exception becomes a 500 with an incident id — the traceback goes to the server log,
    never to the client — and, unlike Starlette's own last-resort handler, nothing is
    re-raised, so the keep-alive connection survives.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False
        held: Message | None = None  # a non-JSON error's start, until its body arrives

        async def enveloping_send(message: Message) -> None:
            nonlocal started, held
            if message["type"] == "http.response.start":
                started = True
                headers = dict(message.get("headers", []))
                is_json = headers.get(b"content-type", b"").startswith(b"application/json")
                if message["status"] >= 400 and not is_json:
                    held = message
                    return
                await send(message)
            elif held is not None:
                if message.get("more_body"):
                    return  # drop the original body; ours replaces it
                status = held["status"]
                text = message.get("body", b"").decode(errors="replace").strip()
                keep = [(k, v) for k, v in held.get("headers", []) if k == b"content-range"]
                await send_json(
                    send, status, envelope_body(code_for(status), text or "error"), keep
                )
                held = None
            else:
                await send(message)

        try:
            await self.app(scope, receive, enveloping_send)
        except Exception:
            incident = uuid.uuid4().hex[:12]
            log.exception("unhandled error %s on %s %s", incident, scope["method"], scope["path"])
            if not started:
                await send_json(
                    send,
                    500,
                    envelope_body("internal_error", f"internal error (incident {incident})"),
                )


class RequestLog:
    """Append `api_request` lines: method, route, status, ms."""

    def __init__(self, app: ASGIApp, log: JsonlLog) -> None:
        self.app = app
        self.log = log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            route = scope.get("route")
            self.log.write(
                "api_request",
                method=scope["method"],
                route=getattr(route, "path", scope["path"]),
                status=status,
                ms=round((time.perf_counter() - start) * 1000, 2),
            )
