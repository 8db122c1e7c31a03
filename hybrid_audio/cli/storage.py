"""`hybrid-audio storage …`: the server's storage mode and push/pull syncs with the bucket.

The bucket's listing and the consistency check are `cache bucket-list` and
`cache check-in-bucket`, beside the cache's other audits (`cache verify`).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any

import typer

from hybrid_audio.cli.context import CommandGroup, session
from hybrid_audio.cli.jobs import Wait, finish_job
from hybrid_audio.cli.render import kv_table, out

app = CommandGroup(
    help=(
        "The server's storage mode (local or a GCS bucket) and syncs with the bucket.\n\n"
        "Example: hybrid-audio storage sync push --wait"
    )
)

#: Object-name prefixes a sync or a listing may be limited to.
PREFIX_HELP = (
    "Only objects under this prefix: stems/name/, stems/developer/, stems/script/, output/."
)
Prefix = Annotated[str, typer.Option(help=PREFIX_HELP)]


class Direction(StrEnum):
    push = "push"
    pull = "pull"


@app.command("status")
def storage_status(ctx: typer.Context) -> None:
    """Show the storage mode, bucket and prefix, and the upload queue's counters.

    Example: hybrid-audio storage status
    """

    def render(d: Mapping[str, Any]) -> None:
        where = d.get("storage") or {}
        fields = {**where, **{k: v for k, v in d.items() if k != "storage"}}
        out.print(kv_table("storage", fields))

    session(ctx).show_answer("GET", "/storage", render)


@app.command("sync")
def storage_sync(
    ctx: typer.Context,
    direction: Annotated[
        Direction,
        typer.Argument(
            help="push: upload what the bucket lacks; pull: download what this server lacks."
        ),
    ],
    prefix: Prefix = "",
    wait: Wait = False,
) -> None:
    """Start a sync job with the bucket; with --wait follow it with a progress bar.

    Nothing is overwritten on either side: other bytes under one name are a conflict.

    With --wait, exits 1 unless the job ends done. A server without a bucket refuses.

    Example: hybrid-audio storage sync pull --prefix stems/name/ --wait
    """
    cli = session(ctx)
    body = {"direction": direction.value, "prefix": prefix}
    finish_job(cli, cli.api.json("POST", "/storage/sync", json=body), wait)
