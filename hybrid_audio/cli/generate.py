"""`hybrid-audio generate …`: make stems (or take them from the cache), one route each."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import typer

from hybrid_audio.cli.context import CommandGroup, session
from hybrid_audio.cli.jobs import DevelopersFile, NamesFile, Wait, start_bulk
from hybrid_audio.cli.render import fmt, kv_table, out, safe

app = CommandGroup(
    help=(
        "Make stems, or fetch them from the cache: name, developer, script, any other "
        "kind, both, or a whole dataset.\n\nExample: hybrid-audio generate name José"
    )
)

Extended = Annotated[bool, typer.Option("--extended", help="Show every field of the stem.")]


def _stem_line(response: Mapping[str, Any]) -> str:
    """'José → stem.name.jose  (new, 0.52 s)' from a StemResponse."""
    stem = response.get("stem") or {}
    state = "cached" if stem.get("cached") else "new"
    return f"{response.get('normalized')}  ({state}, {fmt(stem.get('duration'))} s)"


def _print_stem(response: Mapping[str, Any], extended: bool) -> None:
    out.print(safe(_stem_line(response)))
    if extended:
        out.print(kv_table(str(response["stem"].get("stem_id")), response["stem"]))


def _stem(ctx: typer.Context, route: str, body: dict[str, str], extended: bool) -> None:
    session(ctx).show_answer("POST", route, lambda d: _print_stem(d, extended), json=body)


@app.command("name")
def generate_name(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="First name as it should be spoken.")],
    extended: Extended = False,
) -> None:
    """Make the stem of a first name (or take it from the cache) and show its id.

    Example: hybrid-audio generate name "José María" --extended
    """
    _stem(ctx, "/generate/name", {"name": name}, extended)


@app.command("developer")
def generate_developer(
    ctx: typer.Context,
    developer: Annotated[str, typer.Argument(help="Developer (company) name.")],
    extended: Extended = False,
) -> None:
    """Make the stem of a developer name (or take it from the cache).

    Example: hybrid-audio generate developer "Brightwater Homes"
    """
    _stem(ctx, "/generate/developer", {"developer": developer}, extended)


@app.command("script")
def generate_script(
    ctx: typer.Context,
    key: Annotated[str, typer.Argument(help="Key of a phrase in the scripts dataset.")],
    extended: Extended = False,
) -> None:
    """Make the stem of a script phrase, named by its key in the scripts dataset.

    Example: hybrid-audio generate script hello
    """
    _stem(ctx, "/generate/script", {"key": key}, extended)


@app.command("stem")
def generate_stem(
    ctx: typer.Context,
    kind: Annotated[
        str,
        typer.Argument(
            metavar="KIND",
            help="Any kind the server knows (`hybrid-audio external kinds`), singular or plural.",
        ),
    ],
    text: Annotated[
        str, typer.Argument(help="The text to speak; for a key → phrase kind (script), the key.")
    ],
    extended: Extended = False,
) -> None:
    """Make the stem of any kind, including kinds added on the server after this client.

    Example: hybrid-audio generate stem intro welcome
    """
    cli = session(ctx)
    _stem(ctx, "/generate/stem", {"kind": cli.api.kind(kind).name, "text": text}, extended)


@app.command("combined")
def generate_combined(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="First name.")],
    developer: Annotated[str, typer.Argument(help="Developer name.")],
    extended: Extended = False,
) -> None:
    """Make the name and developer stems in one call.

    Example: hybrid-audio generate combined José Hilton
    """

    def render(d: Mapping[str, Any]) -> None:
        _print_stem(d["name"], extended)
        _print_stem(d["developer"], extended)

    body = {"name": name, "developer": developer}
    session(ctx).show_answer("POST", "/generate/combined", render, json=body)


@app.command("rotational")
def generate_rotational(
    ctx: typer.Context,
    names_file: NamesFile = None,
    developers_file: DevelopersFile = None,
    wait: Wait = False,
) -> None:
    """Start a job making every stem a names × developers rotation needs (cached ones skipped).

    Example: hybrid-audio generate rotational --names-file names.txt --wait
    """
    start_bulk(session(ctx), names_file, developers_file, wait)
