"""Generate page: one stem from a name, a developer, a script key or a text of any kind
(kinds.json adds kinds), under the contract.

The active contract is the server's, shared by every user and deciding which cached stems
are compatible, so the contract widgets edit a draft (a copy). "Apply contract" plans the
change in the core (building the engine it names: a missing key is an error there and
nothing changes) and asks for confirmation, saying how many cached stems the change makes
incompatible; only "Confirm change" applies it, whole. The sound processing (loudness target
or off, true-peak ceiling, edge fade) is part of the contract and edited the same way.
"""

from __future__ import annotations

from io import BytesIO

import panel as pn
import param

from app.views.common import (
    PageState,
    audio_player,
    friendly,
    md,
    notify_info,
    script_choices,
    wav_download,
    waveform_figure,
)
from app.views.live import live
from hybrid_audio import kinds
from hybrid_audio.cache import StemRecord
from hybrid_audio.contract import DEFAULT_LOUDNESS_LUFS, VoiceContract
from hybrid_audio.generation import ContractChange
from hybrid_audio.workspace import Workspace

#: Contract parameters a user may edit here.
CONTRACT_FIELDS = [
    "engine",
    "voice",
    "language",
    "speed",
    "encoding",
    "sample_rate",
    "loudness_lufs",
    "true_peak_dbtp",
    "edge_fade_ms",
]


def _sound(contract: VoiceContract) -> str:
    """The processing of the contract in words (loudness off: fades only, or none)."""
    fade = f"fades {contract.edge_fade_ms:g} ms" if contract.edge_fade_ms > 0 else "no fades"
    if contract.loudness_lufs is None:
        return f"loudness off, {fade}"
    return f"{contract.loudness_lufs:g} LUFS, ceiling {contract.true_peak_dbtp:g} dBTP, {fade}"


class GenerateView(PageState, pn.viewable.Viewer):
    """Inputs → `Generator.generate_*` → a result card with audio, waveform and hash."""

    workspace = param.ClassSelector(class_=Workspace, doc="The core objects.")
    audio_urls = param.Boolean(default=False, doc="Give the player API URLs, not files.")
    name_text = param.String(default="", label="Name", doc="A person's name to speak.")
    developer_text = param.String(default="", label="Developer", doc="A developer's name.")
    script_key = param.Selector(
        default=None, objects=[], label="Script", doc="Script key (shown as key — phrase)."
    )
    kind = param.Selector(default=None, objects=[], label="Kind", doc="Kind of the stem to make.")
    stem_text = param.String(
        default="", label="Text", doc="What to speak; for a key → phrase kind, the key."
    )
    record = param.ClassSelector(
        class_=StemRecord, allow_None=True, doc="The stem made or found by the last click."
    )
    draft = param.ClassSelector(
        class_=VoiceContract, doc="The contract being edited (not yet the active one)."
    )
    pending = param.ClassSelector(
        class_=ContractChange, allow_None=True, doc="A planned change awaiting confirmation."
    )

    def __init__(self, **params) -> None:
        super().__init__(**params)
        choices = script_choices(self.workspace.settings)
        self.param.script_key.objects = choices
        if choices:
            self.script_key = next(iter(choices.values()))
        known = [kind.name for kind in kinds.load(self.workspace.settings)]
        self.param.kind.objects = known
        self.kind = known[0]
        self.generate_name_button = pn.widgets.Button(
            label="Generate name", color="primary", css_classes=["generate-name"]
        )
        self.generate_developer_button = pn.widgets.Button(
            label="Generate developer", color="primary", css_classes=["generate-developer"]
        )
        self.generate_script_button = pn.widgets.Button(
            label="Generate script", color="primary", css_classes=["generate-script"]
        )
        self.generate_stem_button = pn.widgets.Button(
            label="Generate", color="primary", css_classes=["generate-stem"]
        )
        contract = self.workspace.generator.contract
        self.draft = contract.copy()
        #: The active contract's values the draft was last aligned with: a draft field that
        #: still equals its base was not edited here, and follows the active contract.
        self._base = contract.values()
        feed = live(self.workspace)
        pn.bind(self._rebase_draft, *[feed.ref(contract, f) for f in CONTRACT_FIELDS], watch=True)
        draft = self.draft.param
        #: Widgets made from the draft's parameters: editing one edits the draft only.
        self.contract_widgets = {
            "engine": pn.widgets.Select.from_param(draft.engine),
            "voice": pn.widgets.TextInput.from_param(draft.voice),
            "language": pn.widgets.TextInput.from_param(draft.language),
            "speed": pn.widgets.FloatSlider.from_param(draft.speed, step=0.05),
            "encoding": pn.widgets.Select.from_param(draft.encoding),
            "sample_rate": pn.widgets.IntInput.from_param(draft.sample_rate, step=50),
            **self._loudness_widgets(),
            "true_peak_dbtp": pn.widgets.FloatSlider.from_param(
                draft.true_peak_dbtp, step=0.5, label="True-peak ceiling (dBTP)"
            ),
            "edge_fade_ms": pn.widgets.FloatSlider.from_param(
                draft.edge_fade_ms, step=0.5, label="Edge fade (ms)"
            ),
        }
        self.apply_contract_button = pn.widgets.Button(
            label="Apply contract", css_classes=["apply-contract"]
        )
        self.confirm_contract_button = pn.widgets.Button(
            label="Confirm change", color="danger", css_classes=["confirm-contract"]
        )
        self.cancel_contract_button = pn.widgets.Button(
            label="Cancel change", css_classes=["cancel-contract"]
        )
        self._init_callbacks()

    def _loudness_widgets(self) -> dict[str, pn.widgets.Widget]:
        """The "Normalise loudness" switch (off: `loudness_lufs` None) and the target, kept in step
        with the draft both ways (Cancel and Confirm reset the draft)."""
        draft = self.draft
        target = draft.loudness_lufs
        switch = pn.widgets.Checkbox(
            label="Normalise loudness", value=target is not None, css_classes=["loudness-on"]
        )
        bounds = draft.param.loudness_lufs.bounds
        value = pn.widgets.FloatInput(
            label="Loudness target (LUFS)",
            value=DEFAULT_LOUDNESS_LUFS if target is None else target,
            start=bounds[0],
            end=bounds[1],
            step=0.5,
            disabled=target is None,
            css_classes=["loudness-target"],
        )

        syncing = False  # the widgets are being set from the draft: do not write it back

        def to_draft(*_: object) -> None:
            value.disabled = not switch.value
            if not syncing:
                draft.loudness_lufs = value.value if switch.value else None

        def from_draft(event: param.parameterized.Event) -> None:
            nonlocal syncing
            syncing = True
            try:
                if event.new is not None:
                    value.value = event.new
                switch.value = event.new is not None
            finally:
                syncing = False

        switch.param.watch(to_draft, "value")
        value.param.watch(to_draft, "value")
        draft.param.watch(from_draft, "loudness_lufs")
        return {"loudness_on": switch, "loudness_lufs": value}

    def _init_callbacks(self) -> None:
        self.generate_name_button.on_click(lambda _: self.generate_name())
        self.generate_developer_button.on_click(lambda _: self.generate_developer())
        self.generate_script_button.on_click(lambda _: self.generate_script())
        self.generate_stem_button.on_click(lambda _: self.generate_stem())
        self.apply_contract_button.on_click(lambda _: self.plan_contract())
        self.confirm_contract_button.on_click(lambda _: self.confirm_contract())
        self.cancel_contract_button.on_click(lambda _: self.cancel_contract())

    # --- actions ------------------------------------------------------------------------

    @friendly
    def generate_name(self) -> StemRecord:
        self.record = self.workspace.generator.generate_name(self.name_text)
        return self.record

    @friendly
    def generate_developer(self) -> StemRecord:
        self.record = self.workspace.generator.generate_developer(self.developer_text)
        return self.record

    @friendly
    def generate_script(self) -> StemRecord:
        if not self.script_key:
            raise ValueError("no script key chosen (is data/scripts.json there?)")
        self.record = self.workspace.generator.generate_script(self.script_key)
        return self.record

    @friendly
    def generate_stem(self) -> StemRecord:
        """The stem of `stem_text` as the chosen kind: the text is spoken, or for a key →
        phrase kind it names the phrase (as `POST /generate/stem` does)."""
        generator = self.workspace.generator
        if kinds.get(self.kind).form == "mapping":
            self.record = generator.generate_keyed(self.kind, self.stem_text)
        else:
            self.record = generator.generate(self.kind, self.stem_text)
        return self.record

    @friendly
    def plan_contract(self) -> ContractChange:
        """Check the draft in the core and ask for confirmation (nothing is applied yet)."""
        generator = self.workspace.generator
        generator.follow_contract()  # another process's change first, then what was edited here
        self._rebase_draft()
        active = generator.contract
        changes = {
            field: getattr(self.draft, field)
            for field in CONTRACT_FIELDS
            if getattr(self.draft, field) != getattr(active, field)
        }
        self.pending = None
        if not changes:
            raise ValueError("the draft is the active contract: nothing to apply")
        self.pending = self.workspace.generator.plan_contract_change(**changes)
        return self.pending

    @friendly
    def confirm_contract(self) -> None:
        """Apply the confirmed change (for every user of this server)."""
        if self.pending is None:
            raise ValueError("no contract change to confirm: press Apply contract first")
        change, self.pending = self.pending, None
        self.workspace.generator.apply_contract_change(change)
        self._reset_draft()
        notify_info(f"contract applied: {change.contract.engine}, {change.signature[:16]}…")

    def cancel_contract(self) -> None:
        """Forget the planned change and put the draft back to the active contract."""
        self.pending = None
        self._reset_draft()

    def _reset_draft(self) -> None:
        self._base = self.workspace.generator.contract.values()
        self.draft.param.update(**self._base)

    def _rebase_draft(self, *_: object) -> None:
        """The active contract changed (another operator, another server process): the draft's
        fields edited on this page keep their edit, the others take the new active values, so
        applying the draft never quietly reverts someone else's change."""
        active = self.workspace.generator.contract.values()
        edited = {name for name, value in self._base.items() if getattr(self.draft, name) != value}
        self._base = active
        self.draft.param.update(**{name: v for name, v in active.items() if name not in edited})

    # --- derived panes ------------------------------------------------------------------

    def _contract_summary(self, *_: object) -> str:
        contract = self.workspace.generator.contract
        fmt = contract.audio_format
        return (
            f"**Active:** engine **{md(self.workspace.generator.engine.name)}** · contract "
            f"{md(contract.signature()[:16])}… · {md(fmt.describe())} · {_sound(contract)}"
        )

    def contract_summary_pane(self) -> pn.pane.Markdown:
        """The active contract, following its parameters (a new pane per call)."""
        contract, feed = self.workspace.contract, live(self.workspace)
        return pn.pane.Markdown(
            pn.bind(self._contract_summary, *[feed.ref(contract, f) for f in CONTRACT_FIELDS]),
            css_classes=["contract-summary"],
        )

    def _confirmation(self, change: ContractChange | None) -> pn.viewable.Viewable:
        if change is None:
            return pn.Column()
        text = (
            f"**Apply to every user?** Engine {md(change.contract.engine)}, contract "
            f"{md(change.signature[:16])}…\n\n{md(change.describe())}"
        )
        return pn.Column(
            pn.pane.Markdown(text, css_classes=["contract-confirm"]),
            pn.Row(self.confirm_contract_button, self.cancel_contract_button),
        )

    def _result_text(self, record: StemRecord | None) -> str:
        if record is None:
            return "No stem yet: enter a text and press a Generate button."
        state = "cached" if record.cached else "new"
        text = (
            f"### {md(record.stem_id)} ({state})\n\n"
            f"*{md(record.text)}* — {record.duration:.2f} s, {md(record.encoding)} "
            f"{record.sample_rate} Hz\n\nsha256 {md(record.sha256)}"
        )
        if record.loudness_after is not None and record.true_peak_after is not None:
            text += (
                f"\n\nloudness {record.loudness_after:.1f} LUFS (gain {record.gain_db:+.1f} dB),"
                f" true peak {record.true_peak_after:.1f} dBTP"
            )
        return text

    def _stem_bytes(self, record: StemRecord | None) -> bytes | None:
        """The stem's file, proven against its index row (a changed file is an error)."""
        if record is None:
            return None
        return self.workspace.generator.cache.read(record).data

    @friendly
    def _player(self, record: StemRecord | None) -> pn.viewable.Viewable:
        if record is None:
            return pn.pane.Markdown("")
        if self.audio_urls:
            return audio_player(f"/cache/stems/{record.stem_id}/audio", None)
        return audio_player(None, self._stem_bytes(record))

    @friendly
    def _waveform(self, record: StemRecord | None):
        return waveform_figure(self._stem_bytes(record), height=140, width=600)

    @friendly
    def download_bytes(self) -> BytesIO:
        """The shown stem's WAV for the Download button (proven bytes, never a path)."""
        if self.record is None:
            raise ValueError("no stem yet: generate one first")
        return BytesIO(self._stem_bytes(self.record))

    def _download_button(self, record: StemRecord | None) -> pn.widgets.FileDownload:
        return wav_download(self.download_bytes, record.stem_id if record else None, "stem")

    def result_panes(self) -> tuple[pn.viewable.Viewable, ...]:
        """The stem made by the last click: text, player, Download (new objects per call)."""
        return (
            pn.pane.Markdown(
                pn.bind(self._result_text, self.param.record), css_classes=["generate-result"]
            ),
            pn.panel(pn.bind(self._player, self.param.record)),
            pn.panel(pn.bind(self._download_button, self.param.record)),
        )

    def __panel__(self) -> pn.viewable.Viewable:
        contract_widgets = pn.Column(*self.contract_widgets.values(), css_classes=["contract"])
        inputs = pn.Column(
            pn.Row(
                pn.widgets.TextInput.from_param(
                    self.param.name_text, placeholder="e.g. José María", label="Name"
                ),
                self.generate_name_button,
            ),
            pn.Row(
                pn.widgets.TextInput.from_param(
                    self.param.developer_text, placeholder="e.g. Acme Homes", label="Developer"
                ),
                self.generate_developer_button,
            ),
            pn.Row(
                pn.widgets.Select.from_param(self.param.script_key), self.generate_script_button
            ),
            pn.Row(
                pn.widgets.Select.from_param(self.param.kind, width=120, css_classes=["stem-kind"]),
                pn.widgets.TextInput.from_param(
                    self.param.stem_text, placeholder="any kind's text", css_classes=["stem-text"]
                ),
                self.generate_stem_button,
            ),
        )
        summary = self.contract_summary_pane()
        confirmation = pn.panel(pn.bind(self._confirmation, self.param.pending))
        text, player, download = self.result_panes()
        result = pn.Card(
            text,
            pn.Row(player, download, sizing_mode="stretch_width"),
            pn.pane.Bokeh(
                pn.bind(self._waveform, self.param.record),
                css_classes=["waveform", "stem-waveform"],
                sizing_mode="stretch_width",
            ),
            title="Result",
            collapsible=False,
            sizing_mode="stretch_width",
        )
        return pn.Row(
            pn.Column(inputs, result, sizing_mode="stretch_width"),
            pn.Column(
                "### Voice contract",
                summary,
                contract_widgets,
                self.apply_contract_button,
                confirmation,
                width=340,
            ),
            sizing_mode="stretch_width",
        )
