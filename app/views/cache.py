"""Cache page: the stem index (filtered, searchable, playable, with each stem's measured
loudness before and after processing, true peak and gain), a plot of that loudness, totals,
invalidation, bulk generation, audit.

Everything shown follows the core's parameters through the session's live feed
(`app.views.live`): the table and totals follow `StemCache.revision` and the contract, the
bulk bar and status follow the job's own parameters. The view keeps only what the user
chose (filters, search, the job it started, the stem it plays, the last audit).
"""

from __future__ import annotations

from io import BytesIO

import pandas as pd
import panel as pn
import param
from bokeh.models import ColumnDataSource, FactorRange, Span
from bokeh.plotting import figure
from bokeh.transform import jitter
from panel.io.state import set_curdoc

from app.views.common import (
    WRAPPED,
    PageState,
    audio_player,
    friendly,
    job_panel,
    md,
    notify_info,
    wav_download,
)
from app.views.live import live
from hybrid_audio import kinds
from hybrid_audio.cache import CacheReport, StemRecord
from hybrid_audio.contract import CONTRACT_PARAMETERS
from hybrid_audio.datasets import load_dataset
from hybrid_audio.jobs import FINISHED_STATES, Job, JobState
from hybrid_audio.workspace import Workspace

#: A ▶ in the first column plays the row's stem (a data column, so it stays in view).
PLAY = "play"
STEM_COLUMNS = [
    PLAY,
    "stem_id",
    "kind",
    "text",
    "compatible",
    "incompatible_because",
    "loudness_before",
    "loudness_after",
    "true_peak_after",
    "gain_db",
    "engine",
    "voice",
    "encoding",
    "sample_rate",
    "duration",
    "size",
    "sha256",
    "updated_at",
]
_RECORD_COLUMNS = [c for c in STEM_COLUMNS if c not in (PLAY, "incompatible_because")]
_COMPATIBILITY = {"all": None, "compatible": True, "incompatible": False}
#: Wait before reading a table selection after a click (Panel's debounce is 50 ms).
_SELECTION_SETTLE_MS = 250
#: Long texts wrap inside these widths (px) instead of widening the table past the page.
_WIDTHS = {PLAY: 44, "stem_id": 220, "text": 260, "incompatible_because": 260, "sha256": 140}
#: Measurements in LUFS / dBTP / dB, shown to a tenth (None: processing was off).
_LEVELS = ("loudness_before", "loudness_after", "true_peak_after", "gain_db")
_LEVEL_FORMAT = {"type": "number", "precision": 1}
_TITLES = {
    "loudness_before": "LUFS before",
    "loudness_after": "LUFS after",
    "true_peak_after": "peak dBTP",
    "gain_db": "gain dB",
}
#: Rows of the loudness plot, bottom to top.
_STAGES = ("after", "before")


def _dataset_text(kind: str, workspace: Workspace) -> str:
    try:
        return "\n".join(item.text for item in load_dataset(kind, workspace.settings).items)
    except ValueError:
        return ""


class CacheView(PageState, pn.viewable.Viewer):
    """Browse and maintain the stem cache; bulk-generate the datasets as a job."""

    workspace = param.ClassSelector(class_=Workspace, doc="The core objects.")
    audio_urls = param.Boolean(default=False, doc="Give the player API URLs, not files.")
    kind = param.Selector(default="all", objects=["all"], doc="Kind filter.")
    compatibility = param.Selector(
        default="all", objects=list(_COMPATIBILITY), doc="Compatibility with the contract."
    )
    search = param.String(
        default="", label="Search", doc="Shows only stems whose id or text contains it."
    )
    playing = param.String(default="", doc="Stem id the player plays ('' → none).")
    names_text = param.String(default="", label="Names", doc="Names to bulk-generate.")
    developers_text = param.String(
        default="", label="Developers", doc="Developers to bulk-generate."
    )
    job = param.ClassSelector(class_=Job, allow_None=True, doc="The bulk job started here.")
    audit = param.ClassSelector(class_=CacheReport, allow_None=True, doc="Last verify().")

    def __init__(self, **params) -> None:
        super().__init__(**params)
        settings = self.workspace.settings
        self.param.kind.objects = ["all", *(kind.name for kind in kinds.load(settings))]
        if not self.names_text:
            self.names_text = _dataset_text("name", self.workspace)
        if not self.developers_text:
            self.developers_text = _dataset_text("developer", self.workspace)
        feed = live(self.workspace)
        cache, contract = self.workspace.cache, self.workspace.contract
        #: The cache as it changes: its revision and every contract parameter.
        self._cache_refs = [
            feed.ref(cache, "revision"),
            *(feed.ref(contract, name) for name in CONTRACT_PARAMETERS),
        ]
        self.table = pn.widgets.Tabulator(
            pn.bind(
                self._stems_frame,
                self.param.kind,
                self.param.compatibility,
                self.param.search,
                *self._cache_refs,
            ),
            show_index=False,
            disabled=True,
            selectable="checkbox",
            pagination="local",
            page_size=15,
            widths=_WIDTHS,
            formatters={
                "text": WRAPPED,
                "incompatible_because": WRAPPED,
                **dict.fromkeys(_LEVELS, _LEVEL_FORMAT),
            },
            titles=_TITLES,
            css_classes=["stems-table"],
            sizing_mode="stretch_width",
        )
        self.invalidate_button = pn.widgets.Button(
            label="Invalidate", color="danger", css_classes=["invalidate"]
        )
        self.bulk_button = pn.widgets.Button(
            label="Bulk generate", color="primary", css_classes=["bulk-generate"]
        )
        self.cancel_button = pn.widgets.Button(label="Cancel job", css_classes=["cancel-job"])
        self.verify_button = pn.widgets.Button(label="Verify cache", css_classes=["verify-cache"])
        self._init_callbacks()

    def _init_callbacks(self) -> None:
        self.table.on_click(self._handle_play_click, column=PLAY)
        self.invalidate_button.on_click(self._handle_invalidate_click)
        self.bulk_button.on_click(lambda _: self.bulk_generate())
        self.cancel_button.on_click(lambda _: self.cancel_job())
        self.verify_button.on_click(lambda _: self.verify())

    # --- actions ------------------------------------------------------------------------

    def _handle_play_click(self, event) -> None:
        if event.row is not None and event.row < len(self.table.value):
            self.playing = str(self.table.value.iloc[event.row]["stem_id"])

    def _handle_invalidate_click(self, _event: object) -> None:
        # Panel debounces property changes from the browser (50 ms) but not clicks, so a
        # box ticked just before the click reaches the server after it: read the selection
        # a little later.
        doc = pn.state.curdoc
        if doc is None or doc.session_context is None:
            self.invalidate_selected()
            return

        def later() -> None:
            with set_curdoc(doc):
                self.invalidate_selected()

        doc.add_timeout_callback(later, _SELECTION_SETTLE_MS)

    @friendly
    def invalidate_selected(self) -> list[str]:
        frame = self.table.value
        chosen = [frame.iloc[i]["stem_id"] for i in self.table.selection if i < len(frame)]
        if not chosen:
            raise ValueError("select the stems to invalidate first")
        self.table.selection = []
        for stem_id in chosen:
            self.workspace.cache.invalidate(stem_id)  # the table follows the revision
        notify_info(f"invalidated {len(chosen)} stem(s)")
        return chosen

    @friendly
    def bulk_generate(self) -> Job:
        if self.job is not None and self.job.state not in FINISHED_STATES:
            raise ValueError(f"bulk job {self.job.id} is still running")
        names = [line.strip() for line in self.names_text.splitlines() if line.strip()]
        developers = [line.strip() for line in self.developers_text.splitlines() if line.strip()]
        if not names and not developers:
            raise ValueError("give at least one name or developer")
        self.job = self.workspace.start_bulk_generation(names, developers, source="dashboard")
        return self.job

    @friendly
    def cancel_job(self) -> None:
        if self.job is not None:
            self.workspace.jobs.cancel(self.job.id)

    @friendly
    def verify(self) -> CacheReport:
        self.audit = self.workspace.verify_cache()
        return self.audit

    # --- derived values -----------------------------------------------------------------

    def _records(self, kind: str, compatibility: str, search: str) -> list[StemRecord]:
        records = self.workspace.cache.list(
            kind=None if kind == "all" else kind, compatible=_COMPATIBILITY[compatibility]
        )
        needle = search.strip().casefold()
        if needle:
            records = [
                r for r in records if needle in r.stem_id.casefold() or needle in r.text.casefold()
            ]
        return records

    def _stems_frame(self, kind: str, compatibility: str, search: str, *_cache: object):
        cache = self.workspace.cache
        rows = []
        for record in self._records(kind, compatibility, search):
            row = {c: getattr(record, c) for c in _RECORD_COLUMNS}
            row[PLAY] = "▶"
            row["incompatible_because"] = "; ".join(cache.incompatibility(record))
            rows.append(row)
        return pd.DataFrame(rows, columns=STEM_COLUMNS)

    def _loudness_figure(self, *_cache: object):
        """Loudness of every measured stem before and after processing, one dot per stem,
        with the contract's target: a spread that processing should bring to one line."""
        records = [r for r in self.workspace.cache.list() if r.loudness_before is not None]
        rows = {"stage": [], "lufs": [], "stem_id": []}
        for record in records:
            for stage in _STAGES:
                value = getattr(record, f"loudness_{stage}")
                if value is not None:
                    rows["stage"].append(stage)
                    rows["lufs"].append(value)
                    rows["stem_id"].append(record.stem_id)
        fig = figure(
            y_range=FactorRange(*_STAGES),
            height=180,
            sizing_mode="stretch_width",
            x_axis_label="integrated loudness (LUFS, BS.1770)",
            title=f"Loudness of {len(records)} processed stems, before and after",
            tools="xpan,xwheel_zoom,reset,hover",
            tooltips=[("stem", "@stem_id"), ("LUFS", "@lufs{0.0}")],
            toolbar_location="right",
        )
        fig.scatter(
            x="lufs",
            y=jitter("stage", width=0.5, range=fig.y_range),
            source=ColumnDataSource(rows),
            size=6,
            alpha=0.5,
            color="#1f4e79",
        )
        target = self.workspace.contract.loudness_lufs
        if target is not None:
            fig.add_layout(Span(location=target, dimension="height", line_color="#c0392b"))
        return fig

    def _totals(self, *_cache: object) -> str:
        records = self.workspace.cache.list()
        compatible = [r for r in records if r.compatible]
        by_kind: dict[str, int] = {}
        for record in records:
            by_kind[record.kind] = by_kind.get(record.kind, 0) + 1
        counts = md(", ".join(f"{k} {n}" for k, n in sorted(by_kind.items())) or "none")
        size = sum(r.size for r in records) / 1e6
        seconds = sum(r.duration for r in records)
        return (
            f"**{len(records)} stems** ({len(compatible)} compatible with the contract) · "
            f"{counts} · {size:.1f} MB · {seconds:.0f} s of audio"
        )

    @friendly
    def _player(self, stem_id: str) -> pn.viewable.Viewable:
        if not stem_id:
            return pn.pane.Markdown("Press ▶ on a row to listen.", css_classes=["cache-player"])
        record = self.workspace.cache.get(stem_id)
        if record is None:
            raise ValueError(f"{stem_id} is no longer in the cache")
        if self.audio_urls:
            player = audio_player(f"/cache/stems/{record.stem_id}/audio", None)
        else:
            player = audio_player(None, self.workspace.cache.read(record).data)
        download = wav_download(self.download_bytes, record.stem_id, "stem")
        return pn.Column(md(stem_id), pn.Row(player, download), css_classes=["cache-player"])

    @friendly
    def download_bytes(self) -> BytesIO:
        """The played stem's WAV for its Download button (proven bytes, never a path)."""
        record = self.workspace.cache.get(self.playing) if self.playing else None
        if record is None:
            raise ValueError("press ▶ on a stem first")
        return BytesIO(self.workspace.cache.read(record).data)

    @staticmethod
    def _job_status(job: Job, state: JobState, done: int, total: int, *_: object) -> str:
        status = f"job {md(job.id)}: **{md(state)}** — {done}/{total}"
        eta = job.eta_seconds
        if eta is not None and state == JobState.RUNNING:
            status += f", ETA {eta:.0f} s"
        if job.errors:
            status += f" — {job.error_count} error(s): " + md("; ".join(job.errors[-3:]))
        if state == JobState.DONE and isinstance(job.result, dict):
            status += f" — created {job.result['created']}, cached {job.result['cached']}"
        return status

    def job_panel(self) -> pn.viewable.Viewable:
        """The bar and status of the page's job, following it (a new pane per call: the
        Bulk card shows one, and notebook 02 shows one for a job it started)."""
        return pn.panel(pn.bind(self._job_panel, self.param.job))

    def _job_panel(self, job: Job | None) -> pn.viewable.Viewable:
        return job_panel(
            self.workspace,
            job,
            self._job_status,
            bar_class="bulk-progress",
            status_class="bulk-status",
        )

    def _audit_text(self, audit: CacheReport | None) -> str:
        if audit is None:
            return "Press *Verify cache* to compare the files with the index."
        if audit.ok:
            return f"✓ cache consistent: {audit.checked} stems checked"
        parts = [f"✗ {audit.checked} stems checked"]
        for label in (
            "orphan_files",
            "missing_files",
            "hash_mismatches",
            "unreadable",
            "temp_files",
        ):
            values = getattr(audit, label)
            if values:
                parts.append(f"- {label.replace('_', ' ')}: {md(', '.join(values[:20]))}")
        return "\n".join(parts)

    def __panel__(self) -> pn.viewable.Viewable:
        filters = pn.Row(
            pn.widgets.RadioButtonGroup.from_param(self.param.kind),
            pn.widgets.RadioButtonGroup.from_param(self.param.compatibility),
            pn.widgets.TextInput.from_param(
                self.param.search,
                placeholder="stem id or text",
                css_classes=["stems-search"],
                width=220,
            ),
            self.invalidate_button,
            pn.pane.Markdown(
                pn.bind(lambda rows: f"{len(rows)} selected", self.table.param.selection),
                css_classes=["stems-selected"],
            ),
        )
        totals = pn.pane.Markdown(
            pn.bind(self._totals, *self._cache_refs), css_classes=["cache-totals"]
        )
        bulk = pn.Card(
            pn.Row(
                pn.widgets.TextAreaInput.from_param(self.param.names_text, height=160),
                pn.widgets.TextAreaInput.from_param(self.param.developers_text, height=160),
            ),
            pn.Row(self.bulk_button, self.cancel_button),
            self.job_panel(),
            title="Bulk generation",
            sizing_mode="stretch_width",
        )
        audit = pn.Card(
            self.verify_button,
            pn.pane.Markdown(
                pn.bind(self._audit_text, self.param.audit), css_classes=["cache-audit"]
            ),
            title="Audit",
            sizing_mode="stretch_width",
        )
        loudness = pn.pane.Bokeh(
            pn.bind(self._loudness_figure, *self._cache_refs),
            css_classes=["loudness-plot"],
            sizing_mode="stretch_width",
        )
        return pn.Column(
            totals,
            filters,
            self.table,
            loudness,
            pn.panel(pn.bind(self._player, self.param.playing)),
            bulk,
            audit,
            sizing_mode="stretch_width",
        )
