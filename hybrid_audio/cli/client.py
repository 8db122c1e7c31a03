"""The HTTP transport of the CLI: one `Api` per invocation, every failure a one-line `CliError`.

It sends the key from `INTERNAL_API_KEY` (never an option, never printed or logged), waits
`timeout` seconds per request, follows paginated lists, streams bodies, and learns the server's
stem kinds from `GET /kinds`. It never renders anything and never imports the core: the
server's wire contract is the only thing the CLI shares with it.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from hybrid_audio.cli.calllog import Invocation

DEFAULT_URL = "http://127.0.0.1:8000"
URL_VAR = "HYBRID_AUDIO_API_URL"
KEY_VAR = "INTERNAL_API_KEY"
KEY_HEADER = "X-Internal-API-Key"
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_INTERRUPTED = 130
#: Rows the server returns at most per page of a list route (its `MAX_PAGE`).
PAGE_MAX = 1000


class CliError(Exception):
    """A failure the user should see as one line, with the exit code it deserves."""

    def __init__(
        self, message: str, exit_code: int = EXIT_REFUSED, status: int | None = None
    ) -> None:
        super().__init__(message)
        self.message = " ".join(message.split())  # one line, whatever the server sent
        self.exit_code = exit_code
        self.status = status  # the HTTP status that caused it, if any


@dataclass(frozen=True)
class Kind:
    """One stem kind as the server's `GET /kinds` describes it."""

    name: str
    plural: str
    aliases: tuple[str, ...]
    form: str
    dataset: str
    rotation: bool

    @property
    def spellings(self) -> frozenset[str]:
        """Every word a user may type for this kind, lower-cased."""
        return frozenset(w.lower() for w in (self.name, self.plural, *self.aliases))


def safe_url(url: str) -> str:
    """The server URL without any user:password part, fit for messages and logs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}".rstrip("/")


def segment(value: str) -> str:
    """One path segment, quoted so an id can never change the route."""
    return quote(value, safe="")


class Api:
    """The API at one URL: sends the key when set, turns every failure into a CliError."""

    def __init__(self, url: str, timeout: float, call: Invocation) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.call = call
        key = os.environ.get(KEY_VAR, "").strip()
        self.client = httpx.Client(
            base_url=self.url, timeout=timeout, headers={KEY_HEADER: key} if key else {}
        )
        self._kinds: tuple[Kind, ...] | None = None
        call.url = safe_url(self.url)

    def close(self) -> None:
        self.client.close()

    def _error_from(self, response: httpx.Response) -> CliError:
        """The server's error envelope as one line: message, code and status."""
        code, message = "error", ""
        try:
            body = response.json()
            error = body.get("error") if isinstance(body, dict) else None
            if isinstance(error, dict):
                code = str(error.get("code") or code)
                message = str(error.get("message") or "")
        except (ValueError, httpx.ResponseNotRead):
            pass
        if not message:
            with contextlib.suppress(httpx.ResponseNotRead):
                message = response.text.strip()[:200]
        message = message or response.reason_phrase or "request failed"
        self.call.error = code
        return CliError(
            f"{message} [{code}, HTTP {response.status_code}]", status=response.status_code
        )

    def _unreachable(self, error: httpx.TransportError) -> CliError:
        if isinstance(error, httpx.TimeoutException):
            reason = f"no answer within {self.timeout:g} s"
        else:
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        return CliError(
            f"cannot reach the API at {safe_url(self.url)} ({reason}); "
            f"start it with `make run` or point --url / {URL_VAR} at it",
            EXIT_UNREACHABLE,
        )

    def request(
        self, method: str, path: str, *, lookup: bool = False, **kwargs: Any
    ) -> httpx.Response:
        """Send one request; a non-2xx answer becomes a CliError (exit 1).

        `lookup` marks a request the CLI makes for itself (kinds, streams): the call log
        keeps the route the command mirrors, so a lookup that succeeds is only counted."""
        try:
            response = self.client.request(method, path, **kwargs)
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as error:
            raise CliError(f"bad --url {self.url!r}: {error}", EXIT_USAGE) from None
        except httpx.TransportError as error:
            self.call.record(method, path, None)
            raise self._unreachable(error) from None
        self.call.record(method, path, response.status_code, lookup=lookup)
        if response.is_error:
            raise self._error_from(response)
        return response

    def json(self, method: str, path: str, *, lookup: bool = False, **kwargs: Any) -> Any:
        """The decoded JSON body of a successful request."""
        response = self.request(method, path, lookup=lookup, **kwargs)
        try:
            return response.json()
        except ValueError:
            raise CliError(
                f"{method} {path}: the server answered {response.status_code} "
                f"with a body that is not JSON"
            ) from None

    def pages(self, path: str, want: int) -> tuple[list[Any], int]:
        """`want` rows (0: all) of a paginated list route, following its `X-Next-Offset`,
        and how many the server holds (`X-Total-Count`)."""
        rows: list[Any] = []
        offset = 0
        while True:
            size = min(PAGE_MAX, want - len(rows)) if want else PAGE_MAX
            response = self.request("GET", path, params={"offset": offset, "limit": size})
            try:
                rows += response.json()
            except ValueError:
                raise CliError(f"GET {path}: the server answered a body that is not JSON") from None
            total = int(response.headers.get("x-total-count", len(rows)))
            following = response.headers.get("x-next-offset")
            if following is None or (want and len(rows) >= want):
                return rows, total
            offset = int(following)

    @contextlib.contextmanager
    def stream(self, method: str, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """A response whose body is read as it arrives (NDJSON, audio downloads)."""
        try:
            with self.client.stream(method, path, **kwargs) as response:
                self.call.record(method, path, response.status_code)
                if response.is_error:
                    response.read()
                    raise self._error_from(response)
                yield response
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as error:
            raise CliError(f"bad --url {self.url!r}: {error}", EXIT_USAGE) from None
        except httpx.TransportError as error:
            if self.call.method is None:
                self.call.record(method, path, None)
            raise self._unreachable(error) from None

    def download(
        self,
        path: str,
        target: Path,
        digest: Any = None,
        *,
        check: Callable[[], None] | None = None,
        **kwargs: Any,
    ) -> int:
        """Stream a body to `target` (written aside, then renamed; `-` is stdout), feeding
        every chunk to `digest` (a hashlib object) when given. `check` runs once the body is
        in: if it raises, the file aside is removed and `target` (an older good copy,
        say) is left as it was."""
        written = 0
        with self.stream("GET", path, **kwargs) as response:
            if str(target) == "-":
                for chunk in response.iter_bytes():
                    sys.stdout.buffer.write(chunk)
                    written += len(chunk)
                    if digest is not None:
                        digest.update(chunk)
                sys.stdout.buffer.flush()
                if check is not None:
                    check()
                return written
            partial = target.with_name(f".{target.name}.part")
            try:
                with partial.open("wb") as handle:
                    for chunk in response.iter_bytes():
                        handle.write(chunk)
                        written += len(chunk)
                        if digest is not None:
                            digest.update(chunk)
                if check is not None:
                    check()
                partial.replace(target)
            except OSError as error:
                partial.unlink(missing_ok=True)
                raise CliError(f"cannot write {target}: {error.strerror or error}") from None
            except BaseException:
                partial.unlink(missing_ok=True)
                raise
        return written

    def kinds(self) -> tuple[Kind, ...]:
        """The server's stem kinds, asked once per invocation (`GET /kinds`)."""
        if self._kinds is None:
            try:
                listed = self.json("GET", "/kinds", lookup=True)
            except CliError as error:
                if error.status != 404:
                    raise
                raise CliError(
                    f"the server at {safe_url(self.url)} does not list its stem kinds "
                    "(GET /kinds: 404); it is older than this client, so kinds cannot be "
                    "checked: upgrade the server or use the client of its version",
                    error.exit_code,
                ) from None
            try:
                self._kinds = tuple(
                    Kind(
                        name=str(k["name"]),
                        plural=str(k.get("plural") or k["name"]),
                        aliases=tuple(str(a) for a in k.get("aliases") or ()),
                        form=str(k.get("form") or ""),
                        dataset=str(k.get("dataset") or ""),
                        rotation=bool(k.get("rotation")),
                    )
                    for k in listed
                )
            except (TypeError, KeyError, AttributeError):
                raise CliError("GET /kinds: the server answered an unexpected shape") from None
        return self._kinds

    def kind(self, typed: str) -> Kind:
        """The kind a user typed (its name, plural or an alias, any case); exit 2 if unknown."""
        word = typed.strip().lower()
        known = self.kinds()
        for kind in known:
            if word in kind.spellings:
                return kind
        expected = ", ".join(k.plural for k in known) or "none"
        raise CliError(
            f"unknown kind {typed!r}: this server knows {expected} (singular or plural)",
            EXIT_USAGE,
        )
