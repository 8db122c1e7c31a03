"""The storage routes of the real `hybrid-audio-server` against a real `gcp-storage-emulator`.

`/cache/bucket_list`, `/cache/check_in_bucket`, `/storage`, `/storage/sync`, the `remote`
flag of `/cache/invalidate` and `/health`'s storage block, in both modes; a bucket that
cannot be reached (503 naming it, while local work goes on); and two servers on two base
dirs sharing one bucket, where the second synthesizes nothing the first made.

Servers synthesize with the Cartesia engine pointed at a local fake (tests/fakes), one fake
per server: its request counter is the observable "this server synthesized N stems", and
two fakes with the same voice give the same voice contract, so stems are shareable. Objects
are planted, damaged or removed with the real client straight on the emulator's bucket.
"""

# ruff: noqa: F811  (fixtures are imported by name)

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from google.cloud import storage as gcs

from hybrid_audio.stems import stem_path
from hybrid_audio.storage.base import stem_object_name
from tests.api_server import (  # noqa: F401  (fixtures are used by name)
    HEADER,
    ApiServer,
    free_port,
    server_factory,
    start_server,
)
from tests.fakes.cartesia import API_KEY as CARTESIA_KEY
from tests.fakes.cartesia import DEFAULT_VOICE, FakeCartesia
from tests.gcs_emulator import Emulator, gcs_bucket, gcs_emulator  # noqa: F401

#: The routes this issue adds (all behind the key).
STORAGE_ROUTES = [
    ("GET", "/cache/bucket_list"),
    ("GET", "/cache/check_in_bucket"),
    ("GET", "/storage"),
    ("POST", "/storage/sync"),
]
FINAL = {"done", "failed", "cancelled", "interrupted"}


# --- helpers ------------------------------------------------------------------------------


def error_of(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The envelope's `error` object, after checking the status and the code."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    assert body["error"]["code"] == code, body
    return body["error"]


def bucket_env(url: str, bucket: str, **extra: str) -> dict[str, str]:
    """GCS mode on `bucket` at the emulator `url`, retrying for at most 1 s."""
    return {
        "GCS_BUCKET": bucket,
        "STORAGE_EMULATOR_HOST": url,
        "GCS_RETRY_DEADLINE": "1",
        **extra,
    }


def cartesia_env(fake: FakeCartesia) -> dict[str, str]:
    return {
        "TTS_ENGINE": "cartesia",
        "CARTESIA_API_KEY": CARTESIA_KEY,
        "CARTESIA_VOICE_ID": DEFAULT_VOICE,
        "CARTESIA_BASE_URL": fake.base_url,
    }


@pytest.fixture
def fakes() -> Iterator[Callable[[], FakeCartesia]]:
    """`new()` → a started fake Cartesia, stopped at teardown."""
    started: list[FakeCartesia] = []

    def new() -> FakeCartesia:
        started.append(FakeCartesia().start())
        return started[-1]

    yield new
    for fake in started:
        fake.stop()


def wait_job(client: httpx.Client, job: dict[str, Any], timeout: float = 60) -> dict[str, Any]:
    """The job's last snapshot once it ended."""
    deadline = time.monotonic() + timeout
    while job["state"] not in FINAL:
        assert time.monotonic() < deadline, job
        time.sleep(0.1)
        job = client.get(f"/jobs/{job['id']}").json()
    return job


def wait_uploaded(client: httpx.Client, timeout: float = 30) -> dict[str, Any]:
    """`GET /storage` once the upload queue is empty."""
    deadline = time.monotonic() + timeout
    while (status := client.get("/storage").json())["pending"]:
        assert time.monotonic() < deadline, status
        time.sleep(0.1)
    return status


def generate_names(client: httpx.Client, *names: str) -> dict[str, dict[str, Any]]:
    """Each name's stem record, by name."""
    stems = {}
    for name in names:
        response = client.post("/generate/name", json={"name": name})
        assert response.status_code == 200, response.text
        stems[name] = response.json()["stem"]
    return stems


def plant(bucket: gcs.Bucket, names: list[str]) -> None:
    """Stem-shaped objects with metadata (a percent-encoded text), uploaded directly."""
    for i, name in enumerate(names):
        blob = bucket.blob(name)
        blob.metadata = {"stem_id": f"stem.name.x{i}", "text": quote(f"José {i}", safe=" ")}
        blob.upload_from_string(b"RIFF" + bytes([i]) * 64, content_type="audio/wav")


# --- /health ------------------------------------------------------------------------------


def test_health_shows_the_storage_mode_in_both_modes(
    server_factory: Callable[..., ApiServer], gcs_emulator: Emulator, gcs_bucket: str
) -> None:
    local = server_factory()
    assert httpx.get(f"{local.base_url}/health").json()["storage"] == {
        "mode": "local",
        "bucket": None,
        "prefix": "",
    }
    remote = server_factory(env=bucket_env(gcs_emulator.url, gcs_bucket, GCS_PREFIX="team-a"))
    assert httpx.get(f"{remote.base_url}/health").json()["storage"] == {
        "mode": "gcs",
        "bucket": gcs_bucket,
        "prefix": "team-a/",
    }


# --- the key ------------------------------------------------------------------------------


def test_storage_routes_need_the_key(
    server_factory: Callable[..., ApiServer], gcs_emulator: Emulator, gcs_bucket: str
) -> None:
    server = server_factory(key="storage-key", env=bucket_env(gcs_emulator.url, gcs_bucket))
    for method, path in STORAGE_ROUTES:
        body = {"direction": "push"} if method == "POST" else None
        for headers in ({}, {HEADER: "storage-kez"}):
            answer = httpx.request(method, server.base_url + path, json=body, headers=headers)
            error_of(answer, 401, "unauthorized")
        answer = server.client().request(method, path, json=body)
        assert answer.status_code in (200, 202), (path, answer.text)
    # /health checks no key, so with one set it names the mode only; GET /storage the rest.
    assert httpx.get(f"{server.base_url}/health").json()["storage"] == {
        "mode": "gcs",
        "bucket": None,
        "prefix": "",
    }
    assert server.client().get("/storage").json()["storage"]["bucket"] == gcs_bucket


# --- bucket_list --------------------------------------------------------------------------


def test_bucket_list_pages_walk_every_object(
    server_factory: Callable[..., ApiServer], gcs_emulator: Emulator, gcs_bucket: str
) -> None:
    """7 objects at 3 a page: 3 pages, each object once, the last page without a token."""
    names = [f"stems/name/stem.name.x{i}.wav" for i in range(7)]
    plant(gcs_emulator.bucket(gcs_bucket), names)
    client = server_factory(env=bucket_env(gcs_emulator.url, gcs_bucket)).client()
    seen: list[str] = []
    pages = 0
    params: dict[str, Any] = {"prefix": "stems/name/", "limit": 3}
    while True:
        page = client.get("/cache/bucket_list", params=params)
        assert page.status_code == 200, page.text
        body = page.json()
        assert (body["mode"], body["bucket"]) == ("gcs", gcs_bucket)
        assert len(body["objects"]) <= 3
        seen += [o["name"] for o in body["objects"]]
        pages += 1
        if body["next_page_token"] is None:
            break
        params["page_token"] = body["next_page_token"]
    assert seen == names
    assert pages == 3
    first = client.get("/cache/bucket_list", params={"prefix": "stems/name/", "limit": 1}).json()
    info = first["objects"][0]
    assert info["size"] == 68
    assert info["crc32c"]
    assert info["updated"]
    assert info["metadata"] == {"stem_id": "stem.name.x0", "text": "Jos%C3%A9 0"}
    empty = client.get("/cache/bucket_list", params={"prefix": "stems/developer/"}).json()
    assert (empty["objects"], empty["next_page_token"]) == ([], None)


def test_bucket_list_refuses_bad_queries(
    server_factory: Callable[..., ApiServer], gcs_emulator: Emulator, gcs_bucket: str
) -> None:
    client = server_factory(env=bucket_env(gcs_emulator.url, gcs_bucket)).client()
    for params in ({"limit": 0}, {"limit": 1001}, {"prefix": "../state/"}, {"prefix": "x" * 600}):
        answer = client.get("/cache/bucket_list", params=params)
        error_of(answer, 422, "validation_error")


# --- check_in_bucket and invalidate -------------------------------------------------------


def test_check_in_bucket_finds_a_missing_object_and_invalidate_remote_deletes_it(
    server_factory: Callable[..., ApiServer],
    gcs_emulator: Emulator,
    gcs_bucket: str,
    fakes: Callable[[], FakeCartesia],
) -> None:
    env = bucket_env(gcs_emulator.url, gcs_bucket) | cartesia_env(fakes())
    client = server_factory(env=env).client()
    stems = generate_names(client, "Ann", "Bob")
    wait_uploaded(client)
    report = client.get("/cache/check_in_bucket").json()
    assert (report["mode"], report["ok"], report["rows"]) == ("gcs", True, [])
    assert report["checked_local"] >= 2

    bucket = gcs_emulator.bucket(gcs_bucket)
    bob = stems["Bob"]["stem_id"]
    bucket.blob(stem_object_name(bob)).delete()
    report = client.get("/cache/check_in_bucket").json()
    assert report["ok"] is False
    assert [(r["status"], r["stem_id"]) for r in report["rows"]] == [("missing_remote", bob)]
    assert report["summary"]["missing_remote"] == 1
    one = client.get("/cache/check_in_bucket", params={"stem_id": stems["Ann"]["stem_id"]})
    assert one.json()["ok"] is True, one.text
    error_of(
        client.get("/cache/check_in_bucket", params={"stem_id": "no"}), 422, "validation_error"
    )

    ann = stems["Ann"]["stem_id"]
    answer = client.post("/cache/invalidate", json={"stem_id": ann, "remote": True})
    assert answer.json() == {"stem_id": ann, "invalidated": True, "remote": True}
    assert not bucket.blob(stem_object_name(ann)).exists()
    assert ann not in {s["stem_id"] for s in client.get("/cache/list").json()}
    answer = client.post("/cache/invalidate", json={"stem_id": bob, "remote": True})
    assert answer.json() == {"stem_id": bob, "invalidated": True, "remote": False}


# --- sync ---------------------------------------------------------------------------------


def test_push_uploads_what_local_mode_made_and_pull_adopts_it_elsewhere(
    server_factory: Callable[..., ApiServer],
    gcs_emulator: Emulator,
    gcs_bucket: str,
    fakes: Callable[[], FakeCartesia],
) -> None:
    """Stems made without a bucket are missing remotely; a push job uploads them (202 with
    the job, as POST /generate/rotational answers); a pull on another base dir adopts the
    same bytes."""
    engine = cartesia_env(fakes())
    gcs_env = bucket_env(gcs_emulator.url, gcs_bucket) | engine
    local = server_factory(env=engine)
    stems = generate_names(local.client(), "Cara", "Dino")
    local.stop()
    with start_server(local.base_dir, env=gcs_env) as pusher:  # the same files, now with GCS
        client = pusher.client()
        before = client.get("/cache/check_in_bucket").json()
        missing = {r["stem_id"] for r in before["rows"] if r["status"] == "missing_remote"}
        assert {s["stem_id"] for s in stems.values()} <= missing
        answer = client.post("/storage/sync", json={"direction": "push"})
        assert answer.status_code == 202, answer.text
        job = answer.json()
        assert (job["kind"], job["params"]["direction"]) == ("storage_sync", "push")
        job = wait_job(client, job)
        assert job["state"] == "done", job
        assert job["result"]["transferred"] >= 2
        assert client.get("/cache/check_in_bucket").json()["ok"] is True

    puller = server_factory(env=gcs_env).client()
    job = wait_job(puller, puller.post("/storage/sync", json={"direction": "pull"}).json())
    assert job["state"] == "done", job
    adopted = {s["stem_id"]: s for s in puller.get("/cache/list?extended=true").json()}
    for stem in stems.values():
        assert adopted[stem["stem_id"]]["sha256"] == stem["sha256"]
    assert puller.get("/cache/check_in_bucket").json()["ok"] is True


def test_local_mode_refuses_sync_and_remote_invalidate_with_409(
    server_factory: Callable[..., ApiServer],
) -> None:
    client = server_factory().client()
    for answer in (
        client.post("/storage/sync", json={"direction": "pull"}),
        client.post("/cache/invalidate", json={"stem_id": "stem.name.ann", "remote": True}),
    ):
        error = error_of(answer, 409, "storage_not_configured")
        assert "GCS_BUCKET" in error["message"]
    error_of(client.post("/storage/sync", json={"direction": "sideways"}), 422, "validation_error")
    status = client.get("/storage").json()
    assert status["storage"] == {"mode": "local", "bucket": None, "prefix": ""}
    report = client.get("/cache/check_in_bucket").json()
    assert report["mode"] == "local"
    assert "no bucket" in report["note"]


# --- a bucket that cannot be reached ------------------------------------------------------


def test_unreachable_bucket_is_a_503_naming_it_while_local_work_goes_on(
    server_factory: Callable[..., ApiServer], fakes: Callable[[], FakeCartesia]
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    env = bucket_env(dead, "nowhere-bucket") | cartesia_env(fakes())
    server = server_factory(env=env)
    client = server.client()
    for path in ("/cache/bucket_list", "/cache/check_in_bucket"):
        started = time.monotonic()
        error = error_of(client.get(path), 503, "storage_unavailable")
        assert time.monotonic() - started < 15  # the retry deadline (1 s) bounds the wait
        assert "nowhere-bucket" in error["message"]
        assert error["details"] == {"bucket": "nowhere-bucket"}
    made = client.post("/generate/name", json={"name": "Offline Olga"})
    assert made.status_code == 200, made.text
    assert made.json()["stem"]["cached"] is False
    assert httpx.get(f"{server.base_url}/health").json()["storage"]["bucket"] == "nowhere-bucket"
    deadline = time.monotonic() + 15  # the uploader publishes its counters after a batch
    while not (status := client.get("/storage").json())["last_error"]:
        assert time.monotonic() < deadline, status
        time.sleep(0.2)
    assert status["pending"] >= 1  # kept for a later retry, never lost
    assert "nowhere-bucket" in status["last_error"]


# --- two servers, one bucket --------------------------------------------------------------


def test_a_second_server_synthesizes_nothing_the_first_made(
    server_factory: Callable[..., ApiServer],
    gcs_emulator: Emulator,
    gcs_bucket: str,
    fakes: Callable[[], FakeCartesia],
) -> None:
    """Server B, on its own base dir, answers with server A's stems and message bytes, and
    B's engine (its own fake Cartesia) receives no request at all."""
    message = {"template": "double_anchor", "name": "Ann", "developer": "Acme Homes"}
    fake_a, fake_b = fakes(), fakes()
    a = server_factory(env=bucket_env(gcs_emulator.url, gcs_bucket) | cartesia_env(fake_a))
    b = server_factory(env=bucket_env(gcs_emulator.url, gcs_bucket) | cartesia_env(fake_b))
    first, second = a.client(), b.client()
    made = first.post("/assemble/template", json=message)
    assert made.status_code == 200, made.text
    made_stems = {s["stem_id"]: s for s in first.get("/cache/list?extended=true").json()}
    assert fake_a.request_count == len(made_stems) >= 4  # hello, Ann, Acme Homes, offer
    wait_uploaded(first)

    again = second.post("/assemble/template", json=message)
    assert again.status_code == 200, again.text
    assert again.json()["sha256"] == made.json()["sha256"]
    assert again.json()["verified"] is True
    assert fake_b.request_count == 0
    stem = second.post("/generate/name", json={"name": "Ann"}).json()["stem"]
    assert stem["sha256"] == made_stems[stem["stem_id"]]["sha256"]
    copied = {s["stem_id"]: s["sha256"] for s in second.get("/cache/list?extended=true").json()}
    assert copied == {sid: s["sha256"] for sid, s in made_stems.items()}
    for stem_id in made_stems:  # the files themselves, byte for byte
        mine, theirs = (stem_path(stem_id, s.base_dir / "stems") for s in (a, b))
        assert mine.read_bytes() == theirs.read_bytes()
    assert fake_b.request_count == 0


def test_remote_is_a_strict_boolean(server_factory: Callable[..., ApiServer]) -> None:
    """`remote` deletes bucket objects: 1 or "true" are refused, not read as true."""
    client = server_factory().client()
    for value in (1, 0, "true"):
        body = {"stem_id": "stem.name.ann", "remote": value}
        error_of(client.post("/cache/invalidate", json=body), 422, "validation_error")
