"""`VerifiedAudio`: stored audio served from the bytes that were checked, never re-opened.

Starlette's `FileResponse` opens its path again when it sends, so a file swapped for a
symbolic link, or rewritten, between the route's checks and the send would reach the
client unchecked. The audio routes read a file once — through a descriptor that refuses
links (`files.read_inside`) — prove the bytes against their recorded sha256, and hand those
bytes to this response, which keeps all of `FileResponse`'s Range, HEAD and If-Range
handling. Stems and messages are seconds of audio, so holding one in memory is cheap.
"""

from __future__ import annotations

import io
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi.responses import FileResponse
from starlette.types import Receive, Scope, Send

_PATHSEND = "http.response.pathsend"


class VerifiedAudio(FileResponse):
    """Audio (`audio/wav` unless told) from bytes in memory, with `FileResponse`'s Range
    support."""

    def __init__(
        self, data: bytes, info: os.stat_result, filename: str, media_type: str = "audio/wav"
    ) -> None:
        size_fixed = os.stat_result(
            (*info[:6], len(data), int(info.st_atime), int(info.st_mtime), int(info.st_ctime))
        )
        # The path is only a name: nothing is ever opened by it (see _open_file).
        super().__init__(filename, media_type=media_type, filename=filename, stat_result=size_fixed)
        self._data = data

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # A server offering "pathsend" would be handed the path instead of the bytes.
        extensions = {k: v for k, v in scope.get("extensions", {}).items() if k != _PATHSEND}
        await super().__call__({**scope, "extensions": extensions}, receive, send)

    @asynccontextmanager
    async def _open_file(self) -> AsyncIterator[anyio.AsyncFile[bytes]]:
        yield anyio.wrap_file(io.BytesIO(self._data))
