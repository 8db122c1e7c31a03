"""`hybrid-audio rotation …`: step, stream, inspect and rewind the server's rotations.

Streams print each NDJSON line as it arrives, never buffering the stream. The streams a
server has are whatever its `GET /rotation/state` lists; the CLI keeps no list of its own.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import Annotated, Any

import typer

from hybrid_audio.cli.assemble import (
    AlsoOut,
    Mode,
    Template,
    finish_message,
    print_report,
    print_summary,
)
from hybrid_audio.cli.client import EXIT_USAGE, CliError, segment
from hybrid_audio.cli.context import CommandGroup, Session, session
from hybrid_audio.cli.render import fmt, kv_table, out, rows_table, safe

app = CommandGroup(
    help=(
        "Walk deterministic rotations of names, developers, scripts and pairs.\n\n"
        "Example: hybrid-audio rotation next pair"
    )
)

Count = Annotated[int, typer.Option(min=1, help="How many steps to take.")]


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


def _known_stream(cli: Session, stream: str) -> str:
    """`stream` if the server has it (its `GET /rotation/state` lists it); exit 2 otherwise."""
    streams = cli.api.json("GET", "/rotation/state", lookup=True)
    if stream not in streams:
        known = ", ".join(streams)
        raise CliError(f"unknown stream {stream!r}: this server has {known}", EXIT_USAGE)
    return stream


Stream = Annotated[
    str,
    typer.Argument(
        help="A stream of the server: name, developer, script, pair, or a kind added with "
        '"rotation": true (`hybrid-audio rotation state` lists them).'
    ),
]


@app.command("next")
def rotation_next(ctx: typer.Context, stream: Stream) -> None:
    """Take the next step of any stream, added kinds too (advances its cursor).

    Example: hybrid-audio rotation next developer
    """
    cli = session(ctx)
    path = f"/rotation/next/{segment(_known_stream(cli, stream))}"
    cli.show_answer("GET", path, lambda d: out.print(safe(_step_line(d))))


def _add_next(stream: str, what: str) -> None:
    """`rotation next-STREAM`, the mirror of `GET /rotation/next_STREAM`."""

    def command(ctx: typer.Context) -> None:
        path = f"/rotation/next_{stream}"
        session(ctx).show_answer("GET", path, lambda d: out.print(safe(_step_line(d))))

    command.__name__ = f"rotation_next_{stream}"
    command.__doc__ = (
        f"Take the next {what} of the {stream} rotation (advances the cursor).\n\n"
        f"Example: hybrid-audio rotation next-{stream}"
    )
    app.command(f"next-{stream}")(command)


for _stream, _what in (
    ("name", "name"),
    ("developer", "developer"),
    ("script", "script key"),
    ("pair", "name × developer pair"),
):
    _add_next(_stream, _what)


@app.command("generate-pair")
def rotation_generate_pair(
    ctx: typer.Context,
    template: Template = "double_anchor",
    out_file: AlsoOut = None,
    mode: Mode = None,
) -> None:
    """Take the next pair and assemble its message; exits 1 if it does not verify.

    Example: hybrid-audio rotation generate-pair --template double_anchor --out m.wav
    """
    cli = session(ctx)
    body = {"template": template.removesuffix(".json")}
    if mode is not None:
        body["mode"] = mode.value
    data = cli.api.json("POST", "/rotation/generate_pair", json=body)
    result = data["result"]

    def render(d: Mapping[str, Any]) -> None:
        out.print(safe(_step_line(d["step"])))
        if d.get("script"):
            out.print(safe(f"script: {d['script']}"))
        print_summary(result["summary"])
        print_report(result["report"])

    finish_message(cli, data, result, render, out_file)


def _stream(ctx: typer.Context, route: str, count: int) -> None:
    """Print each NDJSON line as it arrives (raw with --json), never buffering the stream."""
    cli = session(ctx)
    with cli.api.stream("GET", route, params={"count": count}) as response:
        for line in response.iter_lines():
            if not line.strip():
                continue
            if cli.as_json:
                sys.stdout.write(line + "\n")
                sys.stdout.flush()
                continue
            try:
                step = json.loads(line)
            except ValueError:
                raise CliError(f"{route}: the server sent a line that is not JSON") from None
            if isinstance(step, dict) and "error" in step and "stream" not in step:
                raise CliError(f"{route}: stream ended with an error: {fmt(step['error'])}")
            out.print(safe(_step_line(step)))


@app.command("pairs-stream")
def rotation_pairs_stream(ctx: typer.Context, count: Count = 10) -> None:
    """Stream the next COUNT pairs, one line each as the server sends it.

    Example: hybrid-audio rotation pairs-stream --count 100
    """
    _stream(ctx, "/rotation/pairs_stream", count)


@app.command("scripts-stream")
def rotation_scripts_stream(ctx: typer.Context, count: Count = 10) -> None:
    """Stream the next COUNT script keys, one line each as the server sends it.

    Example: hybrid-audio --json rotation scripts-stream --count 20
    """
    _stream(ctx, "/rotation/scripts_stream", count)


@app.command("state")
def rotation_state(ctx: typer.Context) -> None:
    """Show every stream's cursor: cycle, position, progress and whether its data changed.

    Example: hybrid-audio rotation state
    """

    def render(d: Mapping[str, Any]) -> None:
        rows = [{**s, "progress": f"{100 * (s.get('progress') or 0):.1f}%"} for s in d.values()]
        columns = ["stream", "cycle", "position", "size", "progress", "stale", "updated_at"]
        out.print(rows_table("rotation cursors", rows, columns))

    session(ctx).show_answer("GET", "/rotation/state", render)


@app.command("reset")
def rotation_reset(
    ctx: typer.Context,
    stream: Stream,
) -> None:
    """Rewind one stream's cursor to the start of cycle 0.

    Example: hybrid-audio rotation reset pair
    """
    cli = session(ctx)
    cli.show_answer(
        "POST",
        "/rotation/reset",
        lambda d: out.print(kv_table(f"stream {d.get('stream')} reset", d)),
        json={"stream": _known_stream(cli, stream)},
    )
