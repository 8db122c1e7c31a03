"""How the CLI prints: rich tables on a terminal, raw JSON with `--json`, nothing else.

Every text that came from the server goes through `safe()` first, so a name or a message
can neither inject rich markup nor move the cursor or recolour the terminal. Data goes to
stdout, notes and problems to stderr, so `--json` output pipes cleanly into `jq`.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

#: Width of tables written to a pipe or file (rich would otherwise fold them at 80).
PIPE_WIDTH = 160

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)
if not out.is_terminal and not os.environ.get("COLUMNS"):
    out.width = PIPE_WIDTH

#: C0/C1 control characters but tab and newline: a name or message from the server must not
#: be able to move the cursor or recolour the terminal.
_CONTROL = {c: "?" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0)) if c not in (0x09, 0x0A)}
#: Columns holding ids, which get their width before other columns are fitted.
_ID_KEYS = frozenset({"id", "stem_id"})

Columns = Sequence[str | tuple[str, str]]
Limit = Annotated[int, typer.Option(min=0, help="Rows to show in the table (0: all).")]


def safe(text: str) -> str:
    """Text from the server, made inert for rich: no markup, no terminal control codes."""
    return escape(text.translate(_CONTROL))


def print_json(data: Any) -> None:
    """Raw JSON on stdout, unstyled so it pipes into `jq`."""
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def fmt(value: Any) -> str:
    """A cell: readable booleans, dashes for missing values, compact floats and lists."""
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".")
    if isinstance(value, list):
        return ", ".join(fmt(v) for v in value) if value else "—"
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def kv_table(title: str, data: Mapping[str, Any], keys: Sequence[str] | None = None) -> Table:
    """A two-column field/value table."""
    table = Table(title=safe(title), show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for key in keys if keys is not None else list(data):
        if key in data:
            table.add_row(safe(key), safe(fmt(data[key])))
    return table


def rows_table(title: str, rows: Sequence[Mapping[str, Any]], columns: Columns) -> Table:
    """One row per record; a column is a key, or (header, key)."""
    table = Table(title=safe(title), title_justify="left")
    pairs = [(c, c) if isinstance(c, str) else c for c in columns]
    for header, key in pairs:
        # Ids are copied into the next command: give them room before other columns.
        width = max((len(fmt(row.get(key))) for row in rows), default=0)
        min_width = min(width, 40) if key in _ID_KEYS else None
        table.add_column(safe(header), overflow="fold", min_width=min_width)
    for row in rows:
        table.add_row(*(safe(fmt(row.get(key))) for _header, key in pairs))
    return table


def print_rows(
    title: str,
    rows: Sequence[Mapping[str, Any]],
    columns: Columns,
    limit: int,
    total: int | None = None,
) -> None:
    """A table of at most `limit` rows (0: all) of `total` (default: all rows given): rich
    needs ~0.1 ms a cell, and a list of 300 000 dataset items would take a minute to draw."""
    total = len(rows) if total is None else total
    shown = rows if limit <= 0 else rows[:limit]
    out.print(rows_table(f"{title}: {total}", shown, columns))
    if len(shown) < total:
        err.print(f"… {total - len(shown)} more (--limit 0 shows all; --json prints all)")
