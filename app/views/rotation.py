"""Rotation page: every stream's cursor, Next (N) and Reset per stream, the upcoming pairs.

The cursors, the latest step and the preview follow `RotationEngine.cursors` and
`last_step` through the session's live feed (`app.views.live`), so steps taken by the API,
by another process, or a dataset the user imported (the rotation re-reads a dataset file
that changed) show without a refresh. Reading never moves a cursor; only Next and Reset do.
"""

from __future__ import annotations

import pandas as pd
import panel as pn
import param

from app.views.common import PageState, friendly, md
from app.views.live import live
from hybrid_audio.rotation import RotationStep, StreamState
from hybrid_audio.workspace import Workspace

PREVIEW_COLUMNS = ["cycle", "position", "name", "developer"]
TAKEN_COLUMNS = ["stream", "cycle", "position", "value"]
#: Wide enough for "Next developer" and the count beside it (px).
_BUTTON_WIDTH = 150


class RotationView(PageState, pn.viewable.Viewer):
    """Cursors of the rotation streams and what they give next."""

    workspace = param.ClassSelector(class_=Workspace, doc="The core objects.")
    count = param.Integer(
        default=1, bounds=(1, 1000), label="Steps per Next", doc="How many steps Next takes."
    )
    taken = param.List(
        default=[], item_type=RotationStep, doc="The steps the latest Next press took here."
    )
    preview_count = param.Integer(default=20, bounds=(1, 500), doc="Upcoming pairs shown.")

    def __init__(self, **params) -> None:
        super().__init__(**params)
        rotation = self.workspace.rotation
        self.streams = rotation.streams
        feed = live(self.workspace)
        self._cursors = feed.ref(rotation, "cursors")
        self._last_step = feed.ref(rotation, "last_step")
        self.next_buttons = {
            stream: pn.widgets.Button(
                label=f"Next {stream}", width=_BUTTON_WIDTH, css_classes=[f"rotation-next-{stream}"]
            )
            for stream in self.streams
        }
        self.reset_buttons = {
            stream: pn.widgets.Button(
                label=f"Reset {stream}",
                width=_BUTTON_WIDTH,
                css_classes=[f"rotation-reset-{stream}"],
            )
            for stream in self.streams
        }
        self.preview_table = pn.widgets.Tabulator(
            pn.bind(self._preview_frame, self._cursors, self.param.preview_count),
            show_index=False,
            disabled=True,
            css_classes=["upcoming-pairs"],
            sizing_mode="stretch_width",
        )
        self._init_callbacks()

    def _init_callbacks(self) -> None:
        for stream, button in self.next_buttons.items():
            button.on_click(lambda _, stream=stream: self.step(stream))
        for stream, button in self.reset_buttons.items():
            button.on_click(lambda _, stream=stream: self.reset(stream))

    # --- actions ------------------------------------------------------------------------

    @friendly
    def step(self, stream: str) -> list[RotationStep]:
        """Take `count` steps of `stream` (one transaction)."""
        self.taken = self.workspace.rotation.take(stream, self.count)
        return self.taken

    @friendly
    def reset(self, stream: str) -> StreamState:
        """Start `stream` again at cycle 0, position 0."""
        return self.workspace.rotation.reset(stream)

    # --- derived values -----------------------------------------------------------------

    def _state_panel(self, cursors: dict[str, StreamState]) -> pn.viewable.Viewable:
        rows = []
        for stream in self.streams:
            state = cursors.get(stream)
            if state is None:
                continue
            stale = " (dataset changed: a new cycle starts)" if state.stale else ""
            rows.append(
                pn.Row(
                    pn.pane.Markdown(
                        f"**{stream}** — cycle {state.cycle}, position "
                        f"{state.position}/{state.size}{stale}",
                        min_width=260,
                        sizing_mode="stretch_width",
                    ),
                    pn.indicators.Progress(
                        value=min(state.position, max(state.size, 1)),
                        max=max(state.size, 1),
                        width=200,
                        css_classes=["rotation-progress", f"rotation-progress-{stream}"],
                    ),
                    self.next_buttons[stream],
                    self.reset_buttons[stream],
                    sizing_mode="stretch_width",
                )
            )
        return pn.Column(*rows, css_classes=["rotation-state"], sizing_mode="stretch_width")

    @staticmethod
    def _last_text(step: RotationStep | None) -> str:
        if step is None:
            return ""
        what = f"{step.name} × {step.developer}" if step.stream == "pair" else step.text
        return (
            f"Last: **{md(step.stream)}** cycle {step.cycle} position {step.position} → "
            f"*{md(what)}*"
        )

    @staticmethod
    def _taken_frame(taken: list[RotationStep]) -> pd.DataFrame:
        rows = [
            {
                "stream": s.stream,
                "cycle": s.cycle,
                "position": s.position,
                "value": f"{s.name} × {s.developer}" if s.stream == "pair" else s.text,
            }
            for s in taken
        ]
        return pd.DataFrame(rows, columns=TAKEN_COLUMNS)

    @friendly
    def _preview_frame(self, _cursors: object, count: int) -> pd.DataFrame:
        steps = self.workspace.rotation.preview("pair", count)
        rows = [{c: getattr(s, c) for c in PREVIEW_COLUMNS} for s in steps]
        return pd.DataFrame(rows, columns=PREVIEW_COLUMNS)

    def __panel__(self) -> pn.viewable.Viewable:
        taken = pn.widgets.Tabulator(
            pn.bind(self._taken_frame, self.param.taken),
            show_index=False,
            disabled=True,
            pagination="local",
            page_size=10,
            css_classes=["rotation-taken"],
            sizing_mode="stretch_width",
        )
        return pn.Column(
            pn.Row(
                "### Streams",
                pn.widgets.IntInput.from_param(self.param.count, width=140),
            ),
            pn.panel(pn.bind(self._state_panel, self._cursors)),
            pn.pane.Markdown(
                pn.bind(self._last_text, self._last_step), css_classes=["rotation-last"]
            ),
            taken,
            "### Upcoming pairs",
            self.preview_table,
            sizing_mode="stretch_width",
        )
