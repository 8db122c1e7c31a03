"""The Pronunciation page in a real browser (Chromium through Playwright), on the real server.

One `hybrid-audio-server` for the module over the tiny datasets (real Piper). A reviewer
listens to a name, types a respelling, previews it, presses "Fix & regenerate": the stem is
made again (its sha256 in the cache changes), the player plays the new one, and the message
assembled from the old stem is listed as stale; "Remove entry" brings the old sha256 back. A
hostile text typed into the page shows as text. Helpers and fixtures come from
tests/test_dashboard_browser.py and the security suite.
"""

# ruff: noqa: F811  (fixtures are imported by name)

from __future__ import annotations

import re
from collections.abc import Iterator

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
    fill,
    open_dashboard,
    open_tab,
    rows,
    sync_api,
    visible,
)

pytestmark = pytest.mark.slow

HOSTILE = "<img src=x onerror=window.__pwned=1>"


@pytest.fixture(scope="module")
def pron_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    base = make_base_dir(tmp_path_factory.mktemp("pronunciation"), TINY_DATASETS)
    with start_server(base) as server:
        yield server


@pytest.fixture
def ui(browser: sync_api.Browser, pron_server: ApiServer) -> Iterator[Session]:
    yield from _session(browser, pron_server)


def stem_sha(ui: Session, stem_id: str) -> str:
    """The stem's sha256 as the server's cache records it."""
    stems = ui.server.client().get("/cache/list", params={"kind": "name", "extended": True}).json()
    return next(s["sha256"] for s in stems if s["stem_id"] == stem_id)


def wait_for_job(ui: Session, what: str) -> None:
    status = visible(ui.page.locator(".pron-status"))
    sync_api.expect(status).to_contain_text(re.compile(rf"{what} job \w+: done"))


def open_page(ui: Session, text: str) -> None:
    open_dashboard(ui)
    open_tab(ui, "Pronunciation")
    fill(ui, "Word or name", text)


def test_fix_a_name_regenerates_lists_the_stale_message_and_removal_restores_it(
    ui: Session,
) -> None:
    page, api = ui.page, ui.server.client()
    open_page(ui, "Bob")
    click(ui, "Listen")
    stem = visible(page.locator(".pron-stem"))
    sync_api.expect(stem).to_contain_text("stem.name.bob")
    old = stem_sha(ui, "stem.name.bob")
    sync_api.expect(stem).to_contain_text(old)
    audio = visible(page.locator(".pronunciation .audio-player audio"))
    sync_api.expect(audio).to_have_attribute(
        "src", f"/cache/stems/stem.name.bob/audio?sha256={old}"
    )
    message = api.post(
        "/assemble/template",
        json={"template": "double_anchor", "name": "Bob", "developer": "Acme Homes"},
    )
    assert message.status_code == 200, message.text
    output_id = message.json()["id"]

    fill(ui, "Respelling", "Bawb")
    click(ui, "Preview")
    preview = visible(page.locator(".pron-preview-text"))
    sync_api.expect(preview).to_contain_text("piper is given now: Bob")
    sync_api.expect(preview).to_contain_text("with this fix: Bawb")
    click(ui, "Fix & regenerate")
    wait_for_job(ui, "fix")
    new = stem_sha(ui, "stem.name.bob")
    assert new != old
    sync_api.expect(stem).to_contain_text(new)
    sync_api.expect(stem).to_contain_text("spoken as: Bawb")
    src = f"/cache/stems/stem.name.bob/audio?sha256={new}"
    sync_api.expect(audio).to_have_attribute("src", src)
    played = page.request.get(ui.server.base_url + src)
    assert played.ok
    assert played.body()[:4] == b"RIFF"
    stale = rows(ui, "pron-stale")
    sync_api.expect(stale).to_have_count(1)
    row = deep_text(stale.first)
    assert output_id in row
    assert "made again since" in row
    sync_api.expect(rows(ui, "pron-dictionary")).to_have_count(1)
    sync_api.expect(visible(page.locator(".pron-dictionary"))).to_contain_text("Bawb")
    ui.screenshot("pronunciation")

    click(ui, "Remove entry")
    wait_for_job(ui, "remove")
    assert stem_sha(ui, "stem.name.bob") == old
    sync_api.expect(stem).to_contain_text(old)
    sync_api.expect(rows(ui, "pron-dictionary")).to_have_count(0)
    sync_api.expect(stale).to_have_count(0)
    assert api.get(f"/assemble/outputs/{output_id}/stale").json() == []
    assert_clean(ui)


def test_a_hostile_text_shows_as_text(ui: Session) -> None:
    page = ui.page
    open_page(ui, HOSTILE)
    click(ui, "Listen")
    sync_api.expect(visible(page.locator(".pron-stem"))).to_contain_text(HOSTILE)
    fill(ui, "Respelling", "image")
    click(ui, "Preview")
    sync_api.expect(visible(page.locator(".pron-preview-text"))).to_contain_text(
        f"piper is given now: {HOSTILE}"
    )
    click(ui, "Fix & regenerate")
    wait_for_job(ui, "fix")
    sync_api.expect(visible(page.locator(".pron-dictionary"))).to_contain_text(HOSTILE)
    assert_inert(ui)
    assert_clean(ui)
