"""Campaign page: a recipient list (or the next N rotation pairs) + a template → every
message made, proven and downloadable as one zip.

Everything comes from `Workspace.campaigns` (the core's `Campaigns`): `plan()` for the
preview, `create()` + `start()` for Run (a job in the one job store), `cancel()`/`resume()`,
`messages()`/`problems()` for the results, `list()` for past campaigns. The job's progress
and the campaigns' `revision` reach the page through the session's live feed
(`app.views.live`); the page keeps only what the user chose (the source, the template, the
campaign shown, the search, the page of results, the message played) and what it was given
(the uploaded list, parsed by the core).

The zip is streamed by the API (`GET /campaigns/{id}/export.zip`, authorised by the
dashboard's session cookie), never built here. Names, developers, ids and error messages
are data a user uploaded: they reach the browser through `md()` or Tabulator's escaping
text formatters, never as HTML.
"""

from __future__ import annotations

import html
from typing import Any

import pandas as pd
import panel as pn
import param

from app.views.assemble import AssembleView
from app.views.common import (
    WRAPPED,
    PageState,
    audio_player,
    friendly,
    md,
    notify_info,
    progress_bar,
)
from app.views.live import live
from hybrid_audio.campaign import CampaignInfo, CampaignPlan, CampaignState
from hybrid_audio.jobs import FINISHED_STATES, Job, JobState
from hybrid_audio.recipients import RecipientList, parse_recipients
from hybrid_audio.templates import list_templates
from hybrid_audio.workspace import Workspace

SOURCES = {"Upload a list (CSV/JSON)": "upload", "Next N pairs of the rotation": "rotation"}
JOINS = {"template's": "", "exact": "exact", "hybrid": "hybrid"}
PREVIEW_ROWS = 10
PAGE_SIZE = 25
PROBLEMS_SHOWN = 1000  # rows not made that the page lists (the first, by row number)
PREVIEW_COLUMNS = ["row", "id", "name", "developer", "script"]
PROBLEM_COLUMNS = ["row", "recipient_id", "problem"]
MESSAGE_COLUMNS = [
    "row",
    "recipient_id",
    "name",
    "developer",
    "script",
    "state",
    "output_id",
    "duration",
    "verified",
    "error",
]
CAMPAIGN_COLUMNS = ["id", "state", "template", "source", "done", "total", "failed", "created_at"]
_TEXT = {"type": "plaintext"}  # escapes HTML too, on one line


def _frame(rows: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=columns)


def _problems_frame(problems: list) -> pd.DataFrame:
    rows = [
        {"row": p.row, "recipient_id": p.recipient_id or "", "problem": p.message} for p in problems
    ]
    return _frame(rows, PROBLEM_COLUMNS)


def _download_link(url: str, filename: str, label: str, css_class: str) -> pn.pane.HTML:
    """A plain `<a href download>` to an API URL (the session cookie authorises it): the
    browser fetches the bytes itself, so nothing goes over the session's websocket (a
    FileDownload widget made in a re-rendered pane dropped it, 1006, in Chromium)."""
    href, name = html.escape(url, quote=True), html.escape(filename, quote=True)
    return pn.pane.HTML(
        f'<a href="{href}" download="{name}">⬇ {html.escape(label)}</a>',
        css_classes=[css_class],
        width=180,
    )


def _problems_table(frame: Any, css_class: str) -> pn.widgets.Tabulator:
    """Rows not made (refused or failed), from a bound `_problems_frame`."""
    return pn.widgets.Tabulator(
        frame,
        show_index=False,
        disabled=True,
        formatters={"recipient_id": WRAPPED, "problem": WRAPPED},
        widths={"row": 60},
        css_classes=[css_class],
        sizing_mode="stretch_width",
    )


class CampaignView(PageState, pn.viewable.Viewer):
    """Upload → preview and plan → Run (a job) → results (play, proof) → zip."""

    workspace = param.ClassSelector(class_=Workspace, doc="The core objects.")
    audio_urls = param.Boolean(default=False, doc="Players and the zip by API URL.")
    assemble = param.ClassSelector(
        class_=AssembleView, allow_None=True, doc="The Assemble page (shows a message's proof)."
    )
    open_page = param.Callable(
        default=None, allow_None=True, doc="Shows a page, given its tab name."
    )
    source = param.Selector(default="upload", objects=SOURCES, doc="Where recipients come from.")
    recipients = param.ClassSelector(
        class_=RecipientList, allow_None=True, doc="The uploaded list, parsed by the core."
    )
    filename = param.String(default="", doc="Name of the uploaded file.")
    rotation_count = param.Integer(
        default=10, bounds=(1, None), label="Pairs", doc="How many rotation pairs."
    )
    seed = param.Integer(default=None, allow_None=True, label="Seed", doc="Rotation seed.")
    template = param.Selector(default=None, objects=[], doc="Template every message fills.")
    join = param.Selector(default="", objects=JOINS, label="Join", doc="'' → the template's.")
    plan = param.ClassSelector(class_=CampaignPlan, allow_None=True, doc="The preview's plan.")
    campaign_id = param.String(default=None, allow_None=True, doc="The campaign shown.")
    job = param.ClassSelector(class_=Job, allow_None=True, doc="The shown campaign's job.")
    search = param.String(default="", label="Search", doc="Name, developer or recipient id.")
    page = param.Integer(default=0, bounds=(0, None), doc="Page of results (PAGE_SIZE rows).")
    playing = param.String(default=None, allow_None=True, doc="Output id being played.")

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        templates = list_templates(self.workspace.settings)
        self.param.template.objects = templates
        if templates:
            self.template = "double_anchor" if "double_anchor" in templates else templates[0]
        #: Bumps whenever a campaign changes in this process (a message done, a state).
        self._revision = live(self.workspace).ref(self.workspace.campaigns, "revision")
        self.file_input = pn.widgets.FileInput(
            accept=".csv,.json", multiple=False, css_classes=["campaign-upload"]
        )
        self.run_button = pn.widgets.Button(
            label="Run campaign", color="primary", css_classes=["campaign-run"]
        )
        self.cancel_button = pn.widgets.Button(label="Cancel", css_classes=["campaign-cancel"])
        self.resume_button = pn.widgets.Button(label="Resume", css_classes=["campaign-resume"])
        self.previous_button = pn.widgets.Button(label="◀ Previous", disabled=True, width=110)
        self.next_button = pn.widgets.Button(label="Next ▶", width=110)
        self.proof_button = pn.widgets.Button(
            label="Open proof", disabled=True, width=120, css_classes=["campaign-open-proof"]
        )
        self.results_table = pn.widgets.Tabulator(
            pn.bind(
                self._messages_frame,
                self.param.campaign_id,
                self.param.search,
                self.param.page,
                self._revision,
            ),
            show_index=False,
            disabled=True,
            selectable=1,
            layout="fit_columns",
            formatters={c: WRAPPED for c in ("name", "developer", "recipient_id", "error")}
            | {c: _TEXT for c in ("script", "state", "output_id")},
            widths={"row": 60, "state": 80, "duration": 80, "verified": 80},
            css_classes=["campaign-messages"],
            sizing_mode="stretch_width",
        )
        self.campaigns_table = pn.widgets.Tabulator(
            pn.bind(self._campaigns_frame, self._revision),
            show_index=False,
            disabled=True,
            selectable=1,
            pagination="local",
            page_size=10,
            formatters={c: _TEXT for c in ("id", "state", "template", "source")},
            css_classes=["campaign-list-table"],
            sizing_mode="stretch_width",
        )
        self._init_callbacks()

    def _init_callbacks(self) -> None:
        self.file_input.param.watch(self._handle_upload, ["value"])
        self.run_button.on_click(lambda _: self.run())
        self.cancel_button.on_click(lambda _: self.cancel())
        self.resume_button.on_click(lambda _: self.resume())
        self.previous_button.on_click(lambda _: self.turn_page(-1))
        self.proof_button.on_click(lambda _: self.open_proof())
        self.next_button.on_click(lambda _: self.turn_page(1))
        self.results_table.on_click(self._handle_message_click)
        self.campaigns_table.on_click(self._handle_campaign_click)

    # --- actions ------------------------------------------------------------------------

    def _handle_upload(self, event: param.parameterized.Event) -> None:
        if event.new:
            self.load_file(event.new, self.file_input.filename or "")

    @friendly
    def load_file(self, data: bytes, filename: str) -> RecipientList:
        """Parse an uploaded list (the core reports whole-file errors; rows are previewed)."""
        self.param.update(recipients=None, filename=filename, plan=None)
        recipients = parse_recipients(data, filename or None)
        self.param.update(recipients=recipients, source="upload")
        return recipients

    @param.depends("recipients", "template", "join", "source", "rotation_count", "seed", watch=True)
    def _update_plan(self) -> None:
        self.plan = self._make_plan()

    @friendly
    def _make_plan(self) -> CampaignPlan | None:
        if not self.template:
            return None
        if self.source == "rotation":
            recipients = self.workspace.campaigns.rotation_preview(
                self.template, self.rotation_count, self.seed
            )
        elif self.recipients is None:
            return None
        else:
            recipients = self.recipients
        return self.workspace.campaigns.plan(self.template, recipients, join=self.join or None)

    @friendly
    def run(self) -> Job:
        """Create the campaign from the chosen source and start its job."""
        if not self.template:
            raise ValueError("no template chosen (the templates folder is empty?)")
        if self.job is not None and self.job.state not in FINISHED_STATES:
            raise ValueError(f"campaign {self.campaign_id} is still running")
        campaigns = self.workspace.campaigns
        join = self.join or None
        if self.source == "rotation":
            info = campaigns.create(
                self.template, rotation_count=self.rotation_count, seed=self.seed, join=join
            )
        else:
            if self.recipients is None:
                raise ValueError("upload a recipient list (CSV or JSON) first")
            info = campaigns.create(self.template, self.recipients, join=join)
        job = campaigns.start(info.id, source="dashboard")
        self.show(info.id, job)
        return job

    @friendly
    def cancel(self) -> CampaignInfo:
        if self.campaign_id is None:
            raise ValueError("no campaign shown")
        info = self.workspace.campaigns.cancel(self.campaign_id)
        notify_info(f"campaign {info.id}: {info.state}")
        return info

    @friendly
    def resume(self) -> Job:
        """Go on with the shown campaign: finished messages are kept, the rest are made."""
        if self.campaign_id is None:
            raise ValueError("no campaign shown")
        job = self.workspace.campaigns.resume(self.campaign_id, source="dashboard")
        self.job = job
        return job

    @friendly
    def show(self, campaign_id: str, job: Job | None = None) -> CampaignInfo:
        """Show a campaign's progress and results (its job too, if this process knows it)."""
        info = self.workspace.campaigns.get(campaign_id)
        if job is None and info.job_id:
            job = self._known_job(info.job_id)
        self.param.update(campaign_id=campaign_id, job=job, page=0, search="", playing=None)
        return info

    def _known_job(self, job_id: str) -> Job | None:
        try:
            return self.workspace.jobs.get(job_id)
        except KeyError:
            return None

    def turn_page(self, step: int) -> None:
        self.page = max(self.page + step, 0)

    @param.depends("search", watch=True)
    def _first_page(self) -> None:
        self.page = 0

    def _handle_message_click(self, event: Any) -> None:
        frame = self.results_table.value
        if event.row is not None and 0 <= event.row < len(frame):
            output_id = frame.iloc[event.row]["output_id"]
            self.playing = output_id or None

    def _handle_campaign_click(self, event: Any) -> None:
        frame = self.campaigns_table.value
        if event.row is not None and 0 <= event.row < len(frame):
            self.show(str(frame.iloc[event.row]["id"]))

    @param.depends("playing", watch=True)
    def _enable_proof(self) -> None:
        self.proof_button.disabled = self.playing is None

    @friendly
    def open_proof(self) -> None:
        """Show the played message's byte-diff proof on the Assemble page."""
        if self.playing is None:
            raise ValueError("pick a finished message in the results first")
        if self.assemble is None:
            raise ValueError("the Assemble page is not part of this dashboard")
        if self.open_page is not None:
            self.open_page("Assemble")
        self.assemble.load_output(self.playing)

    # --- derived values -----------------------------------------------------------------

    def _preview_frame(self, recipients: RecipientList | None, plan: CampaignPlan | None):
        rows = plan.preview if plan is not None else (recipients.rows if recipients else [])
        return _frame(
            [
                {
                    "row": r.row,
                    "id": r.id or "",
                    "name": r.name,
                    "developer": r.developer,
                    "script": r.script or "",
                }
                for r in rows[:PREVIEW_ROWS]
            ],
            PREVIEW_COLUMNS,
        )

    def _plan_text(self, plan: CampaignPlan | None, source: str, filename: str) -> str:
        if plan is None:
            if source == "upload":
                return "Upload a CSV or JSON list (columns name, developer; optional script, id)."
            return "Choose a template."
        origin = f"from {md(filename)}" if source == "upload" and filename else f"({source})"
        text = (
            f"**{plan.recipients} messages** {origin} · **{plan.distinct_stems} distinct "
            f"stems**: {plan.cached_stems} cached, {plan.to_make} to make"
        )
        if plan.problems:
            text += f" · **{len(plan.problems)} row(s) refused** (listed below)"
        ignored = self.recipients.ignored_columns if self.recipients and source == "upload" else []
        if ignored:
            text += f" · columns ignored: {md(', '.join(ignored))}"
        return text

    @friendly
    def _info(self, campaign_id: str | None) -> CampaignInfo | None:
        return None if campaign_id is None else self.workspace.campaigns.get(campaign_id)

    def _status_text(self, campaign_id: str | None, job: Job | None, *_live: object) -> str:
        """The campaign's state; the job's count, percentage, ETA and step while it runs;
        the campaign's own counts (refused rows are counted as failed)."""
        info = self._info(campaign_id)
        if info is None:
            return "No campaign yet: choose a source and press *Run campaign*."
        if job is not None:
            done, total = job.done, job.total
            finished = job.state == JobState.DONE
        else:
            done, total = info.done + info.failed, info.total
            finished = info.state == CampaignState.DONE
        percent = 100 if finished else int(100 * done / max(total, 1))
        text = f"campaign {md(info.id)}: **{md(info.state)}** — {done}/{total} ({percent} %)"
        if job is not None and job.state == JobState.RUNNING:
            if job.eta_seconds is not None:
                text += f" · ETA {job.eta_seconds:.0f} s"
            if job.message:
                text += f" · {md(job.message)}"
        text += (
            f"\n\n{info.done} made · {info.failed} refused or failed · {info.pending} to make "
            f"· {info.total} rows · {info.distinct_stems} distinct stems"
        )
        if info.pause_reason:
            text += f"\n\n**{md(info.state)}:** {md(info.pause_reason)}"
        return text

    def _progress(self, campaign_id: str | None, job: Job | None) -> pn.viewable.Viewable:
        """The bar and status, bound to the job's parameters (through the feed) and the
        campaigns' revision."""
        status_args: list[Any] = [self._revision]
        if job is None:
            info = self._info(campaign_id)
            done = 0 if info is None else info.done + info.failed
            state = JobState.DONE if info and info.state == CampaignState.DONE else ""
            bar: Any = progress_bar(
                done, 0 if info is None else info.total, state, css_class="campaign-bar"
            )
        else:
            feed = live(self.workspace)
            refs = [feed.ref(job, name) for name in ("done", "total", "state")]
            bar = pn.bind(progress_bar, *refs, css_class="campaign-bar")
            status_args += [*refs, feed.ref(job, "message")]
        return pn.Column(
            pn.panel(bar),
            pn.pane.Markdown(
                pn.bind(self._status_text, campaign_id, job, *status_args),
                css_classes=["campaign-status"],
            ),
            css_classes=["campaign-progress"],
            sizing_mode="stretch_width",
        )

    def _messages_frame(
        self, campaign_id: str | None, search: str, page: int, *_revision: object
    ) -> pd.DataFrame:
        if campaign_id is None:
            return _frame([], MESSAGE_COLUMNS)
        messages = self.workspace.campaigns.messages(
            campaign_id,
            offset=page * PAGE_SIZE,
            limit=PAGE_SIZE + 1,  # one more: is there a next page?
            search=search.strip() or None,
        )
        self.next_button.disabled = len(messages) <= PAGE_SIZE
        messages = messages[:PAGE_SIZE]
        rows = [
            {
                "row": m.row,
                "recipient_id": m.recipient_id or "",
                "name": m.name,
                "developer": m.developer,
                "script": m.script or "",
                "state": m.state,
                "output_id": m.output_id or "",
                "duration": round(m.duration, 2) if m.duration else None,
                "verified": "✓" if m.verified else ("✗" if m.state == "done" else ""),
                "error": m.error,
            }
            for m in messages
        ]
        return _frame(rows, MESSAGE_COLUMNS)

    def _page_text(self, campaign_id: str | None, page: int, *_revision: object) -> str:
        info = self._info(campaign_id)
        if info is None:
            return ""
        first = page * PAGE_SIZE + 1
        return f"page {page + 1} · rows from {first} (of {info.total} messages)"

    @param.depends("page", watch=True)
    def _enable_paging(self) -> None:
        self.previous_button.disabled = self.page == 0

    def _problems(self, campaign_id: str | None, *_revision: object) -> pd.DataFrame:
        if campaign_id is None:
            return _problems_frame([])
        return _problems_frame(self.workspace.campaigns.problems(campaign_id, PROBLEMS_SHOWN))

    def _campaigns_frame(self, *_revision: object) -> pd.DataFrame:
        rows = [
            {
                "id": info.id,
                "state": str(info.state),
                "template": info.template,
                "source": info.source,
                "done": info.done,
                "total": info.total,
                "failed": info.failed,
                "created_at": info.created_at,
            }
            for info in self.workspace.campaigns.list(limit=100)
        ]
        return _frame(rows, CAMPAIGN_COLUMNS)

    def _download(self, campaign_id: str | None) -> pn.viewable.Viewable:
        """The zip, streamed by the API (the dashboard's session cookie authorises it)."""
        if campaign_id is None:
            return pn.pane.Markdown(
                "Run or pick a campaign to download its zip.", css_classes=["campaign-download"]
            )
        if not self.audio_urls:
            return pn.pane.Markdown(
                "The zip is streamed by the API server (`hybrid-audio-server`); here, use "
                f"`hybrid-audio campaign export {md(campaign_id)} --out FILE`.",
                css_classes=["campaign-download"],
            )
        return _download_link(
            f"/campaigns/{campaign_id}/export.zip",
            f"{campaign_id}.zip",
            "Download zip",
            "campaign-download",
        )

    @friendly
    def _player(self, output_id: str | None) -> pn.viewable.Viewable:
        if output_id is None:
            return pn.pane.Markdown("Click a finished message to play it.")
        if not self.audio_urls:  # no API to link to: the Assemble page ("Open proof") has
            # the message's own Download
            player = audio_player(None, self.workspace.assembler.read_output(output_id)[0])
            return pn.Column(md(output_id), player, sizing_mode="stretch_width")
        url, css_class = f"/assemble/outputs/{output_id}/audio", "campaign-message-download"
        return pn.Column(
            md(output_id),
            audio_player(url, None),
            _download_link(url, f"{output_id}.wav", "Download message", css_class),
            sizing_mode="stretch_width",
        )

    def __panel__(self) -> pn.viewable.Viewable:
        rotation = pn.Row(
            pn.widgets.IntInput.from_param(self.param.rotation_count, width=120),
            pn.widgets.IntInput.from_param(self.param.seed, width=120),
            visible=self.param.source.rx() == "rotation",
        )
        self.file_input.visible = self.param.source.rx() == "upload"
        source = pn.Column(
            pn.widgets.RadioButtonGroup.from_param(self.param.source),
            self.file_input,
            rotation,
            pn.Row(
                pn.widgets.Select.from_param(self.param.template, label="Template", width=220),
                pn.widgets.RadioButtonGroup.from_param(self.param.join),
            ),
            sizing_mode="stretch_width",
        )
        preview = pn.Column(
            pn.pane.Markdown(
                pn.bind(self._plan_text, self.param.plan, self.param.source, self.param.filename),
                css_classes=["campaign-plan"],
            ),
            pn.widgets.Tabulator(
                pn.bind(self._preview_frame, self.param.recipients, self.param.plan),
                show_index=False,
                disabled=True,
                formatters={c: WRAPPED for c in PREVIEW_COLUMNS[1:]},
                css_classes=["campaign-preview-table"],
                sizing_mode="stretch_width",
            ),
            _problems_table(
                pn.bind(
                    lambda plan: _problems_frame(plan.problems if plan else []), self.param.plan
                ),
                "campaign-preview-problems",
            ),
            css_classes=["campaign-preview"],
            sizing_mode="stretch_width",
        )
        run = pn.Card(
            pn.Row(self.run_button, self.cancel_button, self.resume_button),
            pn.panel(pn.bind(self._progress, self.param.campaign_id, self.param.job)),
            title="Run",
            collapsible=False,
            sizing_mode="stretch_width",
        )
        results = pn.Card(
            pn.Row(
                pn.widgets.TextInput.from_param(
                    self.param.search,
                    placeholder="name, developer or recipient id",
                    css_classes=["campaign-search"],
                    width=280,
                ),
                self.previous_button,
                self.next_button,
                pn.pane.Markdown(
                    pn.bind(
                        self._page_text, self.param.campaign_id, self.param.page, self._revision
                    )
                ),
                pn.panel(pn.bind(self._download, self.param.campaign_id)),
            ),
            self.results_table,
            pn.Row(
                pn.panel(pn.bind(self._player, self.param.playing)),
                self.proof_button,
                sizing_mode="stretch_width",
            ),
            "#### Rows not made (row numbers as in the list)",
            _problems_table(
                pn.bind(self._problems, self.param.campaign_id, self._revision),
                "campaign-problems",
            ),
            title="Results",
            collapsible=False,
            css_classes=["campaign-results"],
            sizing_mode="stretch_width",
        )
        past = pn.Card(
            "Click a campaign to see its results.",
            self.campaigns_table,
            title="Past campaigns",
            collapsible=False,
            css_classes=["campaign-list"],
            sizing_mode="stretch_width",
        )
        return pn.Column(
            pn.Card(
                source, preview, title="Recipients", collapsible=False, sizing_mode="stretch_width"
            ),
            run,
            results,
            past,
            sizing_mode="stretch_width",
        )
