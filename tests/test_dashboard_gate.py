"""The access gate as ASGI in front of a stand-in app, with real sessions in SQLite.

The real server and browser are in tests/security/; here each rule is pinned on its own.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.types import Scope
from starlette.websockets import WebSocket, WebSocketDisconnect

from hybrid_audio.api.dashboard_gate import AccessGate
from hybrid_audio.api.session import COOKIE
from hybrid_audio.database import Database
from hybrid_audio.sessions import FailureLimiter, SessionStore

ORIGIN = "http://testserver"


async def _page(request) -> PlainTextResponse:
    return PlainTextResponse(f"inside {request.url.path}")


async def _socket(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text("hello")
    await websocket.close()


INNER = Starlette(
    routes=[
        Route("/dashboard", _page),
        Route("/static/x.js", _page),
        Route("/components/{path:path}", _page),  # Panel would import the module named
        Route("/health", _page),
        Route("/docs", _page),
        Route("/jobs", _page, methods=["GET", "POST"]),
        WebSocketRoute("/dashboard/ws", _socket),
    ]
)


class PanelStandIn:
    """Owns /static/… and /components/…, as the mounted Panel app does."""

    def handles(self, scope: Scope) -> bool:
        return scope["path"].startswith(("/static/", "/components/"))


@pytest.fixture
def make_client(tmp_path: Path):
    database = Database(tmp_path / "state.sqlite3")

    def make(key: str, limit: int = 3) -> TestClient:
        gate = AccessGate(
            INNER,
            key=key,
            sessions=SessionStore(database, ttl_seconds=3600),
            limiter=FailureLimiter(database, limit=limit, window=60),
            dashboard=PanelStandIn(),
            docs_paths=frozenset({"/docs"}),
        )
        return TestClient(gate, follow_redirects=False, headers={"origin": ORIGIN})

    return make


def sign_in(client: TestClient, key: str):
    return client.post("/dashboard/login", data={"key": key})


def test_without_a_key_everything_passes(make_client) -> None:
    c = make_client("")
    assert c.get("/dashboard").text == "inside /dashboard"
    with c.websocket_connect("/dashboard/ws") as ws:
        assert ws.receive_text() == "hello"


def test_no_session_redirects_to_the_login_page(make_client) -> None:
    c = make_client("s3cret")
    for path in ("/dashboard", "/static/x.js"):  # the app's resources too
        answer = c.get(path)
        assert answer.status_code == 303, path
        assert answer.headers["location"] == "/dashboard/login"
    page = c.get("/dashboard/login")
    assert page.status_code == 200
    assert 'type="password" name="key"' in page.text
    assert "inside" not in page.text


def test_wrong_key_is_refused_and_right_key_gets_a_random_session(make_client) -> None:
    c = make_client("s3cret")
    assert sign_in(c, "nope").status_code == 401
    assert COOKIE not in c.cookies
    answer = sign_in(c, "s3cret")
    assert answer.status_code == 303
    cookie = answer.headers["set-cookie"]
    for attribute in ("HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=3600"):
        assert attribute in cookie
    first = c.cookies[COOKIE]
    assert "s3cret" not in cookie
    assert c.get("/dashboard").text == "inside /dashboard"
    with c.websocket_connect("/dashboard/ws") as ws:
        assert ws.receive_text() == "hello"
    sign_in(c, "s3cret")
    assert c.cookies[COOKIE] != first  # a new id per login, not a function of the key


def test_a_forged_cookie_opens_nothing(make_client) -> None:
    c = make_client("s3cret")
    c.cookies.set(COOKIE, "x" * 43)
    assert c.get("/dashboard").status_code == 303
    with pytest.raises(WebSocketDisconnect), c.websocket_connect("/dashboard/ws") as ws:
        ws.receive_text()


def test_logout_ends_the_session(make_client) -> None:
    c = make_client("s3cret")
    sign_in(c, "s3cret")
    token = c.cookies[COOKIE]
    answer = c.post("/dashboard/logout")
    assert answer.status_code == 303
    assert "Max-Age=0" in answer.headers["set-cookie"]
    c.cookies.set(COOKIE, token)  # a copy kept by whoever stole it
    assert c.get("/dashboard").status_code == 303


def test_login_failures_are_limited_per_client(make_client) -> None:
    c = make_client("s3cret", limit=3)
    assert [sign_in(c, "nope").status_code for _ in range(3)] == [401, 401, 429]
    answer = sign_in(c, "s3cret")  # even the right key, or the refusal would leak it
    assert answer.status_code == 429
    assert int(answer.headers["retry-after"]) >= 1


def test_docs_need_the_key_or_a_session(make_client) -> None:
    c = make_client("s3cret")
    assert c.get("/docs").status_code == 401
    assert c.get("/docs", headers={"X-Internal-API-Key": "s3cret"}).status_code == 200
    sign_in(c, "s3cret")
    assert c.get("/docs").status_code == 200


def test_cross_origin_changes_and_sockets_are_refused(make_client) -> None:
    c = make_client("")
    other = {"origin": "http://127.0.0.1:9999"}
    assert c.post("/jobs", headers=other).status_code == 403
    assert c.post("/jobs", headers={"sec-fetch-site": "same-site"}).status_code == 403
    assert c.get("/jobs", headers=other).status_code == 200  # reading is not changing
    with (
        pytest.raises(WebSocketDisconnect),
        c.websocket_connect("/dashboard/ws", headers=other) as ws,
    ):
        ws.receive_text()


def test_other_hosts_are_refused_without_a_key(make_client) -> None:
    c = make_client("")
    answer = c.get("/health", headers={"host": "rebound.example"})
    assert answer.status_code == 421
    assert "DNS rebinding" in answer.json()["error"]["message"]


def test_components_answer_one_404_for_any_module(make_client) -> None:
    c = make_client("")
    for path in ("/components/os/path/a/b", "/components/no_such/x/y/z", "/components/../a/b/c"):
        assert c.get(path).status_code == 404, path
