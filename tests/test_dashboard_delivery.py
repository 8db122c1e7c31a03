"""The Assemble page's format selector: the Download button delivers the chosen format,
named for it, from the proven master (the bytes its manifest records)."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import av
import pytest

from app.views.assemble import AssembleView
from hybrid_audio.config import Settings
from hybrid_audio.engines import create_engine
from hybrid_audio.workspace import Workspace
from tests.api_server import make_base_dir


@pytest.fixture
def workspace(tmp_path: Path):
    workspace = Workspace.build(
        Settings(base_dir=make_base_dir(tmp_path)), engine=create_engine(Settings())
    )
    yield workspace
    workspace.close()


def test_the_download_delivers_the_chosen_format(workspace: Workspace) -> None:
    view = AssembleView(workspace=workspace)
    view.param.update(name_text="Ann", developer_text="Acme Homes")
    output_id = view.assemble()
    row = view.download_button()
    selector, _ = row.objects
    assert list(selector.options) == ["wav", "flac", "mp3", "ogg", "mulaw", "alaw"]
    assert view._download_button(output_id, "wav").filename == f"{output_id}.wav"
    selector.value = "mp3"  # the widget drives the page's state
    assert view.delivery_format == "mp3"
    button = view._download_button(output_id, view.delivery_format)
    assert (button.filename, button.label) == (f"{output_id}.mp3", "Download message (MP3)")
    data = view.download_bytes().getvalue()
    record = workspace.assembler.load_output(output_id)["deliveries"]["mp3"]
    assert hashlib.sha256(data).hexdigest() == record["sha256"]
    with av.open(io.BytesIO(data)) as container:
        assert container.streams.audio[0].codec_context.name == "mp3float"
    view.delivery_format = "wav"
    assert view.download_bytes().getvalue() == workspace.assembler.read_output(output_id)[0]
