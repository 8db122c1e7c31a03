"""Dashboard views bound to the core objects, driven without a browser.

Each test builds the views over a fresh workspace (copies of the templates and datasets,
the real Piper engine), presses buttons by calling their callbacks or setting parameters,
and checks the model and the panes. Browser tests are a separate layer.
"""

from __future__ import annotations

import html
import json
import re
import subprocess
import sys
from pathlib import Path

import panel as pn
import pytest
from panel.models.tabulator import CellClickEvent

from app.dashboard import create_dashboard
from app.views.assemble import AssembleView
from app.views.cache import CacheView
from app.views.generate import GenerateView
from app.views.rotation import RotationView
from app.views.storage import StorageView
from app.views.workflow import WorkflowView
from hybrid_audio.config import Settings
from hybrid_audio.engines import create_engine
from hybrid_audio.jobs import Job, JobState
from hybrid_audio.workspace import Workspace
from tests.api_server import REPO, make_base_dir


@pytest.fixture
def workspace(tmp_path: Path, piper):
    workspace = Workspace.build(Settings(base_dir=make_base_dir(tmp_path)), engine=piper)
    yield workspace
    workspace.close()


@pytest.fixture(autouse=True)
def _fresh_notifications():
    area = pn.state.notifications
    if area is not None:
        area.clear()


def _error_messages() -> list[str]:
    area = pn.state.notifications
    if area is None:
        return []
    return [n.message for n in area.notifications if n.notification_type == "error"]


def test_dashboard_builds_every_page(workspace: Workspace) -> None:
    dashboard = create_dashboard(workspace)
    tabs = dashboard.objects[1]
    assert isinstance(tabs, pn.Tabs)
    assert [tabs._names[i] for i in range(len(tabs))] == [
        "Workflow",
        "Generate",
        "Assemble",
        "Campaign",
        "Cache",
        "Pronunciation",
        "Rotation",
        "Storage",
    ]
    for page in tabs.objects:
        pn.panel(page).get_root()  # every page renders to Bokeh models


def test_generate_name_shows_the_stem(workspace: Workspace) -> None:
    view = GenerateView(workspace=workspace)
    view.name_text = "José María"
    view.generate_name_button.clicks += 1
    assert view.record is not None
    assert view.record.stem_id == "stem.name.jose_maria__27151c8967"
    assert view.record.cached is False
    assert "(new)" in view._result_text(view.record)
    assert view.record.sha256 in view._result_text(view.record)
    view.generate_name()
    assert view.record.cached is True
    assert "(cached)" in view._result_text(view.record)
    view.generate_script()
    assert view.record.kind == "script"


def test_contract_widgets_edit_a_draft_applied_only_when_confirmed(workspace: Workspace) -> None:
    view = GenerateView(workspace=workspace)
    view.__panel__()
    contract = workspace.generator.contract
    workspace.generator.generate_name("Ann")
    active = contract.signature()
    view.contract_widgets["sample_rate"].value = 16000
    assert contract.sample_rate == 22050  # the draft only
    view.apply_contract_button.clicks += 1
    assert view.pending is not None
    assert view.pending.incompatible == 1
    assert contract.signature() == active  # still waiting for confirmation
    view.cancel_contract_button.clicks += 1
    assert view.pending is None
    assert view.draft.sample_rate == 22050
    view.contract_widgets["sample_rate"].value = 16000
    view.apply_contract_button.clicks += 1
    view.confirm_contract_button.clicks += 1
    assert contract.sample_rate == 16000
    assert contract.audio_format.sample_rate == 16000
    assert view.pending is None


def test_a_contract_change_that_fails_is_shown_and_changes_nothing(workspace: Workspace) -> None:
    view = GenerateView(workspace=workspace)
    view.__panel__()
    contract = workspace.generator.contract
    active = contract.signature()
    view.contract_widgets["engine"].value = "cartesia"  # no CARTESIA_API_KEY
    view.apply_contract_button.clicks += 1
    assert "CARTESIA_API_KEY" in view.last_error
    assert html.escape(view.last_error) in _error_messages()
    assert view.pending is None
    assert (contract.engine, contract.signature()) == ("piper", active)
    assert workspace.generator.engine.name == "piper"


def test_errors_become_notifications(workspace: Workspace) -> None:
    view = GenerateView(workspace=workspace)
    view.name_text = "!!!"  # no slug: the core raises ValueError
    view.generate_name_button.clicks += 1
    assert view.record is None
    assert "slug" in view.last_error or view.last_error
    assert html.escape(view.last_error) in _error_messages()  # shown as text

    assemble = AssembleView(workspace=workspace)
    assemble.name_text = ""
    assemble.assemble()  # the template needs a name: shown, not raised
    assert "needs" in assemble.last_error
    assemble.reverify()  # nothing shown yet
    assert "no output shown" in assemble.last_error


def test_assemble_shows_proof_waveform_and_outputs(workspace: Workspace) -> None:
    view = AssembleView(workspace=workspace, audio_urls=True)
    assert view.template == "double_anchor"
    assert "slot **name**" in view._template_preview("double_anchor")
    view.next_buttons["pair"].clicks += 1
    assert view.name_text
    assert view.developer_text
    view.assemble_button.clicks += 1
    assert view.last_error == ""
    report = view.report
    assert report is not None
    assert report.ok
    table = view.diff_table.value
    assert len(table) == len(report.segments) == len(view.document["merge"]["segments"])
    assert (table["verdict"] == "✓ exact").all()
    audio_rows = table[table["kind"] == "audio"]
    assert audio_rows["source sha256"].str.len().eq(64).all()
    assert "verified" in view._result_text(view.document, view.report)
    assert "NOT" not in view._result_text(view.document, view.report)
    figure = view._waveform(view.output_id)
    quads = figure.renderers[0].data_source.data
    assert len(quads["left"]) <= 1200 + len(report.segments) + 1
    player = view._player(view.output_id)
    assert f"/assemble/outputs/{view.document['id']}/audio" in player.object

    output_id = view.document["id"]
    assert list(view.outputs_table.value["id"]) == [output_id]
    assert view.reverified is None  # the recorded proof is shown
    view.reverify_button.clicks += 1
    assert view.reverified is not None
    assert view.report.ok
    view.load_output(output_id)
    assert view.document["id"] == output_id
    assert len(view.diff_table.value) == len(report.segments)


def test_reverify_reports_a_changed_byte(workspace: Workspace) -> None:
    view = AssembleView(workspace=workspace)
    view.param.update(name_text="Ann", developer_text="Acme Homes")
    view.assemble()
    path = Path(workspace.settings.output_dir) / view.document["output"]["path"]
    data = bytearray(path.read_bytes())
    segment = next(s for s in view.document["merge"]["segments"] if s["kind"] == "audio")
    data[segment["byte_offset"] + 3] ^= 0xFF
    path.write_bytes(bytes(data))
    view.reverify()
    assert not view.report.ok
    verdicts = list(view.diff_table.value["verdict"])
    assert any(v.startswith("✗ first differing offset") for v in verdicts)
    assert "NOT verified" in view._result_text(view.document, view.report)


def test_assemble_offers_join_mode_and_script_phrases(workspace: Workspace) -> None:
    view = AssembleView(workspace=workspace)
    labels = view.param.script_key.names
    assert labels["offer — has a new offer for you"] == "offer"  # the phrase, not only the key
    assert labels["—"] is None
    view.template = "scripted"
    assert view.join == workspace.assembler.load_template("scripted").join
    view.param.update(name_text="Ann", developer_text="Acme Homes", script_key="offer")
    view.join = "hybrid"
    view.assemble()
    assert view.last_error == ""
    assert view.document["merge"]["mode"] == "hybrid"
    assert view.report.ok
    assert "join hybrid" in view._result_text(view.document, view.report)


def test_outputs_list_follows_the_cores_last_result(workspace: Workspace) -> None:
    """An assembly made by the core (the API, a script) shows without touching the view."""
    view = AssembleView(workspace=workspace)
    assert len(view.outputs_table.value) == 0
    result = workspace.assembler.assemble("double_anchor", name="Ann", developer="Acme Homes")
    assert list(view.outputs_table.value["id"]) == [result.summary.id]
    assert view.output_id is None  # what this page shows stays the user's choice


def test_downloads_are_the_proven_bytes(workspace: Workspace) -> None:
    generate = GenerateView(workspace=workspace)
    assert generate.download_bytes() is None  # nothing yet: a notification, not a crash
    assert "no stem yet" in generate.last_error
    generate.name_text = "Ann"
    generate.generate_name()
    stored = workspace.cache.read(generate.record).data
    assert generate.download_bytes().getvalue() == stored
    assemble = AssembleView(workspace=workspace)
    assemble.param.update(name_text="Ann", developer_text="Acme Homes")
    output_id = assemble.assemble()
    assert assemble.download_bytes().getvalue() == workspace.assembler.read_output(output_id)[0]
    # A WAV changed on disk is refused, never handed out.
    path = Path(workspace.settings.output_dir) / f"{output_id}.wav"
    path.write_bytes(path.read_bytes()[:-1] + b"\x01")
    assert assemble.download_bytes() is None
    assert "differs from the sha256" in assemble.last_error


def _cards(layout: pn.viewable.Viewable) -> list[pn.Card]:
    return [c for c in pn.panel(layout).objects if isinstance(c, pn.Card)]


def test_workflow_page_walks_the_steps_in_order(workspace: Workspace) -> None:
    generate = GenerateView(workspace=workspace)
    assemble = AssembleView(workspace=workspace)
    opened: list[str] = []
    workflow = WorkflowView(
        workspace=workspace, generate=generate, assemble=assemble, open_page=opened.append
    )
    cards = _cards(workflow)
    assert [c.title for c in cards] == [
        "1 · Voice contract",
        "2 · Datasets",
        "3 · Stems",
        "4 · Message",
        "5 · Proof",
        "6 · Export",
    ]
    assert re.search(r"names\*\*: \d+ entries", workflow._datasets_text())
    generate.name_text = "Marta"
    workflow.generate_button.clicks += 1
    assert generate.record.stem_id == "stem.name.marta"
    assert "holds 1 stems" in workflow._cache_text()
    assemble.developer_text = "Hilton"
    workflow.assemble_button.clicks += 1
    output_id = assemble.output_id
    assert output_id is not None
    assert assemble.document["inputs"]["name"] == "Marta"  # step 3's name fills the slot
    assert "✓ verified" in workflow._proof_text(output_id)
    assert "as recorded" in workflow._proof_text(output_id)
    workflow.reverify_button.clicks += 1
    assert "re-read from disk" in workflow._proof_text(output_id)
    links = [b for b in cards[3].select(pn.widgets.Button) if "open-page" in b.css_classes]
    links[0].clicks += 1
    assert opened == ["Assemble"]


def test_workflow_links_switch_the_dashboards_tab(workspace: Workspace) -> None:
    tabs = create_dashboard(workspace).objects[1]
    assert tabs._names[tabs.active] == "Workflow"  # the first page
    for card in _cards(tabs.objects[0]):
        for link in (b for b in card.select(pn.widgets.Button) if "open-page" in b.css_classes):
            link.clicks += 1
            assert link.label == f"Open the {tabs._names[tabs.active]} page →"


def test_cache_page_filters_invalidates_and_bulk_generates(workspace: Workspace) -> None:
    generator = workspace.generator
    generator.generate_name("Ann")
    generator.generate_developer("Acme Homes")
    view = CacheView(workspace=workspace)
    assert "Bob" not in view.names_text or view.names_text  # defaults to the dataset
    assert len(view.table.value) == 2
    view.kind = "name"
    assert list(view.table.value["stem_id"]) == ["stem.name.ann"]
    view.kind = "all"
    view.compatibility = "incompatible"
    assert len(view.table.value) == 0
    view.compatibility = "all"

    view.invalidate_selected()  # nothing selected: a notification
    assert "select" in view.last_error
    view.table.selection = [0]
    assert view.invalidate_selected() == ["stem.developer.acme_homes"]
    assert generator.cache.get("stem.developer.acme_homes") is None
    assert list(view.table.value["stem_id"]) == ["stem.name.ann"]

    view.param.update(names_text="Ann\nBea\nCal", developers_text="Acme Homes")
    layout = view.__panel__()
    view.bulk_button.clicks += 1
    job = view.job
    assert job is not None
    workspace.jobs.wait(job.id, timeout=15)
    assert job.state == JobState.DONE
    bars = [b for b in layout.select(pn.indicators.Progress) if "bulk-progress" in b.css_classes]
    assert [(b.value, b.max) for b in bars] == [(4, 4)]
    status = [m for m in layout.select(pn.pane.Markdown) if "bulk-status" in m.css_classes]
    assert "**done** — 4/4" in status[0].object
    assert len(view.table.value) == 4  # the table followed the cache's revision
    totals = [m for m in layout.select(pn.pane.Markdown) if "cache-totals" in m.css_classes]
    assert "4 stems" in totals[0].object

    view.verify()
    assert view.audit is not None
    assert view.audit.ok
    assert "consistent" in view._audit_text(view.audit)


def test_rotation_page_steps_and_previews(workspace: Workspace) -> None:
    view = RotationView(workspace=workspace)
    upcoming = view.preview_table.value
    assert len(upcoming) == 20
    first = upcoming.iloc[0]
    [step] = view.step("pair")
    assert (step.name, step.developer) == (first["name"], first["developer"])
    assert workspace.rotation.state()["pair"].position == 1
    assert view.preview_table.value.iloc[0]["name"] == upcoming.iloc[1]["name"]
    layout = view.__panel__()
    view.next_buttons["name"].clicks += 1
    assert workspace.rotation.last_step.stream == "name"
    last = [m for m in layout.select(pn.pane.Markdown) if "rotation-last" in m.css_classes]
    assert "name" in last[0].object
    bars = [
        b for b in layout.select(pn.indicators.Progress) if "rotation-progress" in b.css_classes
    ]
    assert len(bars) == 4
    assert {b.value for b in bars} == {0, 1}


def test_rotation_page_takes_n_steps_resets_and_follows_an_imported_dataset(
    workspace: Workspace,
) -> None:
    """Next takes `count` steps, Reset starts the stream again, and a dataset file the user
    replaced (an import) reaches the page at the next refresh, without a step."""
    view = RotationView(workspace=workspace)
    layout = view.__panel__()
    view.count = 3
    view.next_buttons["developer"].clicks += 1
    assert [s.position for s in view.taken] == [0, 1, 2]
    assert workspace.rotation.cursors["developer"].position == 3
    view.reset_buttons["developer"].clicks += 1
    assert workspace.rotation.cursors["developer"].position == 0
    Path(workspace.settings.common_names_file).write_text("Imported One\nImported Two\n")
    workspace.refresh()
    state = [c for c in layout.select(pn.Column) if "rotation-state" in c.css_classes]
    texts = [m.object for m in state[0].select(pn.pane.Markdown)]
    assert any(t.startswith("**name** — cycle 0, position 0/2") for t in texts), texts
    assert set(view.preview_table.value["name"]) <= {"Imported One", "Imported Two"}


def test_cache_page_searches_plays_and_says_why_a_stem_is_incompatible(
    workspace: Workspace,
) -> None:
    """The search box filters by id or text, ▶ plays the row's stem through the checked
    reader, and an incompatible stem names the contract field that differs."""
    generator = workspace.generator
    generator.generate_name("Ann")
    generator.generate_developer("Acme Homes")
    view = CacheView(workspace=workspace)
    layout = view.__panel__()
    view.search = "acme"
    assert list(view.table.value["stem_id"]) == ["stem.developer.acme_homes"]
    view.search = ""
    row = list(view.table.value["stem_id"]).index("stem.name.ann")
    view.table._process_event(
        CellClickEvent(model=None, column="play", row=row)  # what a ▶ click sends
    )
    assert view.playing == "stem.name.ann"
    players = [c for c in layout.select(pn.Column) if "cache-player" in c.css_classes]
    assert players
    assert players[0].select(pn.pane.Audio)
    workspace.contract.sample_rate = 16000  # every stored stem now differs in sample_rate
    view.compatibility = "incompatible"
    reasons = set(view.table.value["incompatible_because"])
    assert reasons == {"sample_rate: 22050 ≠ 16000"}


def test_bulk_progress_bar_follows_any_jump(workspace: Workspace) -> None:
    view = CacheView(workspace=workspace)
    layout = view.__panel__()
    view.job = Job(kind="bulk_generate")
    view.job.param.update(done=5, total=5)  # from 0/1 straight to 5/5
    bars = [b for b in layout.select(pn.indicators.Progress) if "bulk-progress" in b.css_classes]
    assert [(b.value, b.max) for b in bars] == [(5, 5)]
    view.job = Job(kind="bulk_generate")
    view.job.param.update(done=0, total=3)  # a new, smaller job
    bars = [b for b in layout.select(pn.indicators.Progress) if "bulk-progress" in b.css_classes]
    assert [(b.value, b.max) for b in bars] == [(0, 3)]


def test_a_stem_replaced_by_a_link_is_never_read_by_the_views(workspace: Workspace) -> None:
    """The Generate page's waveform and player read the stem through the cache's checked
    reader: a stem swapped for a symlink to /etc/passwd is an error, not a plot of it."""
    view = GenerateView(workspace=workspace)
    view.name_text = "Ana"
    view.generate_name_button.clicks += 1
    record = view.record
    assert record is not None
    assert view._waveform(record) is not None  # the real stem plots
    path = Path(workspace.settings.stems_dir) / record.path
    path.unlink()
    path.symlink_to("/etc/passwd")
    assert view._waveform(record) is None
    assert view._player(record) is None
    errors = _error_messages()
    assert errors
    assert all("root:" not in message for message in errors)
    assert any("link" in message for message in errors), errors


def test_storage_page_in_local_mode_audits_the_files_and_lists_them(
    workspace: Workspace,
) -> None:
    """No bucket: the page says so, refuses Push/Pull, audits files against the index
    (filterable by what is wrong) and lists the local objects page by page."""
    view = StorageView(workspace=workspace, page_size=1)
    layout = view.__panel__()
    status = [p for p in layout.select(pn.pane.Markdown) if "storage-status" in p.css_classes]
    assert "No bucket is configured" in status[0].object
    assert all(button.disabled for button in view.sync_buttons.values())
    view.sync("push")
    assert "GCS_BUCKET" in view.last_error
    for name in ("Ann", "Bob"):
        workspace.generator.generate_name(name)
    gone = workspace.cache.get("stem.name.bob")
    (Path(workspace.settings.stems_dir) / gone.path).unlink()
    view.audit_button.clicks += 1
    frame = view.differences_table.value
    assert list(frame["stem_id"]) == ["stem.name.bob"]
    assert list(frame["where"]) == ["missing here"]
    assert list(frame["status"]) == ["missing_file"]
    view.show = "differs"
    assert view.differences_table.value.empty
    view.show = "missing here"
    assert len(view.differences_table.value) == 1

    workspace.generator.generate_name("Cid")
    view.list_button.clicks += 1  # stems/name/, one object a page
    assert list(view.objects_table.value["stem_id"]) == ["stem.name.ann"]
    assert not view.next_page_button.disabled
    view.next_page_button.clicks += 1
    assert list(view.objects_table.value["stem_id"]) == ["stem.name.cid"]
    view.objects_table._process_event(CellClickEvent(model=None, column="name", row=0))
    assert view.selected is not None
    metadata = dict(view._metadata_frame(view.selected).values.tolist())
    assert metadata["name"] == "stems/name/stem.name.cid.wav"
    view.prefix = "output/"  # a new prefix lists again, from its first page
    assert view.objects_table.value.empty
    assert view.selected is None


# --- a kind added in kinds.json -------------------------------------------------------------
#: `intro` fills a slot; `greeting` is also a rotation stream.
ADDED_KINDS = [
    {"name": "intro", "plural": "intros", "dataset": "intros.txt"},
    {"name": "greeting", "plural": "greetings", "dataset": "greetings.txt", "rotation": True},
]
GREETINGS = ("Hello", "Good evening")
GREETING_TEMPLATE = {
    "description": "<greeting> <name>, <intro>, <developer> has a new offer for you.",
    "segments": [
        {"slot": "greeting"},
        {"slot": "name"},
        {"slot": "intro"},
        {"slot": "developer"},
        {"stem": "stem.script.offer"},
    ],
    "gap_ms": 40,
}


def added_kind_probe(base_dir: str) -> dict[str, object]:
    """Drive the Assemble and Generate pages over a base dir with added kinds (run in a
    subprocess by the test below: the kinds registry only grows within a process)."""
    piper = create_engine(Settings(tts_engine="piper"))
    workspace = Workspace.build(Settings(base_dir=Path(base_dir)), engine=piper)
    seen: dict[str, object] = {}
    assemble = AssembleView(workspace=workspace)
    seen["next_buttons"] = list(assemble.next_buttons)
    seen["double_anchor_slots"] = assemble.other_slots("double_anchor")
    assemble.template = "greeting_offer"
    seen["other_slots"] = assemble.other_slots("greeting_offer")
    layout = assemble.__panel__()
    seen["inputs_shown"] = sorted(
        c for w in layout.select(pn.widgets.TextInput) for c in w.css_classes if "slot-" in c
    )
    seen["buttons_shown"] = sorted(
        c for b in layout.select(pn.widgets.Button) for c in b.css_classes if "next-" in c
    )
    assemble.next_buttons["greeting"].clicks += 1
    seen["greeting_filled"] = assemble.slot_input("greeting").value
    seen["greeting_cursor"] = workspace.rotation.cursors["greeting"].position
    assemble.next_buttons["pair"].clicks += 1
    assemble.assemble_button.clicks += 1
    seen["missing_error"], assemble.last_error = assemble.last_error, ""  # no intro yet
    assemble.slot_input("intro").value = "Good morning"
    assemble.assemble_button.clicks += 1
    seen["assemble_error"] = assemble.last_error
    document = assemble.document or {}
    seen["inputs"] = document.get("inputs")
    seen["stems"] = [s["stem_id"] for s in document.get("sources", []) if s["kind"] == "stem"]
    seen["verified"] = assemble.report is not None and assemble.report.ok

    generate = GenerateView(workspace=workspace)
    seen["kinds"] = list(generate.param.kind.objects)
    made = {}
    for kind, text in (("intro", "Welcome back"), ("script", "offer")):
        generate.param.update(kind=kind, stem_text=text)
        generate.generate_stem_button.clicks += 1
        record = generate.record
        made[kind] = None if record is None else [record.stem_id, record.kind, record.text]
    seen["made"] = made
    seen["generate_error"] = generate.last_error
    seen["intro_stored"] = workspace.cache.get("stem.intro.welcome_back") is not None
    workspace.close()
    return seen


def test_pages_offer_an_added_kinds_inputs_next_button_and_generate(tmp_path: Path) -> None:
    """A kind added in kinds.json needs no code on the dashboard: the Assemble page shows a
    text input for its slot (and a Next button when it is a rotation stream) and passes it
    as `slots=`; the Generate page makes a stem of any kind."""
    base = make_base_dir(
        tmp_path,
        {
            "kinds.json": json.dumps({"kinds": ADDED_KINDS}),
            "intros.txt": "Welcome back\nGood morning\n",
            "greetings.txt": "".join(f"{g}\n" for g in GREETINGS),
        },
    )
    (base / "templates" / "greeting_offer.json").write_text(json.dumps(GREETING_TEMPLATE))
    code = (
        "import json, sys\n"
        "from tests.test_dashboard_views import added_kind_probe\n"
        "print(json.dumps(added_kind_probe(sys.argv[1])))\n"
    )
    probe = subprocess.run(
        [sys.executable, "-c", code, str(base)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert probe.returncode == 0, probe.stderr
    seen = json.loads(probe.stdout.strip().splitlines()[-1])
    assert seen["next_buttons"] == ["name", "developer", "script", "greeting", "pair"]
    assert seen["double_anchor_slots"] == []
    assert seen["other_slots"] == ["greeting", "intro"]
    assert seen["inputs_shown"] == ["slot-greeting", "slot-intro"]
    assert "next-greeting" in seen["buttons_shown"]
    assert seen["greeting_filled"] in GREETINGS
    assert seen["greeting_cursor"] == 1
    assert "needs: intro" in seen["missing_error"]
    assert seen["assemble_error"] == ""
    assert seen["inputs"]["intro"] == "Good morning"
    assert seen["inputs"]["greeting"] == seen["greeting_filled"]
    assert seen["stems"][0] == f"stem.greeting.{seen['greeting_filled'].lower().replace(' ', '_')}"
    assert seen["stems"][2] == "stem.intro.good_morning"
    assert seen["verified"] is True
    assert {"intro", "greeting", "name", "script"} <= set(seen["kinds"])
    assert seen["made"] == {
        "intro": ["stem.intro.welcome_back", "intro", "Welcome back"],
        "script": ["stem.script.offer", "script", "has a new offer for you"],
    }
    assert seen["generate_error"] == ""
    assert seen["intro_stored"] is True
