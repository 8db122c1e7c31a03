"""Storage page: where stems and outputs live, how the bucket and this machine agree, and
the bucket's objects.

Everything comes from `Workspace.storage` (the `StorageService`): `describe()` for the
header, `consistency()` for the audit, `start_sync()` for Push/Pull (a job), `audit()` for the
paged listing. The service's `last_report` (whoever asked for it), the upload queue's
counters and a sync job's progress follow the core's parameters through the session's live
feed (`app.views.live`); when a sync job the page started finishes, the page audits again.
The view keeps only what the user chose or asked for: the filter, the prefix, the shown
listing page, the clicked object, the job it started.

In local mode (no `GCS_BUCKET`) the same page says that no bucket is configured, the audit
checks local files against the index, and Push/Pull are disabled. Object names, stem texts
and metadata are data (a stem's text is whatever a client sent), so they reach the browser
as text: through `md()` or Tabulator's escaping text formatters, never as HTML.
"""

from __future__ import annotations

import html
from typing import Any

import pandas as pd
import panel as pn
import param

from app.views.common import WRAPPED, PageState, friendly, job_panel, md, notify_info
from app.views.live import live
from hybrid_audio.jobs import FINISHED_STATES, Job, JobState
from hybrid_audio.storage.base import (
    ObjectInfo,
    StorageDescription,
    metadata_text,
    parse_object_name,
)
from hybrid_audio.storage.reports import (
    LOCAL_STATUSES,
    REMOTE_STATUSES,
    AuditPage,
    ConsistencyReport,
)
from hybrid_audio.workspace import Workspace

#: What each difference means to the user, by the filter that picks it.
WHERE = {
    "missing_local": "missing here",
    "missing_file": "missing here",
    "missing_remote": "missing there",
    "checksum_mismatch": "differs",
    "contract_mismatch": "differs",
    "hash_mismatch": "differs",
    "unreadable": "differs",
    "orphan_remote": "orphan",
    "orphan_file": "orphan",
    "temp_file": "orphan",
}
FILTERS = ["all", "missing here", "missing there", "differs", "orphan"]
#: The statuses each mode can report, in the order the summary shows them.
STATUSES = {"gcs": REMOTE_STATUSES, "local": LOCAL_STATUSES}
DIFFERENCE_COLUMNS = [
    "where",
    "status",
    "name",
    "stem_id",
    "output_id",
    "detail",
    "local_sha256",
    "remote_sha256",
]
OBJECT_COLUMNS = ["name", "size", "updated", "crc32c", "stem_id", "text"]
PREFIXES = ["stems/name/", "stems/developer/", "stems/script/", "output/"]
#: The upload queue's parameters the header shows (`Uploads`, GCS mode).
_UPLOAD_COUNTERS = ("pending", "failing", "conflicts", "uploaded", "last_error")
_NEEDS_BUCKET = "Push and Pull need a bucket: set GCS_BUCKET (see the README)."


def _stem_id_of(name: str) -> str:
    """The stem id an object name stands for (local objects carry no metadata)."""
    parsed = parse_object_name(name)
    return (parsed.stem_id or "") if parsed is not None else ""


def _upload_counters(
    pending: int, failing: int, conflicts: int, uploaded: int, last_error: str
) -> str:
    text = (
        f"Upload queue: {pending} pending · {failing} failing · {conflicts} conflicts · "
        f"{uploaded} uploaded"
    )
    if last_error:
        text += f" · last error: {md(last_error)}"
    return text


class StorageView(PageState, pn.viewable.Viewer):
    """Mode and bucket, consistency with Push/Pull/Re-audit, and the bucket listing."""

    workspace = param.ClassSelector(class_=Workspace, doc="The core objects.")
    show = param.Selector(default="all", objects=FILTERS, doc="Which differences to list.")
    job = param.ClassSelector(class_=Job, allow_None=True, doc="The sync job started here.")
    prefix = param.Selector(default=PREFIXES[0], objects=PREFIXES, doc="Prefix to list.")
    page_size = param.Integer(default=50, bounds=(1, 1000), doc="Objects per listing page.")
    listing = param.ClassSelector(class_=AuditPage, allow_None=True, doc="The listing page shown.")
    selected = param.ClassSelector(
        class_=ObjectInfo, allow_None=True, doc="The object whose metadata is shown."
    )

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.description: StorageDescription = self.workspace.storage.describe()
        self.gcs = self.description.mode == "gcs"
        #: The latest consistency report, whoever asked for it (this page, the API…).
        self._report = live(self.workspace).ref(self.workspace.storage, "last_report")
        self.audit_button = pn.widgets.Button(
            label="Re-audit", color="primary", css_classes=["storage-audit"]
        )
        self.sync_buttons = {
            direction: pn.widgets.Button(
                label=direction.capitalize(),
                disabled=not self.gcs,
                description=(
                    f"{direction.capitalize()} {'to' if direction == 'push' else 'from'} "
                    "the bucket as a job"
                    if self.gcs
                    else _NEEDS_BUCKET
                ),
                css_classes=[f"storage-{direction}"],
            )
            for direction in ("push", "pull")
        }
        self.differences_table = pn.widgets.Tabulator(
            pn.bind(self._differences_frame, self._report, self.param.show),
            show_index=False,
            disabled=True,
            pagination="local",
            page_size=15,
            formatters={"detail": WRAPPED, "name": WRAPPED},
            widths={"name": 260, "detail": 260, "local_sha256": 140, "remote_sha256": 140},
            css_classes=["storage-table"],
            sizing_mode="stretch_width",
        )
        self.retry_button = pn.widgets.Button(
            label="Retry uploads",
            description="Try every pending upload now, conflicts too (once resolved)",
            css_classes=["storage-retry"],
        )
        self.list_button = pn.widgets.Button(label="List objects", css_classes=["storage-list"])
        self.next_page_button = pn.widgets.Button(
            label="Next page", disabled=True, css_classes=["storage-next-page"]
        )
        self.objects_table = pn.widgets.Tabulator(
            pn.bind(self._objects_frame, self.param.listing),
            show_index=False,
            disabled=True,
            selectable=1,
            pagination="local",
            page_size=15,
            formatters={"name": WRAPPED, "text": WRAPPED},
            widths={"name": 320, "text": 220, "stem_id": 220},
            css_classes=["storage-objects"],
            sizing_mode="stretch_width",
        )
        self._init_callbacks()

    def _init_callbacks(self) -> None:
        self.audit_button.on_click(lambda _: self.audit())
        for direction, button in self.sync_buttons.items():
            button.on_click(lambda _, direction=direction: self.sync(direction))
        self.retry_button.on_click(lambda _: self.retry_uploads())
        self.list_button.on_click(lambda _: self.list_objects())
        self.next_page_button.on_click(lambda _: self.next_page())
        self.objects_table.on_click(self._handle_object_click)

    # --- actions ------------------------------------------------------------------------

    @friendly
    def audit(self) -> ConsistencyReport:
        """Compare this machine with the bucket (local mode: the files with the index); the
        page shows it as the service's `last_report`."""
        return self.workspace.storage.consistency(source="dashboard")

    @friendly
    def sync(self, direction: str) -> Job:
        """Push or pull as a job; the page audits again when it finishes."""
        if not self.gcs:
            raise ValueError(_NEEDS_BUCKET)
        if self.job is not None and self.job.state not in FINISHED_STATES:
            raise ValueError(f"sync job {self.job.id} is still running")
        job = self.workspace.storage.start_sync(direction, source="dashboard")
        self.job = job
        state = live(self.workspace).ref(job, "state")
        pn.bind(self._audit_when_finished, job, state, watch=True)
        # A short job may have finished before the watch: its final state is already here.
        self._audit_when_finished(job, getattr(state.owner, state.name))
        return job

    def _audit_when_finished(self, job: Job, state: JobState) -> None:
        if job is self.job and state in FINISHED_STATES:
            notify_info(f"{job.kind} {job.id}: {state}")
            self.audit()

    @friendly
    def retry_uploads(self) -> int:
        """Make the upload queue's backed-off and conflicting rows due now."""
        uploads = self.workspace.uploads
        if uploads is None:
            raise ValueError("no upload queue: no bucket is configured")
        count = uploads.retry_now()
        notify_info(f"{count} upload(s) due again")
        return count

    @friendly
    def list_objects(self) -> AuditPage:
        """The first page of objects under the chosen prefix."""
        return self._show_page(None)

    @friendly
    def next_page(self) -> AuditPage:
        if self.listing is None or not self.listing.next_page_token:
            raise ValueError("this is the last page")
        return self._show_page(self.listing.next_page_token)

    def _show_page(self, token: str | None) -> AuditPage:
        self.listing = self.workspace.storage.audit(
            prefix=self.prefix, limit=self.page_size, page_token=token, source="dashboard"
        )
        self.selected = None
        return self.listing

    def _handle_object_click(self, event: Any) -> None:
        objects = self.listing.objects if self.listing is not None else []
        if event.row is not None and 0 <= event.row < len(objects):
            self.selected = objects[event.row]

    @param.depends("prefix", watch=True)
    def _list_new_prefix(self) -> None:
        if self.listing is not None:  # only once the user listed: no bucket call unasked
            self.list_objects()

    @param.depends("listing", watch=True)
    def _enable_next_page(self) -> None:
        self.next_page_button.disabled = self.listing is None or not self.listing.next_page_token

    # --- derived values -----------------------------------------------------------------

    def _status_text(self, *uploads: Any) -> str:
        """Mode, bucket and prefix; the upload queue's counters (`uploads`) in GCS mode."""
        settings = self.workspace.settings
        if not self.gcs:
            return (
                "**Local mode: No bucket is configured.** Stems and outputs are local files; "
                "the audit checks them against the index. Set GCS_BUCKET to mirror them to "
                "Google Cloud Storage.\n\n"
                f"- stems: {md(settings.stems_dir)}\n"
                f"- outputs: {md(settings.output_dir)}\n"
                f"- index: {md(settings.database_path)}"
            )
        prefix = md(self.description.prefix) if self.description.prefix else "(none)"
        text = f"**GCS mode** · bucket {md(self.description.bucket)} · prefix {prefix}"
        if uploads:
            text += "\n\n" + _upload_counters(*uploads)
        return text

    def _summary_text(self, report: ConsistencyReport | None) -> str:
        if report is None:
            return "Press *Re-audit* to compare this machine with the bucket."
        differences = len(report.rows)
        checked = f"{report.checked_local} local"
        if report.mode == "gcs":
            checked += f", {report.checked_remote} in the bucket"
        verdict = "✓ consistent" if report.ok else "✗ not consistent"
        plural = "" if differences == 1 else "s"
        text = f"**{verdict}** — {differences} difference{plural} ({checked} checked)"
        if report.note:
            text += f"\n\n{md(report.note)}"
        return text

    def _summary_numbers(self, report: ConsistencyReport | None) -> pn.viewable.Viewable:
        """One number per status the report's mode can give (0 green, more red)."""
        if report is None:
            return pn.Row()
        counts = dict.fromkeys(STATUSES.get(report.mode, ()), 0) | report.summary
        return pn.Row(
            *(
                pn.indicators.Number(
                    label=html.escape(status.replace("_", " ")),
                    value=count,
                    format="{value}",
                    font_size="20pt",
                    title_size="10pt",
                    colors=[(0, "#2e7d32"), (float("inf"), "#c62828")],
                    css_classes=[f"storage-count-{status}"],
                )
                for status, count in counts.items()
            )
        )

    @staticmethod
    def _differences_frame(report: ConsistencyReport | None, show: str) -> pd.DataFrame:
        rows = [
            {"where": WHERE.get(row.status, row.status)}
            | {key: "" if value is None else value for key, value in row.model_dump().items()}
            for row in (report.rows if report is not None else [])
        ]
        if show != "all":
            rows = [row for row in rows if row["where"] == show]
        return pd.DataFrame(rows, columns=DIFFERENCE_COLUMNS)

    @staticmethod
    def _objects_frame(listing: AuditPage | None) -> pd.DataFrame:
        rows = [
            {
                "name": info.name,
                "size": info.size,
                "updated": info.updated or "",
                "crc32c": info.crc32c,
                "stem_id": info.metadata.get("stem_id") or _stem_id_of(info.name),
                "text": metadata_text(info.metadata),
            }
            for info in (listing.objects if listing is not None else [])
        ]
        return pd.DataFrame(rows, columns=OBJECT_COLUMNS)

    def _listing_text(self, listing: AuditPage | None) -> str:
        if listing is None:
            return "Pick a prefix and press *List objects*."
        more = "more on the next page" if listing.next_page_token else "last page"
        return f"{len(listing.objects)} objects under {md(listing.prefix or '/')} · {more}"

    @staticmethod
    def _metadata_frame(info: ObjectInfo | None) -> pd.DataFrame:
        """The clicked object as key/value rows; its spoken text decoded."""
        if info is None:
            return pd.DataFrame([], columns=["key", "value"])
        rows = [
            ("name", info.name),
            ("size", str(info.size)),
            ("crc32c", info.crc32c),
            ("md5", info.md5),
            ("updated", info.updated or ""),
            ("generation", "" if info.generation is None else str(info.generation)),
        ]
        for key, value in sorted(info.metadata.items()):
            rows.append((key, metadata_text(info.metadata) if key == "text" else value))
        return pd.DataFrame(rows, columns=["key", "value"])

    @staticmethod
    def _job_status(
        job: Job,
        state: JobState,
        done: int,
        total: int,
        message: str,
        errors: list[str],
        result: Any,
    ) -> str:
        percent = 100 if state == JobState.DONE else int(100 * done / max(total, 1))
        status = f"{md(job.kind)} {md(job.id)}: **{md(state)}** — {done}/{total} ({percent} %)"
        if message:
            status += f" — {md(message)}"
        if errors:
            status += f" — {job.error_count} error(s): " + md("; ".join(errors[-3:]))
        if state == JobState.DONE and isinstance(result, dict):  # a SyncReport's fields
            status += (
                f" — transferred {result['transferred']}, skipped {result['skipped']}, "
                f"{len(result['conflicts'])} conflict(s), {len(result['failed'])} failed"
            )
            status += "".join(f"\n- {md(line)}" for line in result["conflicts"][:20])
        return status

    def _job_panel(self, job: Job | None) -> pn.viewable.Viewable:
        return job_panel(
            self.workspace,
            job,
            self._job_status,
            bar_class="storage-progress",
            status_class="storage-job",
        )

    def __panel__(self) -> pn.viewable.Viewable:
        uploads = self.workspace.uploads
        feed = live(self.workspace)
        counters = (
            [feed.ref(uploads, name) for name in _UPLOAD_COUNTERS] if uploads is not None else []
        )
        status = pn.pane.Markdown(
            pn.bind(self._status_text, *counters) if counters else self._status_text(),
            css_classes=["storage-status"],
        )
        actions = [self.audit_button, *self.sync_buttons.values()]
        if not self.gcs:
            actions.append(pn.pane.Markdown(md(_NEEDS_BUCKET), css_classes=["storage-sync-note"]))
        consistency = pn.Card(
            pn.Row(*actions),
            pn.panel(pn.bind(self._job_panel, self.param.job)),
            pn.Column(
                pn.pane.Markdown(pn.bind(self._summary_text, self._report)),
                pn.panel(pn.bind(self._summary_numbers, self._report)),
                css_classes=["storage-summary"],
                sizing_mode="stretch_width",
            ),
            pn.widgets.RadioButtonGroup.from_param(self.param.show, css_classes=["storage-filter"]),
            self.differences_table,
            title="Consistency",
            collapsible=False,
            sizing_mode="stretch_width",
        )
        objects = pn.Card(
            pn.Row(
                pn.widgets.RadioButtonGroup.from_param(
                    self.param.prefix, css_classes=["storage-prefix"]
                ),
                self.list_button,
                self.next_page_button,
            ),
            pn.pane.Markdown(
                pn.bind(self._listing_text, self.param.listing), css_classes=["storage-listing"]
            ),
            self.objects_table,
            pn.pane.Markdown("Click an object to see its metadata."),
            pn.widgets.Tabulator(
                pn.bind(self._metadata_frame, self.param.selected),
                show_index=False,
                disabled=True,
                formatters={"key": WRAPPED, "value": WRAPPED},  # bucket metadata: any text
                widths={"key": 180},
                css_classes=["storage-metadata"],
                sizing_mode="stretch_width",
            ),
            title="Bucket objects" if self.gcs else "Local objects",
            collapsible=False,
            sizing_mode="stretch_width",
        )
        header = [status, self.retry_button] if uploads is not None else [status]
        return pn.Column(
            pn.Card(*header, title="Storage", collapsible=False, sizing_mode="stretch_width"),
            consistency,
            objects,
            sizing_mode="stretch_width",
        )
