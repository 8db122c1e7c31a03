"""The dashboard in a real browser (Chromium through Playwright) on a real 2-worker server.

With `--workers 2` the page of a dashboard session, its websocket and its resource requests
each go to whichever worker the kernel hands the connection. The worker that takes the
websocket creates the Bokeh session from the id in the page if it did not render the page
itself (normal Bokeh behaviour): that session must look and work exactly like one whose
page and websocket met in the same worker, and ask nothing of a CDN (machines are offline).

Fresh browser contexts (no cookie, no cache) open the keyed dashboard one after another:
each signs in (the session is in the state database, whichever worker checks it), waits
for the tabs, steps the name rotation through its websocket and checks every request
went to the server and nothing failed. Which worker rendered the page and which accepted
the websocket is read from the server's info log, whose lines name their process
(`worker_log_config`). Contexts are opened until both workers rendered pages, both
accepted websockets and at least one session had them in different workers.
"""

# ruff: noqa: F811  (fixtures are imported by name)

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.api_server import NO_FAILURE_LIMIT, ApiServer, make_base_dir
from tests.test_dashboard_browser import (  # noqa: F401  (the browser fixture by name)
    CHROMIUM,
    _session,
    assert_clean,
    browser,
    click,
    deep_text,
    open_tab,
    sign_in,
    sync_api,
    visible,
)
from tests.test_server_workers import start_workers, stop

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium not installed"),
    pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="Linux /proc"),
]

#: Most fresh contexts opened before giving up on seeing every pairing of workers; the
#: kernel hands each connection to either worker, so a handful is usually enough.
MAX_CONTEXTS = 30
_PAGE = re.compile(r"\[(\d+)\] [\d.]+:\d+ - \"GET /dashboard HTTP/1\.1\" 200")
_SOCKET = re.compile(r"\[(\d+)\] [\d.]+:\d+ - \"WebSocket /dashboard/ws\" \[accepted\]")


@dataclass
class Visit:
    """One fresh context's dashboard session: where its page and websocket were served."""

    page_pid: int
    socket_pid: int
    stylesheets: frozenset[str]


@pytest.fixture(scope="module")
def workers_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """A keyed server of 2 workers, logging at info (each line names its worker)."""
    base = make_base_dir(tmp_path_factory.mktemp("dashboard-workers"))
    server, _ = start_workers(base, key=secrets.token_urlsafe(24), env=NO_FAILURE_LIMIT)
    try:
        yield server
    finally:
        stop(server)


def served_by(pattern: re.Pattern[str], log: str) -> int:
    """The one worker whose log lines in `log` match `pattern`."""
    pids = pattern.findall(log)
    assert len(pids) == 1, f"{pattern.pattern}: {pids}\n{log}"
    return int(pids[0])


def visit(browser: sync_api.Browser, server: ApiServer) -> Visit:
    """Sign in from a fresh context, use the dashboard, check it stayed on the server."""
    start = len(server.log())
    with contextmanager(_session)(browser, server) as ui:
        stylesheets: set[str] = set()
        failed: list[str] = []
        ui.page.on(
            "request",
            lambda r: stylesheets.add(r.url) if r.resource_type == "stylesheet" else None,
        )
        ui.page.on(
            "response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None
        )
        ui.goto("/dashboard")
        assert sign_in(ui, server.key).status == 303
        ui.page.wait_for_url(re.compile(r"/dashboard$"))
        open_tab(ui, "Rotation")  # rendered from the document the websocket pulled
        state = visible(ui.page.locator(".rotation-state"))
        sync_api.expect(state).to_contain_text(re.compile(r"name — cycle \d+, position \d+/"))
        text = deep_text(state)
        before = int(re.search(r"name — cycle \d+, position (\d+)/", text).group(1))  # type: ignore[union-attr]
        click(ui, "Next name")  # a callback in the worker that holds the session
        sync_api.expect(state).to_contain_text(
            re.compile(rf"name — cycle \d+, position {before + 1}/")
        )
        assert failed == []
        assert_clean(ui)
        assert stylesheets, "no stylesheet was loaded"
        log = server.log()[start:]
        return Visit(served_by(_PAGE, log), served_by(_SOCKET, log), frozenset(stylesheets))


def test_every_worker_serves_the_dashboard_the_same_way_offline(
    browser: sync_api.Browser, workers_server: ApiServer
) -> None:
    visits: list[Visit] = []

    def seen_enough() -> bool:
        return (
            len({v.page_pid for v in visits}) == 2
            and len({v.socket_pid for v in visits}) == 2
            and any(v.page_pid != v.socket_pid for v in visits)
            and any(v.page_pid == v.socket_pid for v in visits)
        )

    while not seen_enough():
        pairs = [(v.page_pid, v.socket_pid) for v in visits]
        assert len(visits) < MAX_CONTEXTS, f"(page, websocket) workers seen: {pairs}"
        visits.append(visit(browser, workers_server))

    # A session the websocket's worker created from the page's id loads the very same
    # stylesheets, from this server, as one whose page and websocket met in one worker.
    across = {v.stylesheets for v in visits if v.page_pid != v.socket_pid}
    within = {v.stylesheets for v in visits if v.page_pid == v.socket_pid}
    assert across == within
    (stylesheets,) = across
    assert all(url.startswith(workers_server.base_url + "/") for url in stylesheets)
