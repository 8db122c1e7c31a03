"""The Campaign page in a real browser (Chromium through Playwright), on the real server.

One `hybrid-audio-server` for the module, over a base dir with the tiny datasets (few
distinct stems, real Piper). A user uploads a recipient CSV, sees the preview and the
plan, runs the campaign, watches the bar reach 100 %, finds every message (and the refused
row, by its row number) in the results, plays one and downloads it, opens its proof, and
downloads the zip the API streams; the zip opens and holds the very WAVs the server proved.
A hostile name in the list shows as text. Helpers and fixtures come from
tests/test_dashboard_browser.py and the security suite.
"""

# ruff: noqa: F811  (fixtures are imported by name)

from __future__ import annotations

import csv
import hashlib
import io
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api_server import TINY_DATASETS, ApiServer, make_base_dir, start_server
from tests.security.test_browser import assert_inert
from tests.test_dashboard_browser import (  # noqa: F401  (the fixtures by name)
    Session,
    _session,
    assert_clean,
    browser,
    click,
    deep_text,
    open_dashboard,
    open_tab,
    rows,
    sync_api,
    visible,
)

pytestmark = pytest.mark.slow

HOSTILE = "<img src=x onerror=window.__pwned=1>"
#: Six recipients; row 4 has no name and is refused, the other five become messages.
PEOPLE = [
    ("r1", "Ann", "Acme Homes"),
    ("r2", "Bob", "Beta Builders"),
    ("r3", "Cid", "Acme Homes"),
    ("r4", "", "Beta Builders"),
    ("r5", "Ann", "Beta Builders"),
    ("r6", "Bob", "Acme Homes"),
]


def csv_bytes(people: list[tuple[str, str, str]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["id", "name", "developer"])
    writer.writerows(people)
    return out.getvalue().encode()


@pytest.fixture(scope="module")
def campaign_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """A keyless server (loopback only) with 3 names, 2 developers and 3 scripts."""
    base = make_base_dir(tmp_path_factory.mktemp("campaign"), TINY_DATASETS)
    with start_server(base) as server:
        yield server


@pytest.fixture
def ui(browser: sync_api.Browser, campaign_server: ApiServer) -> Iterator[Session]:
    yield from _session(browser, campaign_server)


def upload(ui: Session, name: str, data: bytes) -> None:
    open_dashboard(ui)
    open_tab(ui, "Campaign")
    ui.page.locator(".campaign-upload input[type=file]").set_input_files(
        files=[{"name": name, "mimeType": "text/csv", "buffer": data}]
    )


def run_to_the_end(ui: Session, messages: int) -> None:
    """Press Run and wait for the bar to fill and the status to say done."""
    click(ui, "Run campaign")
    bar = visible(ui.page.locator(".campaign-progress progress"))
    sync_api.expect(bar).to_have_js_property("max", messages)
    sync_api.expect(bar).to_have_js_property("value", messages)
    status = visible(ui.page.locator(".campaign-status"))
    sync_api.expect(status).to_contain_text(f"done — {messages}/{messages} (100 %)")


def test_upload_run_and_download_the_zip(ui: Session) -> None:
    page = ui.page
    upload(ui, "people.csv", csv_bytes(PEOPLE))
    plan = visible(page.locator(".campaign-plan"))
    sync_api.expect(plan).to_contain_text("5 messages from people.csv")
    # hello, offer + Ann, Bob, Cid + two developers, none made yet.
    sync_api.expect(plan).to_contain_text("7 distinct stems: 0 cached, 7 to make")
    sync_api.expect(plan).to_contain_text("1 row(s) refused")
    sync_api.expect(rows(ui, "campaign-preview-table")).to_have_count(5)
    refused = rows(ui, "campaign-preview-problems")
    sync_api.expect(refused).to_have_count(1)
    sync_api.expect(refused.locator("[tabulator-field='row']")).to_have_text("4")
    ui.screenshot("campaign-preview")

    run_to_the_end(ui, 5)
    messages = rows(ui, "campaign-messages")
    sync_api.expect(messages).to_have_count(6)  # the refused row too, failed with its reason
    made = messages.filter(has_text="✓")
    sync_api.expect(made).to_have_count(5)
    problems = rows(ui, "campaign-problems")
    sync_api.expect(problems).to_have_count(1)
    sync_api.expect(problems.locator("[tabulator-field='row']")).to_have_text("4")
    sync_api.expect(problems).to_contain_text("r4")
    output_ids = [deep_text(cell) for cell in made.locator("[tabulator-field='output_id']").all()]
    campaign_id = output_ids[0].split("_")[0]
    assert output_ids == [f"{campaign_id}_{row:06d}" for row in (1, 2, 3, 5, 6)]

    # Search (the core filters), then play a message and open its proof.
    search = visible(page.locator(".campaign-search input"))
    search.fill("Beta")
    search.press("Enter")
    sync_api.expect(messages).to_have_count(2)  # r2 and r5
    messages.filter(has_text="r5").locator("[tabulator-field='name']").click()
    audio = visible(page.locator(".campaign-results .audio-player audio"))
    sync_api.expect(audio).to_have_attribute("src", f"/assemble/outputs/{campaign_id}_000005/audio")
    ui.screenshot("campaign")

    # The played message's own download: a plain link, fetched by the browser itself.
    with page.expect_download() as message_download:
        visible(page.locator(".campaign-message-download a")).click()
    assert message_download.value.suggested_filename == f"{campaign_id}_000005.wav"
    received = Path(message_download.value.path()).read_bytes()
    manifest = ui.server.client().get(f"/assemble/outputs/{campaign_id}_000005").json()
    assert hashlib.sha256(received).hexdigest() == manifest["output"]["sha256"]
    assert manifest["campaign"] == {"id": campaign_id, "row": 5, "recipient_id": "r5"}
    click(ui, "Open proof")
    sync_api.expect(
        visible(page.locator(".dashboard-tabs .bk-tab", has_text="Assemble"))
    ).to_have_class(re.compile(r"\bbk-active\b"))
    result = visible(page.locator(".assemble-result"))
    sync_api.expect(result).to_contain_text(f"{campaign_id}_000005")
    sync_api.expect(result).to_contain_text("✓ verified")

    # The zip the API streams opens, and holds the proven WAVs and messages.csv.
    open_tab(ui, "Campaign")
    with page.expect_download() as download:
        visible(page.locator(".campaign-download a")).click()
    assert download.value.suggested_filename == f"{campaign_id}.zip"
    api = ui.server.client()
    with zipfile.ZipFile(Path(download.value.path())) as archive:
        assert archive.testzip() is None  # every member's CRC checks
        listed = list(csv.DictReader(io.StringIO(archive.read("messages.csv").decode())))
        made_rows = [row for row in listed if row["output_id"]]
        assert sorted(row["output_id"] for row in made_rows) == output_ids
        for row in made_rows:  # each WAV is the very output the server proved
            audio = api.get(f"/assemble/outputs/{row['output_id']}/audio").content
            assert archive.read(row["file"]) == audio
        wavs = [name for name in archive.namelist() if name.endswith(".wav")]
    assert len(wavs) == 5
    assert sorted(row["recipient_id"] for row in made_rows) == ["r1", "r2", "r3", "r5", "r6"]
    assert [row["row"] for row in listed if not row["output_id"]] == ["4"]
    assert_clean(ui)


def test_a_hostile_name_in_the_list_shows_as_text(ui: Session) -> None:
    page = ui.page
    upload(ui, "hostile.csv", csv_bytes([("h1", HOSTILE, "Acme Homes")]))
    preview = visible(page.locator(".campaign-preview-table"))
    sync_api.expect(preview).to_contain_text(HOSTILE)
    run_to_the_end(ui, 1)
    sync_api.expect(visible(page.locator(".campaign-messages"))).to_contain_text(HOSTILE)
    rows(ui, "campaign-messages").first.locator("[tabulator-field='name']").click()
    sync_api.expect(visible(page.locator(".campaign-results .audio-player audio"))).to_be_attached()
    assert_inert(ui)
    assert_clean(ui)
