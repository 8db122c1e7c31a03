"""The dashboard's sound views driven without a browser: the contract editor's loudness,
true-peak and fade widgets, the Cache page's loudness columns and plot, and the
Pronunciation page's listen → preview → fix → stale → remove loop.

Real Piper, real SQLite, a workspace over the tiny datasets (few distinct stems). Fix and
remove run as jobs; the tests wait for the job, then read the model and the panes.
"""

from __future__ import annotations

from pathlib import Path

import panel as pn
import pytest
from bokeh.models import Span
from panel.models.tabulator import CellClickEvent

from app.views.cache import CacheView
from app.views.generate import GenerateView
from app.views.pronunciation import PronunciationView
from hybrid_audio.config import Settings
from hybrid_audio.jobs import JobState
from hybrid_audio.workspace import Workspace
from tests.api_server import TINY_DATASETS, make_base_dir

HOSTILE = "<img src=x onerror=alert(1)>"


@pytest.fixture
def workspace(tmp_path: Path, piper):
    base = make_base_dir(tmp_path, TINY_DATASETS)
    workspace = Workspace.build(Settings(base_dir=base), engine=piper)
    yield workspace
    workspace.close()


def _markdown(layout: pn.viewable.Viewable, css_class: str) -> list[str]:
    return [m.object for m in layout.select(pn.pane.Markdown) if css_class in m.css_classes]


# --- the contract editor --------------------------------------------------------------


def test_loudness_can_be_switched_off_under_the_confirmed_cost(workspace: Workspace) -> None:
    contract = workspace.contract
    workspace.generator.generate_name("Ann")
    view = GenerateView(workspace=workspace)
    layout = view.__panel__()
    assert "-16 LUFS, ceiling -1 dBTP, fades 5 ms" in _markdown(layout, "contract-summary")[0]
    switch, target = view.contract_widgets["loudness_on"], view.contract_widgets["loudness_lufs"]
    before = contract.signature()
    switch.value = False
    assert view.draft.loudness_lufs is None
    assert target.disabled
    assert contract.loudness_lufs == -16.0  # the draft only
    view.apply_contract_button.clicks += 1
    assert view.pending is not None
    assert view.pending.incompatible == 1  # Ann's stem stops matching
    view.cancel_contract_button.clicks += 1  # the widgets follow the draft back
    assert (switch.value, target.value, target.disabled) == (True, -16.0, False)
    switch.value = False
    view.apply_contract_button.clicks += 1
    view.confirm_contract_button.clicks += 1
    assert contract.loudness_lufs is None
    assert contract.signature() != before
    assert "loudness off, fades 5 ms" in _markdown(layout, "contract-summary")[0]
    assert not workspace.cache.get("stem.name.ann").compatible


def test_loudness_target_ceiling_and_fade_edit_the_draft(workspace: Workspace) -> None:
    contract = workspace.contract
    view = GenerateView(workspace=workspace)
    view.__panel__()
    view.contract_widgets["loudness_lufs"].value = -20.0
    view.contract_widgets["true_peak_dbtp"].value = -2.0
    view.contract_widgets["edge_fade_ms"].value = 10.0
    assert (view.draft.loudness_lufs, view.draft.true_peak_dbtp, view.draft.edge_fade_ms) == (
        -20.0,
        -2.0,
        10.0,
    )
    assert contract.loudness_lufs == -16.0
    view.plan_contract()
    view.confirm_contract()
    assert (contract.loudness_lufs, contract.true_peak_dbtp, contract.edge_fade_ms) == (
        -20.0,
        -2.0,
        10.0,
    )
    view.name_text = "Bob"
    record = view.generate_name()
    assert record.loudness_after == pytest.approx(-20.0, abs=0.5)
    assert record.true_peak_after <= -2.0
    shown = f"loudness {record.loudness_after:.1f} LUFS (gain {record.gain_db:+.1f} dB)"
    assert shown in view._result_text(record)


# --- the Cache page ---------------------------------------------------------------------


def test_cache_table_and_plot_show_loudness_before_and_after(workspace: Workspace) -> None:
    generator = workspace.generator
    made = [generator.generate_name("Ann"), generator.generate_developer("Acme Homes")]
    view = CacheView(workspace=workspace)
    layout = view.__panel__()
    frame = view.table.value.set_index("stem_id")
    for record in made:
        row = frame.loc[record.stem_id]
        assert row["loudness_before"] == pytest.approx(record.loudness_before)
        assert row["loudness_after"] == pytest.approx(-16.0, abs=0.5)
        assert row["true_peak_after"] <= -1.0
        assert row["gain_db"] == pytest.approx(record.gain_db)
    assert view.table.titles["loudness_after"] == "LUFS after"
    plots = [p for p in layout.select(pn.pane.Bokeh) if "loudness-plot" in p.css_classes]
    assert len(plots) == 1
    figure = plots[0].object
    data = figure.renderers[0].data_source.data
    assert sorted(zip(data["stem_id"], data["stage"], strict=True)) == sorted(
        (r.stem_id, stage) for r in made for stage in ("before", "after")
    )
    assert sorted(data["lufs"]) == sorted(
        [r.loudness_before for r in made] + [r.loudness_after for r in made]
    )
    assert [s.location for s in figure.center if isinstance(s, Span)] == [-16.0]
    generator.generate_name("Bob")  # the plot follows the cache
    assert "3 processed stems" in plots[0].object.title.text


def test_cache_plot_leaves_out_stems_made_without_processing(workspace: Workspace) -> None:
    workspace.generator.change_contract(loudness_lufs=None, edge_fade_ms=0.0)
    record = workspace.generator.generate_name("Ann")
    assert record.loudness_before is None
    view = CacheView(workspace=workspace)
    figure = view._loudness_figure()
    assert figure.renderers[0].data_source.data["lufs"] == []
    assert not [s for s in figure.center if isinstance(s, Span)]  # no target to draw
    assert view.table.value.set_index("stem_id").loc["stem.name.ann"].isna()["loudness_after"]


# --- the Pronunciation page -------------------------------------------------------------


def _finish(workspace: Workspace, view: PronunciationView) -> None:
    assert view.job is not None
    workspace.jobs.wait(view.job.id, timeout=60)


def test_listen_fix_regenerate_stale_and_remove(workspace: Workspace) -> None:
    view = PronunciationView(workspace=workspace)
    layout = view.__panel__()
    assert "Ann" in view.text_input.options  # the names dataset
    view.text = "Ann"
    view.listen_button.clicks += 1
    old = workspace.cache.get("stem.name.ann")
    assert old is not None
    assert old.sha256 in _markdown(layout, "pron-stem")[0]
    message = workspace.assembler.assemble("double_anchor", name="Ann", developer="Acme Homes")
    assert view.stale.value.empty

    view.respelling = "Ahn"
    view.preview_button.clicks += 1
    assert view.preview.splitlines() == ["piper is given now: Ann", "with this fix: Ahn"]
    assert workspace.pronunciations.get("Ann") is None  # a preview changes nothing

    view.fix_button.clicks += 1
    _finish(workspace, view)
    assert view.job.state == JobState.DONE
    new = workspace.cache.get("stem.name.ann")
    assert new.sha256 != old.sha256
    assert new.spoken_as == "Ahn"
    stem_text = _markdown(layout, "pron-stem")[0]
    assert new.sha256 in stem_text
    assert "spoken as: Ahn" in stem_text
    assert "1 stem(s) made again, 1 message(s) now stale" in _markdown(layout, "pron-status")[0]
    stale = view.stale.value
    assert list(stale["output_id"]) == [message.summary.id]
    assert list(stale["stem_id"]) == ["stem.name.ann"]
    assert list(stale["reason"]) == ["made again since: other audio"]
    assert list(view.entries.value["respelling"]) == ["Ahn"]

    view.remove_button.clicks += 1
    _finish(workspace, view)
    assert view.job.state == JobState.DONE
    assert workspace.cache.get("stem.name.ann").sha256 == old.sha256  # the old bytes
    assert view.entries.value.empty
    assert view.stale.value.empty  # the message says what a new assembly would say
    assert "spoken as" not in _markdown(layout, "pron-stem")[0]


def test_phonemes_go_to_the_active_engine(workspace: Workspace) -> None:
    view = PronunciationView(workspace=workspace)
    view.param.update(kind="developer", text="Acme Homes", phonemes="ˈækmi hoʊmz")
    assert view.show_preview().endswith("with this fix: [[ ˈækmi hoʊmz ]]")
    view.fix()
    _finish(workspace, view)
    assert view.job.state == JobState.DONE
    assert workspace.pronunciations.get("acme homes").phonemes == {"piper": "ˈækmi hoʊmz"}
    record = workspace.generator.current("developer", "Acme Homes")
    assert record.spoken_as == "[[ ˈækmi hoʊmz ]]"
    assert list(view.entries.value["phonemes"]) == ["piper: ˈækmi hoʊmz"]


def test_errors_are_notified_and_change_nothing(workspace: Workspace) -> None:
    view = PronunciationView(workspace=workspace)
    view.__panel__()
    view.listen()
    assert "type or pick" in view.last_error
    view.text = "Ann"
    view.show_preview()
    assert "respelling" in view.last_error
    view.remove()
    assert "no pronunciation entry" in view.last_error
    view.respelling = "A[[n"  # the engines' own syntax: refused by the dictionary
    view.fix()
    _finish(workspace, view)
    assert view.job.state == JobState.FAILED
    assert "must not contain" in view.last_error
    assert workspace.pronunciations.list() == []


def test_the_page_follows_a_fix_made_elsewhere(workspace: Workspace) -> None:
    """An entry set by another client (the API, the CLI) shows in the table; a click on its
    row loads it into the form."""
    view = PronunciationView(workspace=workspace)
    view.__panel__()
    assert view.entries.value.empty
    workspace.pronunciations.set("Cid", respelling="Sid", note="rhymes with kid")
    assert list(view.entries.value["text"]) == ["Cid"]
    view.entries._process_event(CellClickEvent(model=None, column="text", row=0))
    assert (view.text, view.respelling, view.note) == ("Cid", "Sid", "rhymes with kid")


def test_a_hostile_text_is_shown_as_text(workspace: Workspace) -> None:
    view = PronunciationView(workspace=workspace)
    layout = view.__panel__()
    view.param.update(text=HOSTILE, respelling="image")
    view.listen()
    view.show_preview()
    view.fix()
    _finish(workspace, view)
    assert view.job.state == JobState.DONE
    assert list(view.entries.value["text"]) == [HOSTILE]  # a Tabulator cell shows it as text
    assert view.entries.formatters["text"] == {"type": "textarea"}
    shown = " ".join(_markdown(layout, "pron-stem") + _markdown(layout, "pron-preview-text"))
    assert "<img" not in shown
    assert "&lt;img" in shown


def test_a_fix_from_the_page_keeps_the_other_engines_phonemes(workspace: Workspace) -> None:
    """The form edits the active engine's phonemes only: an entry's phonemes for another
    engine (set from the API or the CLI) survive a fix of its respelling made here."""
    workspace.pronunciations.set("Ann", respelling="Anne", phonemes={"cartesia": "æ|n"})
    view = PronunciationView(workspace=workspace)
    view.__panel__()
    view.entries._process_event(CellClickEvent(model=None, column="text", row=0))
    assert (view.text, view.respelling, view.phonemes) == ("Ann", "Anne", "")
    view.respelling = "Ahn"
    view.fix()
    _finish(workspace, view)
    assert view.job.state == JobState.DONE
    entry = workspace.pronunciations.get("Ann")
    assert (entry.respelling, entry.phonemes) == ("Ahn", {"cartesia": "æ|n"})

    view.phonemes = "ˈɑːn"
    view.fix()
    _finish(workspace, view)
    assert workspace.pronunciations.get("Ann").phonemes == {"cartesia": "æ|n", "piper": "ˈɑːn"}
    view.phonemes = ""  # cleared here: the active engine's phonemes go, the others stay
    view.fix()
    _finish(workspace, view)
    assert workspace.pronunciations.get("Ann").phonemes == {"cartesia": "æ|n"}
