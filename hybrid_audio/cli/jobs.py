"""`hybrid-audio jobs …`, and how every command that starts a job reads its inputs and follows it.

A followed job shows a live progress bar on stderr and ends in one summary line; anything
but `done` exits 1. Ctrl-C stops following, never the job (it keeps running on the server).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from hybrid_audio.cli.client import EXIT_INTERRUPTED, EXIT_USAGE, Api, CliError, segment
from hybrid_audio.cli.context import CommandGroup, Session, session
from hybrid_audio.cli.render import Limit, err, fmt, kv_table, out, print_json, print_rows, safe

#: Job states after which a job never changes again.
FINAL_JOB_STATES = frozenset({"done", "failed", "cancelled", "interrupted"})
#: Seconds between two `/jobs/{id}` polls while following a job.
POLL_SECONDS = 0.25

app = CommandGroup(help="Follow and cancel long-running jobs.\n\nExample: hybrid-audio jobs list")


def _texts_file(help: str) -> Any:
    return Annotated[Path | None, typer.Option(exists=True, dir_okay=False, help=help)]


NamesFile = _texts_file(
    "Names to use: one per line (# comments), or a JSON list. Default: the dataset."
)
DevelopersFile = _texts_file(
    "Developers to use: one per line, or a JSON list. Default: the dataset."
)
JobId = Annotated[str, typer.Argument(metavar="ID", help="Job id.")]
#: Whether a command that starts or shows a job follows it; each command sets its default.
Wait = Annotated[
    bool, typer.Option("--wait/--no-wait", help="Follow the job with a progress bar until it ends.")
]


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


def start_bulk(
    cli: Session, names_file: Path | None, developers_file: Path | None, wait: bool
) -> None:
    """Start the bulk-generation job (`POST /generate/rotational`) on the lists given (the
    datasets otherwise), then show it or follow it to the end."""
    body: dict[str, list[str]] = {}
    if (names := _read_list(names_file)) is not None:
        body["names"] = names
    if (developers := _read_list(developers_file)) is not None:
        body["developers"] = developers
    finish_job(cli, cli.api.json("POST", "/generate/rotational", json=body), wait)


def print_job(job: Mapping[str, Any]) -> None:
    keys = ["id", "kind", "state", "done", "total", "message", "eta_seconds"]
    out.print(kv_table(f"job {job.get('id')}", job, keys))
    _print_job_outcome(job)


def _print_job_outcome(job: Mapping[str, Any], limit: int = 10) -> None:
    """The result as counts on stdout; errors and rejected or failed items on stderr."""
    result = job.get("result")
    problems: list[str] = [str(e) for e in job.get("errors") or []]
    if isinstance(result, dict):
        counts = ", ".join(
            f"{key} {len(value) if isinstance(value, list) else fmt(value)}"
            for key, value in result.items()
        )
        out.print(safe(f"result: {counts}"))
        for key in ("failed", "rejected"):
            problems += [f"{key}: {fmt(item)}" for item in result.get(key) or []]
    elif result is not None:
        out.print(safe(f"result: {fmt(result)}"))
    for message in problems[:limit]:
        err.print(safe(f"  {message}"))
    if len(problems) > limit:
        err.print(f"  … and {len(problems) - limit} more (see --json)")


def follow(api: Api, job: dict[str, Any]) -> dict[str, Any]:
    """Poll `/jobs/{id}` with a live progress bar until the job ends; its last snapshot."""
    job_path = f"/jobs/{segment(job['id'])}"
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


def finish_job(cli: Session, job: dict[str, Any], wait: bool) -> None:
    """Show a started job, or follow it to the end and exit 1 unless it finished."""
    if not wait:
        cli.show(
            job,
            lambda j: out.print(
                safe(f"started job {j['id']} ({j.get('kind')}); follow it with ")
                + safe(f"`hybrid-audio jobs show {j['id']} --wait`")
            ),
        )
        return
    job = follow(cli.api, job)
    if cli.as_json:
        print_json(job)
    else:
        took = ""
        if job.get("started_at") and job.get("finished_at"):
            took = f" in {job['finished_at'] - job['started_at']:.1f} s"
        errors = len(job.get("errors") or [])
        out.print(
            safe(
                f"job {job['id']} {job.get('state')}: {job.get('done')}/{job.get('total')}"
                f"{took}, {errors} error(s)"
            )
        )
        _print_job_outcome(job)
    if job.get("state") != "done":
        message = job.get("message") or ""
        detail = f": {message}" if message and message != job.get("state") else ""
        raise CliError(f"job {job['id']} {job.get('state')}{detail}")


@app.command("list")
def jobs_list(ctx: typer.Context, limit: Limit = 100) -> None:
    """List the jobs of every server process on this state folder, newest first.

    Example: hybrid-audio jobs list
    """
    cli = session(ctx)
    data, total = cli.api.pages("/jobs", 0 if cli.as_json else limit)
    rows = [{**j, "errors": j.get("error_count", len(j.get("errors") or []))} for j in data]
    columns = ["id", "kind", "state", "done", "total", "errors", "message"]
    cli.show(data, lambda _d: print_rows("jobs", rows, columns, limit, total))


@app.command("show")
def jobs_show(ctx: typer.Context, job_id: JobId, wait: Wait = False) -> None:
    """Show one job's progress, errors and result.

    Example: hybrid-audio jobs show ID --wait
    """
    cli = session(ctx)
    job = cli.api.json("GET", f"/jobs/{segment(job_id)}")
    if wait:
        finish_job(cli, job, wait=True)
    else:
        cli.show(job, print_job)


@app.command("cancel")
def jobs_cancel(ctx: typer.Context, job_id: JobId) -> None:
    """Ask a running job to stop after its current step.

    Example: hybrid-audio jobs cancel ID
    """
    session(ctx).show_answer("POST", f"/jobs/{segment(job_id)}/cancel", print_job)
