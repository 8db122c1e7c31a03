"""Attacks that need a real browser: script injection, another origin, contract changes.

Chromium (Debian's, through Playwright) on the real `hybrid-audio-server`, as in
tests/test_dashboard_browser.py. Hostile dataset entries are uploaded through the API, as an
API client with write access would; each payload sets `window.__pwned` if it ever runs, so
"no script ran" is checked directly, and the payload must also be visible as literal text.
"""

# ruff: noqa: F811  (fixtures are imported by name)

from __future__ import annotations

import functools
import http.server
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import test_dashboard_browser as pages
from tests.api_server import ApiServer, free_port, make_base_dir, start_server
from tests.test_dashboard_browser import (  # noqa: F401  (the fixtures by name)
    TIMEOUT_MS,
    Session,
    _session,
    browser,
    click,
    deep_text,
    fill,
    keyed_server,
    keyed_ui,
    open_dashboard,
    open_tab,
    rows,
    sync_api,
    visible,
)

pytestmark = pytest.mark.slow

#: Each sets window.__pwned when its markup is interpreted as HTML or Markdown.
PAYLOADS = (
    '<img src=x onerror="window.__pwned=1">',
    '<svg onload="window.__pwned=2"></svg>',
    "<script>window.__pwned=3</script>",
    "[Ann](javascript:window.__pwned=4)",
)
#: A payload the English Piper voice refuses (Han characters): its error message quotes it.
UNSPEAKABLE = '李<img src=x onerror="window.__pwned=5">'

#: Elements a payload would have created, searched through every shadow root.
_INJECTED = """() => {
  const found = [];
  const walk = root => {
    for (const el of root.querySelectorAll("*")) {
      const attrs = [...el.attributes].map(a => a.value).join(" ");
      if (attrs.includes("__pwned") || (el.tagName === "SCRIPT" && el.text.includes("__pwned"))
          || (el.tagName === "A" && el.href.startsWith("javascript:"))) {
        found.push(el.outerHTML);
      }
      if (el.shadowRoot) walk(el.shadowRoot);
    }
  };
  walk(document);
  return found;
}"""


def assert_inert(ui: Session) -> None:
    """No payload ran, and none became an element."""
    assert ui.page.evaluate("() => window.__pwned") is None
    assert ui.page.evaluate(_INJECTED) == []


def dataset_text(entries: tuple[str, ...]) -> bytes:
    return ("\n".join(entries) + "\n").encode()


@pytest.fixture(scope="module")
def hostile_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """A keyless server whose names dataset an API client filled with markup."""
    with start_server(make_base_dir(tmp_path_factory.mktemp("hostile"))) as server:
        upload = server.client().post(
            "/external/datasets/name",
            files={"file": ("names.txt", dataset_text(PAYLOADS), "text/plain")},
        )
        assert upload.status_code == 200, upload.text
        yield server


@pytest.fixture
def hostile_ui(browser: sync_api.Browser, hostile_server: ApiServer) -> Iterator[Session]:
    yield from _session(browser, hostile_server)


# --- 1. data reaches the browser as text ----------------------------------------------------


def test_an_error_quoting_hostile_text_shows_it_as_text(hostile_ui: Session) -> None:
    """An error notification that quotes a name never runs the markup in it."""
    open_dashboard(hostile_ui)
    open_tab(hostile_ui, "Generate")
    fill(hostile_ui, "Name", UNSPEAKABLE)
    click(hostile_ui, "Generate name")
    toast = visible(hostile_ui.page.locator(".notyf__toast--error"))
    sync_api.expect(toast).to_contain_text("cannot speak")
    sync_api.expect(toast).to_contain_text('<img src=x onerror="window.__pwned=5">')
    assert_inert(hostile_ui)


def test_hostile_names_show_as_text_on_every_page(hostile_ui: Session) -> None:
    """Result cards, tables, rotation steps and plot labels show markup literally."""
    page = hostile_ui.page
    api = hostile_ui.server.client()
    for name in PAYLOADS:  # stems of every payload: the cache table lists their texts
        assert api.post("/generate/name", json={"name": name}).status_code == 200
    open_dashboard(hostile_ui)
    open_tab(hostile_ui, "Generate")
    fill(hostile_ui, "Name", PAYLOADS[0])
    click(hostile_ui, "Generate name")
    result = visible(page.locator(".generate-result"))
    sync_api.expect(result).to_contain_text(PAYLOADS[0])
    assert_inert(hostile_ui)

    open_tab(hostile_ui, "Assemble")
    fill(hostile_ui, "Name", PAYLOADS[3])
    fill(hostile_ui, "Developer", PAYLOADS[2])
    click(hostile_ui, "Assemble")
    sync_api.expect(visible(page.locator(".assemble-result"))).to_contain_text("verified")
    outputs = rows(hostile_ui, "outputs-table")
    sync_api.expect(outputs.first).to_be_visible()
    table = deep_text(visible(page.locator(".outputs-table")))
    assert PAYLOADS[3] in table
    assert PAYLOADS[2] in table
    sync_api.expect(visible(page.locator(".waveform canvas"))).to_be_visible()
    assert_inert(hostile_ui)

    open_tab(hostile_ui, "Cache")
    sync_api.expect(rows(hostile_ui, "stems-table").first).to_be_visible()
    click(hostile_ui, "name")
    stems = visible(page.locator(".stems-table"))
    for name in PAYLOADS:
        sync_api.expect(stems).to_contain_text(name)
    assert_inert(hostile_ui)

    open_tab(hostile_ui, "Rotation")
    click(hostile_ui, "Next name")
    last = visible(page.locator(".rotation-last"))
    sync_api.expect(last).to_contain_text(re.compile("|".join(map(re.escape, PAYLOADS))))
    sync_api.expect(rows(hostile_ui, "upcoming-pairs").first).to_be_visible()
    assert_inert(hostile_ui)


# --- 3 and 8. the gate, sessions and another origin -------------------------------------------


def sign_in(ui: Session) -> None:
    ui.goto("/dashboard")
    pages.sign_in(ui, ui.server.key)
    ui.page.wait_for_url(re.compile(r"/dashboard$"))
    visible(ui.page.locator(".dashboard-tabs .bk-tab", has_text="Generate")).wait_for()


#: The attacker's page: with the operator's cookie, replace the developers dataset and open
#: the dashboard's websocket. It records what happened in window.__attack.
_ATTACK_PAGE = """<!doctype html><html><body><script>
window.__attack = {upload: "pending", socket: "pending"};
const target = "{target}";
const data = new FormData();
data.append("file", new Blob(["Evil Corp\\n"], {type: "text/plain"}), "developers.txt");
fetch(target + "/external/datasets/developer",
      {method: "POST", body: data, credentials: "include", mode: "no-cors"})
  .then(() => window.__attack.upload = "sent", () => window.__attack.upload = "failed");
const socket = new WebSocket(target.replace("http", "ws") + "/dashboard/ws");
socket.onopen = () => window.__attack.socket = "open";
socket.onclose = () => {
  if (window.__attack.socket !== "open") window.__attack.socket = "refused";
};
</script></body></html>"""


@pytest.fixture
def attacker_site(tmp_path: Path, keyed_server: ApiServer) -> Iterator[str]:
    """A page served from another port of 127.0.0.1 (a second local HTTP server)."""
    (tmp_path / "attack.html").write_text(
        _ATTACK_PAGE.replace("{target}", keyed_server.base_url), encoding="utf-8"
    )
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/attack.html"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


def test_a_page_on_another_port_cannot_use_the_operators_session(
    keyed_ui: Session, attacker_site: str
) -> None:
    """Cross-site request forgery from 127.0.0.1:<other port> changes nothing."""
    api = keyed_ui.server.client()
    before = api.get("/external/datasets/developer").json()["items"]
    sign_in(keyed_ui)
    keyed_ui.page.goto(attacker_site, wait_until="load")
    keyed_ui.page.wait_for_function(
        "() => window.__attack.upload !== 'pending' && window.__attack.socket !== 'pending'",
        timeout=TIMEOUT_MS,
    )
    attack = keyed_ui.page.evaluate("() => window.__attack")
    assert attack["upload"] == "sent"  # the browser did send it, with the cookie
    assert attack["socket"] == "refused"
    assert api.get("/external/datasets/developer").json()["items"] == before
    log = (keyed_ui.server.base_dir / "logs" / "api.jsonl").read_text()
    assert '"route": "/external/datasets/developer", "status": 403' in log.replace(
        "/external/datasets/{kind}", "/external/datasets/developer"
    )


def test_resources_need_a_session_and_sign_out_ends_it(keyed_ui: Session) -> None:
    """Panel's resources are behind the login; after Sign out the old cookie opens nothing."""
    keyed_ui.goto("/static/js/bokeh.min.js")
    assert keyed_ui.page.url.endswith("/dashboard/login")
    keyed_ui.goto("/components/os/path/__javascript__/x")
    assert "not found" in keyed_ui.page.content()
    sign_in(keyed_ui)
    token = keyed_ui.page.context.cookies()[0]["value"]
    assert keyed_ui.page.request.get(keyed_ui.server.base_url + "/static/js/bokeh.min.js").ok
    visible(keyed_ui.page.get_by_role("button", name="Sign out")).click()
    keyed_ui.page.wait_for_url(re.compile(r"/dashboard/login$"))
    assert keyed_ui.page.context.cookies() == []
    thief = keyed_ui.server.client(key="")
    thief.cookies.set("hybrid_audio_session", token)
    assert thief.get("/jobs").status_code == 401


# --- 11. contract changes -------------------------------------------------------------------


@pytest.fixture
def contract_ui(browser: sync_api.Browser, tmp_path: Path) -> Iterator[Session]:
    """A fresh keyless server (contract changes are server-wide) and a page on it."""
    with start_server(make_base_dir(tmp_path / "contract")) as server:
        yield from _session(browser, server)


def test_a_failed_engine_switch_is_shown_and_changes_nothing(contract_ui: Session) -> None:
    """Choosing Cartesia without its key: an error, and Piper stems keep Piper's signature."""
    api = contract_ui.server.client()
    signature = api.get("/health").json()["contract_signature"]
    open_dashboard(contract_ui)
    open_tab(contract_ui, "Generate")
    visible(contract_ui.page.get_by_label("Engine", exact=True)).select_option("cartesia")
    click(contract_ui, "Apply contract")
    toast = visible(contract_ui.page.locator(".notyf__toast--error"))
    sync_api.expect(toast).to_contain_text("CARTESIA_API_KEY")
    sync_api.expect(visible(contract_ui.page.locator(".contract-summary"))).to_contain_text("piper")
    assert api.get("/health").json()["contract_signature"] == signature
    stem = api.post("/generate/name", json={"name": "Ann"}).json()["stem"]
    assert stem["contract_signature"] == signature


def test_a_contract_change_says_what_it_costs_before_it_applies(contract_ui: Session) -> None:
    """The confirmation counts the cached stems the change makes incompatible."""
    api = contract_ui.server.client()
    for name in ("Ann", "Bea", "Cid"):
        assert api.post("/generate/name", json={"name": name}).status_code == 200
    compatible = sum(s["compatible"] for s in api.get("/cache/list").json())
    open_dashboard(contract_ui)
    open_tab(contract_ui, "Generate")
    fill(contract_ui, "Sample rate", "16000")
    click(contract_ui, "Apply contract")
    confirm = visible(contract_ui.page.locator(".contract-confirm"))
    sync_api.expect(confirm).to_contain_text(f"makes {compatible} cached stems incompatible")
    assert api.get("/health").json()["audio_format"] == "pcm_s16le 22050 Hz mono"  # not yet
    click(contract_ui, "Confirm change")
    sync_api.expect(visible(contract_ui.page.locator(".contract-summary"))).to_contain_text(
        "16000 Hz"
    )
    assert api.get("/health").json()["audio_format"] == "pcm_s16le 16000 Hz mono"
    assert sum(s["compatible"] for s in api.get("/cache/list").json()) == 0
