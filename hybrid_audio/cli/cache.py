"""`hybrid-audio cache …`: list, audit, fill and empty the server's stem cache.

`bucket-list` and `check-in-bucket` look at the storage side: the bucket's objects, and the
local index against them (a server without a bucket audits its files against the index).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import unquote

import typer

from hybrid_audio.cli.assemble import OutFile, saved
from hybrid_audio.cli.client import CliError, segment
from hybrid_audio.cli.context import CommandGroup, session
from hybrid_audio.cli.jobs import DevelopersFile, NamesFile, Wait, start_bulk
from hybrid_audio.cli.render import Limit, err, kv_table, out, print_rows, rows_table, safe
from hybrid_audio.cli.storage import Prefix

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
        columns += [("LUFS before", "loudness_before"), ("LUFS", "loudness_after")]
        columns += [("dBTP", "true_peak_after"), ("said as", "spoken_as")]
        rows = [{**r, "sha": str(r.get("sha256", ""))[:12]} for r in data]
    else:
        rows = data
    cli.show(data, lambda _d: print_rows("stems", rows, columns, limit))


@app.command("invalidate")
def cache_invalidate(
    ctx: typer.Context,
    stem_id: StemIdArg,
    remote: Annotated[
        bool,
        typer.Option(
            "--remote", help="Also delete the bucket's copy (refused by a server without one)."
        ),
    ] = False,
) -> None:
    """Drop a stem from the cache so the next request synthesizes it again.

    With a bucket, the next request downloads the bucket's copy unless --remote deleted it.

    Example: hybrid-audio cache invalidate stem.name.jose --remote
    """

    def render(d: Mapping[str, Any]) -> None:
        done = "invalidated" if d.get("invalidated") else "was not cached"
        if remote:
            done += "; bucket copy " + ("deleted" if d.get("remote") else "was not there")
        out.print(safe(f"{d.get('stem_id')}: ") + done)

    body = {"stem_id": stem_id, "remote": remote}
    session(ctx).show_answer("POST", "/cache/invalidate", render, json=body)


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


@app.command("bucket-list")
def cache_bucket_list(
    ctx: typer.Context,
    prefix: Prefix = "",
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Objects per page.")] = 100,
    page_token: Annotated[
        str | None, typer.Option(help="Start at this page (next_page_token of the last one).")
    ] = None,
    every: Annotated[
        bool, typer.Option("--all", help="Follow next_page_token to the end.")
    ] = False,
) -> None:
    """List the bucket's objects (a server without a bucket: its stem and output files).

    Columns: name, size, CRC32C, updated time, and a stem's id and spoken text (metadata).

    Without --all, the token of the next page is printed on stderr when there is one.

    Example: hybrid-audio cache bucket-list --prefix stems/name/ --all
    """
    cli = session(ctx)
    params: dict[str, Any] = {"prefix": prefix, "limit": limit}
    if page_token:
        params["page_token"] = page_token
    page = cli.api.json("GET", "/cache/bucket_list", params=params)
    objects = list(page.get("objects") or [])
    while every and page.get("next_page_token"):
        params["page_token"] = page["next_page_token"]
        page = cli.api.json("GET", "/cache/bucket_list", params=params)
        objects += page.get("objects") or []
    data = {**page, "objects": objects}

    def render(d: Mapping[str, Any]) -> None:
        rows = [_object_row(o) for o in objects]
        where = f"bucket {d['bucket']}" if d.get("bucket") else "local files (no bucket)"
        columns = ["name", "size", "crc32c", ("updated (UTC)", "updated"), "stem_id", "text"]
        out.print(rows_table(f"objects in {where}: {len(rows)}", rows, columns))
        if d.get("next_page_token"):
            err.print(safe(f"more: --page-token {d['next_page_token']} (or --all)"))

    cli.show(data, render)


def _object_row(info: Mapping[str, Any]) -> dict[str, Any]:
    """An object as a table row: its metadata's stem id and spoken text (percent-decoded),
    and its update time to the second in UTC (room for the name)."""
    metadata = info.get("metadata") or {}
    updated = info.get("updated")
    if updated:
        with contextlib.suppress(ValueError):
            updated = datetime.fromisoformat(updated).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    return {
        **info,
        "updated": updated,
        "stem_id": metadata.get("stem_id"),
        "text": unquote(metadata.get("text", "")),
    }


@app.command("check-in-bucket")
def cache_check_in_bucket(
    ctx: typer.Context,
    stem_id: Annotated[str | None, typer.Option(help="Check this stem only.")] = None,
    limit: Limit = 200,
) -> None:
    """Compare the server's stems and outputs with the bucket: counts, then the differences.

    Differences: missing on either side, checksum or contract mismatch, orphan objects.

    A server without a bucket audits its files against its index instead, and says so.

    Exit code: 0 when everything agrees, 1 when there is any difference.

    Example: hybrid-audio cache check-in-bucket --stem-id stem.name.jose
    """
    cli = session(ctx)
    params = {} if stem_id is None else {"stem_id": stem_id}
    report = cli.api.json("GET", "/cache/check_in_bucket", params=params)
    summary = report.get("summary") or {}

    def render(d: Mapping[str, Any]) -> None:
        keys = ["mode", "bucket", "prefix", "checked_local", "checked_remote", *summary, "ok"]
        out.print(kv_table("consistency", {**d, **summary}, keys))
        if d.get("note"):
            err.print(safe(str(d["note"])))
        if d.get("rows"):
            columns = ["status", "name", "stem_id", "output_id", "detail"]
            print_rows("differences", d["rows"], columns, limit)

    cli.show(report, render)
    if not report.get("ok", not report.get("rows")):
        found = ", ".join(f"{count} {status}" for status, count in summary.items() if count)
        raise CliError(f"the bucket and this server differ: {found or 'see the rows'}")
