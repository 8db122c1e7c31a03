"""Assemble page: template + inputs → message, with its waveform, player and byte-diff proof.

The page's only state is what the user chose: the inputs (one text input per slot of a
kind added in kinds.json, and a Next button per rotation stream), the join mode, which output is
shown (`output_id`) and, after "Re-verify from disk", that fresh proof (`reverified`). The
manifest, waveform, proof and download are derived from them through the core's checked
readers; the list of past outputs follows the core's `Assembler.last_result` through the
session's live feed (`app.views.live`), so an assembly made anywhere in this process (the
API, another tab) refreshes it.
"""

from __future__ import annotations

import contextlib
from io import BytesIO
from typing import Any

import pandas as pd
import panel as pn
import param

from app.views.common import (
    WRAPPED,
    PageState,
    audio_player,
    friendly,
    md,
    script_choices,
    waveform_figure,
)
from app.views.live import live
from hybrid_audio.bitmerge import VerifyReport
from hybrid_audio.delivery import FORMATS, file_name, read_delivery
from hybrid_audio.rotation import PAIR, RotationStep
from hybrid_audio.templates import SilenceSegment, SlotSegment, StemSegment, list_templates
from hybrid_audio.waveform import segment_boundaries, segment_spans
from hybrid_audio.workspace import Workspace

DIFF_COLUMNS = ["#", "stem", "kind", "byte range", "source sha256", "verdict"]
OUTPUT_COLUMNS = ["id", "template", "name", "developer", "script", "duration", "verified"]
#: What a "✓ exact" row proves, said once above the table.
EXACT_MEANS = (
    "**✓ exact** means this segment's bytes in the message were read back from disk and are "
    "identical, byte for byte, to the cached stem (or silence) it came from; "
    "**✗** names the first byte that differs."
)
#: The byte-diff table wraps long cells (stem ids, hashes, verdicts) instead of clipping
#: them: Tabulator's textarea formatter wraps (and escapes HTML); hashes break anywhere.
_DIFF_FORMATTERS = {"stem": WRAPPED, "source sha256": WRAPPED, "verdict": WRAPPED}
_BREAK_ANYWHERE = [".tabulator-cell { overflow-wrap: anywhere; }"]
_DIFF_WIDTHS = {"#": 50, "kind": 70, "byte range": 130}
#: Slots with their own input on this page → the parameter holding it; a slot of any other
#: kind (added in kinds.json) gets a text input when the chosen template has it.
_OWN_INPUTS = {"name": "name_text", "developer": "developer_text", "script": "script_key"}


class AssembleView(PageState, pn.viewable.Viewer):
    """Assemble a message from a template and prove it byte by byte."""

    workspace = param.ClassSelector(class_=Workspace, doc="The core objects.")
    audio_urls = param.Boolean(default=False, doc="Give the player API URLs, not files.")
    template = param.Selector(default=None, objects=[], doc="Template to fill.")
    name_text = param.String(default="", label="Name", doc="Value of the name slot.")
    developer_text = param.String(default="", label="Developer", doc="The developer slot.")
    script_key = param.Selector(
        default=None, objects=[], label="Script", doc="Script slot (shown as key — phrase)."
    )
    join = param.Selector(
        default="exact",
        objects=["exact", "hybrid"],
        label="Join",
        doc="How stems are joined: exact concatenation, or hybrid (short crossfades).",
    )
    output_id = param.String(
        default=None, allow_None=True, doc="The output shown (the user's choice, an id)."
    )
    delivery_format = param.Selector(
        default="wav",
        objects=list(FORMATS),
        label="Format",
        doc="What Download delivers: wav (the proven master) or a format encoded from it.",
    )
    reverified = param.ClassSelector(
        class_=VerifyReport,
        allow_None=True,
        doc="Proof of the shown output re-read from disk; None → its recorded proof.",
    )

    def __init__(self, **params) -> None:
        super().__init__(**params)
        settings = self.workspace.settings
        templates = list_templates(settings)
        self.param.template.objects = templates
        self.param.script_key.objects = script_choices(settings, blank=True)
        if templates:
            self.template = "double_anchor" if "double_anchor" in templates else templates[0]
        self.assemble_button = pn.widgets.Button(
            label="Assemble", color="primary", css_classes=["assemble"]
        )
        self.reverify_button = pn.widgets.Button(
            label="Re-verify from disk", css_classes=["reverify"]
        )
        #: One Next button per rotation stream (kinds.json may add streams).
        self.next_buttons = {
            stream: pn.widgets.Button(
                label=f"Next {stream}", width=120, css_classes=[f"next-{stream}"]
            )
            for stream in self.workspace.rotation.streams
        }
        #: The text inputs of added kinds' slots, made when a template first shows the slot.
        self.slot_inputs: dict[str, pn.widgets.TextInput] = {}
        self.diff_table = pn.widgets.Tabulator(
            pn.bind(self._diff_frame, self.param.output_id, self.param.reverified),
            show_index=False,
            disabled=True,
            layout="fit_columns",
            widths=_DIFF_WIDTHS,
            formatters=_DIFF_FORMATTERS,
            stylesheets=_BREAK_ANYWHERE,
            css_classes=["byte-diff"],
            sizing_mode="stretch_width",
        )
        self.outputs_table = pn.widgets.Tabulator(
            pn.bind(
                self._outputs_frame,
                live(self.workspace).ref(self.workspace.assembler, "last_result"),
            ),
            show_index=False,
            disabled=True,
            selectable=1,
            pagination="local",
            page_size=10,
            layout="fit_columns",
            widths={"template": 130, "duration": 80, "verified": 80},
            formatters={"id": WRAPPED},
            stylesheets=_BREAK_ANYWHERE,
            css_classes=["outputs-table"],
            sizing_mode="stretch_width",
        )
        self._init_callbacks()

    def _init_callbacks(self) -> None:
        self.assemble_button.on_click(lambda _: self.assemble())
        self.reverify_button.on_click(lambda _: self.reverify())
        for stream, button in self.next_buttons.items():
            button.on_click(lambda _, stream=stream: self.next_step(stream))
        self.outputs_table.on_click(self._handle_output_click)

    # --- actions ------------------------------------------------------------------------

    @friendly
    def next_step(self, stream: str) -> RotationStep:
        """Take the next step of `stream` and put what it gave into the matching input(s)."""
        step = self.workspace.rotation.step(stream)
        if stream == PAIR:
            self.param.update(name_text=step.name, developer_text=step.developer)
        elif stream in _OWN_INPUTS:
            setattr(self, _OWN_INPUTS[stream], step.item)
        else:
            self.slot_input(stream).value = step.item or ""
        return step

    def slot_input(self, slot: str) -> pn.widgets.TextInput:
        """The text input of an added kind's slot (one per slot, kept across templates)."""
        widget = self.slot_inputs.get(slot)
        if widget is None:
            widget = self.slot_inputs[slot] = pn.widgets.TextInput(
                name=slot.capitalize(), width=240, css_classes=[f"slot-{slot}"]
            )
        return widget

    def other_slots(self, template: str | None) -> list[str]:
        """The slots of `template` without an input of their own, in the template's order
        (none if it does not load: its preview says why)."""
        if not template:
            return []
        try:
            tpl = self.workspace.assembler.load_template(template)
        except ValueError:
            return []
        slots = [s.slot for s in tpl.segments if isinstance(s, SlotSegment)]
        return [slot for slot in dict.fromkeys(slots) if slot not in _OWN_INPUTS]

    @friendly
    def assemble(self) -> str:
        """Assemble the inputs in the chosen join mode and show the new output."""
        if not self.template:
            raise ValueError("no template chosen (the templates folder is empty?)")
        result = self.workspace.assembler.assemble(
            self.template,
            name=self.name_text or None,
            developer=self.developer_text or None,
            script=self.script_key or None,
            slots={slot: self.slot_input(slot).value for slot in self.other_slots(self.template)},
            mode=self.join,
        )
        self.output_id = result.summary.id
        return self.output_id

    @friendly
    def load_output(self, output_id: str) -> None:
        """Show a past output as it was recorded (its stored verdict)."""
        self.workspace.assembler.load_output(output_id)  # unknown ids are an error here
        self.output_id = output_id

    @friendly
    def reverify(self) -> None:
        if self.output_id is None:
            raise ValueError("no output shown: assemble one or pick one from the list")
        self.reverified = self.workspace.assembler.verify_output(self.output_id)

    def _handle_output_click(self, event: Any) -> None:
        frame = self.outputs_table.value
        if frame is not None and 0 <= event.row < len(frame):
            self.load_output(frame.iloc[event.row]["id"])

    @param.depends("output_id", watch=True)
    def _forget_reverified(self) -> None:
        self.reverified = None  # a re-verification belongs to the output it was made of

    @param.depends("template", watch=True)
    def _use_template_join(self) -> None:
        if self.template:
            # A template that does not load keeps the mode; its preview says why.
            with contextlib.suppress(ValueError):
                self.join = self.workspace.assembler.load_template(self.template).join

    # --- derived values -----------------------------------------------------------------

    @property
    def document(self) -> dict | None:
        """Manifest of the shown output (read through the core), or None."""
        return self._document(self.output_id)

    @property
    def report(self) -> VerifyReport | None:
        """Proof shown: the re-verification if one was made, else the recorded one."""
        return self._report(self.document, self.reverified)

    @friendly
    def _document(self, output_id: str | None) -> dict | None:
        if output_id is None:
            return None
        return self.workspace.assembler.load_output(output_id)

    @staticmethod
    def _report(document: dict | None, reverified: VerifyReport | None) -> VerifyReport | None:
        if reverified is not None or document is None:
            return reverified
        return VerifyReport(**document["verify"])

    @friendly
    def _template_preview(self, template: str | None) -> str:
        if not template:
            return "No templates found."
        tpl = self.workspace.assembler.load_template(template)
        # Escaped: descriptions say "<name>", which Markdown would take for an HTML tag.
        description = md(tpl.description or "no description")
        lines = [f"**{md(tpl.name)}** — {description}", ""]
        for index, segment in enumerate(tpl.segments):
            if isinstance(segment, StemSegment):
                text = f"stem {md(segment.stem)}"
            elif isinstance(segment, SlotSegment):
                text = f"slot **{md(segment.slot)}**"
            elif isinstance(segment, SilenceSegment):
                text = f"silence {segment.silence_ms} ms"
            else:
                text = md(segment)
            lines.append(f"{index + 1}. {text}")
        lines.append("")
        slots = md(", ".join(sorted(tpl.slots)))
        lines.append(f"join {md(tpl.join)}, gap {tpl.gap_ms} ms, slots: {slots}")
        return "\n".join(lines)

    def _result_text(self, document: dict | None, report: VerifyReport | None) -> str:
        if document is None or report is None:
            return "No message yet."
        out = document["output"]
        mode = document["merge"].get("mode", "exact")
        return (
            f"### {md(document['id'])}\n\n{self.verdict_line(report)}\n\n"
            f"{out['duration']:.2f} s · {out['bytes']} bytes · join {md(mode)} · "
            f"sha256 {md(out['sha256'])}"
        )

    @staticmethod
    def verdict_line(report: VerifyReport) -> str:
        """One line: verified (how many segments byte-exact), or where it first differs."""
        if report.ok:
            exact = sum(s.exact for s in report.segments)
            return f"✓ verified — {exact}/{len(report.segments)} segments byte-exact"
        verdict = f"✗ NOT verified — first differing byte at offset {report.first_diff_offset}"
        if report.errors:
            verdict += "; " + md("; ".join(report.errors))
        return verdict

    def _shown_text(self, output_id: str | None, reverified: VerifyReport | None) -> str:
        document = self._document(output_id)
        return self._result_text(document, self._report(document, reverified))

    def _diff_frame(self, output_id: str | None, reverified: VerifyReport | None) -> pd.DataFrame:
        document = self._document(output_id)
        report = self._report(document, reverified)
        if report is None:
            return pd.DataFrame(columns=DIFF_COLUMNS)
        sources = {}
        if document is not None:
            sources = {s["index"]: s for s in document["merge"]["segments"]}
        rows = []
        for check in report.segments:
            start, end = check.byte_offset, check.byte_offset + check.byte_length
            if check.exact:
                verdict = "✓ exact"
            else:
                verdict = f"✗ first differing offset {check.first_diff_offset}"
                if check.detail:
                    verdict += f" ({check.detail})"
            rows.append(
                {
                    "#": check.index,
                    "stem": check.id,
                    "kind": check.kind,
                    "byte range": f"{start}–{end}",
                    "source sha256": (sources.get(check.index, {}).get("source_sha256") or ""),
                    "verdict": verdict,
                }
            )
        return pd.DataFrame(rows, columns=DIFF_COLUMNS)

    def _outputs_frame(self, *_: object) -> pd.DataFrame:
        try:
            outputs = self.workspace.assembler.list_outputs()
        except OSError:
            outputs = []
        rows = [{c: getattr(o, c) for c in OUTPUT_COLUMNS} for o in outputs]
        return pd.DataFrame(rows, columns=OUTPUT_COLUMNS).round({"duration": 2})

    def _wav_bytes(self, output_id: str) -> bytes:
        """The message's WAV, proven against its manifest (a changed file is an error)."""
        return self.workspace.assembler.read_output(output_id)[0]

    @friendly
    def _waveform(self, output_id: str | None):
        document = self._document(output_id)
        if document is None:
            return waveform_figure(None)
        return waveform_figure(
            self._wav_bytes(output_id), segment_spans(document), segment_boundaries(document)
        )

    @friendly
    def _player(self, output_id: str | None) -> pn.viewable.Viewable:
        if output_id is None:
            return pn.pane.Markdown("")
        if self.audio_urls:
            return audio_player(f"/assemble/outputs/{output_id}/audio", None)
        return audio_player(None, self._wav_bytes(output_id))

    @friendly
    def download_bytes(self) -> BytesIO:
        """The shown message in the chosen format for the Download button: the proven master,
        or its delivery (encoded once, checked against its manifest record); never a path."""
        if self.output_id is None:
            raise ValueError("no output shown: assemble one or pick one from the list")
        delivered = read_delivery(self.workspace.assembler, self.output_id, self.delivery_format)
        return BytesIO(delivered[1])

    def _download_button(self, output_id: str | None, fmt: str) -> pn.widgets.FileDownload:
        kind = FORMATS[fmt]
        return pn.widgets.FileDownload(
            callback=self.download_bytes,
            filename=file_name(output_id, fmt) if output_id else f"message{kind.suffix}",
            label=f"Download message ({fmt.upper()})",
            disabled=output_id is None,
            width=220,
            css_classes=["download-message"],
        )

    # --- panes shared with the workflow page (new objects on every call) ------------------

    def message_panes(self) -> tuple[pn.viewable.Viewable, pn.viewable.Viewable]:
        """The shown message: its summary (with the verdict) and its player."""
        summary = pn.pane.Markdown(
            pn.bind(self._shown_text, self.param.output_id, self.param.reverified),
            css_classes=["assemble-result"],
        )
        return summary, pn.panel(pn.bind(self._player, self.param.output_id))

    def download_button(self) -> pn.viewable.Viewable:
        """The format selector and the Download button of the shown message (disabled while
        there is none); the file is named for the chosen format."""
        return pn.Row(
            pn.widgets.Select.from_param(
                self.param.delivery_format, width=100, css_classes=["delivery-format"]
            ),
            pn.panel(
                pn.bind(self._download_button, self.param.output_id, self.param.delivery_format)
            ),
        )

    def _slot_rows(self, template: str | None) -> pn.Column:
        """A text input (and its Next button, for a rotation stream) per added-kind slot."""
        return pn.Column(
            *(self._with_next(self.slot_input(slot), slot) for slot in self.other_slots(template))
        )

    def _with_next(self, widget: pn.widgets.Widget, slot: str) -> pn.Row:
        button = self.next_buttons.get(slot)
        return pn.Row(widget, button) if button is not None else pn.Row(widget)

    def __panel__(self) -> pn.viewable.Viewable:
        with_next = self._with_next

        inputs = pn.Column(
            pn.widgets.Select.from_param(self.param.template, label="Template", width=240),
            pn.pane.Markdown(
                pn.bind(self._template_preview, self.param.template),
                css_classes=["template-preview"],
            ),
            with_next(pn.widgets.TextInput.from_param(self.param.name_text, width=240), "name"),
            with_next(
                pn.widgets.TextInput.from_param(self.param.developer_text, width=240),
                "developer",
            ),
            with_next(pn.widgets.Select.from_param(self.param.script_key, width=240), "script"),
            pn.panel(pn.bind(self._slot_rows, self.param.template)),
            pn.widgets.RadioButtonGroup.from_param(self.param.join, css_classes=["join-mode"]),
            pn.Row(self.next_buttons[PAIR], self.assemble_button),
            width=400,
        )
        summary, player = self.message_panes()
        result = pn.Column(
            summary,
            pn.pane.Bokeh(
                pn.bind(self._waveform, self.param.output_id),
                css_classes=["waveform"],
                sizing_mode="stretch_width",
            ),
            pn.Row(player, self.download_button(), sizing_mode="stretch_width"),
            pn.Row("### Byte-diff proof", self.reverify_button),
            pn.pane.Markdown(EXACT_MEANS, css_classes=["exact-means"]),
            self.diff_table,
            "### Past outputs (click to load)",
            self.outputs_table,
            sizing_mode="stretch_width",
        )
        return pn.Row(inputs, result, sizing_mode="stretch_width")
