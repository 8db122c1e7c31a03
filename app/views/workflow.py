"""Workflow page: the whole path on one page, in order, like the cells of a notebook.

Each step — contract, datasets, stems, message, proof, export — is a card with its result
right below it and a button to the page that does it in detail. The page holds no state of
its own: its inputs and results are the Generate and Assemble views' parameters (the same
ones those pages show) and the core objects behind them, followed through the session's
live feed (`app.views.live`).
"""

from __future__ import annotations

import panel as pn
import param

from app.views.assemble import EXACT_MEANS, AssembleView
from app.views.common import PageState, friendly, md
from app.views.generate import GenerateView
from app.views.live import live
from hybrid_audio import kinds
from hybrid_audio.datasets import dataset_path, display_path, load_dataset
from hybrid_audio.workspace import Workspace

#: What the tool does, in two sentences (the first thing a newcomer reads).
INTRO = (
    "**Hybrid Audio** speaks every name, developer and script phrase once, under one voice "
    "contract, and keeps each as a cached stem. A message is a template's stems joined "
    "into one WAV, and every byte of it is proven against the stems it came from."
)


class WorkflowView(PageState, pn.viewable.Viewer):
    """Contract → datasets → stems → message → proof → export, one card per step."""

    workspace = param.ClassSelector(class_=Workspace, doc="The core objects.")
    generate = param.ClassSelector(
        class_=GenerateView, doc="The Generate page (its inputs and stem are shared)."
    )
    assemble = param.ClassSelector(
        class_=AssembleView, doc="The Assemble page (its inputs and message are shared)."
    )
    open_page = param.Callable(
        default=None, allow_None=True, doc="Shows a detailed page, given its tab name."
    )

    def __init__(self, **params) -> None:
        super().__init__(**params)
        self.generate_button = pn.widgets.Button(
            label="Generate name", color="primary", css_classes=["workflow-generate"]
        )
        self.assemble_button = pn.widgets.Button(
            label="Assemble message", color="primary", css_classes=["workflow-assemble"]
        )
        self.reverify_button = pn.widgets.Button(
            label="Re-verify from disk", css_classes=["workflow-reverify"]
        )
        self._init_callbacks()

    def _init_callbacks(self) -> None:
        self.generate_button.on_click(lambda _: self.generate.generate_name())
        self.assemble_button.on_click(lambda _: self.assemble_message())
        self.reverify_button.on_click(lambda _: self.assemble.reverify())

    # --- actions ------------------------------------------------------------------------

    @friendly
    def assemble_message(self) -> str | None:
        """Assemble the chosen template with step 3's name in its name slot."""
        self.assemble.name_text = self.generate.name_text
        return self.assemble.assemble()

    def show_page(self, page: str) -> None:
        """Switch to the detailed page `page` (when the dashboard gave a way to)."""
        if self.open_page is not None:
            self.open_page(page)

    def _link(self, page: str) -> pn.widgets.Button:
        button = pn.widgets.Button(
            label=f"Open the {page} page →", variant="outline", css_classes=["open-page"]
        )
        button.on_click(lambda _: self.show_page(page))
        return button

    # --- derived values -----------------------------------------------------------------

    def _datasets_text(self) -> str:
        settings = self.workspace.settings
        lines = []
        for kind in kinds.load(settings):
            where = md(display_path(dataset_path(kind.name, settings), settings))
            try:
                count = f"{len(load_dataset(kind.name, settings).items)} entries"
            except ValueError as error:
                count = f"not usable: {md(error)}"
            lines.append(f"- **{md(kind.plural)}**: {count} ({where})")
        return "\n".join(lines)

    def _cache_text(self, *_: object) -> str:
        records = self.workspace.cache.list()
        compatible = sum(r.compatible for r in records)
        return f"The cache holds {len(records)} stems ({compatible} compatible with the contract)."

    def _proof_text(self, output_id: str | None, *_: object) -> str:
        report = self.assemble.report
        if output_id is None or report is None:
            return "Assemble a message (step 4) to see its proof."
        source = "re-read from disk" if self.assemble.reverified else "as recorded when written"
        return f"{self.assemble.verdict_line(report)} ({source})\n\n{EXACT_MEANS}"

    # --- the page -----------------------------------------------------------------------

    def _step(self, number: int, title: str, *objects: object, pages: tuple[str, ...]) -> pn.Card:
        """One cell: what the step does, its inputs and result, links to its detailed pages."""
        return pn.Card(
            *objects,
            pn.Row(*(self._link(page) for page in pages)),
            title=f"{number} · {title}",
            collapsible=False,
            css_classes=["workflow-step", f"workflow-step-{number}"],
            sizing_mode="stretch_width",
        )

    def _cards(self) -> list[pn.Card]:
        generate, assemble, feed = self.generate, self.assemble, live(self.workspace)
        stem_text, stem_player, stem_download = generate.result_panes()
        message_text, message_player = assemble.message_panes()
        message_inputs = pn.Row(
            pn.widgets.Select.from_param(assemble.param.template, label="Template", width=220),
            pn.widgets.TextInput.from_param(assemble.param.developer_text, width=220),
            pn.widgets.Select.from_param(assemble.param.script_key, width=300),
            pn.widgets.RadioButtonGroup.from_param(
                assemble.param.join, align="end", css_classes=["join-mode"]
            ),
        )
        proof = pn.pane.Markdown(
            pn.bind(self._proof_text, assemble.param.output_id, assemble.param.reverified),
            css_classes=["workflow-proof"],
        )
        return [
            self._step(
                1,
                "Voice contract",
                "Every stem is spoken under this contract; changing it makes the stems made "
                "under the old one incompatible.",
                generate.contract_summary_pane(),
                pages=("Generate",),
            ),
            self._step(
                2,
                "Datasets",
                "The texts the rotation walks and bulk generation speaks (import new ones "
                "through the API's `/external/datasets`).",
                pn.pane.Markdown(self._datasets_text(), css_classes=["workflow-datasets"]),
                pages=("Rotation", "Cache"),
            ),
            self._step(
                3,
                "Stems",
                pn.Row(
                    pn.widgets.TextInput.from_param(
                        generate.param.name_text, placeholder="e.g. José María", width=300
                    ),
                    self.generate_button,
                ),
                stem_text,
                pn.Row(stem_player, stem_download, sizing_mode="stretch_width"),
                pn.pane.Markdown(
                    pn.bind(self._cache_text, feed.ref(self.workspace.cache, "revision")),
                    css_classes=["workflow-cache"],
                ),
                pages=("Generate", "Cache"),
            ),
            self._step(
                4,
                "Message",
                "The template's name slot takes the name of step 3.",
                message_inputs,
                self.assemble_button,
                message_text,
                message_player,
                pages=("Assemble",),
            ),
            self._step(5, "Proof", proof, self.reverify_button, pages=("Assemble",)),
            self._step(
                6,
                "Export",
                "Download the message as the WAV that was proven (campaigns and delivery "
                "formats come later).",
                assemble.download_button(),
                pages=("Assemble",),
            ),
        ]

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(
            pn.pane.Markdown(INTRO, css_classes=["workflow-intro"]),
            *self._cards(),
            css_classes=["workflow"],
            sizing_mode="stretch_width",
        )
