"""Who may reach what over HTTP: the gate, sessions, rate limits, origins, Host, slow clients.

Each test acts as an attacker (or a careless operator) would, against the real
`hybrid-audio-server` (tests/api_server.py): anonymous requests to every route the mounted
dashboard answers, wrong keys in a loop, a session cookie replayed after logout, requests
naming a rebound host, connections that send half a request. The browser-side attacks
(script injection, a page on another port) are in test_browser.py.
"""

# ruff: noqa: F811  (server fixtures are imported by name)

from __future__ import annotations

import contextlib
import secrets
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from websockets.sync.client import connect

from hybrid_audio.api.app import create_app
from hybrid_audio.api.dashboard_gate import AccessGate
from hybrid_audio.api.server import MAX_HEADER_BYTES, BoundedHeadersProtocol
from hybrid_audio.api.session import COOKIE
from hybrid_audio.config import Settings
from tests.api_server import (  # noqa: F401  (fixtures are used by name)
    HEADER,
    NO_FAILURE_LIMIT,
    ApiServer,
    free_port,
    make_base_dir,
    server_factory,
    start_server,
)

pytestmark = pytest.mark.slow

#: A bound on how long the server may keep a stalled connection: generous, never a timing claim.
CLOSE_BOUND_S = 30.0
#: Paths an attacker would try on the dashboard's mount; the test keeps those the mounted
#: Panel app itself says it answers (so a route Panel adds later is checked too).
PANEL_CANDIDATES = (
    "/dashboard",
    "/dashboard/",
    "/dashboard/ws",
    "/dashboard/metadata",
    "/dashboard/autoload.js",
    "/dashboard/static/js/bokeh.min.js",
    "/static/js/bokeh.min.js",
    "/static/extensions/panel/panel.min.js",
    "/components/panel.models/Tabulator/__javascript__/x.js",
    "/favicon.ico",
    "/session_info",
    "/liveness",
    "/panel-preview/render",
)
#: /components/ probes: an installed module, a missing one, and a traversal.
COMPONENT_PROBES = (
    "/components/os/path/__javascript__/x",
    "/components/no_such_module_xyz/Thing/__css__/x",
    "/components/%2e%2e/%2e%2e/etc/passwd",
    "/components/panel/Column/__javascript__/x",
)


def port_of(server: ApiServer) -> int:
    return int(urlsplit(server.base_url).port or 0)


def login(server: ApiServer, key: str | None = None) -> httpx.Client:
    """A client holding a dashboard session, signed in as the login page would."""
    client = httpx.Client(
        base_url=server.base_url, headers={"origin": server.base_url}, follow_redirects=False
    )
    answer = client.post("/dashboard/login", data={"key": key or server.key})
    assert answer.status_code == 303, answer.text
    assert COOKIE in client.cookies
    return client


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """A server with a key and a failure limit too high to matter for these tests."""
    base = make_base_dir(tmp_path_factory.mktemp("access"))
    with start_server(
        base,
        key=secrets.token_urlsafe(24),
        env=NO_FAILURE_LIMIT,
        args=["--header-timeout", "2", "--body-timeout", "2", "--keep-alive", "2"],
    ) as server:
        yield server


@pytest.fixture(scope="module")
def keyless(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """A server without a key (loopback only)."""
    with start_server(make_base_dir(tmp_path_factory.mktemp("access-keyless"))) as server:
        yield server


def mounted_dashboard_paths(tmp_path: Path) -> list[str]:
    """The candidates the dashboard mounted in a keyed app says it answers."""
    app = create_app(Settings(base_dir=tmp_path, internal_api_key="k"))
    gate = next(m for m in app.user_middleware if m.cls is AccessGate)
    panel = gate.kwargs["dashboard"]
    assert panel is not None, "the dashboard is not mounted"
    return [
        path
        for path in PANEL_CANDIDATES
        if panel.handles({"type": "http", "path": path, "root_path": "", "method": "GET"})
    ]


# --- the dashboard's routes and the docs need the key ------------------------------------


def test_a_malformed_body_without_the_key_gets_401_not_422(keyed: ApiServer) -> None:
    """FastAPI decodes a JSON body before it solves the key dependency: every route that
    takes one must still answer a caller without the key 401, whatever the body holds
    (with the key, the same body is a 422)."""
    spec = keyed.client().get("/openapi.json").json()
    writes = [
        (method.upper(), path.replace("{", "").replace("}", ""))
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if method in ("post", "put", "patch")
        and "application/json" in operation.get("requestBody", {}).get("content", {})
    ]
    assert ("POST", "/assemble/template") in writes
    anonymous, wrong = keyed.client(key=""), keyed.client(key="w" * 32)
    json_header = {"content-type": "application/json"}
    for method, path in writes:
        for client in (anonymous, wrong):
            refused = client.request(method, path, content=b"{not json", headers=json_header)
            assert refused.status_code == 401, (method, path, refused.text)
            assert refused.json()["error"]["code"] == "unauthorized"
    allowed = keyed.client().post("/assemble/template", content=b"{not json", headers=json_header)
    assert allowed.status_code == 422, allowed.text


def test_every_route_the_dashboard_mounts_needs_a_session(keyed: ApiServer, tmp_path) -> None:
    """No route the Panel app answers (page, websocket, static, components…) is open."""
    paths = mounted_dashboard_paths(tmp_path)
    assert {"/dashboard", "/dashboard/ws", "/static/js/bokeh.min.js"} <= set(paths)
    anonymous = keyed.client(key="")
    for path in paths:
        answer = anonymous.get(path, follow_redirects=False)
        assert answer.status_code in (303, 404), (path, answer.status_code)
        if answer.status_code == 303:
            assert answer.headers["location"] == "/dashboard/login", path
        assert b"bokeh" not in answer.content.lower(), path
    # With a session the same resources load.
    session = login(keyed)
    assert session.get("/static/js/bokeh.min.js").status_code == 200
    assert session.get("/dashboard/").status_code == 200


def _answer_shape(answer: httpx.Response) -> tuple[int, bytes, tuple[tuple[str, str], ...]]:
    """Status, body and headers, without the ones that change per request."""
    headers = tuple(sorted((k, v) for k, v in answer.headers.items() if k != "date"))
    return answer.status_code, answer.content, headers


def test_component_routes_answer_one_404_whatever_the_module(
    keyed: ApiServer, keyless: ApiServer
) -> None:
    """/components/<module>/… never tells a present module from a missing one or a traversal:
    every probe gets the same status, body and headers, whoever asks."""
    clients = [keyed.client(key=""), login(keyed), keyless.client(key="")]
    answers = {probe: [client.get(probe) for client in clients] for probe in COMPONENT_PROBES}
    assert all(a.status_code == 404 for each in answers.values() for a in each), answers
    shapes = {_answer_shape(a) for each in answers.values() for a in each}
    assert len(shapes) == 1, shapes


def test_a_component_probe_imports_nothing(tmp_path: Path, monkeypatch) -> None:
    """A probe naming an installed module that is not loaded yet leaves it unloaded.

    In process (the gate is the same code the server runs), so sys.modules is visible: the
    module exists on sys.path, and importing it would register it.
    """
    name = f"probe_target_{secrets.token_hex(4)}"
    (tmp_path / f"{name}.py").write_text("class Thing:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    app = create_app(Settings(base_dir=tmp_path / "base", internal_api_key="k"))
    with TestClient(app) as client:
        for headers in ({}, {HEADER: "k"}):
            answer = client.get(f"/components/{name}/Thing/__javascript__/x", headers=headers)
            assert answer.status_code == 404, answer.text
    assert name not in sys.modules
    __import__(name)  # the probe was meaningful: the module was there to import
    assert name in sys.modules


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/openapi.json"])
def test_docs_need_the_key_or_a_session(keyed: ApiServer, path: str) -> None:
    """The API description is not handed to anonymous clients when a key is set."""
    assert keyed.client(key="").get(path).status_code == 401
    assert keyed.client(key="wrong").get(path).status_code == 401
    assert keyed.client().get(path).status_code == 200
    assert login(keyed).get(path).status_code == 200


# --- sessions ---------------------------------------------------------------------------


def test_a_session_is_random_per_login_and_logout_ends_it(keyed: ApiServer) -> None:
    """A stolen cookie stops working at logout; two logins never share an id."""
    first, second = login(keyed), login(keyed)
    token = first.cookies[COOKIE]
    assert token != second.cookies[COOKIE]
    assert keyed.key not in token
    assert first.get("/jobs").status_code == 200
    answer = first.post("/dashboard/logout")
    assert answer.status_code == 303
    assert "Max-Age=0" in answer.headers["set-cookie"]
    thief = keyed.client(key="")
    thief.cookies.set(COOKIE, token)
    assert thief.get("/jobs").status_code == 401
    assert thief.get("/dashboard", follow_redirects=False).status_code == 303
    assert second.get("/jobs").status_code == 200  # other sessions live on


def test_a_session_ends_when_its_time_is_up(server_factory: Callable[..., ApiServer]) -> None:
    """A stolen cookie stops working after DASHBOARD_SESSION_SECONDS, even if sent again.

    The cookie is sent by hand: a client's cookie jar drops it at Max-Age by itself, and
    the defence under test is the server's own expiry.
    """
    lifetime = 3  # long enough for the first request on a loaded machine
    server = server_factory(
        key=secrets.token_urlsafe(24), env={"DASHBOARD_SESSION_SECONDS": str(lifetime)}
    )
    answer = httpx.post(
        f"{server.base_url}/dashboard/login",
        data={"key": server.key},
        headers={"origin": server.base_url},
    )
    assert answer.status_code == 303, answer.text
    assert f"Max-Age={lifetime}" in answer.headers["set-cookie"]
    token = answer.cookies[COOKIE]
    replay = server.client(key="")
    cookie = {"cookie": f"{COOKIE}={token}"}
    assert replay.get("/jobs", headers=cookie).status_code == 200
    deadline = time.monotonic() + 60  # a generous bound, not a timing claim
    while replay.get("/jobs", headers=cookie).status_code == 200:
        assert time.monotonic() < deadline, "the session outlived its lifetime by a minute"
        time.sleep(0.2)
    assert replay.get("/jobs", headers=cookie).status_code == 401
    page = replay.get("/dashboard", headers=cookie, follow_redirects=False)
    assert page.status_code == 303
    assert page.headers["location"] == "/dashboard/login"


def test_sessions_and_failures_are_shared_by_server_processes(tmp_path: Path) -> None:
    """Two processes on one state folder: one login, one logout, one failure count."""
    base = make_base_dir(tmp_path / "shared")
    key = secrets.token_urlsafe(24)
    env = {"AUTH_FAILURE_LIMIT": "3", "AUTH_FAILURE_WINDOW": "600"}
    with start_server(base, key=key, env=env) as one, start_server(base, key=key, env=env) as two:
        session = login(one)
        on_two = two.client(key="")
        on_two.cookies.set(COOKIE, session.cookies[COOKIE])
        assert on_two.get("/jobs").status_code == 200
        logout = on_two.post("/dashboard/logout", headers={"origin": two.base_url})
        assert logout.status_code == 303
        assert session.get("/jobs").status_code == 401  # logged out everywhere
        # Wrong keys sent to one process count in the other.
        assert [one.client(key="bad").get("/jobs").status_code for _ in range(2)] == [401, 401]
        refused = two.client(key="bad").get("/jobs")
        assert refused.status_code == 429
        assert two.client().get("/jobs").status_code == 429  # the right key too: no oracle


# --- rate limits ------------------------------------------------------------------------


def test_wrong_keys_are_rate_limited(server_factory: Callable[..., ApiServer]) -> None:
    """A key guesser gets 429 with Retry-After after a few tries, even when it guesses right."""
    server = server_factory(key=secrets.token_urlsafe(24), env={"AUTH_FAILURE_LIMIT": "3"})
    guesser = server.client(key="guess")
    statuses = [guesser.get("/jobs").status_code for _ in range(4)]
    assert statuses == [401, 401, 429, 429]
    answer = server.client().get("/jobs")
    assert answer.status_code == 429
    assert answer.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(answer.headers["retry-after"]) <= 60
    assert server.client(key="").get("/health").status_code == 200


def test_wrong_logins_are_rate_limited(server_factory: Callable[..., ApiServer]) -> None:
    """The login form is not a faster way to guess the key."""
    server = server_factory(key=secrets.token_urlsafe(24), env={"AUTH_FAILURE_LIMIT": "3"})
    form = httpx.Client(base_url=server.base_url, headers={"origin": server.base_url})
    statuses = [form.post("/dashboard/login", data={"key": "guess"}).status_code for _ in range(3)]
    assert statuses == [401, 401, 429]
    answer = form.post("/dashboard/login", data={"key": server.key}, follow_redirects=False)
    assert answer.status_code == 429
    assert int(answer.headers["retry-after"]) >= 1
    assert COOKIE not in form.cookies


def test_the_docs_are_no_way_round_the_key_limit(server_factory: Callable[..., ApiServer]) -> None:
    """Keys sent to /openapi.json count against the same allowance as any other route."""
    server = server_factory(key=secrets.token_urlsafe(24), env={"AUTH_FAILURE_LIMIT": "3"})
    guesser = server.client(key="guess")
    statuses = [guesser.get("/openapi.json").status_code for _ in range(4)]
    assert statuses == [401, 401, 429, 429]
    assert server.client().get("/openapi.json").status_code == 429  # even the right key
    assert server.client().get("/jobs").status_code == 429


# --- origins and hosts ------------------------------------------------------------------


def test_cookie_changes_need_evidence_of_the_own_origin(keyed: ApiServer) -> None:
    """A change riding on the session cookie must come from the server's own page."""
    session = login(keyed)
    body = {"name": "Ann"}
    del session.headers["origin"]
    bare = session.post("/generate/name", json=body)
    assert bare.status_code == 403
    assert bare.json()["error"]["code"] == "cross_origin_refused"
    other = session.post("/generate/name", json=body, headers={"origin": "http://127.0.0.1:1"})
    assert other.status_code == 403
    same_site = session.post("/generate/name", json=body, headers={"sec-fetch-site": "same-site"})
    assert same_site.status_code == 403
    own = session.post("/generate/name", json=body, headers={"origin": keyed.base_url})
    assert own.status_code == 200, own.text
    # Scripts and the CLI send the key header and no Origin: unaffected.
    assert keyed.client().post("/generate/name", json=body).status_code == 200


def test_a_page_of_another_origin_cannot_replace_a_dataset_without_a_key(
    keyless: ApiServer,
) -> None:
    """Without a key, a browser page on another port still cannot change anything."""
    api = keyless.client(key="")
    before = api.get("/external/datasets/developer").json()["items"]
    answer = api.post(
        "/external/datasets/developer",
        files={"file": ("developers.txt", b"Evil Corp\n", "text/plain")},
        headers={"origin": "http://127.0.0.1:9", "sec-fetch-site": "same-site"},
    )
    assert answer.status_code == 403
    assert api.get("/external/datasets/developer").json()["items"] == before


@pytest.mark.parametrize("host", ["rebound.example", "rebound.example:80", "10.0.0.1", "[::2]"])
def test_a_rebound_host_name_is_refused_without_a_key(keyless: ApiServer, host: str) -> None:
    """DNS rebinding: a hostile name pointed at 127.0.0.1 reaches no route."""
    answer = keyless.client(key="").get("/health", headers={"host": host})
    assert answer.status_code == 421
    assert "DNS rebinding" in answer.json()["error"]["message"]


def test_loopback_host_names_are_answered(keyless: ApiServer) -> None:
    """The names a local user types keep working."""
    port = port_of(keyless)
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost", f"[::1]:{port}"):
        assert keyless.client(key="").get("/health", headers={"host": host}).status_code == 200


# --- slow clients -----------------------------------------------------------------------


def closed_within_bound(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (fails if it never does)."""
    sock.settimeout(CLOSE_BOUND_S)
    received = b""
    while chunk := sock.recv(4096):
        received += chunk
    return received


def trickle_until_closed(sock: socket.socket, deadline: float) -> bool:
    """Send a byte every quarter second until the server closes (True) or the deadline."""
    while time.monotonic() < deadline:
        try:
            sock.sendall(b"X")
        except (BrokenPipeError, ConnectionResetError):
            return True
        time.sleep(0.25)  # the trickle itself
    return False


def test_half_sent_headers_are_dropped(keyed: ApiServer) -> None:
    """A client that stops in the middle of its headers does not keep the connection."""
    with socket.create_connection(("127.0.0.1", port_of(keyed))) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        assert closed_within_bound(sock) == b""


def test_trickled_headers_are_dropped(keyed: ApiServer) -> None:
    """Slowloris: a header byte now and then does not extend the deadline."""
    with socket.create_connection(("127.0.0.1", port_of(keyed))) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        deadline = time.monotonic() + CLOSE_BOUND_S
        assert trickle_until_closed(sock, deadline)


def header_refusal(server: ApiServer, request: bytes) -> bytes:
    """What the server sends to `request` (sent in one write) before it closes."""
    with socket.create_connection(("127.0.0.1", port_of(server))) as sock:
        # Refused before all of it was read: the answer is still there to read.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(request)
        return closed_within_bound(sock)


def test_headers_over_the_bound_get_400_whatever_the_parser(keyed: ApiServer) -> None:
    """Complete headers past `MAX_HEADER_BYTES` are refused (400, envelope) and dropped.

    Regression: uvicorn bounds headers only under h11; with httptools, which it uses when
    installed (and the server does), a 2 MB header was read and answered 200.
    """
    big = b"a" * MAX_HEADER_BYTES
    for size in (MAX_HEADER_BYTES + 1, 20 * MAX_HEADER_BYTES):
        request = (
            b"GET /jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            + f"{HEADER}: {keyed.key}\r\n".encode()
            + b"X-Big: "
            + (big * 20)[:size]
            + b"\r\n\r\n"
        )
        answer = header_refusal(keyed, request)
        assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
        assert b'"code": "headers_too_large"' in answer
    # Many small headers are counted too, with their separators.
    many = b"".join(b"x-%d: 1\r\n" % i for i in range(MAX_HEADER_BYTES // 8))
    answer = header_refusal(keyed, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n" + many + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert b'"code": "headers_too_large"' in answer
    # Headers within the bound (a large cookie, say) are served, and so are others.
    fine = keyed.client().get("/jobs", headers={"x-large": "a" * (MAX_HEADER_BYTES // 2)})
    assert fine.status_code == 200


def test_a_body_left_unread_by_an_early_answer_is_not_taken_for_headers(
    keyed: ApiServer,
) -> None:
    """A body over the limit is answered 413 from its Content-Length, before it is read;
    what the client still sends is that body, not headers: the connection drains it and
    serves the next request. (Counted as headers, it drew a second, 400 answer and a close
    that broke the client's upload.)"""
    size = Settings().max_body_bytes + 1
    request = (
        b"POST /assemble/template HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + f"{HEADER}: {keyed.key}\r\n".encode()
        + b"Content-Type: application/json\r\n"
        + f"Content-Length: {size}\r\n\r\n".encode()
    )
    with socket.create_connection(("127.0.0.1", port_of(keyed))) as sock:
        sock.settimeout(CLOSE_BOUND_S)
        sock.sendall(request + b" " * size)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        received = b""
        while received.count(b"HTTP/1.1 ") < 2 and (chunk := sock.recv(65536)):
            received += chunk
    assert received.startswith(b"HTTP/1.1 413"), received[:200]
    assert b"headers_too_large" not in received
    assert received.count(b"HTTP/1.1 ") == 2
    assert b"HTTP/1.1 200" in received.split(b"payload_too_large", 1)[1]


def test_unfinished_headers_over_the_bound_get_400(keyed: ApiServer) -> None:
    """Headers still growing past the bound are refused with an answer (the header
    deadline would close the connection without one)."""
    request = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 2 * MAX_HEADER_BYTES
    answer = header_refusal(keyed, request)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert b'"code": "headers_too_large"' in answer


def test_an_upgraded_websocket_outlives_the_header_deadline() -> None:
    """The deadline bounds the upgrade request's headers, not the websocket after it.

    uvicorn upgrades without a request cycle, so the deadline used to stay armed and close
    every dashboard websocket 10 s after it opened ("Server connection lost" on a slow
    machine). The real protocol class, in uvicorn, with a 0.5 s deadline and an echo app.
    """

    async def echo(scope: dict, receive: Callable, send: Callable) -> None:
        assert scope["type"] == "websocket"
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        while (message := await receive())["type"] == "websocket.receive":
            await send({"type": "websocket.send", "text": message["text"]})

    port = free_port()
    bounded = type("Bounded", (BoundedHeadersProtocol,), {"header_timeout": 0.5})
    server = uvicorn.Server(
        uvicorn.Config(echo, host="127.0.0.1", port=port, http=bounded, lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        with connect(f"ws://127.0.0.1:{port}/") as websocket:
            time.sleep(1.5)  # three header deadlines
            websocket.send("still here")
            assert websocket.recv(timeout=5) == "still here"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_a_silent_connection_is_dropped(keyed: ApiServer) -> None:
    """A client that connects and sends nothing is not kept."""
    with socket.create_connection(("127.0.0.1", port_of(keyed))) as sock:
        assert closed_within_bound(sock) == b""


def test_a_half_sent_body_gets_408_and_is_dropped(keyed: ApiServer) -> None:
    """A declared body that stops arriving is answered 408 and the connection closed."""
    with socket.create_connection(("127.0.0.1", port_of(keyed))) as sock:
        sock.sendall(
            b"POST /generate/name HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            + f"{HEADER}: {keyed.key}\r\n".encode()
            + b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
            + b'{"name": "An'
        )
        answer = closed_within_bound(sock)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"request_timeout" in answer
    # The server still serves others.
    assert keyed.client().get("/jobs").status_code == 200
