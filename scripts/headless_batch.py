"""Headless batch: the rotation's next COUNT pairs as messages, a summary table and a plot.

The same batch as `notebooks/03_headless_batch.ipynb` (which imports these functions), run
with plain `python` and no Jupyter: it drives the core objects of a `Workspace` directly,
re-verifies every message from disk, and writes `batch_summary.csv` and
`batch_durations.html` (a Bokeh plot, its JavaScript inline: no CDN) beside the outputs.
It never imports a view. Exit status 0 when every message verified, 1 otherwise.

    python scripts/headless_batch.py --base-dir . --count 6
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
from bokeh.embed import file_html
from bokeh.models import ColumnDataSource
from bokeh.plotting import figure
from bokeh.resources import INLINE

from hybrid_audio.config import Settings
from hybrid_audio.workspace import Workspace

SUMMARY_CSV = "batch_summary.csv"
DURATIONS_HTML = "batch_durations.html"


def run_batch(workspace: Workspace, count: int, template: str = "double_anchor") -> pd.DataFrame:
    """Assemble the next `count` rotation pairs with `template`; one row per message.

    `verified` is the proof made at assembly; `verified_on_disk` re-reads the written file
    and the stems, so a batch that says True has been checked after the fact too.
    """
    rows = []
    for _ in range(count):
        message = workspace.generate_pair(template)
        step, result = message.step, message.result
        rows.append(
            {
                "output": result.summary.id,
                "name": step.name,
                "developer": step.developer,
                "script": result.summary.script,
                "cycle": step.cycle,
                "position": step.position,
                "duration_s": round(result.summary.duration, 3),
                "verified": result.report.ok,
                "verified_on_disk": workspace.assembler.verify_output(result.summary.id).ok,
            }
        )
    return pd.DataFrame(rows)


def durations_plot(summary: pd.DataFrame) -> figure:
    """Bars of each message's duration, labelled by its name and developer."""
    labels = [f"{row.name} · {row.developer}" for row in summary.itertuples()]
    fig = figure(
        y_range=list(reversed(labels)),
        height=60 + 28 * len(labels),
        sizing_mode="stretch_width",
        x_axis_label="seconds",
        title="Duration per message",
        tools="",
        toolbar_location=None,
    )
    source = ColumnDataSource({"label": labels, "duration": summary["duration_s"].tolist()})
    fig.hbar(y="label", right="duration", height=0.7, source=source, color="#1f4e79")
    fig.x_range.start = 0
    return fig


def write_report(summary: pd.DataFrame, folder: Path) -> tuple[Path, Path]:
    """The summary as CSV and the plot as a self-contained HTML file in `folder`."""
    csv_path, html_path = folder / SUMMARY_CSV, folder / DURATIONS_HTML
    summary.to_csv(csv_path, index=False)
    html_path.write_text(
        file_html(durations_plot(summary), INLINE, "Hybrid Audio batch"), encoding="utf-8"
    )
    return csv_path, html_path


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Assemble the rotation's next COUNT pairs as messages (no server, no "
        "Jupyter), re-verify each from disk and write a summary table and plot.",
    )
    parser.add_argument(
        "--base-dir",
        type=Path,
        default=Path(),
        help="folder holding templates/ and data/; stems/, output/, logs/ and state/ are "
        "used or made there (default: the current folder, as for the server)",
    )
    parser.add_argument("--count", type=int, default=6, help="messages to make (default 6)")
    parser.add_argument(
        "--template", default="double_anchor", help="message template (default double_anchor)"
    )
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error("--count must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    workspace = Workspace.build(Settings(base_dir=args.base_dir))
    try:
        summary = run_batch(workspace, args.count, args.template)
        csv_path, html_path = write_report(summary, Path(workspace.settings.output_dir))
    finally:
        workspace.close()
    print(summary.to_string(index=False))
    print(f"\nsummary: {csv_path}\nplot:    {html_path}")
    return 0 if summary["verified_on_disk"].all() else 1


if __name__ == "__main__":
    raise SystemExit(main())
