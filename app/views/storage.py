"""Storage page: a placeholder until the storage issue adds GCS mode."""

from __future__ import annotations

import panel as pn
import param

from app.views.common import md
from hybrid_audio.workspace import Workspace


class StorageView(pn.viewable.Viewer):
    """Where stems and outputs live; GCS mode is not configured yet."""

    workspace = param.ClassSelector(class_=Workspace, doc="The core objects.")

    def __panel__(self) -> pn.viewable.Viewable:
        settings = self.workspace.settings
        return pn.Card(
            pn.pane.Markdown(
                "**GCS mode is not configured.** Stems and outputs are local files:\n\n"
                f"- stems: {md(settings.stems_dir)}\n"
                f"- outputs: {md(settings.output_dir)}\n"
                f"- index: {md(settings.database_path)}",
                css_classes=["storage-status"],
            ),
            title="Storage",
            collapsible=False,
            sizing_mode="stretch_width",
        )
