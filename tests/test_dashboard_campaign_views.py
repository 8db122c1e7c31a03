"""The Campaign page (and the Cache page's stem download) driven without a browser.

Each test builds the view over a fresh workspace with the tiny datasets (3 names, 2
developers, 3 scripts: few distinct stems, real Piper), presses its buttons through their
callbacks, waits for the campaign job in the one job store, and checks the core and the
panes. The real browser is tests/test_dashboard_campaign_browser.py.
"""

from __future__ import annotations

import html
from pathlib import Path

import panel as pn
import pytest
from panel.models.tabulator import CellClickEvent

from app.dashboard import create_dashboard  # also turns the notifications on
from app.views.assemble import AssembleView
from app.views.cache import CacheView
from app.views.campaign import PAGE_SIZE, CampaignView
from hybrid_audio.config import Settings
from hybrid_audio.jobs import JobState
from hybrid_audio.recipients import parse_recipients
from hybrid_audio.workspace import Workspace
from tests.api_server import TINY_DATASETS, make_base_dir
from tests.test_dashboard_views import _error_messages, _fresh_notifications  # noqa: F401

#: Five recipients, one refused (row 3: empty name); ids kept in every output.
CSV = (
    b"id,name,developer,notes\n"
    b"r1,Ann,Acme Homes,x\n"
    b"r2,Bob,Beta Builders,\n"
    b"r3,,Acme Homes,\n"
    b"r4,Cid,Acme Homes,\n"
    b"r5,Ann,Beta Builders,\n"
)


@pytest.fixture
def workspace(tmp_path: Path, piper):
    base = make_base_dir(tmp_path, TINY_DATASETS)
    workspace = Workspace.build(Settings(base_dir=base), engine=piper)
    yield workspace
    workspace.close()


def _view(workspace: Workspace, **params) -> CampaignView:
    view = CampaignView(workspace=workspace, **params)
    pn.panel(view).get_root()  # the page renders to Bokeh models
    return view


def _run(view: CampaignView) -> str:
    """Press Run and wait for the campaign's job; the campaign id."""
    view.run_button.clicks += 1
    assert view.last_error == ""
    assert view.job is not None
    assert view.campaign_id is not None
    job = view.workspace.jobs.wait(view.job.id, timeout=120)
    assert job.state == JobState.DONE, (job.state, job.errors)
    return view.campaign_id


def _click(table: pn.widgets.Tabulator, row: int) -> None:
    table._process_event(CellClickEvent(model=None, column="name", row=row))


def test_the_dashboard_has_the_campaign_page_next_to_assemble(workspace: Workspace) -> None:
    tabs = create_dashboard(workspace).objects[1]
    names = [tabs._names[i] for i in range(len(tabs))]
    assert names[names.index("Assemble") + 1] == "Campaign"
    page = tabs.objects[names.index("Campaign")]
    page.get_root()  # renders to Bokeh models
    assert page.select(pn.widgets.FileInput)[0].css_classes == ["campaign-upload"]


def test_an_upload_is_previewed_with_its_refused_rows_and_the_plan(
    workspace: Workspace,
) -> None:
    workspace.generator.generate_name("Ann")  # one stem already made
    view = _view(workspace)
    view.file_input.param.update(filename="people.csv", value=CSV)  # as the browser sends it
    assert view.last_error == ""
    preview = view._preview_frame(view.recipients, view.plan)
    assert list(preview["row"]) == [1, 2, 4, 5]  # row 3 refused: the user's row numbers
    assert list(preview["id"]) == ["r1", "r2", "r4", "r5"]
    assert [p.row for p in view.plan.problems] == [3]
    plan = view.plan
    # Stems: hello, offer; names Ann, Bob, Cid; developers Acme Homes, Beta Builders.
    assert plan.distinct_stems == 7
    assert (plan.cached_stems, plan.to_make) == (1, 6)
    text = view._plan_text(plan, view.source, view.filename)
    assert "**4 messages** from people\\.csv" in text
    assert "7 distinct stems**: 1 cached, 6 to make" in text
    assert "1 row(s) refused" in text
    assert "columns ignored: notes" in text


def test_a_file_that_is_no_list_is_a_notification(workspace: Workspace) -> None:
    view = _view(workspace)
    view.load_file(b"who,what\nAnn,x\n", "people.csv")
    assert "developer" in view.last_error  # the missing column is named
    assert view.recipients is None
    assert view.plan is None
    assert html.escape(view.last_error) in _error_messages()  # shown as text
    view.run_button.clicks += 1  # nothing to run: said, not raised
    assert "upload" in view.last_error
    assert view.campaign_id is None


def test_run_follows_the_job_to_the_end_and_lists_every_message(workspace: Workspace) -> None:
    assemble = AssembleView(workspace=workspace)
    opened: list[str] = []
    view = _view(workspace, assemble=assemble, open_page=opened.append)
    view.load_file(CSV, "people.csv")
    campaign_id = _run(view)
    info = workspace.campaigns.get(campaign_id)
    assert (info.state, info.done, info.failed, info.total) == ("done", 4, 1, 5)
    status = view._status_text(campaign_id, view.job)
    assert "**done** — 4/4 (100 %)" in status
    frame = view.results_table.value
    assert list(frame["row"]) == [1, 2, 3, 4, 5]  # the refused row too, with its reason
    assert list(frame["state"]) == ["done", "done", "failed", "done", "done"]
    made = frame[frame["state"] == "done"]
    assert list(made["output_id"]) == [f"{campaign_id}_{row:06d}" for row in (1, 2, 4, 5)]
    assert set(made["verified"]) == {"✓"}
    assert [p.row for p in workspace.campaigns.problems(campaign_id)] == [3]
    assert list(view._problems(campaign_id)["row"]) == [3]
    # Search by name, developer or recipient id (the core filters).
    view.search = "beta"
    assert list(view.results_table.value["recipient_id"]) == ["r2", "r5"]
    view.search = "r4"
    assert list(view.results_table.value["name"]) == ["Cid"]
    # A click plays the message; its proof opens on the Assemble page.
    assert view.proof_button.disabled
    _click(view.results_table, 0)
    output_id = f"{campaign_id}_000004"
    assert view.playing == output_id
    assert not view.proof_button.disabled
    view.proof_button.clicks += 1
    assert opened == ["Assemble"]
    assert assemble.output_id == output_id
    assert assemble.report is not None
    assert assemble.report.ok


def test_results_are_paged_by_the_core(workspace: Workspace) -> None:
    names, developers = ("Ann", "Bob"), ("Acme Homes", "Beta Builders")
    rows = [
        f"{names[i % 2]},{developers[i // 2 % 2]}" for i in range(PAGE_SIZE + 5)
    ]  # 30 messages from 4 pairs
    view = _view(workspace)
    view.load_file(("name,developer\n" + "\n".join(rows) + "\n").encode(), "many.csv")
    _run(view)
    assert len(view.results_table.value) == PAGE_SIZE
    assert view.previous_button.disabled
    assert not view.next_button.disabled
    view.next_button.clicks += 1
    assert list(view.results_table.value["row"]) == list(range(PAGE_SIZE + 1, PAGE_SIZE + 6))
    assert view.next_button.disabled
    assert not view.previous_button.disabled
    assert "page 2" in view._page_text(view.campaign_id, view.page)
    view.search = "Bob"  # a new search starts at the first page
    assert view.page == 0
    assert set(view.results_table.value["name"]) == {"Bob"}


def test_the_rotation_source_previews_the_pairs_it_then_takes(workspace: Workspace) -> None:
    view = _view(workspace)
    assert view.file_input.visible  # the upload's input, not the rotation's
    view.param.update(source="rotation", rotation_count=4)
    assert not view.file_input.visible
    preview = view._preview_frame(view.recipients, view.plan)
    pairs = list(zip(preview["name"], preview["developer"], strict=True))
    assert len(pairs) == 4
    campaign_id = _run(view)
    info = workspace.campaigns.get(campaign_id)
    assert (info.source, info.total, info.done) == ("rotation", 4, 4)
    made = [(m.name, m.developer) for m in workspace.campaigns.messages(campaign_id)]
    assert made == pairs  # the preview showed exactly what the campaign took


def test_past_campaigns_are_listed_and_shown_with_a_resume(workspace: Workspace) -> None:
    campaigns = workspace.campaigns
    first = campaigns.create("double_anchor", parse_recipients(CSV, "people.csv"))
    view = _view(workspace)
    assert list(view.campaigns_table.value["id"]) == [first.id]
    _click(view.campaigns_table, 0)
    assert view.campaign_id == first.id
    status = view._status_text(first.id, view.job)
    assert "**created**" in status
    assert "0 made · 1 refused or failed · 4 to make · 5 rows" in status
    view.resume_button.clicks += 1  # never started: resume makes every message
    assert view.last_error == ""
    assert workspace.jobs.wait(view.job.id, timeout=120).state == JobState.DONE
    assert campaigns.get(first.id).done == 4
    assert list(view.results_table.value["state"]).count("done") == 4


def test_the_zip_and_message_links_go_to_the_api(workspace: Workspace) -> None:
    view = _view(workspace, audio_urls=True)
    assert "Run or pick" in view._download(None).object
    view.load_file(CSV, "people.csv")
    campaign_id = _run(view)
    link = view._download(campaign_id)
    assert f'href="/campaigns/{campaign_id}/export.zip"' in link.object
    assert "campaign-download" in link.css_classes
    player = view._player(f"{campaign_id}_000001")
    assert f"/assemble/outputs/{campaign_id}_000001/audio" in player.objects[1].object
    message = player.objects[2]  # a plain link, no widget (nothing over the websocket)
    assert isinstance(message, pn.pane.HTML)
    assert f'href="/assemble/outputs/{campaign_id}_000001/audio"' in message.object
    assert f'download="{campaign_id}_000001.wav"' in message.object
    assert "campaign-message-download" in message.css_classes
    standalone = CampaignView(workspace=workspace)  # no API: the CLI is named instead
    assert "campaign export" in standalone._download(campaign_id).object
    assert len(standalone._player(f"{campaign_id}_000001").objects) == 2  # no URL to link


def test_hostile_names_reach_the_tables_as_data(workspace: Workspace) -> None:
    hostile = "<img src=x onerror=window.__pwned=1>"
    view = _view(workspace)
    view.load_file(f"name,developer\n{hostile},Acme Homes\n".encode(), "x.csv")
    assert list(view._preview_frame(view.recipients, view.plan)["name"]) == [hostile]
    assert view.results_table.formatters["name"] == {"type": "textarea"}  # escaped there
    assert "<b>" not in view._plan_text(view.plan, view.source, "<b>x</b>.csv")


def test_the_cache_page_downloads_the_played_stem(workspace: Workspace) -> None:
    record = workspace.generator.generate_name("Ann")
    view = CacheView(workspace=workspace)
    view.download_bytes()
    assert "press ▶" in view.last_error
    view.playing = record.stem_id
    pane = view._player(record.stem_id)
    download = pane.objects[1].objects[1]
    assert (download.label, download.filename) == ("Download stem (WAV)", f"{record.stem_id}.wav")
    assert view.download_bytes().getvalue() == workspace.cache.read(record).data
