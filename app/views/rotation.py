"""Rotation page: every stream's cursor, next buttons and the upcoming pairs.

Reading the state and the preview never moves a cursor; only the Next buttons do.
"""

from __future__ import annotations

import pandas as pd
import panel as pn
import param

from app.views.common import PageState, friendly, md
from hybrid_audio.rotation import RotationStep, StreamState
from hybrid_audio.workspace import Workspace

STREAMS = ("name", "developer", "script", "pair")
PREVIEW_COLUMNS = ["cycle", "position", "name", "developer"]


class RotationView(PageState, pn.viewable.Viewer):
    """Cursors of the rotation streams and what they give next."""

    workspace = param.ClassSelector(class_=Workspace, doc="The core objects.")
    version = param.Integer(default=0, doc="Bumped when a cursor moved here.")
    last_step = param.ClassSelector(
        class_=RotationStep, allow_None=True, doc="The step the last Next button took."
    )
    preview_count = param.Integer(default=20, bounds=(1, 500), doc="Upcoming pairs shown.")

    def __init__(self, **params) -> None:
        super().__init__(**params)
        self.next_buttons = {
            stream: pn.widgets.Button(
                label=f"Next {stream}", css_classes=[f"rotation-next-{stream}"]
            )
            for stream in STREAMS
        }
        self.refresh_button = pn.widgets.Button(label="Refresh", css_classes=["rotation-refresh"])
        self.preview_table = pn.widgets.Tabulator(
            pn.bind(self._preview_frame, self.param.version, self.param.preview_count),
            show_index=False,
            disabled=True,
            css_classes=["upcoming-pairs"],
            sizing_mode="stretch_width",
        )
        self._init_callbacks()

    def _init_callbacks(self) -> None:
        for stream, button in self.next_buttons.items():
            button.on_click(lambda _, stream=stream: self.step(stream))
        self.refresh_button.on_click(lambda _: self.refresh())

    def refresh(self) -> None:
        self.version += 1

    @friendly
    def step(self, stream: str) -> RotationStep:
        self.last_step = self.workspace.rotation.step(stream)
        self.refresh()
        return self.last_step

    # --- derived values -----------------------------------------------------------------

    @friendly
    def states(self, _version: int = 0) -> dict[str, StreamState]:
        return self.workspace.rotation.state()

    def _state_panel(self, version: int) -> pn.viewable.Viewable:
        states = self.states(version) or {}
        rows = []
        for stream in STREAMS:
            state = states.get(stream)
            if state is None:
                continue
            stale = " (dataset changed: a new cycle starts)" if state.stale else ""
            rows.append(
                pn.Row(
                    pn.pane.Markdown(
                        f"**{stream}** — cycle {state.cycle}, position "
                        f"{state.position}/{state.size}{stale}",
                        width=380,
                    ),
                    pn.indicators.Progress(
                        value=state.position,
                        max=max(state.size, 1),
                        width=260,
                        css_classes=["rotation-progress", f"rotation-progress-{stream}"],
                    ),
                    self.next_buttons[stream],
                )
            )
        return pn.Column(*rows, css_classes=["rotation-state"])

    def _last_text(self, step: RotationStep | None) -> str:
        if step is None:
            return ""
        what = f"{step.name} × {step.developer}" if step.stream == "pair" else step.text
        return (
            f"Last: **{md(step.stream)}** cycle {step.cycle} position {step.position} → "
            f"*{md(what)}*"
        )

    @friendly
    def _preview_frame(self, _version: int, count: int) -> pd.DataFrame:
        steps = self.workspace.rotation.preview("pair", count)
        rows = [{c: getattr(s, c) for c in PREVIEW_COLUMNS} for s in steps]
        return pd.DataFrame(rows, columns=PREVIEW_COLUMNS)

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(
            pn.Row("### Streams", self.refresh_button),
            pn.panel(pn.bind(self._state_panel, self.param.version)),
            pn.pane.Markdown(
                pn.bind(self._last_text, self.param.last_step), css_classes=["rotation-last"]
            ),
            "### Upcoming pairs",
            self.preview_table,
            sizing_mode="stretch_width",
        )
