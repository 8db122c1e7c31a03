"""`hybrid-audio campaign …`: a recipient list (or rotation pairs) → proven messages → a zip.

`run` uploads the list as it is on disk (the server parses and checks it: one parser, one
set of row numbers); `--wait` follows the campaign's job with the progress bar every job
command uses, then prints a summary and the failed rows. Campaign exit codes: 0 when every
row became a verified message, 1 when the campaign ended with failed rows or did not finish
(cancelled, paused, failed) — and, as everywhere, 1 for a refusal, 2 for bad usage, 3 for an
unreachable server, 130 for Ctrl-C (the campaign keeps running on the server).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from hybrid_audio.cli.assemble import JoinMode, delivery_format, saved
from hybrid_audio.cli.client import EXIT_USAGE, CliError, segment
from hybrid_audio.cli.context import CommandGroup, Session, session
from hybrid_audio.cli.jobs import Wait, follow
from hybrid_audio.cli.render import Limit, err, kv_table, out, print_json, print_rows, safe

app = CommandGroup(
    help=(
        "Campaigns: a recipient list (CSV or JSON with name, developer, optional script and "
        "id) or the next N rotation pairs, made into verified messages and exported as a "
        "zip.\n\n"
        "Exit codes: 0 every row became a verified message; 1 the campaign ended with failed "
        "rows, did not finish (cancelled, paused, failed), or the server refused; 2 bad "
        "usage; 3 server unreachable; 130 stopped following (the campaign keeps running).\n\n"
        "Example: hybrid-audio campaign run recipients.csv --template double_anchor --wait "
        "--out campaign.zip"
    )
)

CampaignId = Annotated[str, typer.Argument(metavar="ID", help="Campaign id (c + 12 hex).")]
Template = Annotated[
    str, typer.Option(help="Template name, e.g. double_anchor.", show_default=False)
]
Join = Annotated[
    JoinMode | None,
    typer.Option(
        "--join", help="exact (bit-exact joins) or hybrid (short crossfades). Default: template's."
    ),
]
ZipOut = Annotated[
    Path | None,
    typer.Option(
        "--out",
        dir_okay=False,
        help="Download the campaign's zip here when it ends (implies --wait; '-': stdout).",
    ),
]
ZipFormat = Annotated[
    str,
    typer.Option(
        "--format",
        help="Each message's audio in the zip: wav (the masters) or a delivery format the "
        "server lists (flac, mp3, ogg, mulaw, alaw).",
    ),
]
RecipientsFile = Annotated[
    Path,
    typer.Argument(
        exists=True,
        dir_okay=False,
        metavar="FILE",
        help="Recipients: .csv with a header (name,developer[,script][,id]) or a .json list.",
    ),
]
#: Keys of a campaign shown in `show` and in the summary after `--wait`.
INFO_KEYS = [
    "id",
    "state",
    "pause_reason",
    "template",
    "join",
    "source",
    "total",
    "done",
    "failed",
    "pending",
    "distinct_stems",
    "job_id",
    "eta_seconds",
]
PROBLEM_COLUMNS = ["row", ("recipient id", "recipient_id"), "message"]
MESSAGE_COLUMNS = [
    "row",
    ("recipient id", "recipient_id"),
    "name",
    "developer",
    "script",
    "state",
    ("output id", "output_id"),
    "duration",
    "verified",
    "error",
]


class MessageState(StrEnum):
    pending = "pending"
    done = "done"
    failed = "failed"


def _path(campaign_id: str, tail: str = "") -> str:
    return f"/campaigns/{segment(campaign_id)}{tail}"


@contextlib.contextmanager
def _upload(path: Path) -> Iterator[dict[str, Any]]:
    """The multipart `file` part of a recipient list, streamed from disk."""
    media_type = "application/json" if path.suffix.lower() == ".json" else "text/csv"
    try:
        handle = path.open("rb")
    except OSError as error:
        raise CliError(f"cannot read {path}: {error.strerror or error}", EXIT_USAGE) from None
    with handle:
        yield {"file": (path.name, handle, media_type)}


def print_campaign(detail: Mapping[str, Any]) -> None:
    """A campaign's fields, then its problems (refused and failed rows) on stdout."""
    out.print(kv_table(f"campaign {detail.get('id')}", detail, INFO_KEYS))
    problems = detail.get("problems") or []
    if problems:
        print_rows("failed rows", problems, PROBLEM_COLUMNS, 0)


def _started(answer: Mapping[str, Any]) -> None:
    campaign, job = answer.get("campaign") or {}, answer.get("job") or {}
    out.print(
        safe(
            f"started campaign {campaign.get('id')} ({campaign.get('total')} messages, "
            f"job {job.get('id')}); follow it with "
            f"`hybrid-audio campaign show {campaign.get('id')}`"
        )
    )


def _outcome(detail: Mapping[str, Any]) -> None:
    """Exit 1 (one error line) unless every row became a message; `failed` counts the rows
    refused when the list was read and those that failed while running."""
    campaign_id, state, failed = detail.get("id"), detail.get("state"), detail.get("failed")
    if state != "done":
        reason = detail.get("pause_reason") or ""
        raise CliError(f"campaign {campaign_id} {state}" + (f": {reason}" if reason else ""))
    if failed:
        raise CliError(
            f"campaign {campaign_id} finished with {failed} failed row(s) "
            f"(`hybrid-audio campaign show {campaign_id}` lists them)"
        )


def download_zip(cli: Session, campaign_id: str, target: Path, fmt: str) -> None:
    """The campaign's zip, its messages in delivery format `fmt`, written to `target`."""
    path = _path(campaign_id, "/export.zip")
    saved(target, cli.api.download(path, target, params={"format": fmt}))


def finish_campaign(
    cli: Session, answer: dict[str, Any], wait: bool, target: Path | None, fmt: str = "wav"
) -> None:
    """Show a started campaign, or follow its job, summarise it, download its zip."""
    if not (wait or target):
        cli.show(answer, _started)
        return
    campaign_id = str(answer["campaign"]["id"])
    follow(cli.api, answer["job"])
    detail = cli.api.json("GET", _path(campaign_id))
    if target is not None and (detail.get("done") or 0) > 0:
        download_zip(cli, campaign_id, target, fmt)
    elif target is not None:
        err.print(safe(f"no zip written: campaign {campaign_id} has no finished message"))
    if cli.as_json:
        if str(target) != "-":
            print_json(detail)
    else:
        print_campaign(detail)
    _outcome(detail)


@app.command("run")
def campaign_run(
    ctx: typer.Context,
    recipients: RecipientsFile,
    template: Template,
    join: Join = None,
    wait: Wait = False,
    target: ZipOut = None,
    fmt: ZipFormat = "wav",
) -> None:
    """Upload a recipient list and start its campaign; --wait follows it to a summary.

    The server checks every row; refused rows are listed with their row numbers, the rest go on.

    With --out, the zip (WAVs, messages.csv, manifests) is downloaded when the campaign ends.

    Exits 1 when the campaign ends with failed rows (see `hybrid-audio campaign --help`).

    Example: hybrid-audio campaign run list.csv --template double_anchor --wait --out c.zip
    """
    cli = session(ctx)
    fmt = delivery_format(cli, fmt)  # before the campaign starts: a typo is not found later
    form = {"template": template} | ({"join": join.value} if join else {})
    with _upload(recipients) as upload:
        answer = cli.api.json("POST", "/campaigns", data=form, files=upload)
    finish_campaign(cli, answer, wait, target, fmt)


@app.command("rotation")
def campaign_rotation(
    ctx: typer.Context,
    count: Annotated[int, typer.Option(min=1, help="Messages: the next COUNT rotation pairs.")],
    template: Template,
    seed: Annotated[int | None, typer.Option(help="Rotation seed (default: the server's).")] = None,
    join: Join = None,
    wait: Wait = False,
    target: ZipOut = None,
    fmt: ZipFormat = "wav",
) -> None:
    """Start a campaign over the next COUNT name × developer pairs of the rotation.

    The pairs are fixed when the campaign is created, so a resume makes the same messages.

    Example: hybrid-audio campaign rotation --count 50 --template double_anchor --wait
    """
    cli = session(ctx)
    fmt = delivery_format(cli, fmt)
    rotation: dict[str, int] = {"count": count} | ({"seed": seed} if seed is not None else {})
    body: dict[str, Any] = {"template": template, "rotation": rotation}
    if join:
        body["join"] = join.value
    finish_campaign(cli, cli.api.json("POST", "/campaigns", json=body), wait, target, fmt)


@app.command("preview")
def campaign_preview(ctx: typer.Context, recipients: RecipientsFile, template: Template) -> None:
    """Check a recipient list without starting anything: first rows, refused rows, and how many
    distinct stems the campaign needs, how many are cached and how many it would make.

    Example: hybrid-audio campaign preview recipients.csv --template double_anchor
    """
    cli = session(ctx)

    def render(plan: Mapping[str, Any]) -> None:
        keys = ["recipients", "distinct_stems", "cached_stems", "to_make"]
        refused = {"refused": len(plan.get("problems") or [])}
        out.print(kv_table("campaign preview", {k: plan.get(k) for k in keys} | refused))
        columns = ["row", "id", "name", "developer", "script"]
        print_rows("first rows", plan.get("preview") or [], columns, 0)
        if plan.get("problems"):
            print_rows("refused rows", plan["problems"], PROBLEM_COLUMNS, 0)

    with _upload(recipients) as upload:
        cli.show_answer(
            "POST", "/campaigns/preview", render, data={"template": template}, files=upload
        )


@app.command("list")
def campaign_list(ctx: typer.Context, limit: Limit = 100) -> None:
    """List the campaigns, newest first.

    Example: hybrid-audio campaign list
    """
    cli = session(ctx)
    data, total = cli.api.pages("/campaigns", 0 if cli.as_json else limit)
    columns = ["id", "state", "template", "source", "total", "done", "failed", "pending"]
    cli.show(data, lambda rows: print_rows("campaigns", rows, columns, limit, total))


@app.command("show")
def campaign_show(ctx: typer.Context, campaign_id: CampaignId) -> None:
    """Show a campaign's state and counts, and every refused or failed row.

    Example: hybrid-audio campaign show c3f9a0b1c2d4e
    """
    session(ctx).show_answer("GET", _path(campaign_id), print_campaign)


@app.command("messages")
def campaign_messages(
    ctx: typer.Context,
    campaign_id: CampaignId,
    offset: Annotated[int, typer.Option(min=0, help="Rows to skip.")] = 0,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Rows to show.")] = 100,
    state: Annotated[MessageState | None, typer.Option(help="Only messages in this state.")] = None,
    search: Annotated[
        str | None, typer.Option(help="Only rows whose name, developer or id contain this.")
    ] = None,
) -> None:
    """A page of a campaign's messages: recipient, state, output id, duration, proof.

    Example: hybrid-audio campaign messages c3f9a0b1c2d4e --state failed
    """
    cli = session(ctx)
    params: dict[str, Any] = {"offset": offset, "limit": limit}
    if state:
        params["state"] = state.value
    if search:
        params["search"] = search
    response = cli.api.request("GET", _path(campaign_id, "/messages"), params=params)
    rows = response.json()
    total = int(response.headers.get("x-total-count", len(rows)))
    cli.show(rows, lambda r: print_rows("messages", r, MESSAGE_COLUMNS, 0, total))


@app.command("export")
def campaign_export(
    ctx: typer.Context,
    campaign_id: CampaignId,
    target: Annotated[
        Path, typer.Option("--out", dir_okay=False, help="Where to write the zip ('-': stdout).")
    ],
    fmt: ZipFormat = "wav",
) -> None:
    """Download a campaign's zip: its audio (WAV masters or --format), messages.csv and
    manifests.

    Example: hybrid-audio campaign export c3f9a0b1c2d4e --format mp3 --out campaign.zip
    """
    cli = session(ctx)
    download_zip(cli, campaign_id, target, delivery_format(cli, fmt))


@app.command("cancel")
def campaign_cancel(ctx: typer.Context, campaign_id: CampaignId) -> None:
    """Stop a running campaign after its current message (resume continues it).

    Example: hybrid-audio campaign cancel c3f9a0b1c2d4e
    """
    session(ctx).show_answer("POST", _path(campaign_id, "/cancel"), print_campaign)


@app.command("resume")
def campaign_resume(
    ctx: typer.Context, campaign_id: CampaignId, wait: Wait = False, target: ZipOut = None
) -> None:
    """Continue a cancelled, paused or interrupted campaign; finished messages are kept.

    Example: hybrid-audio campaign resume c3f9a0b1c2d4e --wait
    """
    cli = session(ctx)
    finish_campaign(cli, cli.api.json("POST", _path(campaign_id, "/resume")), wait, target)


@app.command("delete")
def campaign_delete(ctx: typer.Context, campaign_id: CampaignId) -> None:
    """Delete a campaign, its messages and its exports (recipients' names go with them).

    Example: hybrid-audio campaign delete c3f9a0b1c2d4e
    """
    cli = session(ctx)
    cli.api.request("DELETE", _path(campaign_id))
    cli.show({"deleted": campaign_id}, lambda _d: out.print(safe(f"deleted {campaign_id}")))
