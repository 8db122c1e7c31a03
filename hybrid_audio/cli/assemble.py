"""`hybrid-audio assemble …`: messages from templates, their outputs and byte-diff proofs.

A proof that does not pass exits 1, so scripts can rely on the exit code alone.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from hybrid_audio.cli.client import EXIT_USAGE, CliError, segment
from hybrid_audio.cli.context import CommandGroup, Session, session
from hybrid_audio.cli.render import Limit, err, kv_table, out, print_rows, rows_table, safe

app = CommandGroup(
    help=(
        "Assemble messages from templates and inspect the outputs and their byte-diff "
        "proofs.\n\nExample: hybrid-audio assemble template José Hilton "
        "--template double_anchor.json --out msg.wav"
    )
)

OutputId = Annotated[str, typer.Argument(metavar="ID", help="Output id.")]
Template = Annotated[str, typer.Option(help="Template name, with or without .json.")]
AlsoOut = Annotated[
    Path | None,
    typer.Option("--out", dir_okay=False, help="Also download the WAV here ('-': stdout)."),
]
OutFile = Annotated[
    Path, typer.Option("--out", dir_okay=False, help="Where to write the WAV ('-': stdout).")
]
AudioOut = Annotated[
    Path, typer.Option("--out", dir_okay=False, help="Where to write the file ('-': stdout).")
]


class JoinMode(StrEnum):
    exact = "exact"
    hybrid = "hybrid"


Mode = Annotated[
    JoinMode | None,
    typer.Option(
        help="exact (bit-exact joins) or hybrid (short crossfades). Default: the template's."
    ),
]


def audio_path(output_id: str) -> str:
    return f"/assemble/outputs/{segment(output_id)}/audio"


def saved(target: Path, size: int) -> None:
    """Say where a download went (nothing when it went to stdout)."""
    if str(target) != "-":
        err.print(safe(f"wrote {target} ({size} bytes)"))


def print_report(report: Mapping[str, Any]) -> None:
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
    table = rows_table(
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
        err.print(safe(f"  {message}"))


def require_verified(report: Mapping[str, Any], what: str) -> None:
    """Exit 1 when a proof did not pass, so scripts can rely on the exit code."""
    if not report.get("ok"):
        errors = report.get("errors") or []
        first = f": {errors[0]}" if errors else ""
        raise CliError(f"{what} failed verification{first}")


def print_summary(summary: Mapping[str, Any]) -> None:
    keys = ["id", "template", "name", "developer", "script", "duration", "sha256", "verified"]
    out.print(kv_table(f"output {summary.get('id')}", summary, [*keys, "created_at", "path"]))


def print_message(data: Mapping[str, Any]) -> None:
    """An assembled message: its summary, then its proof."""
    print_summary(data["summary"])
    print_report(data["report"])


def finish_message(
    cli: Session,
    data: Any,
    message: Mapping[str, Any],
    render: Callable[[Any], None],
    out_file: Path | None,
) -> None:
    """Show an assembled `message` (inside the answer `data`), download its WAV when asked
    (no table when the WAV goes to stdout), and exit 1 if its proof did not pass."""
    output_id = message["summary"]["id"]
    if str(out_file) != "-":
        cli.show(data, render)
    if out_file is not None:
        saved(out_file, cli.api.download(audio_path(output_id), out_file))
    require_verified(message["report"], f"output {output_id}")


@app.command("template")
def assemble_template(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="First name for the name slot.")],
    developer: Annotated[str, typer.Argument(help="Developer for the developer slot.")],
    template: Template = "double_anchor",
    script: Annotated[
        str | None, typer.Option(help="Script key for a template's script slot.")
    ] = None,
    mode: Mode = None,
    generate_missing: Annotated[
        bool,
        typer.Option(
            "--generate-missing/--no-generate-missing", help="Synthesize stems not yet cached."
        ),
    ] = True,
    out_file: AlsoOut = None,
) -> None:
    """Assemble one message from a template and show its byte-diff proof.

    Exits 1 if the output does not verify.

    Example: hybrid-audio assemble template José Hilton --template double_anchor.json --out m.wav
    """
    cli = session(ctx)
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
    data = cli.api.json("POST", "/assemble/template", json=body)
    finish_message(cli, data, data, print_message, out_file)


@app.command("outputs")
def assemble_outputs(ctx: typer.Context, limit: Limit = 100) -> None:
    """List the assembled messages, newest first.

    Example: hybrid-audio assemble outputs
    """
    cli = session(ctx)
    data, total = cli.api.pages("/assemble/outputs", 0 if cli.as_json else limit)
    columns = ["id", "template", "name", "developer", "script", "duration", "verified"]
    cli.show(data, lambda d: print_rows("outputs", d, columns, limit, total))


@app.command("show")
def assemble_show(ctx: typer.Context, output_id: OutputId) -> None:
    """Show an output's manifest: inputs, file, and where each segment sits (--json: all of it).

    Example: hybrid-audio assemble show 20250101T120000000000Z_double_anchor_jose_hilton
    """
    cli = session(ctx)
    data = cli.api.json("GET", f"/assemble/outputs/{segment(output_id)}")

    def render(d: Mapping[str, Any]) -> None:
        flat: dict[str, Any] = {}
        for key, value in d.items():
            if isinstance(value, dict) and key in ("inputs", "output"):
                flat.update({f"{key}.{k}": v for k, v in value.items()})
            elif not isinstance(value, dict | list):
                flat[key] = value
        out.print(kv_table(f"manifest {d.get('id', output_id)}", flat))
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
        out.print(rows_table("segments", segments, columns))

    cli.show(data, render)


def delivery_format(cli: Session, typed: str) -> str:
    """The delivery format a user typed, as the server names it (`GET /assemble/formats`,
    asked unless it is the master, `wav`); exit 2 naming the formats the server has."""
    if typed.strip().lower() == "wav":
        return "wav"
    listed = cli.api.json("GET", "/assemble/formats", lookup=True)
    try:
        names = [str(f["name"]) for f in listed]
    except (TypeError, KeyError):
        raise CliError("GET /assemble/formats: the server answered an unexpected shape") from None
    word = typed.strip().lower()
    if word not in names:
        raise CliError(
            f"unknown format {typed!r}: this server delivers {', '.join(names)}", EXIT_USAGE
        )
    return word


def download_checked(cli: Session, output_id: str, fmt: str, target: Path) -> None:
    """Download an output's audio in `fmt` and check the bytes received against the sha256
    its manifest records (the master's, or its delivery's, which exists once the server
    has encoded it for this request); on a mismatch `target` is not written."""
    digest = hashlib.sha256()

    def check() -> None:
        manifest = cli.api.json("GET", f"/assemble/outputs/{segment(output_id)}", lookup=True)
        deliveries = manifest.get("deliveries") or {}
        record = manifest.get("output") if fmt == "wav" else deliveries.get(fmt)
        expected = (record or {}).get("sha256")
        if digest.hexdigest() != expected:
            raise CliError(
                f"output {output_id} ({fmt}): the bytes received (sha256 {digest.hexdigest()}) "
                f"are not the ones its manifest records ({expected or 'none'}); download again"
            )

    size = cli.api.download(
        audio_path(output_id), target, digest, check=check, params={"format": fmt}
    )
    saved(target, size)


FormatOption = Annotated[
    str,
    typer.Option(
        "--format",
        help="wav (the master), or a delivery format the server lists: flac, mp3, ogg "
        "(Opus), mulaw, alaw (8 kHz telephony).",
    ),
]


@app.command("download")
def assemble_download(
    ctx: typer.Context, output_id: OutputId, out_file: AudioOut, fmt: FormatOption = "wav"
) -> None:
    """Download an output's audio: the WAV master or a delivery format, checked against the
    sha256 its manifest records.

    Example: hybrid-audio assemble download ID --format mp3 --out message.mp3
    """
    cli = session(ctx)
    download_checked(cli, output_id, delivery_format(cli, fmt), out_file)


@app.command("audio")
def assemble_audio(ctx: typer.Context, output_id: OutputId, out_file: OutFile) -> None:
    """Download an output's WAV file (the master; `download --format` for other formats).

    Example: hybrid-audio assemble audio ID --out message.wav
    """
    download_checked(session(ctx), output_id, "wav", out_file)


@app.command("verify")
def assemble_verify(ctx: typer.Context, output_id: OutputId) -> None:
    """Re-check an output byte by byte against its sources; exits 1 if anything differs.

    Example: hybrid-audio assemble verify ID
    """
    path = f"/assemble/outputs/{segment(output_id)}/verify"
    require_verified(session(ctx).show_answer("GET", path, print_report), f"output {output_id}")
