"""Pronunciation page: listen to a stem, fix how a word is said, regenerate, see what is stale.

A reviewer picks a text (a name from the datasets or any cached stem's text), listens to
its stem, types a respelling (or phonemes for the active engine), previews what the engine
will be given, and presses "Fix & regenerate": `staleness.apply_fix` sets the entry and
makes every stem using it again, as a job (never on the session's event loop); the player
then plays the new stem, and the messages assembled from the old one are listed as stale
with their reasons. "Remove entry" (`staleness.remove_fix`) brings the old bytes back.

The dictionary table and the stale list follow the dictionary's `revision`, the player the
cache's (through the live feed), so another session's or process's fix shows here too.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import panel as pn
import param

from app.views.common import (
    WRAPPED,
    PageState,
    audio_player,
    friendly,
    md,
    notify_error,
    notify_info,
    progress_bar,
)
from app.views.live import live
from hybrid_audio import kinds, staleness
from hybrid_audio.datasets import load_dataset
from hybrid_audio.jobs import FINISHED_STATES, Job, JobState
from hybrid_audio.pronunciation import PHONEME_SYNTAX, PronunciationEntry
from hybrid_audio.stems import spoken_text
from hybrid_audio.workspace import Workspace

ENTRY_COLUMNS = ["text", "respelling", "phonemes", "note", "updated_at"]
STALE_COLUMNS = ["output_id", "stem_id", "text", "reason"]
#: Stale messages listed at most (each listing reads every manifest up to the last one).
STALE_LIMIT = 100
#: The job kind of a fix or a removal (in /jobs and jobs.jsonl).
JOB_KIND = "pronunciation_fix"


def _phonemes_text(entry: PronunciationEntry) -> str:
    return "; ".join(f"{engine}: {value}" for engine, value in sorted(entry.phonemes.items()))


def _summary(report: staleness.FixReport) -> dict:
    """A fix's report as a job result: small JSON (ids, not records)."""
    return {
        "text": report.entry.text if report.entry else "",
        "removed": report.removed,
        "regenerated": [record.stem_id for record in report.regenerated],
        "failed": report.failed,
        "stale_outputs": [output.output_id for output in report.stale_outputs],
    }


class PronunciationView(PageState, pn.viewable.Viewer):
    """The dictionary, and the listen → fix → regenerate loop for one text."""

    workspace = param.ClassSelector(class_=Workspace, doc="The core objects.")
    audio_urls = param.Boolean(default=False, doc="Give the player API URLs, not files.")
    kind = param.Selector(default="name", objects=["name"], doc="Kind of the stem to hear.")
    text = param.String(default="", label="Word or name", doc="The text to listen to and fix.")
    respelling = param.String(default="", label="Respelling", doc="How to write it to be said.")
    phonemes = param.String(default="", label="Phonemes", doc="For the active engine only.")
    note = param.String(default="", label="Note", doc="Why the fix (for other reviewers).")
    listening = param.Tuple(
        default=None, length=2, allow_None=True, doc="(kind, text) of the stem in the player."
    )
    preview = param.String(default="", doc="What the engine is given, now and with the fix.")
    job = param.ClassSelector(class_=Job, allow_None=True, doc="The fix job started here.")
    stale_checked = param.Integer(default=0, doc="Bumped to list the stale messages again.")

    def __init__(self, **params) -> None:
        super().__init__(**params)
        text_kinds = [k.name for k in kinds.load(self.workspace.settings) if k.form == "lines"]
        self.param.kind.objects = text_kinds
        feed = live(self.workspace)
        self._dictionary = feed.ref(self.workspace.pronunciations, "revision")
        self._stems = feed.ref(self.workspace.cache, "revision")
        self._settled: set[str] = set()  # jobs whose end was already reported
        self.text_input = pn.widgets.AutocompleteInput.from_param(
            self.param.text,
            options=self._choices(self.kind),
            restrict=False,
            case_sensitive=False,
            min_characters=1,
            search_strategy="includes",
            placeholder="a name from the datasets or any cached text",
            css_classes=["pron-text"],
        )
        self.entries = pn.widgets.Tabulator(
            pn.bind(self._entries_frame, self._dictionary),
            show_index=False,
            disabled=True,
            pagination="local",
            page_size=10,
            formatters=dict.fromkeys(["text", "respelling", "phonemes", "note"], WRAPPED),
            css_classes=["pron-dictionary"],
            sizing_mode="stretch_width",
        )
        self.stale = pn.widgets.Tabulator(
            pn.bind(self._stale_frame, self._dictionary, self.param.stale_checked),
            show_index=False,
            disabled=True,
            pagination="local",
            page_size=10,
            formatters={"text": WRAPPED, "reason": WRAPPED},
            css_classes=["pron-stale"],
            sizing_mode="stretch_width",
        )
        self.listen_button = pn.widgets.Button(
            label="Listen", align="end", css_classes=["pron-listen"]
        )
        self.preview_button = pn.widgets.Button(label="Preview", css_classes=["pron-preview"])
        self.fix_button = pn.widgets.Button(
            label="Fix & regenerate", color="primary", css_classes=["pron-fix"]
        )
        self.remove_button = pn.widgets.Button(
            label="Remove entry", color="danger", css_classes=["pron-remove"]
        )
        self.refresh_button = pn.widgets.Button(
            label="Check messages", css_classes=["pron-check-stale"]
        )
        self._init_callbacks()

    def _init_callbacks(self) -> None:
        self.entries.on_click(self._handle_entry_click)
        self.listen_button.on_click(lambda _: self.listen())
        self.preview_button.on_click(lambda _: self.show_preview())
        self.fix_button.on_click(lambda _: self.fix())
        self.remove_button.on_click(lambda _: self.remove())
        self.refresh_button.on_click(lambda _: self.param.trigger("stale_checked"))

    @param.depends("kind", watch=True)
    def _kind_changed(self) -> None:
        self.text_input.options = self._choices(self.kind)

    def _choices(self, kind: str) -> list[str]:
        """The kind's dataset texts and its cached stems' texts, for the text box."""
        try:
            texts = [item.text for item in load_dataset(kind, self.workspace.settings).items]
        except ValueError:
            texts = []
        texts += [record.text for record in self.workspace.cache.list(kind=kind)]
        return sorted(set(texts), key=str.casefold)

    # --- actions ------------------------------------------------------------------------

    def _handle_entry_click(self, event) -> None:
        frame = self.entries.value
        if event.row is None or event.row >= len(frame):
            return
        entry = self.workspace.pronunciations.get(str(frame.iloc[event.row]["text"]))
        if entry is not None:
            self.param.update(
                text=entry.text,
                respelling=entry.respelling,
                phonemes=entry.phonemes.get(self.workspace.contract.engine, ""),
                note=entry.note,
            )

    def _spoken(self) -> str:
        if not self.text.strip():
            raise ValueError("type or pick a word or name first")
        return spoken_text(self.text)

    @friendly
    def listen(self) -> None:
        """Play the text's stem as the dictionary makes it now (made first if missing)."""
        spoken = self._spoken()
        self.workspace.generator.generate(self.kind, spoken)
        self.listening = (self.kind, spoken)

    @friendly
    def show_preview(self) -> str:
        """What the engine is given for the text now, and what it would be given with the
        fix typed here (an entry for the whole text replaces it with this)."""
        spoken = self._spoken()
        engine = self.workspace.contract.engine
        now = self.workspace.generator.pronounce(spoken)
        phonemes = " ".join(self.phonemes.split())
        fixed = PHONEME_SYNTAX[engine](phonemes) if phonemes else " ".join(self.respelling.split())
        if not fixed:
            raise ValueError("type a respelling (or phonemes) to preview the fix")
        applied = f" (entries: {', '.join(now.entries)})" if now.entries else ""
        self.preview = f"{engine} is given now: {now.engine_text}{applied}\nwith this fix: {fixed}"
        return self.preview

    @friendly
    def fix(self) -> Job:
        """Set the entry and make its stems again, as a job. The form holds the active
        engine's phonemes only: the entry's phonemes for other engines are kept."""
        spoken = self._spoken()
        engine = self.workspace.contract.engine
        entry = self.workspace.pronunciations.get(spoken)
        phonemes = {**(entry.phonemes if entry else {}), engine: self.phonemes}  # "" drops it
        respelling, note = self.respelling, self.note
        self.listening = (self.kind, spoken)
        return self._start(
            "fix",
            spoken,
            lambda job: staleness.apply_fix(
                self.workspace, spoken, respelling, phonemes, note, job=job
            ),
        )

    @friendly
    def remove(self) -> Job:
        """Remove the entry and make its stems again as written (their old bytes)."""
        spoken = self._spoken()
        if self.workspace.pronunciations.get(spoken) is None:
            raise ValueError(f"no pronunciation entry for {spoken!r}")
        self.listening = (self.kind, spoken)
        return self._start(
            "remove", spoken, lambda job: staleness.remove_fix(self.workspace, spoken, job=job)
        )

    def _start(self, action: str, text: str, work: Callable[[Job], staleness.FixReport]) -> Job:
        """Run `work` as a job (it advances it per stem made again), then make the played
        text's stem if no fix touched it (a text never listened to has none yet), so the
        player has the new one to play."""
        if self.job is not None and self.job.state not in FINISHED_STATES:
            raise ValueError(f"fix job {self.job.id} is still running")
        kind = self.kind

        def run(job: Job) -> dict:
            report = work(job)
            self.workspace.generator.generate(kind, text)
            return _summary(report)

        self.job = self.workspace.jobs.submit(
            JOB_KIND, run, params={"source": "dashboard", "action": action, "text": text}
        )
        state = live(self.workspace).ref(self.job, "state")
        pn.bind(self._settle, self.job, state, watch=True)
        self._settle(self.job, state.owner.value)  # it may have ended already
        return self.job

    def _settle(self, job: Job, state: JobState) -> None:
        """Report a fix job's end once (on the session's thread): errors as notifications."""
        if state not in FINISHED_STATES or job.id in self._settled:
            return
        self._settled.add(job.id)
        if state == JobState.FAILED:
            notify_error(self, ValueError(job.message or "the fix failed"))
        elif state == JobState.DONE and isinstance(job.result, dict):
            made, stale = len(job.result["regenerated"]), len(job.result["stale_outputs"])
            notify_info(f"{made} stem(s) made again; {stale} message(s) now stale")
        self.param.trigger("stale_checked")

    # --- derived values -----------------------------------------------------------------

    def _entries_frame(self, *_revision: object) -> pd.DataFrame:
        rows = [
            {
                "text": entry.text,
                "respelling": entry.respelling,
                "phonemes": _phonemes_text(entry),
                "note": entry.note,
                "updated_at": entry.updated_at,
            }
            for entry in self.workspace.pronunciations.list()
        ]
        return pd.DataFrame(rows, columns=ENTRY_COLUMNS)

    def _stale_frame(self, *_revisions: object) -> pd.DataFrame:
        rows = [
            {"output_id": output.output_id, **stem.model_dump()}
            for output in staleness.stale_outputs(self.workspace, 0, STALE_LIMIT)
            for stem in output.stems
        ]
        return pd.DataFrame(rows, columns=STALE_COLUMNS)

    @friendly
    def _stem_pane(self, listening: tuple[str, str] | None, *_revisions: object):
        """The stem the text has now (it follows the cache: a fix's new stem replaces it)."""
        if listening is None:
            return pn.pane.Markdown("Pick a text and press *Listen*.", css_classes=["pron-stem"])
        kind, text = listening
        record = self.workspace.generator.current(kind, text)
        if record is None:
            return pn.pane.Markdown(
                f"**{md(text)}**: being made with the dictionary as it is now…",
                css_classes=["pron-stem"],
            )
        details = f"**{md(text)}** → {md(record.stem_id)} · sha256 {md(record.sha256)}"
        if record.spoken_as:  # an entry applied
            details += f"\n\nspoken as: {md(record.spoken_as)}"
        if self.audio_urls:
            # The sha256 in the query: a remade stem is fetched, not replayed from the cache.
            url = f"/cache/stems/{record.stem_id}/audio?sha256={record.sha256}"
            player = audio_player(url, None)
        else:
            player = audio_player(None, self.workspace.cache.read(record).data)
        return pn.Column(
            pn.pane.Markdown(details, css_classes=["pron-stem"]),
            player,
            sizing_mode="stretch_width",
        )

    @staticmethod
    def _job_status(job: Job | None, state: JobState | None = None, *_: object) -> str:
        if job is None:
            return ""
        status = f"{md(job.params.get('action', 'fix'))} job {md(job.id)}: **{md(state)}**"
        if state == JobState.FAILED:
            status += f" — {md(job.message)}"
        if state == JobState.DONE and isinstance(job.result, dict):
            result = job.result
            status += (
                f" — {len(result['regenerated'])} stem(s) made again, "
                f"{len(result['stale_outputs'])} message(s) now stale"
            )
            if result["failed"]:
                status += " — failed: " + md("; ".join(result["failed"]))
        return status

    def _job_pane(self, job: Job | None) -> pn.viewable.Viewable:
        """The fix job's bar (one step per stem made again) and status line."""
        if job is None:
            return pn.pane.Markdown(css_classes=["pron-status"])
        feed = live(self.workspace)
        state, done, total = (feed.ref(job, name) for name in ("state", "done", "total"))
        return pn.Column(
            pn.panel(pn.bind(progress_bar, done, total, state, css_class="pron-progress")),
            pn.pane.Markdown(
                pn.bind(self._job_status, job, state, feed.ref(job, "result")),
                css_classes=["pron-status"],
            ),
            sizing_mode="stretch_width",
        )

    def __panel__(self) -> pn.viewable.Viewable:
        engine = self.workspace.contract.engine
        form = pn.Column(
            pn.Row(
                pn.widgets.Select.from_param(self.param.kind, label="Kind", width=140),
                self.text_input,
                self.listen_button,
            ),
            pn.panel(pn.bind(self._stem_pane, self.param.listening, self._stems, self._dictionary)),
            pn.Row(
                pn.widgets.TextInput.from_param(self.param.respelling, placeholder="e.g. Win"),
                pn.widgets.TextInput.from_param(
                    self.param.phonemes, label=f"Phonemes ({engine})", placeholder="optional"
                ),
                pn.widgets.TextInput.from_param(self.param.note, placeholder="optional"),
            ),
            pn.Row(self.preview_button, self.fix_button, self.remove_button),
            pn.pane.Markdown(
                pn.bind(lambda text: "\n\n".join(map(md, text.splitlines())), self.param.preview),
                css_classes=["pron-preview-text"],
            ),
            pn.panel(pn.bind(self._job_pane, self.param.job)),
            sizing_mode="stretch_width",
        )
        return pn.Column(
            pn.Card(form, title="Listen and fix", collapsible=False, sizing_mode="stretch_width"),
            pn.Card(
                pn.pane.Markdown(
                    "Messages assembled from stems that changed since (a new assembly would "
                    "say something else):"
                ),
                self.refresh_button,
                self.stale,
                title="Stale messages",
                sizing_mode="stretch_width",
            ),
            pn.Card(self.entries, title="Dictionary", sizing_mode="stretch_width"),
            sizing_mode="stretch_width",
            css_classes=["pronunciation"],
        )
