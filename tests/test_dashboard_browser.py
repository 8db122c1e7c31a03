"""The Panel dashboard in a real browser (Chromium through Playwright), on the real server.

One `hybrid-audio-server` per module serves the API and mounts `app/dashboard.py` at
`/dashboard` (Piper engine, a temporary base dir; see `tests/api_server.py`); a second one,
started with `INTERNAL_API_KEY`, checks that the dashboard is behind the key (login page,
wrong key refused, right key gets in). Each test opens a fresh browser page, records
every request it makes (all must go to the server on 127.0.0.1: the dashboard works
offline, no CDN) and every console error, and saves a screenshot of the page to
`tests/artifacts/<page>.png` (gitignored). Waits are on DOM conditions, never sleeps.
Pages are 1400×900: nothing a user needs (buttons, verdicts) may be clipped at that size.

Chromium is Debian's (`/usr/bin/chromium`, `make system-deps`); Playwright's own browser
download is not needed. The module is skipped when either is missing.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from hybrid_audio.wav import read_wav
from tests.api_server import CHROMIUM_ARGS, REPO, ApiServer, make_base_dir, start_server

sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium not installed"),
]

ARTIFACTS = REPO / "tests" / "artifacts"
DOCS_SCREENSHOT = REPO / "docs" / "assemble.png"
#: Every DOM wait; Panel's first render (bokeh.js + websocket) takes a second or two.
TIMEOUT_MS = 20_000
#: The browser window: the smallest screen the dashboard is laid out for.
VIEWPORT = {"width": 1400, "height": 900}
#: Every tab, in order.
TABS = (
    "Workflow",
    "Generate",
    "Assemble",
    "Campaign",
    "Cache",
    "Pronunciation",
    "Rotation",
    "Storage",
)
#: Names for the bulk job typed into the Cache page.
BULK_NAMES = ["Ann", "Bob", "Cid", "Dee", "Eve"]
sync_api.expect.set_options(timeout=TIMEOUT_MS)


@dataclass
class Session:
    """One browser page on a server, with what it asked the network for and logged."""

    page: sync_api.Page
    server: ApiServer
    requests: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)

    def goto(self, path: str = "/dashboard") -> None:
        self.page.goto(self.server.base_url + path, wait_until="load", timeout=TIMEOUT_MS)

    def foreign_requests(self) -> list[str]:
        """Requests that went anywhere but the server on 127.0.0.1 (a CDN, say)."""
        return [
            url
            for url in self.requests
            if urlsplit(url).scheme in ("http", "https", "ws", "wss")
            and urlsplit(url).hostname != "127.0.0.1"
        ]

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


# --- servers and browser --------------------------------------------------------------


@pytest.fixture(scope="module")
def dash_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """A keyless server (loopback only) with the repository's datasets."""
    with start_server(make_base_dir(tmp_path_factory.mktemp("dashboard"))) as server:
        yield server


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """A server with INTERNAL_API_KEY: the dashboard must sit behind a login."""
    base = make_base_dir(tmp_path_factory.mktemp("dashboard-keyed"))
    with start_server(base, key=secrets.token_urlsafe(24)) as server:
        yield server


@pytest.fixture(scope="module")
def browser() -> Iterator[sync_api.Browser]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def _session(browser: sync_api.Browser, server: ApiServer) -> Iterator[Session]:
    context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    session = Session(page, server)
    page.on("request", lambda request: session.requests.append(request.url))
    page.on("websocket", lambda socket: session.requests.append(socket.url))
    page.on(
        "console",
        lambda message: (
            session.console_errors.append(message.text) if message.type == "error" else None
        ),
    )
    page.on("pageerror", lambda error: session.console_errors.append(f"pageerror: {error}"))
    try:
        yield session
    finally:
        context.close()


@pytest.fixture
def ui(browser: sync_api.Browser, dash_server: ApiServer) -> Iterator[Session]:
    """A fresh page on the keyless server."""
    yield from _session(browser, dash_server)


@pytest.fixture
def keyed_ui(browser: sync_api.Browser, keyed_server: ApiServer) -> Iterator[Session]:
    """A fresh page (no cookie yet) on the keyed server."""
    yield from _session(browser, keyed_server)


# --- helpers ----------------------------------------------------------------------------


def visible(locator: sync_api.Locator) -> sync_api.Locator:
    """The first visible match (Panel keeps some hidden widgets in the DOM)."""
    return locator.filter(visible=True).first


def open_dashboard(ui: Session) -> None:
    """Load /dashboard and wait until Panel has rendered the tabs."""
    ui.goto("/dashboard")
    visible(ui.page.locator(".dashboard-tabs .bk-tab", has_text="Generate")).wait_for()


def open_tab(ui: Session, label: str) -> None:
    """Show one page of the dashboard (every page is rendered; the others are hidden)."""
    tab = visible(ui.page.locator(".dashboard-tabs .bk-tab", has_text=label))
    tab.click()
    sync_api.expect(tab).to_have_class(re.compile(r"\bbk-active\b"))


def fill(ui: Session, label: str, text: str) -> None:
    """Type into a visible text widget and leave it (Bokeh syncs the value on change)."""
    field_ = visible(ui.page.get_by_label(label, exact=True))
    field_.fill(text)
    field_.press("Tab")


def click(ui: Session, name: str) -> None:
    visible(ui.page.get_by_role("button", name=name, exact=True)).click()


def rows(ui: Session, css_class: str) -> sync_api.Locator:
    """The rendered rows of the Tabulator with `css_class`."""
    return ui.page.locator(f".{css_class} .tabulator-row").filter(visible=True)


#: Text of an element including its shadow roots (Panel renders into shadow DOM, which
#: `inner_text()` does not enter).
_DEEP_TEXT = """el => {
  const walk = node => {
    let text = "";
    for (const child of (node.shadowRoot ?? node).childNodes) {
      if (child.nodeType === Node.TEXT_NODE) text += child.textContent;
      else if (child.nodeType === 1 && child.tagName !== "STYLE") text += walk(child);
    }
    if (node.shadowRoot) {
      for (const child of node.childNodes) if (child.nodeType === 1) text += walk(child);
    }
    return text;
  };
  return walk(el);
}"""


def deep_text(locator: sync_api.Locator) -> str:
    return locator.evaluate(_DEEP_TEXT)


#: Why each element is not fully visible ("" when it is): it overflows its own box (clipped
#: text), reaches outside the window, or another element (a parent that clips it, a
#: neighbour drawn over it) is what the user would hit near its edges. Each element is
#: scrolled into view first; all are measured in one call, so a re-render cannot interleave.
_CLIPPED = """els => els.map(el => {
  const hit = (x, y) => {
    let root = document, found = null;
    for (;;) {
      const next = root.elementFromPoint(x, y);
      if (!next || next === found) return found;
      found = next;
      if (!next.shadowRoot) return found;
      root = next.shadowRoot;
    }
  };
  const inside = node => {
    for (let n = node; n; n = n.parentNode || n.host) if (n === el) return true;
    return false;
  };
  const name = el.textContent.trim().slice(0, 80) || el.className;
  if (el.scrollWidth > el.clientWidth + 1)
    return `${name}: text overflows: ${el.scrollWidth} > ${el.clientWidth}`;
  el.scrollIntoView({block: "center", inline: "nearest"});
  const box = el.getBoundingClientRect();
  if (box.width === 0 || box.left < 0 || box.right > window.innerWidth)
    return `${name}: outside the window: ${box.left}..${box.right} of ${window.innerWidth}`;
  const inset = Math.min(8, box.width / 4);  // past a neighbour's resize handle
  for (const x of [box.left + inset, box.right - inset]) {
    const top = hit(x, box.top + Math.min(box.height / 2, window.innerHeight / 2));
    if (!inside(top)) return `${name}: covered or clipped at x=${x} by ${top && top.className}`;
  }
  return "";
})"""


def assert_not_clipped(locator: sync_api.Locator) -> None:
    """Every match is whole on screen (each scrolled into view to be looked at)."""
    locator.first.wait_for()
    problems = locator.evaluate_all(_CLIPPED)
    assert [p for p in problems if p] == []


def assert_clean(ui: Session) -> None:
    """Every request went to the server on 127.0.0.1, and no error reached the console."""
    assert ui.foreign_requests() == []
    assert ui.console_errors == []


# --- the pages --------------------------------------------------------------------------


def test_dashboard_loads_offline(ui: Session) -> None:
    open_dashboard(ui)
    header = visible(ui.page.locator(".dashboard-header"))
    sync_api.expect(header).to_contain_text("Hybrid Audio")
    sync_api.expect(header).to_contain_text("piper")
    for label in TABS:
        sync_api.expect(
            visible(ui.page.locator(".dashboard-tabs .bk-tab", has_text=label))
        ).to_be_visible()
    assert any(urlsplit(url).path.startswith("/dashboard") for url in ui.requests)
    assert any(urlsplit(url).path == "/dashboard/ws" for url in ui.requests)  # the session
    ui.screenshot("dashboard")
    assert_clean(ui)


def test_generate_a_name_stem(ui: Session) -> None:
    open_dashboard(ui)
    open_tab(ui, "Generate")
    fill(ui, "Name", "Renée")
    click(ui, "Generate name")
    result = visible(ui.page.locator(".generate-result"))
    sync_api.expect(result).to_contain_text("stem.name.renee")
    sync_api.expect(result).to_contain_text(re.compile(r"\((new|cached)\)"))
    sync_api.expect(result).to_contain_text(re.compile(r"\d+\.\d\d s"))
    sync_api.expect(visible(ui.page.locator(".stem-waveform canvas"))).to_be_visible()
    sync_api.expect(visible(ui.page.locator(".audio-player audio"))).to_be_attached()
    # The same text again is found in the cache.
    click(ui, "Generate name")
    sync_api.expect(result).to_contain_text("(cached)")
    ui.screenshot("generate")
    assert_clean(ui)


def test_assemble_double_anchor_proves_every_byte(ui: Session) -> None:
    open_dashboard(ui)
    open_tab(ui, "Assemble")
    visible(ui.page.get_by_label("Template", exact=True)).select_option("double_anchor")
    fill(ui, "Name", "José")
    fill(ui, "Developer", "Hilton")
    click(ui, "Assemble")
    result = visible(ui.page.locator(".assemble-result"))
    sync_api.expect(result).to_contain_text("verified")
    sync_api.expect(result).not_to_contain_text("NOT verified")
    text = deep_text(result)
    exact, total = map(int, re.search(r"(\d+)/(\d+) segments byte-exact", text).groups())
    assert exact == total >= 7  # double_anchor: 5 stems/slots + 2 silences, plus gaps
    sync_api.expect(visible(ui.page.locator(".waveform canvas"))).to_be_visible()
    audio = visible(ui.page.locator(".audio-player audio"))
    sync_api.expect(audio).to_have_attribute("src", re.compile(r"^/assemble/outputs/.+/audio$"))
    diff = rows(ui, "byte-diff")
    sync_api.expect(diff).to_have_count(total)
    verdicts = [deep_text(diff.nth(i)) for i in range(total)]
    assert all("✓ exact" in row for row in verdicts), verdicts
    assert not any("✗" in row for row in verdicts), verdicts
    # The player's URL serves the very bytes that were proven.
    output_id = audio.get_attribute("src").split("/")[3]
    response = ui.page.request.get(f"{ui.server.base_url}/assemble/outputs/{output_id}/audio")
    assert response.ok
    assert response.body()[:4] == b"RIFF"
    path = ui.screenshot("assemble")
    if os.environ.get("UPDATE_DOCS_SCREENSHOT"):  # `make docs-screenshot`; tests leave docs/ alone
        shutil.copyfile(path, DOCS_SCREENSHOT)
    assert_clean(ui)


def test_bulk_generate_reaches_full_progress(ui: Session) -> None:
    open_dashboard(ui)
    open_tab(ui, "Cache")
    fill(ui, "Names", "\n".join(BULK_NAMES))
    fill(ui, "Developers", "")
    click(ui, "Bulk generate")
    bar = visible(ui.page.locator(".bulk-progress progress"))
    # The page polls the job every 300 ms; the bar follows it until done/total = 5/5.
    sync_api.expect(bar).to_have_js_property("max", len(BULK_NAMES))
    sync_api.expect(bar).to_have_js_property("value", len(BULK_NAMES))
    status = visible(ui.page.locator(".bulk-status"))
    sync_api.expect(status).to_contain_text(f"done — {len(BULK_NAMES)}/{len(BULK_NAMES)}")
    # The finished job refreshes the table: every name is there.
    table = visible(ui.page.locator(".stems-table"))
    for name in BULK_NAMES:
        sync_api.expect(table).to_contain_text(f"stem.name.{name.lower()}")
    ui.screenshot("cache")
    assert_clean(ui)


def test_invalidate_a_stem_removes_it_from_the_table(ui: Session) -> None:
    client = ui.server.client()
    kept = ["Yara", "Xavier", "Wanda"]
    for name in [*kept, "Zoltan"]:
        assert client.post("/generate/name", json={"name": name}).status_code == 200
    developer = client.post("/generate/developer", json={"developer": "Acme Homes"})
    assert developer.status_code == 200
    before = {s["stem_id"] for s in client.get("/cache/list", params={"kind": "name"}).json()}
    open_dashboard(ui)
    open_tab(ui, "Cache")
    others = rows(ui, "stems-table").filter(has_text="stem.developer.")
    sync_api.expect(others).not_to_have_count(0)
    click(ui, "name")  # the kind filter: few enough rows for one table page
    # The filtered table replaces the rows (and any selection): wait for it first.
    sync_api.expect(others).to_have_count(0)
    row = rows(ui, "stems-table").filter(has_text="stem.name.zoltan")
    sync_api.expect(row).to_have_count(1)
    row.locator("input[type=checkbox]").check()
    sync_api.expect(visible(ui.page.get_by_text("1 selected"))).to_be_visible()
    click(ui, "Invalidate")
    sync_api.expect(visible(ui.page.locator(".notyf__toast"))).to_contain_text("invalidated 1")
    after = {s["stem_id"] for s in client.get("/cache/list", params={"kind": "name"}).json()}
    assert before - after == {"stem.name.zoltan"}  # that one, and only that one
    sync_api.expect(row).to_have_count(0)
    for name in kept:
        sync_api.expect(visible(ui.page.locator(".stems-table"))).to_contain_text(
            f"stem.name.{name.lower()}"
        )
    assert_clean(ui)


def test_rotation_page_shows_every_stream(ui: Session) -> None:
    open_dashboard(ui)
    open_tab(ui, "Rotation")
    state = visible(ui.page.locator(".rotation-state"))
    for stream in ("name", "developer", "script", "pair"):
        sync_api.expect(state).to_contain_text(re.compile(rf"{stream} — cycle \d+, position"))
        sync_api.expect(
            visible(ui.page.locator(f".rotation-progress-{stream} progress"))
        ).to_be_attached()
    before = int(re.search(r"name — cycle \d+, position (\d+)/", deep_text(state)).group(1))
    click(ui, "Next name")
    sync_api.expect(visible(ui.page.locator(".rotation-last"))).to_contain_text("name")
    sync_api.expect(state).to_contain_text(re.compile(rf"name — cycle \d+, position {before + 1}/"))
    sync_api.expect(rows(ui, "upcoming-pairs").first).to_be_visible()
    ui.screenshot("rotation")
    assert_clean(ui)


def test_storage_page_says_gcs_is_off(ui: Session) -> None:
    """Local mode: no bucket, so no Push/Pull; Re-audit checks the files against the index.
    (GCS mode: tests/test_dashboard_storage_browser.py.)"""
    open_dashboard(ui)
    open_tab(ui, "Storage")
    page = ui.page
    status = visible(page.locator(".storage-status"))
    sync_api.expect(status).to_contain_text("No bucket is configured")
    for direction in ("push", "pull"):
        sync_api.expect(visible(page.locator(f".storage-{direction} button"))).to_be_disabled()
    sync_api.expect(visible(page.locator(".storage-sync-note"))).to_contain_text("GCS_BUCKET")
    click(ui, "Re-audit")
    summary = visible(page.locator(".storage-summary"))
    sync_api.expect(summary).to_contain_text(re.compile(r"\d+ differences? \(\d+ local checked\)"))
    sync_api.expect(summary).to_contain_text("missing file")  # the local statuses' counts
    ui.screenshot("storage")
    assert_clean(ui)


def test_every_page_and_widget_is_served_by_the_server(ui: Session) -> None:
    """Every tab, and the widgets that load their CSS/JS lazily (Tabulator, FileDownload,
    progress bars, the Bokeh plot), fetch nothing from a CDN: the machines are offline."""
    open_dashboard(ui)
    page = ui.page
    sync_api.expect(visible(page.locator(".workflow-step-6"))).to_be_visible()  # first tab
    ready = {
        "Workflow": ".download-message button",
        "Generate": ".contract-summary",
        "Assemble": ".byte-diff .tabulator",
        "Campaign": ".campaign-list-table .tabulator",
        "Cache": ".stems-table .tabulator",
        "Pronunciation": ".pron-dictionary .tabulator",
        "Rotation": ".rotation-progress-pair progress",
        "Storage": ".storage-status",
    }
    assert list(ready) == list(TABS), "a tab without its ready selector here"
    for label in (*TABS[1:], TABS[0]):  # the first tab again last, after a stem was made
        open_tab(ui, label)
        sync_api.expect(visible(page.locator(ready[label]))).to_be_attached()
        if label == "Generate":  # an enabled Download, a waveform and a player
            fill(ui, "Name", "Offline")
            click(ui, "Generate name")
            sync_api.expect(visible(page.locator(".download-stem button"))).to_be_enabled()
    page.wait_for_load_state("networkidle")
    assert any("/static/" in urlsplit(url).path for url in ui.requests)  # resources: ours
    assert_clean(ui)


def test_workflow_walks_from_the_contract_to_the_downloaded_message(ui: Session) -> None:
    """The first page is the whole path in order; each step's result shows right below it,
    and its Download gives the very bytes the server proved."""
    open_dashboard(ui)
    page = ui.page

    def step(number: int) -> sync_api.Locator:
        return visible(page.locator(f".workflow-step-{number}"))

    sync_api.expect(visible(page.locator(".workflow-intro"))).to_contain_text("Hybrid Audio")
    sync_api.expect(step(1).locator(".contract-summary")).to_contain_text("piper")
    sync_api.expect(step(2)).to_contain_text(re.compile(r"names: \d+ entries"))
    fill(ui, "Name", "Marta")
    click(ui, "Generate name")
    sync_api.expect(step(3).locator(".generate-result")).to_contain_text("stem.name.marta")
    fill(ui, "Developer", "Hilton")
    click(ui, "Assemble message")
    sync_api.expect(step(4).locator(".assemble-result")).to_contain_text("verified")
    proof = step(5).locator(".workflow-proof")
    sync_api.expect(proof).to_contain_text(re.compile(r"✓ verified — (\d+)/\1 segments"))
    sync_api.expect(proof).to_contain_text("byte for byte")  # what ✓ exact proves
    audio = step(4).locator(".audio-player audio")
    output_id = audio.get_attribute("src").split("/")[3]
    with page.expect_download() as download:
        visible(step(6).get_by_role("button", name="Download message (WAV)")).click()
    assert download.value.suggested_filename == f"{output_id}.wav"
    data = Path(download.value.path()).read_bytes()
    api = ui.server.client()
    assert data == api.get(f"/assemble/outputs/{output_id}/audio").content
    manifest = api.get(f"/assemble/outputs/{output_id}").json()
    assert hashlib.sha256(data).hexdigest() == manifest["output"]["sha256"]
    assert manifest["inputs"]["name"] == "Marta"
    assert len(read_wav(data).pcm) > 0
    ui.screenshot("workflow")
    # The link opens the detailed page, showing the same message and inputs.
    visible(step(4).get_by_role("button", name="Open the Assemble page →")).click()
    sync_api.expect(
        visible(page.locator(".dashboard-tabs .bk-tab", has_text="Assemble"))
    ).to_have_class(re.compile(r"\bbk-active\b"))
    sync_api.expect(visible(page.locator(".assemble-result"))).to_contain_text(output_id)
    sync_api.expect(visible(page.get_by_label("Name", exact=True))).to_have_value("Marta")
    assert_clean(ui)


def test_assemble_page_offers_the_join_mode_and_script_phrases(ui: Session) -> None:
    """The join mode is the user's choice, and scripts are chosen by what they say."""
    open_dashboard(ui)
    open_tab(ui, "Assemble")
    page = ui.page
    visible(page.get_by_label("Template", exact=True)).select_option("scripted")
    script = visible(page.get_by_label("Script", exact=True))
    script.select_option(label="offer — has a new offer for you")
    fill(ui, "Name", "Nadia")
    fill(ui, "Developer", "Acme Homes")
    visible(page.locator(".join-mode").get_by_role("button", name="hybrid")).click()
    click(ui, "Assemble")
    result = visible(page.locator(".assemble-result"))
    sync_api.expect(result).to_contain_text("join hybrid")
    sync_api.expect(result).to_contain_text("verified")
    sync_api.expect(visible(page.locator(".exact-means"))).to_contain_text("✓ exact")
    output_id = visible(page.locator(".audio-player audio")).get_attribute("src").split("/")[3]
    manifest = ui.server.client().get(f"/assemble/outputs/{output_id}").json()
    assert (manifest["merge"]["mode"], manifest["inputs"]["script"]) == ("hybrid", "offer")
    assert_clean(ui)


def test_nothing_a_user_needs_is_clipped_at_1400_px(ui: Session) -> None:
    """At 1400×900 the Next buttons, the byte-diff verdicts (long ones too) and the tables'
    columns are whole."""
    open_dashboard(ui)
    open_tab(ui, "Assemble")
    page = ui.page
    fill(ui, "Name", "Bartholomew")
    fill(ui, "Developer", "Acme Homes")
    click(ui, "Assemble")
    sync_api.expect(visible(page.locator(".assemble-result"))).to_contain_text("verified")
    # A changed byte makes the longest verdict: "✗ first differing offset N (…)".
    output_id = visible(page.locator(".audio-player audio")).get_attribute("src").split("/")[3]
    manifest = ui.server.client().get(f"/assemble/outputs/{output_id}").json()
    wav_path = ui.server.base_dir / "output" / f"{output_id}.wav"
    data = bytearray(wav_path.read_bytes())
    audio = [s for s in manifest["merge"]["segments"] if s["kind"] == "audio"]
    data[audio[-1]["byte_offset"] + 5] ^= 0xFF
    wav_path.write_bytes(bytes(data))
    click(ui, "Re-verify from disk")
    verdicts = page.locator(".byte-diff .tabulator-cell[tabulator-field='verdict']")
    sync_api.expect(verdicts.filter(has_text="✗ first differing offset")).to_have_count(1)
    assert_not_clipped(verdicts.filter(visible=True))
    for table in ("byte-diff", "outputs-table"):  # no column pushed past the page either
        assert_not_clipped(visible(page.locator(f".{table} .tabulator-tableholder")))
    for label in ("Next name", "Next developer", "Next script", "Next pair", "Assemble"):
        assert_not_clipped(visible(page.get_by_role("button", name=label, exact=True)))
    assert_not_clipped(visible(page.locator(".download-message button")))
    ui.screenshot("assemble-1400")
    open_tab(ui, "Rotation")
    for stream in ("name", "developer", "script", "pair"):
        assert_not_clipped(visible(page.locator(f".rotation-next-{stream} button")))
    assert_clean(ui)


# --- behind INTERNAL_API_KEY ----------------------------------------------------------------


def assert_no_dashboard(ui: Session) -> None:
    assert ui.page.locator(".dashboard-tabs").count() == 0
    assert ui.page.get_by_role("button", name="Generate name").count() == 0


def test_dashboard_without_the_key_shows_only_the_login(keyed_ui: Session) -> None:
    keyed_ui.goto("/dashboard")
    assert urlsplit(keyed_ui.page.url).path == "/dashboard/login"
    sync_api.expect(keyed_ui.page.locator("input[type=password][name=key]")).to_be_visible()
    assert_no_dashboard(keyed_ui)
    # Nothing under /dashboard answers without the session, whatever the path.
    anonymous = keyed_ui.server.client(key="")
    for path in ("/dashboard", "/dashboard/", "/dashboard/ws"):
        response = anonymous.get(path, follow_redirects=False)
        assert response.status_code == 303, path
        assert response.headers["location"] == "/dashboard/login"
    keyed_ui.screenshot("login")
    assert_clean(keyed_ui)


def sign_in(ui: Session, key: str) -> sync_api.Response:
    """Submit `key` in the login form; the response to the form's POST."""
    ui.page.locator("input[type=password][name=key]").fill(key)
    with ui.page.expect_response(lambda r: r.request.method == "POST") as answer:
        ui.page.get_by_role("button", name="Sign in").click()
    return answer.value


def drop_refusal_logs(ui: Session) -> None:
    """Chromium logs the form POST's 401 itself; that is the refusal under test, not a bug."""
    ui.console_errors[:] = [e for e in ui.console_errors if "status of 401" not in e]


def test_dashboard_refuses_a_wrong_key(keyed_ui: Session) -> None:
    keyed_ui.goto("/dashboard/login")
    assert sign_in(keyed_ui, "not-the-key").status == 401
    assert keyed_ui.page.context.cookies() == []
    assert_no_dashboard(keyed_ui)
    keyed_ui.goto("/dashboard")
    assert urlsplit(keyed_ui.page.url).path == "/dashboard/login"
    assert_no_dashboard(keyed_ui)
    drop_refusal_logs(keyed_ui)
    assert_clean(keyed_ui)


def test_wrong_key_shows_the_login_form_again(keyed_ui: Session) -> None:
    keyed_ui.goto("/dashboard/login")
    response = sign_in(keyed_ui, "not-the-key")
    assert response.headers["content-type"].startswith("text/html")
    sync_api.expect(keyed_ui.page.locator(".error")).to_contain_text("not right")
    sync_api.expect(keyed_ui.page.locator("input[type=password][name=key]")).to_be_visible()


def test_dashboard_lets_the_right_key_in(keyed_ui: Session) -> None:
    keyed_ui.goto("/dashboard")
    assert sign_in(keyed_ui, keyed_ui.server.key).status == 303
    keyed_ui.page.wait_for_url(re.compile(r"/dashboard$"))
    visible(keyed_ui.page.locator(".dashboard-tabs .bk-tab", has_text="Generate")).wait_for()
    cookies = keyed_ui.page.context.cookies()
    assert [c["name"] for c in cookies] == ["hybrid_audio_session"]
    assert keyed_ui.server.key not in cookies[0]["value"]
    assert cookies[0]["httpOnly"]
    # The session works end to end: a stem is generated over the gated websocket.
    open_tab(keyed_ui, "Generate")
    fill(keyed_ui, "Name", "Ingrid")
    click(keyed_ui, "Generate name")
    sync_api.expect(visible(keyed_ui.page.locator(".generate-result"))).to_contain_text(
        "stem.name.ingrid"
    )
    assert_clean(keyed_ui)
