"""`/campaigns` against the real `hybrid-audio-server` over loopback, with real Piper.

The server has tiny datasets (3 names, 2 developers, 3 scripts: tests/api_server.py), and
every list reuses a few names and developers, so a campaign costs a handful of syntheses.
What is proved: JSON and multipart lists become verified messages whose zip WAVs are the
outputs' bytes; refused rows keep their row numbers while the rest are made; rotation
campaigns and previews; whole-file errors (422), unknown ids (404), conflicts (409),
cancel/resume (also after a contract change), delete erasing files and rows, the campaign
body limit (above the general one, without raising it elsewhere), and the key on every
campaign route.
"""

from __future__ import annotations

import csv
import io
import secrets
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hybrid_audio.api.app import create_app
from hybrid_audio.config import Settings
from tests.api_server import (
    HEADER,
    NO_FAILURE_LIMIT,
    TINY_DATASETS,
    ApiServer,
    make_base_dir,
    start_server,
)

MIB = 1024 * 1024
#: Six recipients over the tiny datasets' 3 names × 2 developers, with ids.
SIX = [
    {"name": name, "developer": developer, "id": f"r{index}"}
    for index, (name, developer) in enumerate(
        ((n, d) for n in ("Ann", "Bob", "Cid") for d in ("Acme Homes", "Beta Builders")), 1
    )
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    base = make_base_dir(tmp_path_factory.mktemp("campaigns"), TINY_DATASETS)
    with start_server(base, key=secrets.token_urlsafe(24), env=NO_FAILURE_LIMIT) as server:
        yield server


@pytest.fixture(scope="module")
def client(server: ApiServer) -> httpx.Client:
    return server.client(timeout=60)


def wait_campaign(client: httpx.Client, started: dict[str, Any], timeout: float = 60) -> dict:
    """Follow the started campaign's job to its end; the campaign (with problems) then."""
    job_id, campaign_id = started["job"]["id"], started["campaign"]["id"]
    deadline = time.monotonic() + timeout
    while client.get(f"/jobs/{job_id}").json()["finished_at"] is None:
        assert time.monotonic() < deadline, f"campaign {campaign_id} still running"
        time.sleep(0.05)
    return client.get(f"/campaigns/{campaign_id}").json()


def started(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 202, response.text
    body = response.json()
    assert response.headers["location"] == f"/campaigns/{body['campaign']['id']}"
    assert body["campaign_id"] == body["campaign"]["id"]  # the key, top level too
    assert body["job"]["kind"] == "campaign"
    assert body["job"]["params"] == {"campaign_id": body["campaign"]["id"], "source": "api"}
    return body


def all_messages(client: httpx.Client, campaign_id: str) -> list[dict[str, Any]]:
    return client.get(f"/campaigns/{campaign_id}/messages", params={"limit": 1000}).json()


def upload(client: httpx.Client, path: str, data: bytes, filename: str = "list.csv", **form: str):
    media = "application/json" if filename.endswith(".json") else "text/csv"
    return client.post(path, files={"file": (filename, data, media)}, data=form)


def error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    return response.json()["error"]


# --- making campaigns ---------------------------------------------------------------------


def test_json_recipients_become_verified_messages_and_a_zip_of_their_bytes(
    client: httpx.Client,
) -> None:
    body = started(client.post("/campaigns", json={"template": "double_anchor", "recipients": SIX}))
    campaign = wait_campaign(client, body)
    assert campaign["state"] == "done"
    assert (campaign["total"], campaign["done"], campaign["failed"]) == (6, 6, 0)
    assert campaign["problems"] == []
    messages = all_messages(client, campaign["id"])
    assert [m["row"] for m in messages] == [1, 2, 3, 4, 5, 6]
    assert [m["recipient_id"] for m in messages] == [r["id"] for r in SIX]
    assert {m["output_id"] for m in messages} == {f"{campaign['id']}_{r:06d}" for r in range(1, 7)}
    assert all(m["state"] == "done" and m["verified"] for m in messages)
    for message in messages:  # proved again from disk by the assemble routes
        report = client.get(f"/assemble/outputs/{message['output_id']}/verify").json()
        assert report["ok"], report

    exported = client.get(f"/campaigns/{campaign['id']}/export.zip")
    assert exported.status_code == 200
    assert exported.headers["content-type"] == "application/zip"
    disposition = exported.headers["content-disposition"]
    assert disposition == f'attachment; filename="{campaign["id"]}.zip"'
    archive = zipfile.ZipFile(io.BytesIO(exported.content))
    assert archive.testzip() is None
    rows = list(csv.DictReader(io.StringIO(archive.read("messages.csv").decode("utf-8"))))
    assert [row["recipient_id"] for row in rows] == [r["id"] for r in SIX]
    for row in rows:
        audio = client.get(f"/assemble/outputs/{row['output_id']}/audio").content
        assert archive.read(row["file"]) == audio
        assert row["file"] == f"{row['recipient_id']}.wav"


def test_a_csv_upload_reports_bad_rows_by_number_and_makes_the_rest(client: httpx.Client) -> None:
    text = (
        "id,name,developer,notes\n"
        "a,Ann,Acme Homes,first\n"
        "b,,Acme Homes,empty name\n"  # row 2
        "c,🎉🎉,Beta Builders,emoji only\n"  # row 3
        "a,Bob,Beta Builders,duplicated id\n"  # row 4
        "e,Cid,,no developer\n"  # row 5
        "f,Cid,Beta Builders,last\n"
    )
    body = started(upload(client, "/campaigns", text.encode(), template="double_anchor"))
    campaign = wait_campaign(client, body)
    assert (campaign["total"], campaign["done"], campaign["failed"]) == (6, 2, 4)
    problems = {p["row"]: p for p in campaign["problems"]}
    assert sorted(problems) == [2, 3, 4, 5]
    assert "empty" in problems[2]["message"]
    assert "🎉" in problems[3]["message"]
    assert "duplicated" in problems[4]["message"]
    assert "row 1" in problems[4]["message"]
    assert problems[4]["recipient_id"] == "a"
    done = all_messages(client, campaign["id"])
    assert [(m["row"], m["state"], m["verified"]) for m in done if m["state"] == "done"] == [
        (1, "done", True),
        (6, "done", True),
    ]
    failed = client.get(f"/campaigns/{campaign['id']}/messages", params={"state": "failed"})
    assert [m["row"] for m in failed.json()] == [2, 3, 4, 5]
    assert failed.headers["x-total-count"] == "4"
    found = client.get(f"/campaigns/{campaign['id']}/messages", params={"search": "cid"}).json()
    assert [m["row"] for m in found] == [6]  # a refused row keeps no name
    pages = f"/campaigns/{campaign['id']}/messages"
    page = client.get(pages, params={"offset": 1, "limit": 2})
    assert [m["row"] for m in page.json()] == [2, 3]
    assert (page.headers["x-total-count"], page.headers["x-next-offset"]) == ("6", "3")
    last = client.get(pages, params={"offset": page.headers["x-next-offset"], "limit": 3})
    assert [m["row"] for m in last.json()] == [4, 5, 6]
    assert "x-next-offset" not in last.headers  # nothing follows
    failed_page = client.get(pages, params={"state": "failed", "offset": 1, "limit": 2})
    assert [m["row"] for m in failed_page.json()] == [3, 4]
    assert (failed_page.headers["x-total-count"], failed_page.headers["x-next-offset"]) == (
        "4",
        "3",
    )


def test_a_json_file_upload_with_a_script_column(client: httpx.Client) -> None:
    data = b'[{"name": "Ann", "developer": "Acme Homes", "script": "from"}]'
    body = started(upload(client, "/campaigns", data, "list.json", template="double_anchor"))
    assert wait_campaign(client, body)["done"] == 1
    [message] = all_messages(client, body["campaign"]["id"])
    assert message["script"] == "from"


def test_a_rotation_campaign_takes_the_pairs_its_preview_showed(client: httpx.Client) -> None:
    request = {"template": "double_anchor", "rotation": {"count": 4, "seed": 7}}
    first = client.post("/campaigns/preview", json=request).json()
    again = client.post("/campaigns/preview", json=request).json()
    assert first == again  # a preview takes no pairs
    assert (first["recipients"], first["problems"]) == (4, [])
    campaign = wait_campaign(client, started(client.post("/campaigns", json=request)))
    assert campaign["source"] == "rotation"
    assert (campaign["done"], campaign["failed"]) == (4, 0)
    made = [(m["name"], m["developer"]) for m in all_messages(client, campaign["id"])]
    assert made == [(r["name"], r["developer"]) for r in first["preview"]]
    following = client.post("/campaigns/preview", json=request).json()
    assert following["preview"] != first["preview"]  # the campaign took those four


def test_preview_counts_stems_to_make_and_cached(client: httpx.Client) -> None:
    recipients = [{"name": "Dora", "developer": "Acme Homes"}, {"name": "", "developer": "x"}]
    request = {"template": "double_anchor", "recipients": recipients}
    client.post("/generate/developer", json={"developer": "Acme Homes"}).raise_for_status()
    for key in ("hello", "offer"):
        client.post("/generate/script", json={"key": key}).raise_for_status()
    plan = client.post("/campaigns/preview", json=request).json()
    # hello, offer, Dora, Acme Homes: all but Dora are made now.
    assert (plan["recipients"], plan["distinct_stems"]) == (1, 4)
    assert (plan["cached_stems"], plan["to_make"]) == (3, 1)
    assert [p["row"] for p in plan["problems"]] == [2]
    listed = b"name,developer\nDora,Acme Homes\n"
    csv_plan = upload(client, "/campaigns/preview", listed, template="double_anchor")
    assert csv_plan.json()["to_make"] == 1
    wait_campaign(client, started(client.post("/campaigns", json=request)))
    plan = client.post("/campaigns/preview", json=request).json()
    assert (plan["cached_stems"], plan["to_make"]) == (4, 0)


def test_list_pages_like_jobs(client: httpx.Client) -> None:
    for _ in range(2):
        started(client.post("/campaigns", json={"template": "double_anchor", "recipients": SIX}))
    every = client.get("/campaigns", params={"limit": 1000})
    total = int(every.headers["x-total-count"])
    assert total == len(every.json()) >= 2
    page = client.get("/campaigns", params={"limit": 1})
    assert [c["id"] for c in page.json()] == [every.json()[0]["id"]]
    assert page.headers["x-next-offset"] == "1"
    assert "x-next-offset" not in client.get("/campaigns", params={"offset": total - 1}).headers


# --- refusals -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "data", "says"),
    [
        ("list.csv", b"first,second\nAnn,Acme Homes\n", "no name and no developer column"),
        ("list.csv", "name,developer\nJosé,Acme\n".encode("latin-1"), "not UTF-8"),
        ("list.json", b'{"name": "Ann"}', "must be a list"),
        ("list.json", b"[{", "not valid JSON"),
        ("list.xlsx", b"name,developer\nAnn,Acme Homes\n", ".csv or .json"),
        ("list.csv", b"name,developer\n", "holds no recipients"),
        ("list.csv", b"name,developer\n,Acme Homes\n\xf0\x9f\x8e\x89,Acme Homes\n", "row 1"),
    ],
)
def test_a_file_that_is_no_usable_list_is_422_naming_the_problem(
    client: httpx.Client, filename: str, data: bytes, says: str
) -> None:
    count = client.get("/campaigns").headers["x-total-count"]
    for path in ("/campaigns", "/campaigns/preview"):
        if path.endswith("preview") and says in ("holds no recipients", "row 1"):
            continue  # a preview shows an empty or all-refused list as it is
        found = error(upload(client, path, data, filename, template="double_anchor"), 422)
        assert says in found["message"], found
    assert client.get("/campaigns").headers["x-total-count"] == count  # nothing created


def test_a_list_whose_rows_are_all_refused_lists_them_in_details(client: httpx.Client) -> None:
    request = {"template": "double_anchor", "recipients": [{"name": ""}, {"developer": "x"}]}
    found = error(client.post("/campaigns", json=request), 422)
    assert [p["row"] for p in found["details"]] == [1, 2]


@pytest.mark.parametrize(
    "body",
    [
        {"template": "double_anchor"},
        {"template": "double_anchor", "recipients": SIX, "rotation": {"count": 1}},
        {"template": "double_anchor", "recipients": []},
        {"template": "double_anchor", "rotation": {"count": 0}},
        {"template": "double_anchor", "rotation": {"count": 100_001}},
        {"template": "double_anchor", "recipients": SIX, "join": "blend"},
        {"template": "", "recipients": SIX},
    ],
)
def test_bad_json_bodies_are_422(client: httpx.Client, body: dict[str, Any]) -> None:
    error(client.post("/campaigns", json=body), 422)


def test_multipart_needs_a_file_and_a_template(client: httpx.Client) -> None:
    no_file = client.post("/campaigns", data={"template": "double_anchor"}, files={"x": b""})
    assert "file" in error(no_file, 422)["message"]
    no_template = upload(client, "/campaigns", b"name,developer\nAnn,Acme Homes\n")
    assert "template" in error(no_template, 422)["message"]
    text = client.post(
        "/campaigns", content=b"name,developer", headers={"content-type": "text/csv"}
    )
    assert error(text, 415)["code"] == "unsupported_media_type"


def test_an_unknown_template_is_404(client: httpx.Client) -> None:
    error(client.post("/campaigns", json={"template": "nope", "recipients": SIX}), 404)


@pytest.mark.parametrize(
    ("method", "tail"),
    [
        ("GET", ""),
        ("GET", "/messages"),
        ("GET", "/export.zip"),
        ("POST", "/cancel"),
        ("POST", "/resume"),
        ("DELETE", ""),
    ],
)
def test_an_unknown_campaign_is_404(client: httpx.Client, method: str, tail: str) -> None:
    found = error(client.request(method, f"/campaigns/c0123456789ab{tail}"), 404)
    assert "c0123456789ab" in found["message"]


def test_body_limit_is_the_campaigns_own(client: httpx.Client) -> None:
    """9 MiB reaches the campaign parser (over the general 8 MiB); past 32 MiB is 413; other
    routes keep 8 MiB; more rows than MAX_RECIPIENTS is a 422 naming the limit."""
    padding = "x" * 9_000
    big = ("name,developer,notes\n" + f"Ann,Acme Homes,{padding}\n" * 1_050).encode()
    assert 9 * MIB < len(big) < 32 * MIB
    plan = upload(client, "/campaigns/preview", big, template="double_anchor")
    assert plan.status_code == 200, plan.text
    assert plan.json()["recipients"] == 1_050
    error(upload(client, "/campaigns", b"x" * (32 * MIB + 1), template="double_anchor"), 413)
    error(upload(client, "/external/datasets/name", big, "names.txt"), 413)
    rows = ("name,developer\n" + "Ann,Acme Homes\n" * 100_001).encode()
    assert (
        "100,000"
        in error(upload(client, "/campaigns", rows, template="double_anchor"), 422)["message"]
    )


def test_a_long_export_stays_whole_while_other_requests_run(
    server: ApiServer, client: httpx.Client
) -> None:
    """Over 500 rows (one SQLite read per 500) downloaded while four clients keep the
    threadpool busy: each chunk of the stream may come from another thread, and the zip
    must still be complete (it was cut: a connection used outside its own thread)."""
    text = "name,developer\nAnn,Acme Homes\n" + ",Acme Homes\n" * 1_500  # 1 made, 1,500 refused
    body = started(upload(client, "/campaigns", text.encode(), template="double_anchor"))
    campaign_id = wait_campaign(client, body)["id"]
    stop = threading.Event()

    def busy() -> None:
        with server.client(timeout=60) as other:
            while not stop.is_set():
                other.get(f"/campaigns/{campaign_id}")

    threads = [threading.Thread(target=busy) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(3):
            with client.stream("GET", f"/campaigns/{campaign_id}/export.zip") as response:
                assert response.status_code == 200
                data = b"".join(response.iter_bytes(1024))
            archive = zipfile.ZipFile(io.BytesIO(data))
            assert archive.testzip() is None
            rows = list(csv.DictReader(io.StringIO(archive.read("messages.csv").decode())))
            assert [int(row["row"]) for row in rows] == list(range(1, 1_502))
    finally:
        stop.set()
        for thread in threads:
            thread.join()


def test_a_long_json_list_is_read_off_the_event_loop(server: ApiServer) -> None:
    """A 100,000-row JSON body takes seconds to validate and check row by row: that work
    runs in the threadpool, so the server answers other requests meanwhile (it was done on
    the event loop, and every request — /health included — waited for it). Judged by order,
    not by a time limit: several /health answers arrive while the list is still being read
    (a blocked event loop answers none of them until the list is done)."""
    rows = [{"name": "Ann", "developer": "Acme Homes", "id": f"r{i}"} for i in range(100_000)]
    body = {"template": "double_anchor", "recipients": rows}
    answers: list[httpx.Response] = []
    done = threading.Event()

    def preview() -> None:
        with server.client(timeout=120) as poster:
            answers.append(poster.post("/campaigns/preview", json=body))
        done.set()

    poster = threading.Thread(target=preview)
    answered_meanwhile = 0
    with server.client(timeout=60) as other:
        other.get("/health")
        poster.start()
        time.sleep(0.5)  # the body is sent and being read
        while not done.is_set():
            other.get("/health")
            answered_meanwhile += not done.is_set()  # answered before the list was done
            time.sleep(0.05)
    poster.join()
    assert answers[0].status_code == 200, answers[0].text
    assert answers[0].json()["recipients"] == 100_000
    assert answered_meanwhile >= 3, f"only {answered_meanwhile} /health answers while reading"


# --- cancel, resume, delete ---------------------------------------------------------------


def test_cancel_then_resume_finishes_with_the_same_outputs(client: httpx.Client) -> None:
    # New names: their syntheses keep the job busy long enough to be cancelled.
    fresh = [{"name": f"Zed {word}", "developer": "Acme Homes"} for word in "abcdefgh"]
    body = started(
        client.post("/campaigns", json={"template": "double_anchor", "recipients": fresh})
    )
    campaign_id = body["campaign"]["id"]
    cancelled = client.post(f"/campaigns/{campaign_id}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    stopped = wait_campaign(client, body)
    # Cancelled while making the stems, which come before any message.
    assert (stopped["state"], stopped["done"]) == ("cancelled", 0)
    found = error(client.get(f"/campaigns/{campaign_id}/export.zip"), 409)
    assert "no finished message" in found["message"]

    resumed = started(client.post(f"/campaigns/{campaign_id}/resume"))
    assert resumed["campaign"]["state"] == "running"
    assert "running" in error(client.post(f"/campaigns/{campaign_id}/resume"), 409)["message"]
    error(client.delete(f"/campaigns/{campaign_id}"), 409)  # cancel it first
    finished = wait_campaign(client, resumed)
    assert (finished["state"], finished["done"], finished["failed"]) == ("done", 8, 0)
    messages = all_messages(client, campaign_id)
    assert [m["output_id"] for m in messages] == [f"{campaign_id}_{r:06d}" for r in range(1, 9)]
    assert all(m["verified"] for m in messages)
    assert "done" in error(client.post(f"/campaigns/{campaign_id}/resume"), 409)["message"]
    assert "done" in error(client.post(f"/campaigns/{campaign_id}/cancel"), 409)["message"]


def test_delete_erases_rows_files_and_jobs(server: ApiServer, client: httpx.Client) -> None:
    body = started(client.post("/campaigns", json={"template": "double_anchor", "recipients": SIX}))
    campaign = wait_campaign(client, body)
    campaign_id = campaign["id"]
    output = server.base_dir / "output"
    assert len(list(output.glob(f"{campaign_id}_*.wav"))) == 6
    assert (output / "campaigns" / campaign_id / "messages.csv").is_file()
    response = client.delete(f"/campaigns/{campaign_id}")
    assert (response.status_code, response.content) == (204, b"")
    error(client.get(f"/campaigns/{campaign_id}"), 404)
    error(client.get(f"/campaigns/{campaign_id}/messages"), 404)
    assert list(output.glob(f"{campaign_id}_*")) == []
    assert not (output / "campaigns" / campaign_id).exists()
    error(client.get(f"/assemble/outputs/{campaign_id}_000001"), 404)
    error(client.get(f"/jobs/{body['job']['id']}"), 404)
    error(client.delete(f"/campaigns/{campaign_id}"), 404)


def test_resume_after_a_contract_change_is_409_with_the_reason(tmp_path: Path) -> None:
    """A campaign cancelled under one contract cannot resume under another."""
    base = make_base_dir(tmp_path / "contract", TINY_DATASETS)
    key = secrets.token_urlsafe(24)
    request = {"template": "double_anchor", "recipients": SIX[:2]}
    with start_server(base, key=key) as first:
        client = first.client(timeout=60)
        body = started(client.post("/campaigns", json=request))
        client.post(f"/campaigns/{body['campaign']['id']}/cancel")
        stopped = wait_campaign(client, body)
        campaign_id = stopped["id"]
        assert stopped["state"] == "cancelled"
    with start_server(base, key=key, env={"AUDIO_SAMPLE_RATE": "16000"}) as changed:
        client = changed.client(timeout=60)
        refusal = error(client.post(f"/campaigns/{campaign_id}/resume"), 409)
        assert "contract changed" in refusal["message"]


# --- the key ------------------------------------------------------------------------------


def campaign_routes() -> list[tuple[str, str]]:
    """Every campaign operation the server publishes."""
    with tempfile.TemporaryDirectory() as folder:
        paths = create_app(Settings(base_dir=folder)).openapi()["paths"]
    return sorted(
        (method.upper(), path)
        for path, operations in paths.items()
        if path.startswith("/campaigns")
        for method in operations
    )


def test_every_campaign_route_needs_the_key(server: ApiServer) -> None:
    routes = campaign_routes()
    assert len(routes) == 9
    for method, path in routes:
        url = server.base_url + path.replace("{campaign_id}", "c0123456789ab")
        for headers in ({}, {HEADER: server.key + "x"}):
            files = {"file": ("list.csv", b"name,developer\nAnn,Acme Homes\n", "text/csv")}
            sent = files if method == "POST" else None
            response = httpx.request(method, url, headers=headers, files=sent, timeout=30)
            assert response.status_code == 401, (method, path, response.text)
            assert response.json()["error"]["code"] == "unauthorized"
