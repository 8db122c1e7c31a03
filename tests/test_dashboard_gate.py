"""The dashboard's login gate, as ASGI in front of a stand-in for the Panel app."""

from __future__ import annotations

import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket, WebSocketDisconnect

from hybrid_audio.api.dashboard_gate import DashboardGate
from hybrid_audio.api.session import COOKIE, session_token


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
        Route("/health", _page),
        WebSocketRoute("/dashboard/ws", _socket),
    ]
)


def client(key: str) -> TestClient:
    return TestClient(DashboardGate(INNER, key=key), follow_redirects=False)


def test_without_a_key_everything_passes() -> None:
    c = client("")
    assert c.get("/dashboard").text == "inside /dashboard"
    with c.websocket_connect("/dashboard/ws") as ws:
        assert ws.receive_text() == "hello"


def test_no_session_redirects_to_the_login_page() -> None:
    c = client("s3cret")
    answer = c.get("/dashboard")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/dashboard/login"
    page = c.get("/dashboard/login")
    assert page.status_code == 200
    assert 'type="password" name="key"' in page.text
    assert "inside" not in page.text


def test_wrong_key_is_refused_and_right_key_gets_in() -> None:
    c = client("s3cret")
    assert c.post("/dashboard/login", data={"key": "nope"}).status_code == 401
    assert COOKIE not in c.cookies
    answer = c.post("/dashboard/login", data={"key": "s3cret"})
    assert answer.status_code == 303
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert "s3cret" not in cookie  # a keyed hash, never the key
    assert c.get("/dashboard").text == "inside /dashboard"
    with c.websocket_connect("/dashboard/ws") as ws:
        assert ws.receive_text() == "hello"


def test_a_forged_cookie_does_not_open_the_socket() -> None:
    c = client("s3cret")
    c.cookies.set(COOKIE, session_token("other-key"))
    assert c.get("/dashboard").status_code == 303
    with pytest.raises(WebSocketDisconnect), c.websocket_connect("/dashboard/ws") as ws:
        ws.receive_text()


def test_other_paths_are_not_the_gates_business() -> None:
    c = client("s3cret")
    assert c.get("/static/x.js").text == "inside /static/x.js"
    assert c.get("/health").status_code == 200


def test_the_session_cookie_also_opens_the_api(tmp_path) -> None:
    """So the dashboard's <audio> players can load /…/audio by URL behind a key."""
    from hybrid_audio.api.app import create_app
    from hybrid_audio.config import Settings

    app = create_app(Settings(base_dir=tmp_path, internal_api_key="k"))
    with TestClient(app) as c:
        assert c.get("/jobs").status_code == 401
        c.cookies.set(COOKIE, session_token("wrong"))
        assert c.get("/jobs").status_code == 401
        c.cookies.set(COOKIE, session_token("k"))
        assert c.get("/jobs").status_code == 200
