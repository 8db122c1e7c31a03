"""Cache page: the stem index (filtered), totals, invalidation, bulk generation, audit.

Bulk generation runs as a `Job` on `workspace.jobs`; the page never waits for it. A
periodic callback (started when the job is, stopped when it ends) copies the job's
progress into this view's parameters, which the progress bar and status text follow.
"""

from __future__ import annotations

import pandas as pd
import panel as pn
import param
from panel.io.state import set_curdoc

from app.views.common import PageState, friendly, md, notify_info
from hybrid_audio.cache import CacheReport
from hybrid_audio.datasets import load_dataset
from hybrid_audio.jobs import Job, JobState
from hybrid_audio.workspace import Workspace

STEM_COLUMNS = [
    "stem_id",
    "kind",
    "text",
    "compatible",
    "engine",
    "voice",
    "encoding",
    "sample_rate",
    "duration",
    "size",
    "sha256",
    "updated_at",
]
_COMPATIBILITY = {"all": None, "compatible": True, "incompatible": False}
#: Wait before reading a table selection after a click (Panel's debounce is 50 ms).
_SELECTION_SETTLE_MS = 250
_FINISHED = (JobState.DONE, JobState.FAILED, JobState.CANCELLED)


def _dataset_text(kind: str, workspace: Workspace) -> str:
    try:
        return "\n".join(item.text for item in load_dataset(kind, workspace.settings).items)
    except ValueError:
        return ""


class CacheView(PageState, pn.viewable.Viewer):
    """Browse and maintain the stem cache; bulk-generate the datasets as a job."""

    workspace = param.ClassSelector(class_=Workspace, doc="The core objects.")
    kind = param.Selector(
        default="all", objects=["all", "name", "developer", "script"], doc="Kind filter."
    )
    compatibility = param.Selector(
        default="all", objects=list(_COMPATIBILITY), doc="Compatibility with the contract."
    )
    version = param.Integer(default=0, doc="Bumped whenever the cache changed here.")
    names_text = param.String(default="", label="Names", doc="Names to bulk-generate.")
    developers_text = param.String(
        default="", label="Developers", doc="Developers to bulk-generate."
    )
    job = param.ClassSelector(class_=Job, allow_None=True, doc="The latest bulk job.")
    job_done = param.Integer(default=0, doc="Steps done by the job (as last polled).")
    job_total = param.Integer(default=0, doc="Steps of the job (as last polled).")
    job_status = param.String(default="", doc="The job's state, progress and ETA.")
    audit = param.ClassSelector(class_=CacheReport, allow_None=True, doc="Last verify().")

    def __init__(self, **params) -> None:
        super().__init__(**params)
        if not self.names_text:
            self.names_text = _dataset_text("name", self.workspace)
        if not self.developers_text:
            self.developers_text = _dataset_text("developer", self.workspace)
        self._poller = None
        self.table = pn.widgets.Tabulator(
            pn.bind(
                self._stems_frame, self.param.kind, self.param.compatibility, self.param.version
            ),
            show_index=False,
            disabled=True,
            selectable="checkbox",
            pagination="local",
            page_size=15,
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
        self.refresh_button = pn.widgets.Button(label="Refresh", css_classes=["refresh-cache"])
        self._init_callbacks()

    def _init_callbacks(self) -> None:
        self.invalidate_button.on_click(self._handle_invalidate_click)
        self.bulk_button.on_click(lambda _: self.bulk_generate())
        self.cancel_button.on_click(lambda _: self.cancel_job())
        self.verify_button.on_click(lambda _: self.verify())
        self.refresh_button.on_click(lambda _: self.refresh())

    # --- actions ------------------------------------------------------------------------

    def refresh(self) -> None:
        self.version += 1

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
        for stem_id in chosen:
            self.workspace.generator.cache.invalidate(stem_id)
        self.table.selection = []
        self.refresh()
        notify_info(f"invalidated {len(chosen)} stem(s)")
        return chosen

    @friendly
    def bulk_generate(self) -> Job:
        if self.job is not None and self.job.state not in _FINISHED:
            raise ValueError(f"bulk job {self.job.id} is still running")
        names = [line.strip() for line in self.names_text.splitlines() if line.strip()]
        developers = [line.strip() for line in self.developers_text.splitlines() if line.strip()]
        if not names and not developers:
            raise ValueError("give at least one name or developer")
        self.job = self.workspace.start_bulk_generation(names, developers, source="dashboard")
        self.poll_job()
        self._start_polling()
        return self.job

    def cancel_job(self) -> None:
        if self.job is not None:
            self.job.cancel()

    @friendly
    def verify(self) -> CacheReport:
        self.audit = self.workspace.generator.cache.verify()
        return self.audit

    # --- job polling --------------------------------------------------------------------

    def _start_polling(self) -> None:
        if self._poller is not None or pn.state.curdoc is None:
            return  # no session (tests, scripts): poll_job() is called directly
        self._poller = pn.state.add_periodic_callback(self.poll_job, period=300)

    def poll_job(self) -> None:
        """Copy the job's progress into the view (and stop polling once it has ended)."""
        job = self.job
        if job is None:
            return
        eta = job.eta_seconds
        status = f"job {md(job.id)}: **{md(job.state)}** — {job.done}/{job.total}"
        if eta is not None and job.state == JobState.RUNNING:
            status += f", ETA {eta:.0f} s"
        if job.errors:
            status += f" — {len(job.errors)} error(s): " + md("; ".join(job.errors[-3:]))
        if job.state == JobState.DONE and isinstance(job.result, dict):
            r = job.result
            status += f" — created {r['created']}, cached {r['cached']}"
        self.param.update(job_done=job.done, job_total=job.total, job_status=status)
        if job.state in _FINISHED and job.finished_at is not None:
            if self._poller is not None:
                self._poller.stop()
                self._poller = None
            self.refresh()

    # --- derived values -----------------------------------------------------------------

    def _records(self, kind: str, compatibility: str):
        return self.workspace.generator.cache.list(
            kind=None if kind == "all" else kind, compatible=_COMPATIBILITY[compatibility]
        )

    def _stems_frame(self, kind: str, compatibility: str, _version: int) -> pd.DataFrame:
        records = self._records(kind, compatibility)
        rows = [{c: getattr(r, c) for c in STEM_COLUMNS} for r in records]
        return pd.DataFrame(rows, columns=STEM_COLUMNS)

    def _totals(self, _version: int, *_: object) -> str:
        records = self.workspace.generator.cache.list()
        compatible = [r for r in records if r.compatible]
        by_kind = {}
        for record in records:
            by_kind[record.kind] = by_kind.get(record.kind, 0) + 1
        kinds = md(", ".join(f"{k} {n}" for k, n in sorted(by_kind.items())) or "none")
        size = sum(r.size for r in records) / 1e6
        seconds = sum(r.duration for r in records)
        return (
            f"**{len(records)} stems** ({len(compatible)} compatible with the contract) · "
            f"{kinds} · {size:.1f} MB · {seconds:.0f} s of audio"
        )

    def _progress_bar(self, done: int, total: int) -> pn.indicators.Progress:
        # A new bar each time: a Progress's value is bounded by its max, so updating the
        # two separately fails whenever the value is set first (0/1 → 5/5).
        total = max(total, 1)
        return pn.indicators.Progress(
            value=min(done, total),
            max=total,
            css_classes=["bulk-progress"],
            sizing_mode="stretch_width",
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
        contract = self.workspace.generator.contract
        filters = pn.Row(
            pn.widgets.RadioButtonGroup.from_param(self.param.kind),
            pn.widgets.RadioButtonGroup.from_param(self.param.compatibility),
            self.refresh_button,
            self.invalidate_button,
            pn.pane.Markdown(
                pn.bind(lambda rows: f"{len(rows)} selected", self.table.param.selection),
                css_classes=["stems-selected"],
            ),
        )
        totals = pn.pane.Markdown(
            pn.bind(self._totals, self.param.version, contract.param.sample_rate),
            css_classes=["cache-totals"],
        )
        progress = pn.panel(pn.bind(self._progress_bar, self.param.job_done, self.param.job_total))
        bulk = pn.Card(
            pn.Row(
                pn.widgets.TextAreaInput.from_param(self.param.names_text, height=160),
                pn.widgets.TextAreaInput.from_param(self.param.developers_text, height=160),
            ),
            pn.Row(self.bulk_button, self.cancel_button),
            progress,
            pn.pane.Markdown(self.param.job_status, css_classes=["bulk-status"]),
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
        return pn.Column(totals, filters, self.table, bulk, audit, sizing_mode="stretch_width")
