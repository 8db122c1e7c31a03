"""The Cache and Rotation pages in a real browser, following the core's live state.

Same server, browser and helpers as `tests/test_dashboard_browser.py` (imported from it):
a real `hybrid-audio-server` mounting the dashboard, Debian's Chromium at 1400×900. What
is checked here is the live model reaching an open page without a click or a reload —
stems made through the API (another thread of the server) and stems invalidated by another
process (through the state database's revision counters) — and the Cache/Rotation fixes:
search, ▶ per stem, a 250-character text that wraps instead of widening the table, Next N
and Reset, none of it clipped.
"""

from __future__ import annotations

import re

from tests import test_dashboard_browser as pages
from tests.test_dashboard_browser import (
    Session,
    assert_clean,
    assert_not_clipped,
    click,
    deep_text,
    fill,
    open_dashboard,
    open_tab,
    rows,
    sync_api,
    visible,
)
from tests.test_live_model import run_elsewhere

#: The browser, the server and a fresh page, as `test_dashboard_browser` makes them (pytest
#: registers a fixture under the name of the attribute holding it).
browser = pages.browser
dash_server = pages.dash_server
live_page = pages.ui

pytestmark = pages.pytestmark  # slow, and skipped without Chromium


def test_cache_page_follows_stems_made_and_removed_elsewhere(live_page: Session) -> None:
    """A stem made through the API appears on an open Cache page, and one invalidated by
    another process disappears from it, without a click."""
    open_dashboard(live_page)
    open_tab(live_page, "Cache")
    table = visible(live_page.page.locator(".stems-table"))
    client = live_page.server.client()
    assert client.post("/generate/name", json={"name": "Quentin"}).status_code == 200
    sync_api.expect(table).to_contain_text("stem.name.quentin")
    run_elsewhere(
        """
        from hybrid_audio.cache import StemCache
        cache = StemCache(stems_dir=settings.stems_dir, database_path=settings.database_path)
        assert cache.invalidate("stem.name.quentin")
        """,
        live_page.server.base_dir,
    )
    sync_api.expect(table).not_to_contain_text("stem.name.quentin")
    assert_clean(live_page)


def test_cache_page_searches_plays_and_wraps_long_texts(live_page: Session) -> None:
    """Search filters the table, ▶ plays a stem, and a 250-character name wraps inside its
    column: the table stays inside the page and the ▶ stays in view."""
    client = live_page.server.client()
    long_name = " ".join(["Bartholomew"] * 21)
    assert client.post("/generate/name", json={"name": long_name}).status_code == 200
    open_dashboard(live_page)
    open_tab(live_page, "Cache")
    page = live_page.page
    sync_api.expect(visible(page.locator(".stems-table"))).to_contain_text("Bartholomew")
    text_cells = page.locator(".stems-table .tabulator-cell[tabulator-field='text']")
    assert_not_clipped(text_cells.filter(has_text="Bartholomew"))
    table_box = visible(page.locator(".stems-table .tabulator")).bounding_box()
    assert table_box is not None
    assert table_box["x"] + table_box["width"] <= page.viewport_size["width"]
    play = page.locator(".stems-table .tabulator-cell[tabulator-field='play']")
    first_play = play.filter(visible=True).first
    assert_not_clipped(first_play)
    first_play.click()
    sync_api.expect(visible(page.locator(".cache-player audio"))).to_be_attached()
    fill(live_page, "Search", "bartholomew")
    sync_api.expect(rows(live_page, "stems-table")).to_have_count(1)
    fill(live_page, "Search", "no such stem")
    sync_api.expect(rows(live_page, "stems-table")).to_have_count(0)
    live_page.screenshot("cache-live")
    assert_clean(live_page)


def test_rotation_page_takes_n_steps_and_resets(live_page: Session) -> None:
    """Next takes as many steps as asked, Reset starts the stream again; the buttons are
    whole at 1400 px."""
    open_dashboard(live_page)
    open_tab(live_page, "Rotation")
    page = live_page.page
    for stream in ("name", "developer", "script", "pair"):
        assert_not_clipped(visible(page.locator(f".rotation-next-{stream} button")))
        assert_not_clipped(visible(page.locator(f".rotation-reset-{stream} button")))
    state = visible(page.locator(".rotation-state"))
    fill(live_page, "Steps per Next", "3")
    click(live_page, "Reset developer")
    sync_api.expect(state).to_contain_text(re.compile(r"developer — cycle 0, position 0/"))
    click(live_page, "Next developer")
    sync_api.expect(state).to_contain_text(re.compile(r"developer — cycle 0, position 3/"))
    sync_api.expect(rows(live_page, "rotation-taken")).to_have_count(3)
    click(live_page, "Reset developer")
    sync_api.expect(state).to_contain_text(re.compile(r"developer — cycle 0, position 0/"))
    assert "developer" in deep_text(visible(page.locator(".rotation-last")))
    live_page.screenshot("rotation-live")
    assert_clean(live_page)
