"""`hybrid-audio`: the command-line client of the HTTP API, one sub-command per route.

It speaks HTTP only and imports nothing from the `hybrid_audio` package (just the standard
library, httpx, typer and rich), so it works against a remote server and stays in step
with the API through the wire contract rather than shared code.

Exit codes: 0 ok; 1 the server refused the request (or a job failed, a verification did
not pass, a download could not be saved), printed as one `error: …` line on stderr;
2 usage (typer's own); 3 the server could not be reached. Expected failures never print a
traceback. The API key is read from `INTERNAL_API_KEY` only — never an option (shell
history), never printed, never logged. Every invocation appends one JSON line to
`logs/cli.jsonl` (under `HYBRID_AUDIO_BASE_DIR` or the current directory; `LOGS_DIR`
overrides) describing its first request, how long the whole command took and its exit
code. Global options go before the sub-command: `hybrid-audio --json cache list`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

import httpx
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

DEFAULT_URL = "http://127.0.0.1:8000"
KEY_HEADER = "X-Internal-API-Key"
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_INTERRUPTED = 130
#: Job states after which a job never changes again.
FINAL_JOB_STATES = frozenset({"done", "failed", "cancelled", "interrupted"})
#: Rows the server returns at most per page of a list route (its `MAX_PAGE`).
PAGE_MAX = 1000
#: Seconds between two `/jobs/{id}` polls while following a job.
POLL_SECONDS = 0.25
LOG_BACKUPS = 3

#: Width of tables written to a pipe or file (rich would otherwise fold them at 80).
PIPE_WIDTH = 160

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)
if not out.is_terminal and not os.environ.get("COLUMNS"):
    out.width = PIPE_WIDTH


class CliError(Exception):
    """A failure the user should see as one line, with the exit code it deserves."""

    def __init__(self, message: str, exit_code: int = EXIT_REFUSED) -> None:
        super().__init__(message)
        self.message = " ".join(message.split())  # one line, whatever the server sent
        self.exit_code = exit_code


# --------------------------------------------------------------------------- the log line


@dataclass
class _Invocation:
    """What this command did, gathered for its single `cli_call` log line."""

    started: float = field(default_factory=time.perf_counter)
    url: str | None = None
    method: str | None = None
    path: str | None = None
    status: int | None = None
    requests: int = 0
    error: str | None = None

    def record(self, method: str, path: str, status: int | None) -> None:
        """Remember the first request (the route the command mirrors); count the rest."""
        self.requests += 1
        if self.method is None:
            self.method, self.path, self.status = method, path, status


_call = _Invocation()


def _log_path() -> Path:
    """`logs/cli.jsonl` resolved the way the server resolves its own logs folder."""
    base = Path(os.environ.get("HYBRID_AUDIO_BASE_DIR", "").strip() or Path.cwd()).expanduser()
    folder = Path(os.environ.get("LOGS_DIR", "").strip() or "logs").expanduser()
    return (folder if folder.is_absolute() else base / folder) / "cli.jsonl"


def _open_locked(path: Path) -> int:
    """The current log file, locked; reopened if another writer rotated it meanwhile."""
    while True:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def _append_line(path: Path, line: bytes, max_bytes: int) -> None:
    """Append one whole line under `flock`, rotating `x` → `x.1` → … past `max_bytes`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _open_locked(path)
    try:
        size = os.fstat(fd).st_size
        if size and size + len(line) > max_bytes:
            for index in range(LOG_BACKUPS - 1, 0, -1):
                older = path.with_name(f"{path.name}.{index}")
                if older.exists():
                    os.replace(older, path.with_name(f"{path.name}.{index + 1}"))
            os.replace(path, path.with_name(f"{path.name}.1"))
            fd_new = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            fcntl.flock(fd_new, fcntl.LOCK_EX)
            os.close(fd)
            fd = fd_new
        os.write(fd, line)
    finally:
        os.close(fd)


def _write_log(command: str, exit_code: int) -> None:
    """One `cli_call` line; a log that cannot be written never breaks the command."""
    record = {
        "ts": datetime.now(UTC).isoformat(timespec="microseconds"),
        "event": "cli_call",
        "command": command,
        "url": _call.url,
        "method": _call.method,
        "path": _call.path,
        "status": _call.status,
        "requests": _call.requests,
        "ms": round((time.perf_counter() - _call.started) * 1000, 1),
        "exit_code": exit_code,
    }
    if _call.error:
        record["error"] = _call.error
    line = (json.dumps(record, ensure_ascii=False) + "\n").encode()
    try:
        max_bytes = int(os.environ.get("LOG_MAX_BYTES", "").strip() or 10 * 1024 * 1024)
    except ValueError:
        max_bytes = 10 * 1024 * 1024
    with contextlib.suppress(OSError):
        _append_line(_log_path(), line, max_bytes)


# --------------------------------------------------------------------------- HTTP


def _safe_url(url: str) -> str:
    """The server URL without any user:password part, fit for messages and logs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}".rstrip("/")


def _error_from(response: httpx.Response) -> CliError:
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
    _call.error = code
    return CliError(f"{message} [{code}, HTTP {response.status_code}]")


class Api:
    """The API at one URL: sends the key when set, turns every failure into a CliError."""

    def __init__(self, url: str, timeout: float, as_json: bool) -> None:
        self.url = url.rstrip("/")
        self.as_json = as_json
        self.timeout = timeout
        key = os.environ.get("INTERNAL_API_KEY", "").strip()
        self.client = httpx.Client(
            base_url=self.url, timeout=timeout, headers={KEY_HEADER: key} if key else {}
        )
        _call.url = _safe_url(self.url)

    def _unreachable(self, error: httpx.TransportError) -> CliError:
        if isinstance(error, httpx.TimeoutException):
            reason = f"no answer within {self.timeout:g} s"
        else:
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        return CliError(
            f"cannot reach the API at {_safe_url(self.url)} ({reason}); "
            "start it with `make run` or point --url / HYBRID_AUDIO_API_URL at it",
            EXIT_UNREACHABLE,
        )

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send one request; a non-2xx answer becomes a CliError (exit 1)."""
        try:
            response = self.client.request(method, path, **kwargs)
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as error:
            raise CliError(f"bad --url {self.url!r}: {error}", EXIT_USAGE) from None
        except httpx.TransportError as error:
            _call.record(method, path, None)
            raise self._unreachable(error) from None
        _call.record(method, path, response.status_code)
        if response.is_error:
            raise _error_from(response)
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        """The decoded JSON body of a successful request."""
        response = self.request(method, path, **kwargs)
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
                _call.record(method, path, response.status_code)
                if response.is_error:
                    response.read()
                    raise _error_from(response)
                yield response
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as error:
            raise CliError(f"bad --url {self.url!r}: {error}", EXIT_USAGE) from None
        except httpx.TransportError as error:
            if _call.method is None:
                _call.record(method, path, None)
            raise self._unreachable(error) from None


def _api(ctx: typer.Context) -> Api:
    """The client the top-level callback built for this invocation."""
    api = ctx.find_root().obj
    if not isinstance(api, Api):  # only when a command is invoked without the root group
        raise CliError("internal: no API client configured", EXIT_USAGE)
    return api


def _segment(value: str) -> str:
    """One path segment, quoted so an id can never change the route."""
    return quote(value, safe="")


# --------------------------------------------------------------------------- rendering


#: C0/C1 control characters but tab and newline: a name or message from the server must not
#: be able to move the cursor or recolour the terminal.
_CONTROL = {c: "?" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0)) if c not in (0x09, 0x0A)}


def _safe(text: str) -> str:
    """Text from the server, made inert for rich: no markup, no terminal control codes."""
    return escape(text.translate(_CONTROL))


def _print_json(data: Any) -> None:
    """Raw JSON on stdout, unstyled so it pipes into `jq`."""
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _fmt(value: Any) -> str:
    """A cell: readable booleans, dashes for missing values, compact floats and lists."""
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".")
    if isinstance(value, list):
        return ", ".join(_fmt(v) for v in value) if value else "—"
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _kv_table(title: str, data: Mapping[str, Any], keys: Sequence[str] | None = None) -> Table:
    """A two-column field/value table."""
    table = Table(title=_safe(title), show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for key in keys if keys is not None else list(data):
        if key in data:
            table.add_row(_safe(key), _safe(_fmt(data[key])))
    return table


#: Columns holding ids, which get their width before other columns are fitted.
_ID_KEYS = frozenset({"id", "stem_id"})


def _rows_table(
    title: str, rows: Sequence[Mapping[str, Any]], columns: Sequence[str | tuple[str, str]]
) -> Table:
    """One row per record; a column is a key, or (header, key)."""
    table = Table(title=_safe(title), title_justify="left")
    pairs = [(c, c) if isinstance(c, str) else c for c in columns]
    for header, key in pairs:
        # Ids are copied into the next command: give them room before other columns.
        width = max((len(_fmt(row.get(key))) for row in rows), default=0)
        min_width = min(width, 40) if key in _ID_KEYS else None
        table.add_column(_safe(header), overflow="fold", min_width=min_width)
    for row in rows:
        table.add_row(*(_safe(_fmt(row.get(key))) for _header, key in pairs))
    return table


def _print_rows(
    title: str,
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str | tuple[str, str]],
    limit: int,
    total: int | None = None,
) -> None:
    """A table of at most `limit` rows (0: all) of `total` (default: all rows given): rich
    needs ~0.1 ms a cell, and a list of 300 000 dataset items would take a minute to draw."""
    total = len(rows) if total is None else total
    shown = rows if limit <= 0 else rows[:limit]
    out.print(_rows_table(f"{title}: {total}", shown, columns))
    if len(shown) < total:
        err.print(f"… {total - len(shown)} more (--limit 0 shows all; --json prints all)")


Limit = Annotated[int, typer.Option(min=0, help="Rows to show in the table (0: all).")]


def _show(api: Api, data: Any, render: Callable[[Any], None]) -> None:
    """Raw JSON with --json, otherwise the command's rich rendering."""
    if api.as_json:
        _print_json(data)
    else:
        render(data)


def _stem_line(response: Mapping[str, Any]) -> str:
    """'José → stem.name.jose  (new, 0.52 s)' from a StemResponse."""
    stem = response.get("stem") or {}
    state = "cached" if stem.get("cached") else "new"
    return f"{response.get('normalized')}  ({state}, {_fmt(stem.get('duration'))} s)"


def _print_stem(response: Mapping[str, Any], extended: bool) -> None:
    out.print(_safe(_stem_line(response)))
    if extended:
        out.print(_kv_table(str(response["stem"].get("stem_id")), response["stem"]))


def _print_report(report: Mapping[str, Any]) -> None:
    """The byte-diff table: every segment exact, or where it first differs."""
    rows = [
        {
            **seg,
            "verdict": "exact"
            if seg.get("exact")
            else f"differs at {seg.get('first_diff_offset')} {seg.get('detail') or ''}".strip(),
        }
        for seg in report.get("segments") or []
    ]
    table = _rows_table(
        "byte-diff proof",
        rows,
        ["index", "kind", "id", ("offset", "byte_offset"), ("bytes", "byte_length"), "verdict"],
    )
    out.print(table)
    for fade in report.get("crossfades") or []:
        verdict = (
            "matches" if fade.get("matches") else f"differs at {fade.get('first_diff_offset')}"
        )
        out.print(f"crossfade at {fade.get('byte_offset')} (+{fade.get('byte_length')}): {verdict}")
    header = "exact" if report.get("header_exact") else "differs"
    verdict = "[green]verified[/green]" if report.get("ok") else "[red]NOT verified[/red]"
    out.print(f"header {header}; {verdict}")
    for message in report.get("errors") or []:
        err.print(_safe(f"  {message}"))


def _require_verified(report: Mapping[str, Any], what: str) -> None:
    """Exit 1 when a proof did not pass, so scripts can rely on the exit code."""
    if not report.get("ok"):
        errors = report.get("errors") or []
        first = f": {errors[0]}" if errors else ""
        raise CliError(f"{what} failed verification{first}")


def _print_summary(summary: Mapping[str, Any]) -> None:
    keys = ["id", "template", "name", "developer", "script", "duration", "sha256", "verified"]
    out.print(_kv_table(f"output {summary.get('id')}", summary, [*keys, "created_at", "path"]))


def _step_line(step: Mapping[str, Any]) -> str:
    """One rotation step on one line: what it gave and where in the cycle it was."""
    if step.get("name") is not None or step.get("developer") is not None:
        what = f"{step.get('name')} × {step.get('developer')}"
    else:
        what = str(step.get("item"))
        if step.get("text") not in (None, step.get("item")):
            what += f" ({step.get('text')})"
    where = f"cycle {step.get('cycle')}, position {step.get('position')}/{step.get('size')}"
    return f"{step.get('stream')}: {what}  [{where}]"


def _print_job(job: Mapping[str, Any]) -> None:
    keys = ["id", "kind", "state", "done", "total", "message", "eta_seconds"]
    out.print(_kv_table(f"job {job.get('id')}", job, keys))
    _print_job_outcome(job)


def _print_job_outcome(job: Mapping[str, Any], limit: int = 10) -> None:
    """The result as counts on stdout; errors and rejected or failed items on stderr."""
    result = job.get("result")
    problems: list[str] = [str(e) for e in job.get("errors") or []]
    if isinstance(result, dict):
        counts = ", ".join(
            f"{key} {len(value) if isinstance(value, list) else _fmt(value)}"
            for key, value in result.items()
        )
        out.print(_safe(f"result: {counts}"))
        for key in ("failed", "rejected"):
            problems += [f"{key}: {_fmt(item)}" for item in result.get(key) or []]
    elif result is not None:
        out.print(_safe(f"result: {_fmt(result)}"))
    for message in problems[:limit]:
        err.print(_safe(f"  {message}"))
    if len(problems) > limit:
        err.print(f"  … and {len(problems) - limit} more (see --json)")


# --------------------------------------------------------------------------- shared steps


def _read_list(path: Path | None) -> list[str] | None:
    """Texts from a file: a JSON list of strings, or one per line (# comments skipped)."""
    if path is None:
        return None
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise CliError(f"cannot read {path}: {error}", EXIT_USAGE) from None
    if path.suffix.lower() == ".json":
        try:
            items = json.loads(raw)
        except ValueError as error:
            raise CliError(f"{path} is not valid JSON: {error}", EXIT_USAGE) from None
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise CliError(f"{path} must hold a JSON list of strings", EXIT_USAGE)
        return items
    lines = (line.strip() for line in raw.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _download(api: Api, path: str, target: Path) -> int:
    """Stream a body to `target` (written aside, then renamed; `-` is stdout)."""
    written = 0
    with api.stream("GET", path) as response:
        if str(target) == "-":
            for chunk in response.iter_bytes():
                sys.stdout.buffer.write(chunk)
                written += len(chunk)
            sys.stdout.buffer.flush()
            return written
        partial = target.with_name(f".{target.name}.part")
        try:
            with partial.open("wb") as handle:
                for chunk in response.iter_bytes():
                    handle.write(chunk)
                    written += len(chunk)
            partial.replace(target)
        except OSError as error:
            partial.unlink(missing_ok=True)
            raise CliError(f"cannot write {target}: {error.strerror or error}") from None
    return written


def _saved(target: Path, size: int) -> None:
    if str(target) != "-":
        err.print(_safe(f"wrote {target} ({size} bytes)"))


def _follow_job(api: Api, job: dict[str, Any]) -> dict[str, Any]:
    """Poll `/jobs/{id}` with a live progress bar until the job ends; its last snapshot."""
    job_path = f"/jobs/{_segment(job['id'])}"
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[eta]}"),
        console=err,
    )

    def update(task: Any, snapshot: Mapping[str, Any]) -> None:
        eta = snapshot.get("eta_seconds")
        progress.update(
            task,
            total=snapshot.get("total") or None,
            completed=snapshot.get("done") or 0,
            description=f"{snapshot.get('kind')} {snapshot.get('state')}",
            eta=f"eta {eta:.0f}s" if isinstance(eta, int | float) else "",
        )

    try:
        with progress:
            task = progress.add_task("", total=None, eta="")
            update(task, job)
            while job.get("state") not in FINAL_JOB_STATES:
                time.sleep(POLL_SECONDS)
                job = api.json("GET", job_path)
                update(task, job)
    except KeyboardInterrupt:
        raise CliError(
            f"stopped following job {job['id']}; it keeps running on the server "
            f"(hybrid-audio jobs cancel {job['id']})",
            EXIT_INTERRUPTED,
        ) from None
    return job


def _finish_job(api: Api, job: dict[str, Any], wait: bool) -> None:
    """Show a started job, or follow it to the end and exit 1 unless it finished."""
    if not wait:
        _show(
            api,
            job,
            lambda j: out.print(
                _safe(f"started job {j['id']} ({j.get('kind')}); follow it with ")
                + _safe(f"`hybrid-audio jobs show {j['id']} --wait`")
            ),
        )
        return
    job = _follow_job(api, job)
    if api.as_json:
        _print_json(job)
    else:
        took = ""
        if job.get("started_at") and job.get("finished_at"):
            took = f" in {job['finished_at'] - job['started_at']:.1f} s"
        errors = len(job.get("errors") or [])
        out.print(
            _safe(
                f"job {job['id']} {job.get('state')}: {job.get('done')}/{job.get('total')}"
                f"{took}, {errors} error(s)"
            )
        )
        _print_job_outcome(job)
    if job.get("state") != "done":
        message = job.get("message") or ""
        detail = f": {message}" if message and message != job.get("state") else ""
        raise CliError(f"job {job['id']} {job.get('state')}{detail}")


# --------------------------------------------------------------------------- the app


class _App(typer.Typer):
    """Typer with one place that prints CliErrors as one line and logs every invocation."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        global _call
        _call = _Invocation()
        argv = kwargs.get("args")
        command = _command_name(self, list(argv if argv is not None else sys.argv[1:]))
        code = 0
        try:
            return super().__call__(*args, **kwargs)
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
            raise
        except CliError as error:
            code = error.exit_code
            err.print(_safe(f"error: {error.message}"))
            raise SystemExit(code) from None
        finally:
            _write_log(command, code)


def _command_name(app: typer.Typer, argv: list[str]) -> str:
    """'cache list' from the argument list: the sub-command words, no values or options."""
    command: Any = typer.main.get_command(app)
    words: list[str] = []
    tokens = iter(argv)
    for token in tokens:
        if token in ("--url", "--timeout"):
            next(tokens, None)
            continue
        if token.startswith("-"):
            continue
        if token not in getattr(command, "commands", {}):
            break
        words.append(token)
        command = command.commands[token]
    return " ".join(words)


_settings = {"no_args_is_help": True}
app = _App(
    name="hybrid-audio",
    help=(
        "Command-line client of the Hybrid Audio HTTP API: one sub-command per route.\n\n"
        "Example: hybrid-audio generate name José\n\n"
        "Global options go before the sub-command: hybrid-audio --json cache list. "
        "The key for a protected server is read from INTERNAL_API_KEY."
    ),
    pretty_exceptions_enable=False,
    add_completion=False,
    **_settings,
)
generate_app = typer.Typer(
    help=(
        "Make stems, or fetch them from the cache: name, developer, script, both, or "
        "a whole dataset.\n\nExample: hybrid-audio generate name José"
    ),
    **_settings,
)
assemble_app = typer.Typer(
    help=(
        "Assemble messages from templates and inspect the outputs and their byte-diff "
        "proofs.\n\nExample: hybrid-audio assemble template José Hilton "
        "--template double_anchor.json --out msg.wav"
    ),
    **_settings,
)
rotation_app = typer.Typer(
    help=(
        "Walk deterministic rotations of names, developers, scripts and pairs.\n\n"
        "Example: hybrid-audio rotation next-pair"
    ),
    **_settings,
)
cache_app = typer.Typer(
    help=(
        "Inspect, audit and fill the stem cache.\n\n"
        "Example: hybrid-audio cache list --kind name --extended"
    ),
    **_settings,
)
external_app = typer.Typer(
    help=(
        "List, show and import the datasets (names, developers, scripts).\n\n"
        "Example: hybrid-audio external import names data.csv"
    ),
    **_settings,
)
jobs_app = typer.Typer(
    help="Follow and cancel long-running jobs.\n\nExample: hybrid-audio jobs list",
    **_settings,
)
app.add_typer(generate_app, name="generate")
app.add_typer(assemble_app, name="assemble")
app.add_typer(rotation_app, name="rotation")
app.add_typer(cache_app, name="cache")
app.add_typer(external_app, name="external")
app.add_typer(jobs_app, name="jobs")


def _check_url(url: str) -> str:
    if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
        raise typer.BadParameter(f"expected http(s)://host[:port], got {url!r}")
    return url


@app.callback()
def main(
    ctx: typer.Context,
    url: Annotated[
        str,
        typer.Option(
            envvar="HYBRID_AUDIO_API_URL", callback=_check_url, help="Base URL of the API."
        ),
    ] = DEFAULT_URL,
    timeout: Annotated[
        float, typer.Option(min=0.1, help="Seconds to wait for the server on each request.")
    ] = 30.0,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the raw JSON answer instead of tables.")
    ] = False,
) -> None:
    """Command-line client of the Hybrid Audio HTTP API."""
    api = Api(url, timeout, as_json)
    ctx.obj = api
    ctx.call_on_close(api.client.close)


@app.command()
def health(ctx: typer.Context) -> None:
    """Check the server is up and show its engine, contract and whether it needs a key.

    Example: hybrid-audio health
    """
    api = _api(ctx)
    data = api.json("GET", "/health")
    _show(api, data, lambda d: out.print(_kv_table(f"API {_safe_url(api.url)}", d)))


# ----------------------------------------------------------------------------- generate

Extended = Annotated[bool, typer.Option("--extended", help="Show every field of the stem.")]


@generate_app.command("name")
def generate_name(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="First name as it should be spoken.")],
    extended: Extended = False,
) -> None:
    """Make the stem of a first name (or take it from the cache) and show its id.

    Example: hybrid-audio generate name "José María" --extended
    """
    api = _api(ctx)
    data = api.json("POST", "/generate/name", json={"name": name})
    _show(api, data, lambda d: _print_stem(d, extended))


@generate_app.command("developer")
def generate_developer(
    ctx: typer.Context,
    developer: Annotated[str, typer.Argument(help="Developer (company) name.")],
    extended: Extended = False,
) -> None:
    """Make the stem of a developer name (or take it from the cache).

    Example: hybrid-audio generate developer "Brightwater Homes"
    """
    api = _api(ctx)
    data = api.json("POST", "/generate/developer", json={"developer": developer})
    _show(api, data, lambda d: _print_stem(d, extended))


@generate_app.command("script")
def generate_script(
    ctx: typer.Context,
    key: Annotated[str, typer.Argument(help="Key of a phrase in the scripts dataset.")],
    extended: Extended = False,
) -> None:
    """Make the stem of a script phrase, named by its key in the scripts dataset.

    Example: hybrid-audio generate script hello
    """
    api = _api(ctx)
    data = api.json("POST", "/generate/script", json={"key": key})
    _show(api, data, lambda d: _print_stem(d, extended))


@generate_app.command("combined")
def generate_combined(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="First name.")],
    developer: Annotated[str, typer.Argument(help="Developer name.")],
    extended: Extended = False,
) -> None:
    """Make the name and developer stems in one call.

    Example: hybrid-audio generate combined José Hilton
    """
    api = _api(ctx)
    data = api.json("POST", "/generate/combined", json={"name": name, "developer": developer})

    def render(d: Mapping[str, Any]) -> None:
        _print_stem(d["name"], extended)
        _print_stem(d["developer"], extended)

    _show(api, data, render)


NamesFile = Annotated[
    Path | None,
    typer.Option(
        exists=True,
        dir_okay=False,
        help="Names to use: one per line (# comments), or a JSON list. Default: the dataset.",
    ),
]
DevelopersFile = Annotated[
    Path | None,
    typer.Option(
        exists=True,
        dir_okay=False,
        help="Developers to use: one per line, or a JSON list. Default: the dataset.",
    ),
]


def _bulk_body(names_file: Path | None, developers_file: Path | None) -> dict[str, list[str]]:
    body: dict[str, list[str]] = {}
    if (names := _read_list(names_file)) is not None:
        body["names"] = names
    if (developers := _read_list(developers_file)) is not None:
        body["developers"] = developers
    return body


@generate_app.command("rotational")
def generate_rotational(
    ctx: typer.Context,
    names_file: NamesFile = None,
    developers_file: DevelopersFile = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Follow the job with a progress bar until it ends.")
    ] = False,
) -> None:
    """Start a job making every stem a names × developers rotation needs (cached ones skipped).

    Example: hybrid-audio generate rotational --names-file names.txt --wait
    """
    api = _api(ctx)
    job = api.json("POST", "/generate/rotational", json=_bulk_body(names_file, developers_file))
    _finish_job(api, job, wait)


# ----------------------------------------------------------------------------- assemble


class JoinMode(StrEnum):
    exact = "exact"
    hybrid = "hybrid"


@assemble_app.command("template")
def assemble_template(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="First name for the name slot.")],
    developer: Annotated[str, typer.Argument(help="Developer for the developer slot.")],
    template: Annotated[
        str, typer.Option(help="Template name, with or without .json.")
    ] = "double_anchor",
    script: Annotated[
        str | None, typer.Option(help="Script key for a template's script slot.")
    ] = None,
    mode: Annotated[
        JoinMode | None,
        typer.Option(
            help="exact (bit-exact joins) or hybrid (short crossfades). Default: the template's."
        ),
    ] = None,
    generate_missing: Annotated[
        bool,
        typer.Option(
            "--generate-missing/--no-generate-missing", help="Synthesize stems not yet cached."
        ),
    ] = True,
    out_file: Annotated[
        Path | None,
        typer.Option("--out", dir_okay=False, help="Also download the WAV here ('-': stdout)."),
    ] = None,
) -> None:
    """Assemble one message from a template and show its byte-diff proof.

    Exits 1 if the output does not verify.

    Example: hybrid-audio assemble template José Hilton --template double_anchor.json --out m.wav
    """
    api = _api(ctx)
    body: dict[str, Any] = {
        "template": template.removesuffix(".json"),
        "name": name,
        "developer": developer,
        "generate_missing": generate_missing,
    }
    if script is not None:
        body["script"] = script
    if mode is not None:
        body["mode"] = mode.value
    data = api.json("POST", "/assemble/template", json=body)

    def render(d: Mapping[str, Any]) -> None:
        _print_summary(d["summary"])
        _print_report(d["report"])

    if str(out_file) != "-":
        _show(api, data, render)
    if out_file is not None:
        audio = urlsplit(data.get("audio_url") or "")
        path = audio.path + (f"?{audio.query}" if audio.query else "")
        _saved(out_file, _download(api, path or _audio_path(data["id"]), out_file))
    _require_verified(data["report"], f"output {data.get('id')}")


def _audio_path(output_id: str) -> str:
    return f"/assemble/outputs/{_segment(output_id)}/audio"


@assemble_app.command("outputs")
def assemble_outputs(ctx: typer.Context, limit: Limit = 100) -> None:
    """List the assembled messages, newest first.

    Example: hybrid-audio assemble outputs
    """
    api = _api(ctx)
    data, total = api.pages("/assemble/outputs", 0 if api.as_json else limit)
    columns = ["id", "template", "name", "developer", "script", "duration", "verified"]
    _show(api, data, lambda d: _print_rows("outputs", d, columns, limit, total))


@assemble_app.command("show")
def assemble_show(
    ctx: typer.Context, output_id: Annotated[str, typer.Argument(metavar="ID", help="Output id.")]
) -> None:
    """Show an output's manifest: inputs, file, and where each segment sits (--json: all of it).

    Example: hybrid-audio assemble show 20250101T120000000000Z_double_anchor_jose_hilton
    """
    api = _api(ctx)
    data = api.json("GET", f"/assemble/outputs/{_segment(output_id)}")

    def render(d: Mapping[str, Any]) -> None:
        flat: dict[str, Any] = {}
        for key, value in d.items():
            if isinstance(value, dict) and key in ("inputs", "output"):
                flat.update({f"{key}.{k}": v for k, v in value.items()})
            elif not isinstance(value, dict | list):
                flat[key] = value
        out.print(_kv_table(f"manifest {d.get('id', output_id)}", flat))
        segments = (d.get("merge") or {}).get("segments") or []
        columns = [
            "index",
            "kind",
            "id",
            ("offset", "byte_offset"),
            ("bytes", "byte_length"),
            ("trim start", "trim_start_frame"),
            ("trim end", "trim_end_frame"),
        ]
        out.print(_rows_table("segments", segments, columns))

    _show(api, data, render)


@assemble_app.command("audio")
def assemble_audio(
    ctx: typer.Context,
    output_id: Annotated[str, typer.Argument(metavar="ID", help="Output id.")],
    out_file: Annotated[
        Path, typer.Option("--out", dir_okay=False, help="Where to write the WAV ('-': stdout).")
    ],
) -> None:
    """Download an output's WAV file.

    Example: hybrid-audio assemble audio ID --out message.wav
    """
    api = _api(ctx)
    _saved(out_file, _download(api, _audio_path(output_id), out_file))


@assemble_app.command("verify")
def assemble_verify(
    ctx: typer.Context, output_id: Annotated[str, typer.Argument(metavar="ID", help="Output id.")]
) -> None:
    """Re-check an output byte by byte against its sources; exits 1 if anything differs.

    Example: hybrid-audio assemble verify ID
    """
    api = _api(ctx)
    data = api.json("GET", f"/assemble/outputs/{_segment(output_id)}/verify")
    _show(api, data, _print_report)
    _require_verified(data, f"output {output_id}")


# ----------------------------------------------------------------------------- rotation


def _next(ctx: typer.Context, stream: str) -> None:
    api = _api(ctx)
    data = api.json("GET", f"/rotation/next_{stream}")
    _show(api, data, lambda d: out.print(_safe(_step_line(d))))


@rotation_app.command("next-name")
def rotation_next_name(ctx: typer.Context) -> None:
    """Take the next name of the name rotation (advances the cursor).

    Example: hybrid-audio rotation next-name
    """
    _next(ctx, "name")


@rotation_app.command("next-developer")
def rotation_next_developer(ctx: typer.Context) -> None:
    """Take the next developer of the developer rotation (advances the cursor).

    Example: hybrid-audio rotation next-developer
    """
    _next(ctx, "developer")


@rotation_app.command("next-script")
def rotation_next_script(ctx: typer.Context) -> None:
    """Take the next script key of the script rotation (advances the cursor).

    Example: hybrid-audio rotation next-script
    """
    _next(ctx, "script")


@rotation_app.command("next-pair")
def rotation_next_pair(ctx: typer.Context) -> None:
    """Take the next name × developer pair of the pair rotation (advances the cursor).

    Example: hybrid-audio rotation next-pair
    """
    _next(ctx, "pair")


@rotation_app.command("generate-pair")
def rotation_generate_pair(
    ctx: typer.Context,
    template: Annotated[
        str, typer.Option(help="Template name, with or without .json.")
    ] = "double_anchor",
    out_file: Annotated[
        Path | None,
        typer.Option("--out", dir_okay=False, help="Also download the WAV here ('-': stdout)."),
    ] = None,
) -> None:
    """Take the next pair and assemble its message; exits 1 if it does not verify.

    Example: hybrid-audio rotation generate-pair --template double_anchor --out m.wav
    """
    api = _api(ctx)
    body = {"template": template.removesuffix(".json")}
    data = api.json("POST", "/rotation/generate_pair", json=body)
    result = data["result"]

    def render(d: Mapping[str, Any]) -> None:
        out.print(_safe(_step_line(d["step"])))
        if d.get("script"):
            out.print(_safe(f"script: {d['script']}"))
        _print_summary(result["summary"])
        _print_report(result["report"])

    if str(out_file) != "-":
        _show(api, data, render)
    if out_file is not None:
        _saved(out_file, _download(api, _audio_path(result["summary"]["id"]), out_file))
    _require_verified(result["report"], f"output {result['summary'].get('id')}")


Count = Annotated[int, typer.Option(min=1, help="How many steps to take.")]


def _stream(ctx: typer.Context, route: str, count: int) -> None:
    """Print each NDJSON line as it arrives (raw with --json), never buffering the stream."""
    api = _api(ctx)
    with api.stream("GET", route, params={"count": count}) as response:
        for line in response.iter_lines():
            if not line.strip():
                continue
            if api.as_json:
                sys.stdout.write(line + "\n")
                sys.stdout.flush()
                continue
            try:
                step = json.loads(line)
            except ValueError:
                raise CliError(f"{route}: the server sent a line that is not JSON") from None
            if isinstance(step, dict) and "error" in step and "stream" not in step:
                raise CliError(f"{route}: stream ended with an error: {_fmt(step['error'])}")
            out.print(_safe(_step_line(step)))


@rotation_app.command("pairs-stream")
def rotation_pairs_stream(ctx: typer.Context, count: Count = 10) -> None:
    """Stream the next COUNT pairs, one line each as the server sends it.

    Example: hybrid-audio rotation pairs-stream --count 100
    """
    _stream(ctx, "/rotation/pairs_stream", count)


@rotation_app.command("scripts-stream")
def rotation_scripts_stream(ctx: typer.Context, count: Count = 10) -> None:
    """Stream the next COUNT script keys, one line each as the server sends it.

    Example: hybrid-audio --json rotation scripts-stream --count 20
    """
    _stream(ctx, "/rotation/scripts_stream", count)


@rotation_app.command("state")
def rotation_state(ctx: typer.Context) -> None:
    """Show every stream's cursor: cycle, position, progress and whether its data changed.

    Example: hybrid-audio rotation state
    """
    api = _api(ctx)
    data = api.json("GET", "/rotation/state")

    def render(d: Mapping[str, Any]) -> None:
        rows = [{**s, "progress": f"{100 * (s.get('progress') or 0):.1f}%"} for s in d.values()]
        columns = ["stream", "cycle", "position", "size", "progress", "stale", "updated_at"]
        out.print(_rows_table("rotation cursors", rows, columns))

    _show(api, data, render)


class StreamName(StrEnum):
    name = "name"
    developer = "developer"
    script = "script"
    pair = "pair"


@rotation_app.command("reset")
def rotation_reset(
    ctx: typer.Context,
    stream: Annotated[StreamName, typer.Argument(help="Which stream to rewind.")],
) -> None:
    """Rewind one stream's cursor to the start of cycle 0.

    Example: hybrid-audio rotation reset pair
    """
    api = _api(ctx)
    data = api.json("POST", "/rotation/reset", json={"stream": stream.value})
    _show(api, data, lambda d: out.print(_kv_table(f"stream {d.get('stream')} reset", d)))


# ----------------------------------------------------------------------------- cache


@cache_app.command("list")
def cache_list(
    ctx: typer.Context,
    kind: Annotated[
        str | None, typer.Option(help="Only this kind: name, developer, script…")
    ] = None,
    compatible: Annotated[
        bool | None,
        typer.Option(
            "--compatible/--incompatible",
            help="Only stems that match (or do not match) the active voice contract.",
            show_default=False,
        ),
    ] = None,
    extended: Annotated[bool, typer.Option("--extended", help="Every field of each stem.")] = False,
    limit: Limit = 200,
) -> None:
    """List cached stems with their compatibility with the active voice contract.

    Example: hybrid-audio cache list --kind name --incompatible
    """
    api = _api(ctx)
    params: dict[str, str] = {}
    if kind is not None:
        params["kind"] = _KINDS.get(kind.lower(), kind)
    if compatible is not None:
        params["compatible"] = "true" if compatible else "false"
    if extended:
        params["extended"] = "true"
    data = api.json("GET", "/cache/list", params=params)
    columns: list[str | tuple[str, str]] = ["stem_id", "kind", "text", "duration", "compatible"]
    if extended:
        columns += ["voice", "encoding", ("rate", "sample_rate"), "size", ("sha256", "sha")]
        data_rows = [{**r, "sha": str(r.get("sha256", ""))[:12]} for r in data]
    else:
        data_rows = data
    _show(api, data, lambda _d: _print_rows("stems", data_rows, columns, limit))


@cache_app.command("invalidate")
def cache_invalidate(
    ctx: typer.Context, stem_id: Annotated[str, typer.Argument(help="e.g. stem.name.jose")]
) -> None:
    """Drop a stem from the cache so the next request synthesizes it again.

    Example: hybrid-audio cache invalidate stem.name.jose
    """
    api = _api(ctx)
    data = api.json("POST", "/cache/invalidate", json={"stem_id": stem_id})
    _show(
        api,
        data,
        lambda d: out.print(
            _safe(f"{d.get('stem_id')}: ")
            + ("invalidated" if d.get("invalidated") else "was not cached")
        ),
    )


@cache_app.command("bulk-generate")
def cache_bulk_generate(
    ctx: typer.Context,
    names_file: NamesFile = None,
    developers_file: DevelopersFile = None,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Follow the job with a progress bar.")
    ] = True,
) -> None:
    """Synthesize many stems in a background job and follow it; exits 1 if the job fails.

    Example: hybrid-audio cache bulk-generate --names-file names.txt
    """
    api = _api(ctx)
    job = api.json("POST", "/cache/bulk_generate", json=_bulk_body(names_file, developers_file))
    _finish_job(api, job, wait)


@cache_app.command("audio")
def cache_audio(
    ctx: typer.Context,
    stem_id: Annotated[str, typer.Argument(help="e.g. stem.name.jose")],
    out_file: Annotated[
        Path, typer.Option("--out", dir_okay=False, help="Where to write the WAV ('-': stdout).")
    ],
) -> None:
    """Download a stem's WAV file.

    Example: hybrid-audio cache audio stem.name.jose --out jose.wav
    """
    api = _api(ctx)
    _saved(out_file, _download(api, f"/cache/stems/{_segment(stem_id)}/audio", out_file))


@cache_app.command("verify")
def cache_verify(ctx: typer.Context) -> None:
    """Audit the cache: orphan, missing, corrupt and half-written files; exits 1 on any.

    Example: hybrid-audio cache verify
    """
    api = _api(ctx)
    data = api.json("GET", "/cache/verify")
    problems = {k: v for k, v in data.items() if isinstance(v, list) and v}

    def render(d: Mapping[str, Any]) -> None:
        counts = {k: (len(v) if isinstance(v, list) else v) for k, v in d.items()}
        out.print(_kv_table("cache audit", counts))
        for kind, items in problems.items():
            for item in items:
                err.print(_safe(f"  {kind}: {item}"))

    _show(api, data, render)
    if problems:
        found = ", ".join(f"{len(v)} {k}" for k, v in problems.items())
        raise CliError(f"cache audit found problems: {found}")


# ----------------------------------------------------------------------------- external

_KINDS = {"name": "name", "names": "name", "developer": "developer", "developers": "developer"}
_KINDS |= {"script": "script", "scripts": "script"}


def _kind(value: str) -> str:
    """Dataset kind, accepting the plural the user is likely to type."""
    try:
        return _KINDS[value.lower()]
    except KeyError:
        raise typer.BadParameter("expected names, developers or scripts") from None


Kind = Annotated[
    str, typer.Argument(callback=_kind, help="names, developers or scripts (or singular).")
]


@external_app.command("datasets")
def external_datasets(ctx: typer.Context) -> None:
    """List the datasets with their size, file, collisions and rejected lines.

    Example: hybrid-audio external datasets
    """
    api = _api(ctx)
    data = api.json("GET", "/external/datasets")
    rows = [
        {
            **d,
            "collisions": len(d.get("collisions") or []),
            "rejected": len(d.get("rejected") or []),
        }
        for d in data
    ]
    columns = ["kind", "count", "collisions", "rejected", "path"]
    _show(api, data, lambda _d: out.print(_rows_table("datasets", rows, columns)))


def _print_dataset(d: Mapping[str, Any], title: str) -> None:
    out.print(_safe(f"{title}: {d.get('count')} items from {d.get('path')}"))
    for key in ("collisions", "rejected"):
        if d.get(key):
            err.print(_safe(f"  {len(d[key])} {key}: {_fmt(d[key][:10])}"))


@external_app.command("show")
def external_show(ctx: typer.Context, kind: Kind, limit: Limit = 200) -> None:
    """Show one dataset's items and the stem id each becomes.

    Example: hybrid-audio external show names
    """
    api = _api(ctx)
    data = api.json("GET", f"/external/datasets/{_segment(kind)}")

    def render(d: Mapping[str, Any]) -> None:
        _print_dataset(d, f"dataset {kind}")
        columns = ["text", "stem_id"] + (["key"] if kind == "script" else [])
        _print_rows(f"{kind} items", d.get("items") or [], columns, limit)

    _show(api, data, render)


_CONTENT_TYPES = {".txt": "text/plain", ".csv": "text/csv", ".json": "application/json"}


@external_app.command("import")
def external_import(
    ctx: typer.Context,
    kind: Kind,
    file: Annotated[
        Path,
        typer.Argument(
            exists=True, dir_okay=False, help="A .txt, .csv or .json file (its suffix decides)."
        ),
    ],
) -> None:
    """Replace a dataset with the contents of a file.

    Example: hybrid-audio external import names data.csv
    """
    api = _api(ctx)
    try:
        content = file.read_bytes()
    except OSError as error:
        raise CliError(f"cannot read {file}: {error.strerror or error}", EXIT_USAGE) from None
    media = _CONTENT_TYPES.get(file.suffix.lower(), "application/octet-stream")
    data = api.json(
        "POST",
        f"/external/datasets/{_segment(kind)}",
        files={"file": (file.name, content, media)},
    )
    _show(api, data, lambda d: _print_dataset(d, f"imported {file.name} as {kind}"))


# ----------------------------------------------------------------------------- jobs


@jobs_app.command("list")
def jobs_list(ctx: typer.Context, limit: Limit = 100) -> None:
    """List the jobs of every server process on this state folder, newest first.

    Example: hybrid-audio jobs list
    """
    api = _api(ctx)
    data, total = api.pages("/jobs", 0 if api.as_json else limit)
    rows = [{**j, "errors": j.get("error_count", len(j.get("errors") or []))} for j in data]
    columns = ["id", "kind", "state", "done", "total", "errors", "message"]
    _show(api, data, lambda _d: _print_rows("jobs", rows, columns, limit, total))


@jobs_app.command("show")
def jobs_show(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(metavar="ID", help="Job id.")],
    wait: Annotated[
        bool, typer.Option("--wait", help="Follow it with a progress bar until it ends.")
    ] = False,
) -> None:
    """Show one job's progress, errors and result.

    Example: hybrid-audio jobs show ID --wait
    """
    api = _api(ctx)
    job = api.json("GET", f"/jobs/{_segment(job_id)}")
    if wait:
        _finish_job(api, job, wait=True)
    else:
        _show(api, job, _print_job)


@jobs_app.command("cancel")
def jobs_cancel(
    ctx: typer.Context, job_id: Annotated[str, typer.Argument(metavar="ID", help="Job id.")]
) -> None:
    """Ask a running job to stop after its current step.

    Example: hybrid-audio jobs cancel ID
    """
    api = _api(ctx)
    data = api.json("POST", f"/jobs/{_segment(job_id)}/cancel")
    _show(api, data, _print_job)


if __name__ == "__main__":
    app(prog_name="hybrid-audio")
