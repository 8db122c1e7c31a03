"""Hostile inputs against the real server: dataset uploads, stream hang-ups, persisted jobs.

Each test acts as an attacker or a careless operator would, over HTTP, against
`hybrid-audio-server` in a subprocess (tests/api_server.py).
"""

from __future__ import annotations

import json
import socket
import sqlite3
import time
from contextlib import closing
from pathlib import Path

import httpx
import pytest

from hybrid_audio.api.models import MAX_PAGE
from hybrid_audio.api.routers.rotation import STREAM_LOSS_BOUND
from hybrid_audio.datasets import MAX_ENTRY_CHARS, MAX_IMPORT_BYTES, MAX_IMPORT_ENTRIES
from tests import api_server
from tests.api_server import ApiServer, start_server

#: Fixtures used by name.
server_factory = api_server.server_factory

scratch_server, scratch = api_server.scratch_server, api_server.scratch

#: Invisible characters an attacker hides in a name: controls, bidi overrides and isolates,
#: zero-width characters, an inner BOM, line/paragraph separators.
INVISIBLE = [
    "\x00",
    "\x1b",
    "\t",
    "\x7f",
    "\x85",
    "\x1c",
    "\u202e",
    "\u202a",
    "\u2066",
    "\u200b",
    "\u200d",
    "\ufeff",
    "\u2028",
    "\u2029",
]


def _body(entries: list[str], suffix: str) -> bytes:
    if suffix == ".json":
        return json.dumps(entries).encode()
    if suffix == ".csv":
        return ("name\n" + "".join(f'"{e}"\n' for e in entries)).encode()
    return "".join(f"{e}\n" for e in entries).encode()


def _upload(client: httpx.Client, kind: str, filename: str, body: bytes) -> httpx.Response:
    return client.post(f"/external/datasets/{kind}", files={"file": (filename, body)})


def _names(client: httpx.Client) -> list[str]:
    return [item["text"] for item in client.get("/external/datasets/name").json()["items"]]


@pytest.mark.parametrize("suffix", [".txt", ".csv", ".json"])
@pytest.mark.parametrize("char", INVISIBLE, ids=[f"U+{ord(c):04X}" for c in INVISIBLE])
def test_invisible_characters_in_names_are_refused_with_their_line(
    scratch: httpx.Client, char: str, suffix: str
) -> None:
    """An upload hiding a control or bidi character in a name is refused whole, naming the line."""
    before = _names(scratch)
    entries = ["Ana", f"Bo{char}b", "Cid", f"{char}Dee"]
    response = _upload(scratch, "name", f"names{suffix}", _body(entries, suffix))
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    unit = "item" if suffix == ".json" else "line"
    first_line = 1 if suffix == ".csv" else 0  # the csv header is line 1
    assert [p[unit] for p in error["details"]] == [2 + first_line, 4 + first_line]
    assert f"U+{ord(char):04X}" in error["message"]
    assert f"{unit} {2 + first_line}" in error["message"]
    assert char not in error["message"]
    assert _names(scratch) == before


def test_a_lone_surrogate_escaped_in_json_is_refused(scratch: httpx.Client) -> None:
    """A JSON escape that decodes to half a UTF-16 pair cannot reach the dataset file (no 500)."""
    response = _upload(scratch, "name", "names.json", b'["Ana", "B\\ud800b"]')
    assert response.status_code == 422, response.text
    assert response.json()["error"]["details"] == [
        {"item": 2, "reason": "invisible character U+D800 (lone surrogate) is not allowed"}
    ]


def test_control_characters_in_script_keys_are_refused(scratch: httpx.Client) -> None:
    """A script key is shown and sent back by clients: it may not hide controls either."""
    body = json.dumps({"hello": "Hi", "of\u202efer": "has an offer"}).encode()
    response = _upload(scratch, "script", "scripts.json", body)
    assert response.status_code == 422, response.text
    assert [p["item"] for p in response.json()["error"]["details"]] == [2]


@pytest.mark.parametrize(
    ("kind", "body"),
    [
        ("name", b"[" * 100_000),
        ("name", b"[" * 100_000 + b"]" * 100_000),
        ("script", b'{"a":' * 100_000),
        ("name", b'["Ana", ' + b"[" * 50_000 + b"]" * 50_000 + b"]"),
    ],
    ids=["open-lists", "closed-lists", "objects", "nested-item"],
)
def test_deeply_nested_json_is_a_422_not_a_crash(
    scratch: httpx.Client, kind: str, body: bytes
) -> None:
    """A JSON nesting bomb is refused as invalid input; the server keeps answering."""
    response = _upload(scratch, kind, "bomb.json", body)
    assert response.status_code == 422, response.text
    assert len(response.text) < 2_000  # the message quotes no megabyte of brackets
    assert scratch.get("/external/datasets").status_code == 200


def test_an_upload_over_the_size_limit_is_refused_naming_it(scratch: httpx.Client) -> None:
    """A dataset larger than MAX_IMPORT_BYTES is 413, and the message says the limit."""
    body = b"Ana\n" * (MAX_IMPORT_BYTES // 4 + 1)
    response = _upload(scratch, "name", "big.txt", body)
    assert response.status_code == 413, response.text
    assert str(MAX_IMPORT_BYTES) in response.json()["error"]["message"]


@pytest.mark.parametrize("suffix", [".txt", ".csv", ".json"])
def test_an_upload_over_the_line_limit_is_refused_naming_it(
    scratch: httpx.Client, suffix: str
) -> None:
    """More than MAX_IMPORT_ENTRIES lines or items is refused, and the message says the limit."""
    entries = [f"n{i}" for i in range(MAX_IMPORT_ENTRIES + 1)]
    response = _upload(scratch, "name", f"many{suffix}", _body(entries, suffix))
    assert response.status_code == 422, response.text
    assert str(MAX_IMPORT_ENTRIES) in response.json()["error"]["message"]


def test_an_over_long_name_is_refused_with_its_line(scratch: httpx.Client) -> None:
    """A 'name' of thousands of characters is refused, naming its line and the limit."""
    response = _upload(scratch, "name", "long.txt", b"Ana\n" + b"x" * 5000 + b"\n")
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["details"] == [
        {"line": 2, "reason": f"5000 characters; at most {MAX_ENTRY_CHARS}"}
    ]


def test_dataset_listing_reveals_no_absolute_server_path(
    scratch_server: ApiServer, scratch: httpx.Client
) -> None:
    """GET /external/datasets shows paths relative to the base dir, even in its errors."""
    listing = scratch.get("/external/datasets")
    assert listing.status_code == 200
    paths = {info["kind"]: info["path"] for info in listing.json()}
    assert paths == {
        "name": "data/common_names.txt",
        "developer": "data/developer_names.txt",
        "script": "data/scripts.json",
    }
    missing = scratch_server.base_dir / "data" / "developer_names.txt"
    saved = missing.read_bytes()
    missing.unlink()
    try:
        listing = scratch.get("/external/datasets")
        one = scratch.get("/external/datasets/developer")
    finally:
        missing.write_bytes(saved)
    base = str(scratch_server.base_dir)
    assert listing.status_code == 200
    assert base not in listing.text
    assert "data/developer_names.txt: dataset file not found" in listing.text
    assert one.status_code == 422
    assert base not in one.text


# --- streams: a reader that hangs up -------------------------------------------------------


def _served(client: httpx.Client, stream: str) -> int:
    """Positions of `stream` handed out so far (over all cycles)."""
    state = client.get("/rotation/state").json()[stream]
    return state["cycle"] * state["size"] + state["position"]


def _settled(client: httpx.Client, stream: str, deadline: float = 60.0) -> int:
    """`_served` once it stopped moving: the server wrote all it will for a stalled reader."""
    last, end = -1, time.monotonic() + deadline
    while time.monotonic() < end:
        now = _served(client, stream)
        if now == last:
            return now
        last = now
        time.sleep(0.5)
    raise AssertionError(f"the {stream} stream kept advancing for {deadline} s with no reader")


@pytest.mark.parametrize(
    ("route", "stream"), [("pairs_stream", "pair"), ("scripts_stream", "script")]
)
def test_a_reader_that_hangs_up_costs_at_most_the_stated_bound(
    scratch_server: ApiServer, scratch: httpx.Client, route: str, stream: str
) -> None:
    """A client that reads 10 of 100,000 lines, stalls and hangs up loses ≤ STREAM_LOSS_BOUND."""
    before = _served(scratch, stream)
    # The reader's own kernel buffer is its business; a small one measures the server's.
    small = [(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)]
    transport = httpx.HTTPTransport(socket_options=small)
    with (
        httpx.Client(
            base_url=scratch_server.base_url,
            headers=scratch_server.headers(),
            transport=transport,
            timeout=30,
        ) as reader,
        reader.stream("GET", f"/rotation/{route}", params={"count": 100_000}) as response,
    ):
        assert response.status_code == 200
        reading = response.iter_lines()  # kept open: breaking out of a loop would hang up
        lines = [json.loads(next(reading)) for _ in range(10)]
        stalled = _settled(scratch, stream)  # the reader stalls while the server runs ahead
    after = _settled(scratch, stream)
    served = [(step["cycle"], step["position"]) for step in lines]
    assert len(set(served)) == 10
    assert stalled - before - 10 <= STREAM_LOSS_BOUND
    assert after - before - 10 <= STREAM_LOSS_BOUND
    following = scratch.get(f"/rotation/next_{'pair' if stream == 'pair' else 'script'}").json()
    assert (following["cycle"], following["position"]) not in served


# --- jobs: persisted, bounded, and honest after a crash -----------------------------------


def _wait_state(client: httpx.Client, job_id: str, states: set[str], timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = client.get(f"/jobs/{job_id}").json()
        if info["state"] in states and info.get("done", 0) >= 1:
            return info
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} not in {states} after {timeout} s: {info}")


def _wait_row_progress(base_dir: Path, job_id: str, timeout: float = 30) -> None:
    """Wait until the job's row (what another process reads) records a finished step."""
    deadline = time.monotonic() + timeout
    with closing(sqlite3.connect(base_dir / "state" / "hybrid_audio.sqlite3")) as db:
        while time.monotonic() < deadline:
            row = db.execute("SELECT done FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row and row[0] >= 1:
                return
            time.sleep(0.05)
    raise AssertionError(f"job {job_id}: no progress in its row after {timeout} s")


def _long_bulk_job(client: httpx.Client) -> str:
    names = [f"Interrupted Person Number {i}" for i in range(3000)]
    response = client.post("/cache/bulk_generate", json={"names": names, "developers": []})
    assert response.status_code == 202, response.text
    return response.json()["id"]


@pytest.mark.slow
def test_a_job_killed_with_its_server_shows_as_interrupted_after_restart(
    server_factory,
) -> None:
    """kill -9 mid-job, restart on the same folder: the job is interrupted, not 404."""
    first = server_factory(key="k" * 32)
    job_id = _long_bulk_job(first.client())
    running = _wait_state(first.client(), job_id, {"running"})
    assert running["params"] == {"source": "api", "names": 3000, "developers": 0}
    _wait_row_progress(first.base_dir, job_id)  # progress reaches the row at most every 0.25 s
    first.process.kill()
    first.process.wait(timeout=10)
    with start_server(first.base_dir, key=first.key) as second:
        client = second.client()
        info = client.get(f"/jobs/{job_id}").json()
        assert info["state"] == "interrupted", info
        assert f"pid {first.process.pid}" in info["message"]
        assert info["done"] >= 1
        assert info["finished_at"] is not None
        assert job_id in [j["id"] for j in client.get("/jobs").json()]


@pytest.mark.slow
def test_a_second_server_on_the_folder_sees_and_cancels_the_first_ones_job(
    server_factory,
) -> None:
    """Two server processes share one job store: either can report or stop a job."""
    first = server_factory(key="k" * 32)
    with start_server(first.base_dir, key=first.key) as second:
        job_id = _long_bulk_job(first.client())
        seen = _wait_state(second.client(), job_id, {"running"})
        assert seen["owner_pid"] == first.process.pid
        assert second.client().post(f"/jobs/{job_id}/cancel").status_code == 200
        deadline = time.monotonic() + 30
        while (info := first.client().get(f"/jobs/{job_id}").json())["state"] == "running":
            assert time.monotonic() < deadline, info
            time.sleep(0.05)
        assert info["state"] == "cancelled"
        assert info["done"] < 3000


def test_job_and_output_lists_are_pages_with_a_maximum(scratch: httpx.Client) -> None:
    """A list route never answers with an unbounded body: pages of at most MAX_PAGE rows."""
    for _ in range(3):
        response = scratch.post("/cache/bulk_generate", json={"names": [], "developers": []})
        assert response.status_code == 202
    page = scratch.get("/jobs", params={"limit": 2})
    assert page.status_code == 200
    assert len(page.json()) == 2
    total = int(page.headers["x-total-count"])
    assert total >= 3
    assert page.headers["x-next-offset"] == "2"
    rest = scratch.get("/jobs", params={"offset": 2, "limit": MAX_PAGE}).json()
    assert len(rest) == total - 2
    assert {j["id"] for j in rest}.isdisjoint(j["id"] for j in page.json())
    for route in ("/jobs", "/assemble/outputs"):
        assert scratch.get(route, params={"limit": MAX_PAGE + 1}).status_code == 422
        assert scratch.get(route, params={"limit": 0}).status_code == 422
        assert scratch.get(route, params={"offset": -1}).status_code == 422

    body = {"template": "double_anchor", "name": "Paged", "developer": "Paging Homes"}
    made = [scratch.post("/assemble/template", json=body).json()["id"] for _ in range(3)]
    outputs = scratch.get("/assemble/outputs", params={"limit": 2})
    assert [o["id"] for o in outputs.json()] == made[::-1][:2]  # newest first
    assert outputs.headers["x-total-count"] == "3"
    assert outputs.headers["x-next-offset"] == "2"
    last = scratch.get("/assemble/outputs", params={"offset": 2, "limit": 2})
    assert [o["id"] for o in last.json()] == [made[0]]
    assert "x-next-offset" not in last.headers
