"""`hybrid-audio external …`: the server's datasets (one per stem kind) and its kinds.

The kinds are the server's: a kind is named as `GET /kinds` lists it (its name, plural or an
alias, in any case), so a kind added on the server is usable here without a new client.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer

from hybrid_audio.cli.client import EXIT_USAGE, CliError, segment
from hybrid_audio.cli.context import CommandGroup, session
from hybrid_audio.cli.render import Limit, err, fmt, out, print_rows, rows_table, safe

app = CommandGroup(
    help=(
        "List, show and import the datasets (names, developers, scripts…).\n\n"
        "Example: hybrid-audio external import names data.csv"
    )
)

KindArg = Annotated[
    str,
    typer.Argument(
        metavar="KIND",
        help="names, developers, scripts… (singular or plural; `hybrid-audio external kinds` "
        "lists what the server knows).",
    ),
]
_CONTENT_TYPES = {".txt": "text/plain", ".csv": "text/csv", ".json": "application/json"}


def _print_dataset(d: Mapping[str, Any], title: str) -> None:
    out.print(safe(f"{title}: {d.get('count')} items from {d.get('path')}"))
    for key in ("collisions", "rejected"):
        if d.get(key):
            err.print(safe(f"  {len(d[key])} {key}: {fmt(d[key][:10])}"))


@app.command("kinds")
def external_kinds(ctx: typer.Context) -> None:
    """List the stem kinds the server knows: their names, dataset file and form.

    Example: hybrid-audio external kinds
    """
    columns = ["name", "plural", "aliases", "form", "dataset", "rotation"]
    session(ctx).show_answer("GET", "/kinds", lambda d: out.print(rows_table("kinds", d, columns)))


@app.command("datasets")
def external_datasets(ctx: typer.Context) -> None:
    """List the datasets with their size, file, collisions and rejected lines.

    Example: hybrid-audio external datasets
    """
    cli = session(ctx)
    data = cli.api.json("GET", "/external/datasets")
    rows = [
        {
            **d,
            "collisions": len(d.get("collisions") or []),
            "rejected": len(d.get("rejected") or []),
        }
        for d in data
    ]
    columns = ["kind", "count", "collisions", "rejected", "path"]
    cli.show(data, lambda _d: out.print(rows_table("datasets", rows, columns)))


@app.command("show")
def external_show(ctx: typer.Context, kind: KindArg, limit: Limit = 200) -> None:
    """Show one dataset's items and the stem id each becomes.

    Example: hybrid-audio external show names
    """
    cli = session(ctx)
    known = cli.api.kind(kind)
    data = cli.api.json("GET", f"/external/datasets/{segment(known.name)}")

    def render(d: Mapping[str, Any]) -> None:
        _print_dataset(d, f"dataset {known.name}")
        columns = ["text", "stem_id"] + (["key"] if known.form == "mapping" else [])
        print_rows(f"{known.name} items", d.get("items") or [], columns, limit)

    cli.show(data, render)


@app.command("import")
def external_import(
    ctx: typer.Context,
    kind: KindArg,
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
    cli = session(ctx)
    try:
        content = file.read_bytes()
    except OSError as error:
        raise CliError(f"cannot read {file}: {error.strerror or error}", EXIT_USAGE) from None
    known = cli.api.kind(kind)
    media = _CONTENT_TYPES.get(file.suffix.lower(), "application/octet-stream")
    data = cli.api.json(
        "POST",
        f"/external/datasets/{segment(known.name)}",
        files={"file": (file.name, content, media)},
    )
    cli.show(data, lambda d: _print_dataset(d, f"imported {file.name} as {known.name}"))
