"""`hybrid-audio cache …`: list, audit, fill and empty the server's stem cache."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import typer

from hybrid_audio.cli.assemble import OutFile, saved
from hybrid_audio.cli.client import CliError, segment
from hybrid_audio.cli.context import CommandGroup, session
from hybrid_audio.cli.jobs import DevelopersFile, NamesFile, Wait, start_bulk
from hybrid_audio.cli.render import Limit, err, kv_table, out, print_rows, safe

app = CommandGroup(
    help=(
        "Inspect, audit and fill the stem cache.\n\n"
        "Example: hybrid-audio cache list --kind name --extended"
    )
)

StemIdArg = Annotated[str, typer.Argument(help="e.g. stem.name.jose")]


@app.command("list")
def cache_list(
    ctx: typer.Context,
    kind: Annotated[
        str | None, typer.Option(help="Only this kind: name, developer, script… (or plural).")
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
    cli = session(ctx)
    params: dict[str, str] = {}
    if kind is not None:
        params["kind"] = cli.api.kind(kind).name
    if compatible is not None:
        params["compatible"] = "true" if compatible else "false"
    if extended:
        params["extended"] = "true"
    data = cli.api.json("GET", "/cache/list", params=params)
    columns: list[str | tuple[str, str]] = ["stem_id", "kind", "text", "duration", "compatible"]
    if extended:
        columns += ["voice", "encoding", ("rate", "sample_rate"), "size", ("sha256", "sha")]
        rows = [{**r, "sha": str(r.get("sha256", ""))[:12]} for r in data]
    else:
        rows = data
    cli.show(data, lambda _d: print_rows("stems", rows, columns, limit))


@app.command("invalidate")
def cache_invalidate(ctx: typer.Context, stem_id: StemIdArg) -> None:
    """Drop a stem from the cache so the next request synthesizes it again.

    Example: hybrid-audio cache invalidate stem.name.jose
    """

    def render(d: Mapping[str, Any]) -> None:
        done = "invalidated" if d.get("invalidated") else "was not cached"
        out.print(safe(f"{d.get('stem_id')}: ") + done)

    session(ctx).show_answer("POST", "/cache/invalidate", render, json={"stem_id": stem_id})


@app.command("bulk-generate")
def cache_bulk_generate(
    ctx: typer.Context,
    names_file: NamesFile = None,
    developers_file: DevelopersFile = None,
    wait: Wait = True,
) -> None:
    """Synthesize many stems in a background job and follow it; exits 1 if the job fails.

    Example: hybrid-audio cache bulk-generate --names-file names.txt
    """
    start_bulk(session(ctx), names_file, developers_file, wait)


@app.command("audio")
def cache_audio(ctx: typer.Context, stem_id: StemIdArg, out_file: OutFile) -> None:
    """Download a stem's WAV file.

    Example: hybrid-audio cache audio stem.name.jose --out jose.wav
    """
    path = f"/cache/stems/{segment(stem_id)}/audio"
    saved(out_file, session(ctx).api.download(path, out_file))


@app.command("verify")
def cache_verify(ctx: typer.Context) -> None:
    """Audit the cache: orphan, missing, corrupt and half-written files; exits 1 on any.

    Example: hybrid-audio cache verify
    """
    cli = session(ctx)
    data = cli.api.json("GET", "/cache/verify")
    problems = {k: v for k, v in data.items() if isinstance(v, list) and v}

    def render(d: Mapping[str, Any]) -> None:
        counts = {k: (len(v) if isinstance(v, list) else v) for k, v in d.items()}
        out.print(kv_table("cache audit", counts))
        for kind, items in problems.items():
            for item in items:
                err.print(safe(f"  {kind}: {item}"))

    cli.show(data, render)
    if problems:
        found = ", ".join(f"{len(v)} {k}" for k, v in problems.items())
        raise CliError(f"cache audit found problems: {found}")
