"""`hybrid-audio pronounce …`: fix how a word is said, and see what the fix made stale.

A fix is an entry of the server's pronunciation dictionary (`/pronunciations`): a
respelling any engine reads, and optionally phonemes per engine. Setting or removing one
makes the stems that use it again; the messages assembled from the old stems are stale
until they are assembled again, and `pronounce stale` lists them with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import typer

from hybrid_audio.cli.client import EXIT_USAGE, CliError, segment
from hybrid_audio.cli.context import CommandGroup, Session, session
from hybrid_audio.cli.render import Limit, err, fmt, kv_table, out, print_rows, safe

app = CommandGroup(
    help=(
        "Fix how names and phrases are pronounced; the stems using a fix are made again.\n\n"
        'Example: hybrid-audio pronounce set Nguyen --respelling "Win"'
    )
)

TextArg = Annotated[str, typer.Argument(metavar="TEXT", help="The word or phrase as written.")]
Regenerate = Annotated[
    bool,
    typer.Option(
        "--regenerate/--no-regenerate",
        help="Make the stems using the entry again now (otherwise at their next use).",
    ),
]


def _phonemes(given: Sequence[str]) -> dict[str, str]:
    """`ENGINE=PHONEMES` options as a mapping; a malformed one is a usage error."""
    phonemes: dict[str, str] = {}
    for item in given:
        engine, sep, value = item.partition("=")
        if not sep or not engine.strip() or not value.strip():
            raise CliError(
                f"--phonemes {item!r}: write ENGINE=PHONEMES, e.g. piper=wˈɪn", EXIT_USAGE
            )
        phonemes[engine.strip()] = value.strip()
    return phonemes


def _stale_rows(outputs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [{"output_id": o["output_id"], **stem} for o in outputs for stem in o.get("stems") or []]


def _print_fix(report: Mapping[str, Any], done: str) -> None:
    """The entry, the stems made again, the failures (stderr) and the stale messages."""
    entry = report.get("entry") or {}
    out.print(safe(f"{done} {entry.get('text', '')!r}"))
    made = report.get("regenerated") or []
    if made:
        print_rows("stems made again", made, ["stem_id", "text", ("said as", "spoken_as")], 0)
    for failure in report.get("failed") or []:
        err.print(safe(f"  failed: {fmt(failure)}"))
    for output in report.get("stale_outputs") or []:
        reasons = "; ".join(
            f"{s.get('stem_id')} ({s.get('reason')})" for s in output.get("stems") or []
        )
        out.print(safe(f"message {output['output_id']} is stale: {reasons}; assemble it again"))


def _finish_fix(cli: Session, report: Mapping[str, Any], done: str) -> None:
    cli.show(report, lambda r: _print_fix(r, done))
    failed = report.get("failed") or []
    if failed:
        raise CliError(f"{len(failed)} stem(s) could not be made again; they keep their audio")


@app.command("list")
def pronounce_list(ctx: typer.Context, limit: Limit = 200) -> None:
    """List the dictionary's entries.

    Example: hybrid-audio pronounce list
    """
    cli = session(ctx)
    data = cli.api.json("GET", "/pronunciations")
    rows = [
        {**e, "phonemes": [f"{k}: {v}" for k, v in (e.get("phonemes") or {}).items()]} for e in data
    ]
    columns = ["text", "respelling", "phonemes", "note", ("updated", "updated_at")]
    cli.show(data, lambda _d: print_rows("pronunciations", rows, columns, limit))


@app.command("set")
def pronounce_set(
    ctx: typer.Context,
    text: TextArg,
    respelling: Annotated[
        str, typer.Option(help="How to write it so any engine says it right, e.g. Win.")
    ] = "",
    phonemes: Annotated[
        list[str] | None,
        typer.Option(
            metavar="ENGINE=PHONEMES",
            help="Phonemes for one engine, in its notation (repeatable): espeak phonemes "
            "for piper, IPA for cartesia.",
        ),
    ] = None,
    note: Annotated[str, typer.Option(help="Why, for the next reviewer.")] = "",
    regenerate: Regenerate = True,
) -> None:
    """Add or replace the entry for TEXT, and make the stems using it again.

    The messages assembled from the old stems are listed as stale.

    Example: hybrid-audio pronounce set Nguyen --respelling Win

    Piper phonemes, the stems made at their next use instead of now:
    hybrid-audio pronounce set Nguyen --phonemes piper=wˈɪn --no-regenerate
    """
    cli = session(ctx)
    body = {
        "text": text,
        "respelling": respelling,
        "phonemes": _phonemes(phonemes or []),
        "note": note,
        "regenerate": regenerate,
    }
    _finish_fix(cli, cli.api.json("PUT", "/pronunciations", json=body), "set")


@app.command("remove")
def pronounce_remove(ctx: typer.Context, text: TextArg, regenerate: Regenerate = True) -> None:
    """Remove the entry for TEXT; its stems are made again as written (their old audio).

    Example: hybrid-audio pronounce remove Nguyen
    """
    cli = session(ctx)
    params = {"text": text, "regenerate": "true" if regenerate else "false"}
    _finish_fix(cli, cli.api.json("DELETE", "/pronunciations", params=params), "removed")


@app.command("preview")
def pronounce_preview(ctx: typer.Context, text: TextArg) -> None:
    """Show what the engine would be given for TEXT, and which entries apply.

    Example: hybrid-audio pronounce preview "Hi Nguyen Homes"
    """
    session(ctx).show_answer(
        "GET",
        "/pronunciations/preview",
        lambda d: out.print(kv_table(f"said as, for {text!r}", d)),
        params={"text": text},
    )


@app.command("stale")
def pronounce_stale(
    ctx: typer.Context,
    output_id: Annotated[
        str | None,
        typer.Argument(metavar="[OUTPUT_ID]", help="One message (default: every stale one)."),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="Stale messages to list.")] = 100,
) -> None:
    """List the messages whose stems changed since they were assembled, and why.

    Example: hybrid-audio pronounce stale

    One message: hybrid-audio pronounce stale 20250101T000000000000Z_double_anchor_jose_acme
    """
    cli = session(ctx)
    columns = ["output_id", "stem_id", "text", "reason"]
    if output_id is not None:
        stems = cli.api.json("GET", f"/assemble/outputs/{segment(output_id)}/stale")
        rows = _stale_rows([{"output_id": output_id, "stems": stems}])
        cli.show(stems, lambda _d: print_rows(f"stale stems of {output_id}", rows, columns, 0))
        return
    data = cli.api.json("GET", "/pronunciations/stale-outputs", params={"limit": limit})
    cli.show(data, lambda d: print_rows("stale stems", _stale_rows(d), columns, 0))
