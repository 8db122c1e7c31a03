"""Assemble page: template + inputs → message, with its waveform, player and byte-diff proof.

The page holds the shown output as parameters (`document`, `report`); the waveform, the
byte-diff table and the result text are derived from them, so assembling, loading a past
output and re-verifying from disk all just set those two parameters.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import panel as pn
import param

from app.views.common import PageState, audio_player, friendly, md, waveform_figure
from hybrid_audio.bitmerge import VerifyReport
from hybrid_audio.datasets import load_dataset
from hybrid_audio.templates import SilenceSegment, SlotSegment, StemSegment, list_templates
from hybrid_audio.waveform import segment_boundaries, segment_spans
from hybrid_audio.workspace import Workspace

DIFF_COLUMNS = ["index", "stem", "kind", "byte range", "source sha256", "verdict"]
OUTPUT_COLUMNS = ["id", "template", "name", "developer", "script", "duration", "verified"]


class AssembleView(PageState, pn.viewable.Viewer):
    """Assemble a message from a template and prove it byte by byte."""

    workspace = param.ClassSelector(class_=Workspace, doc="The core objects.")
    audio_urls = param.Boolean(default=False, doc="Give the player API URLs, not files.")
    template = param.Selector(default=None, objects=[], doc="Template to fill.")
    name_text = param.String(default="", label="Name", doc="Value of the name slot.")
    developer_text = param.String(default="", label="Developer", doc="The developer slot.")
    script_key = param.Selector(default=None, objects=[], label="Script", doc="Script slot.")
    document = param.Dict(default=None, allow_None=True, doc="Manifest of the shown output.")
    report = param.ClassSelector(
        class_=VerifyReport, allow_None=True, doc="Byte-diff proof of the shown output."
    )
    outputs_version = param.Integer(default=0, doc="Bumped when the outputs list changes.")

    def __init__(self, **params) -> None:
        super().__init__(**params)
        settings = self.workspace.settings
        templates = list_templates(settings)
        self.param.template.objects = templates
        if templates:
            self.template = "double_anchor" if "double_anchor" in templates else templates[0]
        try:
            keys = [None, *(i.key for i in load_dataset("script", settings).items)]
        except ValueError:
            keys = [None]
        self.param.script_key.objects = keys
        self.assemble_button = pn.widgets.Button(
            label="Assemble", color="primary", css_classes=["assemble"]
        )
        self.reverify_button = pn.widgets.Button(
            label="Re-verify from disk", css_classes=["reverify"]
        )
        self.next_name_button = pn.widgets.Button(label="Next name", css_classes=["next-name"])
        self.next_developer_button = pn.widgets.Button(
            label="Next developer", css_classes=["next-developer"]
        )
        self.next_pair_button = pn.widgets.Button(label="Next pair", css_classes=["next-pair"])
        self.next_script_button = pn.widgets.Button(
            label="Next script", css_classes=["next-script"]
        )
        self.diff_table = pn.widgets.Tabulator(
            pn.bind(self._diff_frame, self.param.report, self.param.document),
            show_index=False,
            disabled=True,
            css_classes=["byte-diff"],
            sizing_mode="stretch_width",
        )
        self.outputs_table = pn.widgets.Tabulator(
            pn.bind(self._outputs_frame, self.param.outputs_version),
            show_index=False,
            disabled=True,
            selectable=1,
            pagination="local",
            page_size=10,
            css_classes=["outputs-table"],
            sizing_mode="stretch_width",
        )
        self._init_callbacks()

    def _init_callbacks(self) -> None:
        self.assemble_button.on_click(lambda _: self.assemble())
        self.reverify_button.on_click(lambda _: self.reverify())
        self.next_name_button.on_click(lambda _: self.next_name())
        self.next_developer_button.on_click(lambda _: self.next_developer())
        self.next_pair_button.on_click(lambda _: self.next_pair())
        self.next_script_button.on_click(lambda _: self.next_script())
        self.outputs_table.on_click(self._handle_output_click)

    # --- actions ------------------------------------------------------------------------

    @friendly
    def next_name(self) -> None:
        self.name_text = self.workspace.rotation.next_name()

    @friendly
    def next_developer(self) -> None:
        self.developer_text = self.workspace.rotation.next_developer()

    @friendly
    def next_pair(self) -> None:
        name, developer = self.workspace.rotation.next_pair()
        self.param.update(name_text=name, developer_text=developer)

    @friendly
    def next_script(self) -> None:
        self.script_key = self.workspace.rotation.next_script()

    @friendly
    def assemble(self) -> None:
        if not self.template:
            raise ValueError("no template chosen (the templates folder is empty?)")
        result = self.workspace.assembler.assemble(
            self.template,
            name=self.name_text or None,
            developer=self.developer_text or None,
            script=self.script_key or None,
        )
        document = self.workspace.assembler.load_output(result.summary.id)
        self.param.update(
            document=document, report=result.report, outputs_version=self.outputs_version + 1
        )

    @friendly
    def load_output(self, output_id: str) -> None:
        """Show a past output as it was recorded (its stored verdict)."""
        document = self.workspace.assembler.load_output(output_id)
        self.param.update(document=document, report=VerifyReport(**document["verify"]))

    @friendly
    def reverify(self) -> None:
        if self.document is None:
            raise ValueError("no output shown: assemble one or pick one from the list")
        self.report = self.workspace.assembler.verify_output(self.document["id"])

    def _handle_output_click(self, event: Any) -> None:
        frame = self.outputs_table.value
        if frame is not None and 0 <= event.row < len(frame):
            self.load_output(frame.iloc[event.row]["id"])

    # --- derived values -----------------------------------------------------------------

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
        exact = sum(s.exact for s in report.segments)
        if report.ok:
            verdict = f"✓ verified — {exact}/{len(report.segments)} segments byte-exact"
        else:
            first = report.first_diff_offset
            verdict = f"✗ NOT verified — first differing byte at offset {first}"
            if report.errors:
                verdict += "; " + md("; ".join(report.errors))
        out = document["output"]
        return (
            f"### {md(document['id'])}\n\n{verdict}\n\n"
            f"{out['duration']:.2f} s · {out['bytes']} bytes · sha256 {md(out['sha256'])}"
        )

    def _diff_frame(self, report: VerifyReport | None, document: dict | None) -> pd.DataFrame:
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
                    "index": check.index,
                    "stem": check.id,
                    "kind": check.kind,
                    "byte range": f"{start}–{end}",
                    "source sha256": (sources.get(check.index, {}).get("source_sha256") or ""),
                    "verdict": verdict,
                }
            )
        return pd.DataFrame(rows, columns=DIFF_COLUMNS)

    def _outputs_frame(self, _version: int) -> pd.DataFrame:
        try:
            outputs = self.workspace.assembler.list_outputs()
        except OSError:
            outputs = []
        rows = [{c: getattr(o, c) for c in OUTPUT_COLUMNS} for o in outputs]
        return pd.DataFrame(rows, columns=OUTPUT_COLUMNS)

    def _wav_bytes(self, document: dict) -> bytes:
        """The message's WAV, proven against its manifest (a changed file is an error)."""
        return self.workspace.assembler.read_output(document["id"])[0]

    @friendly
    def _waveform(self, document: dict | None):
        if document is None:
            return waveform_figure(None)
        return waveform_figure(
            self._wav_bytes(document), segment_spans(document), segment_boundaries(document)
        )

    @friendly
    def _player(self, document: dict | None) -> pn.viewable.Viewable:
        if document is None:
            return pn.pane.Markdown("")
        if self.audio_urls:
            return audio_player(f"/assemble/outputs/{document['id']}/audio", None)
        return audio_player(None, self._wav_bytes(document))

    def __panel__(self) -> pn.viewable.Viewable:
        inputs = pn.Column(
            pn.widgets.Select.from_param(self.param.template, label="Template"),
            pn.pane.Markdown(
                pn.bind(self._template_preview, self.param.template),
                css_classes=["template-preview"],
            ),
            pn.Row(
                pn.widgets.TextInput.from_param(self.param.name_text, label="Name"),
                self.next_name_button,
            ),
            pn.Row(
                pn.widgets.TextInput.from_param(self.param.developer_text, label="Developer"),
                self.next_developer_button,
            ),
            pn.Row(pn.widgets.Select.from_param(self.param.script_key), self.next_script_button),
            pn.Row(self.next_pair_button, self.assemble_button),
            width=380,
        )
        result = pn.Column(
            pn.pane.Markdown(
                pn.bind(self._result_text, self.param.document, self.param.report),
                css_classes=["assemble-result"],
            ),
            pn.pane.Bokeh(
                pn.bind(self._waveform, self.param.document),
                css_classes=["waveform"],
                sizing_mode="stretch_width",
            ),
            pn.panel(pn.bind(self._player, self.param.document)),
            pn.Row("### Byte-diff proof", self.reverify_button),
            self.diff_table,
            "### Past outputs (click to load)",
            self.outputs_table,
            sizing_mode="stretch_width",
        )
        return pn.Row(inputs, result, sizing_mode="stretch_width")
