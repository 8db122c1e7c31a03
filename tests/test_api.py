"""The HTTP API, proved against the real `hybrid-audio-server` over loopback.

Every claim of the issue gets a test here: each route works; the key rules (401 envelope,
`/health` open; the constant-time compare is pinned in tests/security/test_promises.py and
measured in benchmarks/bench_auth_timing.py); the error envelope and its statuses; no
stack trace reaches a client; body and upload limits (chunked bodies too); NDJSON that
streams; Range requests; upload validation; job progress and cancel; and the refusal to
bind a public address without a key. Servers come from `tests/api_server.py` (subprocesses
with their own base directories). Tests of bugs this suite found stay as regression tests;
a bug still open is a strict xfail whose reason says what is wrong.
"""

# The server fixtures are imported from tests/api_server.py (not a conftest), so pytest sees
# them here; their use as parameters is what ruff's F811 would call a redefinition.
# ruff: noqa: F811

from __future__ import annotations

import hashlib
import json
import re
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hybrid_audio.api import auth
from tests.api_server import (  # noqa: F401  (fixtures are used by name)
    HEADER,
    SERVER,
    ApiServer,
    api,
    api_server,
    free_port,
    limited_server,
    make_base_dir,
    scratch,
    scratch_server,
    server_env,
    server_factory,
    start_server,
)
from tests.fakes.cartesia import API_KEY as CARTESIA_KEY
from tests.fakes.cartesia import DEFAULT_VOICE, FakeCartesia

#: Every (method, path) the server publishes; test_every_published_route_is_listed_here
#: fails when a route is added without being added here (and tested).
ROUTES = {
    ("GET", "/health"),
    ("POST", "/generate/name"),
    ("POST", "/generate/developer"),
    ("POST", "/generate/script"),
    ("POST", "/generate/combined"),
    ("POST", "/generate/stem"),
    ("POST", "/generate/rotational"),
    ("POST", "/assemble/template"),
    ("GET", "/assemble/outputs"),
    ("GET", "/assemble/outputs/{output_id}"),
    ("GET", "/assemble/outputs/{output_id}/audio"),
    ("GET", "/assemble/outputs/{output_id}/verify"),
    ("GET", "/assemble/formats"),
    ("GET", "/rotation/next_name"),
    ("GET", "/rotation/next_developer"),
    ("GET", "/rotation/next_script"),
    ("GET", "/rotation/next_pair"),
    ("GET", "/rotation/next/{stream}"),
    ("POST", "/rotation/generate_pair"),
    ("GET", "/rotation/pairs_stream"),
    ("GET", "/rotation/scripts_stream"),
    ("GET", "/rotation/state"),
    ("POST", "/rotation/reset"),
    ("GET", "/cache/list"),
    ("POST", "/cache/invalidate"),
    ("POST", "/cache/bulk_generate"),
    ("GET", "/cache/stems/{stem_id}/audio"),
    ("GET", "/cache/verify"),
    ("GET", "/cache/check_in_bucket"),  # the storage routes: tests/test_api_storage.py
    ("GET", "/cache/bucket_list"),
    ("GET", "/storage"),
    ("POST", "/storage/sync"),
    ("GET", "/external/datasets"),
    ("GET", "/external/datasets/{kind}"),
    ("POST", "/external/datasets/{kind}"),
    ("GET", "/jobs"),
    ("GET", "/jobs/{job_id}"),
    ("POST", "/jobs/{job_id}/cancel"),
    ("GET", "/kinds"),
    ("POST", "/campaigns"),  # the campaign routes: tests/test_api_campaigns.py
    ("POST", "/campaigns/preview"),
    ("GET", "/campaigns"),
    ("GET", "/campaigns/{campaign_id}"),
    ("GET", "/campaigns/{campaign_id}/messages"),
    ("GET", "/campaigns/{campaign_id}/export.zip"),
    ("POST", "/campaigns/{campaign_id}/cancel"),
    ("POST", "/campaigns/{campaign_id}/resume"),
    ("DELETE", "/campaigns/{campaign_id}"),
    ("GET", "/pronunciations"),  # the pronunciation routes: tests/test_api_pronunciations.py
    ("PUT", "/pronunciations"),
    ("DELETE", "/pronunciations"),
    ("GET", "/pronunciations/stems"),
    ("GET", "/pronunciations/preview"),
    ("GET", "/pronunciations/stale-outputs"),
    ("GET", "/assemble/outputs/{output_id}/stale"),
}
#: GET routes that need a query parameter (a text to look up): no bare 200 without one.
NEEDS_QUERY = frozenset({"/pronunciations/stems", "/pronunciations/preview"})
PROTECTED = sorted(ROUTES - {("GET", "/health")})
#: Path parameters that pass validation, so only the key decides the answer.
PATH_VALUES = {
    "{output_id}": "20250101T000000000000Z_none",
    "{stem_id}": "stem.name.jose__d994e1d001",
    "{job_id}": "0123456789ab",
    "{kind}": "name",
    "{campaign_id}": "c0123456789ab",
    "{stream}": "name",
}
TERMINAL = {"done", "failed", "cancelled"}
MIB = 1024 * 1024


# --- helpers ------------------------------------------------------------------------------


def error_of(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """The envelope's `error` object, after checking status, media type and shape."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert {"code", "message"} <= set(error) <= {"code", "message", "details"}, error
    assert isinstance(error["code"], str)
    assert error["code"]
    assert isinstance(error["message"], str)
    assert error["message"]
    if code is not None:
        assert error["code"] == code, error
    return error


def fill(path: str) -> str:
    for placeholder, value in PATH_VALUES.items():
        path = path.replace(placeholder, value)
    return path


def wait_job(client: httpx.Client, job_id: str, timeout: float = 30.0) -> dict[str, Any]:
    """Poll `/jobs/{id}` until the job has finished; its final JobInfo.

    `finished_at` is set just after the final state, so both are waited for.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = client.get(f"/jobs/{job_id}").json()
        if info["state"] in TERMINAL and info["finished_at"] is not None:
            return info
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} not finished after {timeout} s")


def taken(client: httpx.Client, stream: str = "pair") -> int:
    """How many steps `stream` has handed out in all (cycles × size + position)."""
    state = client.get("/rotation/state").json()[stream]
    return state["cycle"] * state["size"] + state["position"]


def upload(client: httpx.Client, kind: str, filename: str, data: bytes | str) -> httpx.Response:
    raw = data.encode() if isinstance(data, str) else data
    return client.post(f"/external/datasets/{kind}", files={"file": (filename, raw)})


@pytest.fixture(scope="module")
def message(api: httpx.Client) -> dict[str, Any]:
    """One assembled message on `api_server` (José, a developer, double_anchor)."""
    response = api.post(
        "/assemble/template",
        json={
            "template": "double_anchor",
            "name": "José",
            "developer": "Hilton Ridge Developments",
        },
    )
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture(scope="module")
def message_wav(api_server: ApiServer, message: dict[str, Any]) -> bytes:
    """The bytes of `message`'s WAV as the server stored them."""
    return (api_server.base_dir / "output" / f"{message['id']}.wav").read_bytes()


# --- the route table -----------------------------------------------------------------------


def test_every_published_route_is_listed_here(api: httpx.Client) -> None:
    """A route added without tests fails here, so 'every route works' stays true."""
    paths = api.get("/openapi.json").json()["paths"]
    assert {(method.upper(), path) for path, ops in paths.items() for method in ops} == ROUTES


# --- health and the key --------------------------------------------------------------------


def test_health_needs_no_key(api_server: ApiServer) -> None:
    for headers in ({}, {HEADER: "wrong"}, {HEADER: ""}):
        response = httpx.get(f"{api_server.base_url}/health", headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["status"] == "ok"
        assert body["auth_required"] is True
        assert body["engine"] == "piper"
        assert body["audio_format"] == "pcm_s16le 22050 Hz mono"
        assert re.fullmatch(r"[0-9a-f]{64}", body["contract_signature"])


@pytest.mark.parametrize(("method", "path"), PROTECTED, ids=[f"{m} {p}" for m, p in PROTECTED])
def test_missing_key_is_401_on_every_protected_route(
    api_server: ApiServer, method: str, path: str
) -> None:
    response = httpx.request(method, api_server.base_url + fill(path), json={})
    error = error_of(response, 401, "unauthorized")
    assert error["message"] == f"missing {HEADER} header"


@pytest.mark.parametrize(("method", "path"), PROTECTED, ids=[f"{m} {p}" for m, p in PROTECTED])
def test_wrong_key_is_401_on_every_protected_route(
    api_server: ApiServer, method: str, path: str
) -> None:
    wrong = api_server.key[:-1] + ("A" if api_server.key[-1] != "A" else "B")
    response = httpx.request(
        method, api_server.base_url + fill(path), json={}, headers={HEADER: wrong}
    )
    error = error_of(response, 401, "unauthorized")
    assert error["message"] == f"wrong {HEADER} header"


def test_near_miss_keys_are_refused(api_server: ApiServer) -> None:
    """Prefixes, extensions, case changes and blanks are all wrong keys."""
    key = api_server.key
    for given in ("", key[:-1], key + "x", key.upper(), key.lower(), key[::-1], "x" * 500):
        if given == key:
            continue
        response = httpx.get(f"{api_server.base_url}/jobs", headers={HEADER: given})
        error_of(response, 401, "unauthorized")


def test_right_key_is_accepted(api_server: ApiServer) -> None:
    response = httpx.get(f"{api_server.base_url}/jobs", headers={HEADER: api_server.key})
    assert response.status_code == 200, response.text


def test_keyless_server_asks_for_no_key(limited_server: ApiServer) -> None:
    """Without INTERNAL_API_KEY (allowed on loopback only) no route asks for a key."""
    health = httpx.get(f"{limited_server.base_url}/health").json()
    assert health["auth_required"] is False
    for method, path in PROTECTED:
        if method == "GET" and "{" not in path and "stream" not in path and path not in NEEDS_QUERY:
            response = httpx.get(limited_server.base_url + path)
            assert response.status_code == 200, (path, response.text)


def test_request_log_records_requests_and_never_the_key(
    api_server: ApiServer, api: httpx.Client
) -> None:
    api.get("/jobs/0123456789ab")
    httpx.get(f"{api_server.base_url}/jobs", headers={HEADER: api_server.key + "x"})
    lines = [
        json.loads(line)
        for line in (api_server.base_dir / "logs" / "api.jsonl").read_text().splitlines()
    ]
    assert all({"ts", "event", "method", "route", "status", "ms"} <= set(line) for line in lines)
    assert {"event": "api_request", "method": "GET", "route": "/jobs/{job_id}", "status": 404} in [
        {k: line[k] for k in ("event", "method", "route", "status")} for line in lines
    ]
    assert any(line["route"] == "/jobs" and line["status"] == 401 for line in lines)
    for path in [*(api_server.base_dir / "logs").iterdir(), api_server.log_path]:
        assert api_server.key not in path.read_text(errors="replace"), path


# --- keys_match: right and wrong keys ---------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected", "result"),
    [
        ("s3cret-key", "s3cret-key", True),
        ("s3cret-keY", "s3cret-key", False),
        ("S3cret-key", "s3cret-key", False),
        ("s3cret-ke", "s3cret-key", False),
        ("s3cret-key!", "s3cret-key", False),
        ("", "s3cret-key", False),
        (None, "s3cret-key", False),
        ("clé-ü-🔑", "clé-ü-🔑", True),
        ("cle-u-🔑", "clé-ü-🔑", False),
        ("clé-ü", "cle\u0301-u\u0308", False),  # NFC vs NFD: different bytes, different keys
    ],
)
def test_keys_match(given: str | None, expected: str, result: bool) -> None:
    assert auth.keys_match(given, expected) is result


# --- every route works ---------------------------------------------------------------------


def test_generate_name_normalizes_and_caches(api: httpx.Client) -> None:
    first = api.post("/generate/name", json={"name": "Renée Zoë"})
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["normalized"] == "Renée Zoë → stem.name.renee_zoe__800708eb95"
    stem = body["stem"]
    assert (stem["stem_id"], stem["kind"], stem["text"]) == (
        "stem.name.renee_zoe__800708eb95",
        "name",
        "Renée Zoë",
    )
    assert stem["cached"] is False
    assert stem["compatible"] is True
    again = api.post("/generate/name", json={"name": " renée  Zoë "}).json()["stem"]
    assert again["cached"] is True  # spacing and a capital initial are the same text
    assert again["sha256"] == stem["sha256"]
    assert again["text"] == "Renée Zoë"  # the first spelling is what was spoken
    folded = api.post("/generate/name", json={"name": "Renee Zoe"}).json()["stem"]
    assert (folded["stem_id"], folded["cached"]) == ("stem.name.renee_zoe", False)


def test_generate_developer_script_and_combined(api: httpx.Client) -> None:
    developer = api.post("/generate/developer", json={"developer": "Crystal Springs"})
    assert developer.status_code == 200, developer.text
    assert developer.json()["stem"]["stem_id"] == "stem.developer.crystal_springs"
    script = api.post("/generate/script", json={"key": "thanks"})
    assert script.status_code == 200, script.text
    assert script.json()["stem"]["stem_id"] == "stem.script.thanks"
    assert script.json()["stem"]["text"] == "Thank you for your interest"
    combined = api.post("/generate/combined", json={"name": "Ola", "developer": "Crystal Springs"})
    assert combined.status_code == 200, combined.text
    body = combined.json()
    assert body["name"]["stem"]["stem_id"] == "stem.name.ola"
    assert body["developer"]["stem"]["stem_id"] == "stem.developer.crystal_springs"
    assert body["developer"]["stem"]["cached"] is True


def test_generate_rotational_runs_as_a_job(api: httpx.Client) -> None:
    response = api.post(
        "/generate/rotational", json={"names": ["Rota One", "Rota Two"], "developers": ["Rota Co"]}
    )
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["kind"] == "bulk_generate"
    info = wait_job(api, job["id"])
    assert info["state"] == "done", info
    assert (info["done"], info["total"]) == (3, 3)
    assert info["result"]["created"] + info["result"]["cached"] == 3
    ids = {s["stem_id"] for s in api.get("/cache/list").json()}
    assert {"stem.name.rota_one", "stem.name.rota_two", "stem.developer.rota_co"} <= ids


def test_assemble_template_returns_a_verified_message(
    api: httpx.Client, message: dict[str, Any], message_wav: bytes
) -> None:
    assert message["verified"] is True
    assert message["report"]["ok"] is True
    assert message["audio_url"] == f"/assemble/outputs/{message['id']}/audio"
    summary = message["summary"]
    assert (summary["template"], summary["name"], summary["developer"]) == (
        "double_anchor",
        "José",
        "Hilton Ridge Developments",
    )
    assert message_wav[:4] == b"RIFF"
    assert message["duration"] > 0.5


def test_outputs_manifest_audio_and_verify(
    api: httpx.Client, message: dict[str, Any], message_wav: bytes
) -> None:
    listed = api.get("/assemble/outputs").json()
    assert message["id"] in [o["id"] for o in listed]
    manifest = api.get(f"/assemble/outputs/{message['id']}").json()
    assert manifest["inputs"]["name"] == "José"
    assert [s.get("stem_id") for s in manifest["sources"] if s["kind"] == "stem"] == [
        "stem.script.hello",
        "stem.name.jose__d994e1d001",
        "stem.developer.hilton_ridge_developments",
        "stem.script.offer",
        "stem.name.jose__d994e1d001",
    ]
    audio = api.get(message["audio_url"])
    assert audio.status_code == 200
    assert audio.headers["content-type"] == "audio/wav"
    assert audio.headers["accept-ranges"] == "bytes"
    assert audio.content == message_wav
    assert hashlib.sha256(audio.content).hexdigest() == manifest["output"]["sha256"]
    verify = api.get(f"/assemble/outputs/{message['id']}/verify")
    assert verify.status_code == 200, verify.text
    assert verify.json()["ok"] is True


def test_assemble_with_hybrid_mode_and_every_template(api: httpx.Client) -> None:
    for body in (
        {"template": "double_anchor", "name": "Ola", "developer": "Acme", "mode": "hybrid"},
        {"template": "single_anchor", "name": "Ola", "developer": "Acme"},
        {"template": "scripted.json", "name": "Ola", "developer": "Acme", "script": "visit"},
    ):
        response = api.post("/assemble/template", json=body)
        assert response.status_code == 200, (body, response.text)
        assert response.json()["verified"] is True


def test_rotation_next_routes_advance_their_own_cursor(api: httpx.Client) -> None:
    developers = api.get("/external/datasets/developer").json()["count"]
    for stream in ("name", "developer", "script", "pair"):
        before = taken(api, stream)
        step = api.get(f"/rotation/next_{stream}").json()
        assert step["stream"] == stream
        assert step["cycle"] * step["size"] + step["position"] == before
        assert taken(api, stream) == before + 1
        if stream == "pair":
            assert step["name"]
            assert step["developer"]
            assert step["index"] == step["name_index"] * developers + step["developer_index"]
        else:
            assert step["item"]
    assert api.get("/rotation/next_script").json()["item"] in {
        "hello",
        "offer",
        "visit",
        "thanks",
        "call_back",
        "from",
    }


def test_rotation_next_of_any_stream_is_the_named_routes_step(api: httpx.Client) -> None:
    """`/rotation/next/{stream}` and `/rotation/next_{stream}` advance one cursor alike."""
    for stream in ("name", "developer", "script", "pair"):
        before = taken(api, stream)
        generic = api.get(f"/rotation/next/{stream}")
        assert generic.status_code == 200, generic.text
        named = api.get(f"/rotation/next_{stream}").json()
        step = generic.json()
        assert set(step) == set(named)
        assert step["stream"] == stream
        assert step["cycle"] * step["size"] + step["position"] == before
        assert named["cycle"] * named["size"] + named["position"] == before + 1
        assert taken(api, stream) == before + 2
    state = api.get("/rotation/state").json()
    error = error_of(api.get("/rotation/next/everything"), 422, "validation_error")
    assert "'everything'" in error["message"]
    assert all(name in error["message"] for name in state), error
    assert api.get("/rotation/state").json() == state  # a refused stream moves nothing


def test_rotation_streams_state_and_reset(api: httpx.Client) -> None:
    start = taken(api, "script")
    response = api.get("/rotation/scripts_stream", params={"count": 14})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/x-ndjson")
    steps = [json.loads(line) for line in response.text.splitlines()]
    assert len(steps) == 14
    assert [s["cycle"] * s["size"] + s["position"] for s in steps] == list(range(start, start + 14))
    full_cycle = [s["item"] for s in steps if s["cycle"] == steps[0]["cycle"] + 1]
    assert sorted(full_cycle) == sorted(set(full_cycle))  # a cycle never repeats an item
    assert len(full_cycle) == 6
    pairs = api.get("/rotation/pairs_stream", params={"count": 3}).text.splitlines()
    assert [json.loads(p)["stream"] for p in pairs] == ["pair"] * 3
    state = api.get("/rotation/state").json()
    assert set(state) == {"name", "developer", "script", "pair"}
    assert taken(api, "script") == start + 14
    reset = api.post("/rotation/reset", json={"stream": "script"})
    assert reset.status_code == 200, reset.text
    assert (reset.json()["cycle"], reset.json()["position"]) == (0, 0)
    assert api.get("/rotation/next_script").json()["position"] == 0


def test_rotation_generate_pair_assembles_the_next_pair(api: httpx.Client) -> None:
    before = taken(api, "pair")
    response = api.post("/rotation/generate_pair", json={"template": "scripted"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["step"]["cycle"] * body["step"]["size"] + body["step"]["position"] == before
    assert body["script"]
    summary = body["result"]["summary"]
    assert (summary["name"], summary["developer"], summary["script"]) == (
        body["step"]["name"],
        body["step"]["developer"],
        body["script"],
    )
    assert body["result"]["report"]["ok"] is True


def test_rotation_generate_pair_takes_the_join_mode(api: httpx.Client) -> None:
    response = api.post(
        "/rotation/generate_pair", json={"template": "double_anchor", "mode": "hybrid"}
    )
    assert response.status_code == 200, response.text
    output_id = response.json()["result"]["summary"]["id"]
    manifest = api.get(f"/assemble/outputs/{output_id}").json()
    assert manifest["merge"]["mode"] == "hybrid"
    assert manifest["verify"]["ok"] is True
    refused = api.post("/rotation/generate_pair", json={"template": "double_anchor", "mode": "x"})
    assert refused.status_code == 422


def test_cache_list_filters_and_stem_audio(
    api: httpx.Client, api_server: ApiServer, message: dict[str, Any]
) -> None:
    summaries = api.get("/cache/list").json()
    assert "stem.name.jose__d994e1d001" in {s["stem_id"] for s in summaries}
    assert set(summaries[0]) == {"stem_id", "kind", "text", "duration", "compatible"}
    names = api.get("/cache/list", params={"kind": "name", "extended": True}).json()
    assert names
    assert {s["kind"] for s in names} == {"name"}
    assert {"sha256", "path", "contract_signature", "sample_rate"} <= set(names[0])
    assert api.get("/cache/list", params={"compatible": False}).json() == []
    jose = next(s for s in names if s["stem_id"] == "stem.name.jose__d994e1d001")
    audio = api.get("/cache/stems/stem.name.jose__d994e1d001/audio")
    assert audio.status_code == 200
    assert audio.content == (api_server.base_dir / "stems" / jose["path"]).read_bytes()
    part = api.get("/cache/stems/stem.name.jose__d994e1d001/audio", headers={"Range": "bytes=0-11"})
    assert part.status_code == 206
    assert part.content == audio.content[:12]


def test_audio_answers_head_with_its_headers_alone(
    api: httpx.Client, api_server: ApiServer, message: dict[str, Any], message_wav: bytes
) -> None:
    """Players and caches probe with HEAD: the GET's headers (length, type, ranges), no
    body; without the key, 401 as for the GET."""
    stem = "/cache/stems/stem.name.jose__d994e1d001/audio"
    for url in (message["audio_url"], stem):
        got, probed = api.get(url), api.head(url)
        assert probed.status_code == 200, url
        assert probed.content == b""
        for header in ("content-length", "content-type", "accept-ranges", "etag"):
            assert probed.headers[header] == got.headers[header], (url, header)
        assert httpx.head(api_server.base_url + url).status_code == 401
    assert int(api.head(message["audio_url"]).headers["content-length"]) == len(message_wav)


def test_cache_invalidate_forgets_a_stem(api: httpx.Client) -> None:
    api.post("/generate/name", json={"name": "Forget Me"})
    response = api.post("/cache/invalidate", json={"stem_id": "stem.name.forget_me"})
    assert response.json() == {
        "stem_id": "stem.name.forget_me",
        "invalidated": True,
        "remote": False,  # no bucket copy deleted (tests/test_api_storage.py)
    }
    assert api.post("/cache/invalidate", json={"stem_id": "stem.name.forget_me"}).json() == {
        "stem_id": "stem.name.forget_me",
        "invalidated": False,
        "remote": False,
    }
    error_of(api.get("/cache/stems/stem.name.forget_me/audio"), 404, "not_found")
    again = api.post("/generate/name", json={"name": "Forget Me"}).json()
    assert again["stem"]["cached"] is False


def test_cache_verify_reports_a_consistent_cache(api: httpx.Client, message: dict) -> None:
    report = api.get("/cache/verify").json()
    assert report["checked"] >= 4
    for problem in ("orphan_files", "missing_files", "hash_mismatches", "unreadable"):
        assert report[problem] == [], report


def test_external_datasets_are_listed_and_shown(api: httpx.Client) -> None:
    infos = {d["kind"]: d for d in api.get("/external/datasets").json()}
    assert set(infos) == {"name", "developer", "script"}
    assert infos["developer"]["count"] == 30
    assert infos["script"]["count"] == 6
    pair_size = api.get("/rotation/state").json()["pair"]["size"]
    assert pair_size == infos["name"]["count"] * infos["developer"]["count"]
    names = api.get("/external/datasets/name").json()
    assert names["count"] == len(names["items"]) == infos["name"]["count"]
    assert {"text": "José", "stem_id": "stem.name.jose__d994e1d001", "key": None} in names["items"]
    scripts = api.get("/external/datasets/script").json()
    assert {"text": "Hi", "stem_id": "stem.script.hello", "key": "hello"} in scripts["items"]


def test_jobs_list_get_and_cancel_of_a_finished_job(api: httpx.Client) -> None:
    job = api.post("/cache/bulk_generate", json={"names": ["Listed Job"], "developers": []}).json()
    info = wait_job(api, job["id"])
    assert info["state"] == "done"
    assert job["id"] in [j["id"] for j in api.get("/jobs").json()]
    assert api.get(f"/jobs/{job['id']}").json() == info
    cancelled = api.post(f"/jobs/{job['id']}/cancel")
    assert cancelled.status_code == 200
    assert cancelled.json()["state"] == "done"  # too late to cancel: nothing changes


# --- the error envelope and its statuses ---------------------------------------------------


def test_400_for_an_unparseable_body(api: httpx.Client) -> None:
    response = api.post(
        "/external/datasets/name", content=b"abc", headers={"content-type": "multipart/form-data"}
    )
    error_of(response, 400, "bad_request")
    response = api.post(
        "/generate/name", content=b"\x80abc", headers={"content-type": "application/json"}
    )
    error_of(response, 400, "bad_request")


def test_schema_documents_the_400_the_api_answers(api: httpx.Client) -> None:
    """Regression: 400 was answered but documented nowhere (Schemathesis: undocumented)."""
    paths = api.get("/openapi.json").json()["paths"]
    assert "400" in paths["/generate/name"]["post"]["responses"]
    assert "400" in paths["/external/datasets/{kind}"]["post"]["responses"]


@pytest.mark.parametrize(
    ("method", "path", "body", "what"),
    [
        ("GET", "/jobs/0123456789ab", None, "job"),
        ("POST", "/jobs/0123456789ab/cancel", None, "job"),
        ("GET", "/assemble/outputs/20250101T000000000000Z_none", None, "output"),
        ("GET", "/assemble/outputs/20250101T000000000000Z_none/audio", None, "output"),
        ("GET", "/assemble/outputs/20250101T000000000000Z_none/verify", None, "output"),
        ("GET", "/cache/stems/stem.name.nobody_here/audio", None, "stem"),
        ("POST", "/generate/script", {"key": "no_such_key"}, "unknown script key"),
        (
            "POST",
            "/assemble/template",
            {"template": "no_such_template", "name": "A", "developer": "B"},
            "unknown template",
        ),
        ("POST", "/rotation/generate_pair", {"template": "no_such_template"}, "unknown template"),
        ("GET", "/no/such/route", None, "Not Found"),
        ("GET", "/cache/stems/..%2F..%2Fetc%2Fpasswd/audio", None, "Not Found"),
    ],
)
def test_404_envelope(
    api: httpx.Client, method: str, path: str, body: dict | None, what: str
) -> None:
    error = error_of(api.request(method, path, json=body), 404, "not_found")
    assert what in error["message"]


def test_405_envelope(api: httpx.Client) -> None:
    error_of(api.delete("/jobs"), 405, "method_not_allowed")


def test_405_lists_the_allowed_methods(api: httpx.Client) -> None:
    """Regression: the envelope handler used to drop the Allow header RFC 9110 requires."""
    assert api.delete("/jobs").headers.get("allow") == "GET"


@pytest.mark.xfail(
    strict=True,
    reason="BUG (minor, from Starlette routing): a path served by two routes (GET and POST "
    "/external/datasets/{kind}) answers other methods with 'Allow: GET' only; Starlette "
    "reports the methods of the first route whose path matches. Schemathesis: ST205",
)
def test_405_lists_every_method_of_a_path_with_two_routes(api: httpx.Client) -> None:
    response = api.request("PUT", "/external/datasets/name")
    error_of(response, 405, "method_not_allowed")
    assert {m.strip() for m in response.headers["allow"].split(",")} == {"GET", "POST"}


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "fragment"),
    [
        ("POST", "/generate/name", {"json": {"name": ""}}, "body.name"),
        ("POST", "/generate/name", {"json": {"name": "x" * 257}}, "at most 256"),
        ("POST", "/generate/name", {"json": {}}, "body.name: Field required"),
        ("POST", "/generate/name", {"json": {"name": "!!!"}}, "has no letters or digits"),
        (
            "POST",
            "/generate/name",
            {"content": b"{not json", "headers": {"content-type": "application/json"}},
            "JSON",
        ),
        ("POST", "/assemble/template", {"json": {"template": "double_anchor"}}, "needs:"),
        ("POST", "/assemble/template", {"json": {"template": "../etc/x"}}, "template"),
        ("POST", "/assemble/template", {"json": {"template": "x", "mode": "loud"}}, "mode"),
        ("GET", "/assemble/outputs/not-an-id", {}, "is not an output id"),
        ("GET", "/rotation/pairs_stream", {"params": {"count": 0}}, "count"),
        ("GET", "/rotation/pairs_stream", {"params": {"count": 100_001}}, "count"),
        ("POST", "/rotation/reset", {"json": {"stream": "everything"}}, "stream"),
        ("GET", "/cache/list", {"params": {"kind": "song"}}, "kind"),
        ("POST", "/cache/invalidate", {"json": {"stem_id": "../../etc"}}, "not a stem id"),
        ("GET", "/cache/stems/stem.name.Jose!/audio", {}, "not a stem id"),
        ("GET", "/external/datasets/songs", {}, "kind"),
        ("POST", "/external/datasets/name", {}, "body.file"),
        ("POST", "/cache/bulk_generate", {"json": {"names": "Ann"}}, "names"),
        ("GET", "/jobs", {"params": {"offset": 2**64}}, "offset"),  # was a 500 (SQLite)
    ],
)
def test_422_envelope(
    api: httpx.Client, method: str, path: str, kwargs: dict[str, Any], fragment: str
) -> None:
    error = error_of(api.request(method, path, **kwargs), 422)
    assert error["code"] in {"validation_error", "invalid_template"}
    assert fragment in error["message"], error


def test_409_when_a_cached_stem_file_is_corrupt(
    scratch: httpx.Client, scratch_server: ApiServer
) -> None:
    """Same size, broken header: the index still points at it, the WAV parser refuses it."""
    stem = scratch.post("/generate/name", json={"name": "Corrupt Carl"}).json()["stem"]
    path = scratch_server.base_dir / "stems" / stem["path"]
    data = bytearray(path.read_bytes())
    data[:4] = b"JUNK"
    path.write_bytes(bytes(data))
    try:
        response = scratch.post(
            "/assemble/template",
            json={"template": "double_anchor", "name": "Corrupt Carl", "developer": "Acme"},
        )
        error_of(response, 409, "corrupt_audio")
        report = scratch.get("/cache/verify").json()
        assert [u.split(":")[0] for u in report["unreadable"]] == ["stem.name.corrupt_carl"]
    finally:
        scratch.post("/cache/invalidate", json={"stem_id": stem["stem_id"]})


@pytest.fixture(scope="module")
def cartesia_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ApiServer, Any]]:
    """The real server on the Cartesia engine, pointed at the local fake Cartesia."""
    with FakeCartesia() as fake:
        server = start_server(
            make_base_dir(tmp_path_factory.mktemp("cartesia")),
            key="cartesia-test-key",
            env={
                "TTS_ENGINE": "cartesia",
                "CARTESIA_API_KEY": CARTESIA_KEY,
                "CARTESIA_VOICE_ID": DEFAULT_VOICE,
                "CARTESIA_BASE_URL": fake.base_url,
            },
        )
        try:
            yield server, fake
        finally:
            server.stop()


@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [
        ({"status": 429, "n": 5, "retry_after": 0}, 429, "rate_limited"),
        ({"status": 402}, 429, "rate_limited"),
        ({"status": 500, "n": 5, "retry_after": 0}, 503, "engine_unavailable"),
        ({"status": 401}, 503, "engine_misconfigured"),
    ],
    ids=["429-after-retries", "402-out-of-credits", "500-after-retries", "401-bad-key"],
)
def test_engine_failures_map_to_429_and_503(
    cartesia_server: tuple[ApiServer, FakeCartesia],
    fault: dict[str, Any],
    status: int,
    code: str,
) -> None:
    server, fake = cartesia_server
    fake.fail_next(**fault)
    client = server.client()
    upstream = fault["status"]
    response = client.post("/generate/name", json={"name": f"Engine Fault {upstream}"})
    error = error_of(response, status, code)
    assert "Cartesia" in error["message"]
    assert fake.pending_faults == 0
    ok = client.post("/generate/name", json={"name": f"Engine Fine {upstream}"})
    assert ok.status_code == 200, ok.text  # the engine recovers with the service
    assert ok.json()["stem"]["engine"] == "cartesia"
    assert ok.json()["stem"]["cached"] is False


# --- no stack trace reaches a client --------------------------------------------------------


def assert_opaque_500(server: ApiServer, response: httpx.Response) -> None:
    """500 with only code and message (an incident id), and the id in the server log."""
    error = error_of(response, 500, "internal_error")
    assert set(error) == {"code", "message"}
    incident = re.fullmatch(r"internal error \(incident ([0-9a-f]{12})\)", error["message"])
    assert incident, error
    for leak in ("Traceback", "Error", str(server.base_dir), tempfile.gettempdir(), ".py"):
        assert leak not in response.text
    deadline = time.monotonic() + 5
    while f"unhandled error {incident[1]}" not in server.log():
        assert time.monotonic() < deadline, "incident id not in the server log"
        time.sleep(0.05)


def test_409_when_a_manifest_is_not_a_regular_file(scratch_server: ApiServer) -> None:
    """A directory where a manifest should be is refused as unsafe, never followed or read."""
    output_id = "20250101T000000000000Z_unreadable"
    folder = scratch_server.base_dir / "output"
    folder.mkdir(exist_ok=True)
    (folder / f"{output_id}.json").mkdir()  # a directory where a file should be
    try:
        response = httpx.get(
            f"{scratch_server.base_url}/assemble/outputs/{output_id}",
            headers=scratch_server.headers(),
        )
    finally:
        (folder / f"{output_id}.json").rmdir()
    assert error_of(response, 409)["code"] == "unsafe_file"


def test_500_when_a_dataset_file_cannot_be_read(scratch_server: ApiServer) -> None:
    path = scratch_server.base_dir / "data" / "developer_names.txt"
    saved = path.read_bytes()
    path.unlink()
    path.mkdir()
    try:
        response = httpx.get(
            f"{scratch_server.base_url}/external/datasets/developer",
            headers=scratch_server.headers(),
        )
    finally:
        path.rmdir()
        path.write_bytes(saved)
    assert_opaque_500(scratch_server, response)


def test_assemble_with_an_unknown_script_key_is_422(api: httpx.Client) -> None:
    """Regression: the KeyError of an unknown script key escaped the assembler as a 500."""
    response = api.post(
        "/assemble/template",
        json={"template": "scripted", "name": "Ann", "developer": "Acme", "script": "nope"},
    )
    error = error_of(response, 422, "validation_error")
    assert "unknown script key 'nope'" in error["message"]


def _raw_request(sock: socket.socket, host: str, path: str, key: str) -> bytes:
    """Send one keep-alive GET and read exactly one response (Content-Length framed)."""
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{HEADER}: {key}\r\n\r\n".encode("latin-1")
    )
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: *(\d+)", head)[1])  # type: ignore[index]
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def test_a_500_does_not_break_the_keep_alive_connection(scratch_server: ApiServer) -> None:
    """Regression: Starlette re-raised after the 500 handler and uvicorn dropped the
    connection without 'Connection: close', so a client's next request was reset."""
    path = scratch_server.base_dir / "data" / "developer_names.txt"
    saved = path.read_bytes()
    path.unlink()
    path.mkdir()  # a directory where the dataset file should be: an unexpected error
    host = scratch_server.base_url.removeprefix("http://")
    address, port = host.split(":")
    try:
        with socket.create_connection((address, int(port)), timeout=5) as sock:
            first = _raw_request(sock, host, "/external/datasets/developer", scratch_server.key)
            assert first.startswith(b"HTTP/1.1 500")
            if re.search(rb"(?i)\r\nconnection: *close", first):
                return  # announced: a client knows to reconnect
            time.sleep(0.2)
            try:
                second = _raw_request(sock, host, "/jobs", scratch_server.key)
            except OSError:
                second = b""
            assert second.startswith(b"HTTP/1.1 200"), second[:200]
    finally:
        path.rmdir()
        path.write_bytes(saved)


# --- body and upload limits ----------------------------------------------------------------


def test_small_body_passes_the_limit(limited_server: ApiServer) -> None:
    response = httpx.post(f"{limited_server.base_url}/generate/name", json={"name": "Tiny"})
    assert response.status_code == 200, response.text


def test_413_for_a_declared_body_over_the_limit(limited_server: ApiServer) -> None:
    response = httpx.post(
        f"{limited_server.base_url}/generate/name", json={"name": "x" * 2000, "pad": "y" * 2000}
    )
    assert int(response.request.headers["content-length"]) > 1024
    error = error_of(response, 413, "payload_too_large")
    assert "1024" in error["message"]


def chunked(prefix: bytes, size: int, suffix: bytes) -> Iterator[bytes]:
    """A body httpx sends with Transfer-Encoding: chunked (no Content-Length)."""
    yield prefix
    for _ in range(size // 1000):
        yield b"a" * 1000
    yield suffix


CHUNKED_OVER_LIMIT = {
    "json": (
        "/generate/name",
        "application/json",
        lambda: chunked(b'{"name": "Chunky", "pad": "', 16_000, b'"}'),
    ),
    "upload": (
        "/external/datasets/name",
        "multipart/form-data; boundary=xx",
        lambda: chunked(
            b'--xx\r\nContent-Disposition: form-data; name="file"; filename="n.txt"\r\n\r\n'
            b"Chunky\n",
            16_000,
            b"\r\n--xx--\r\n",
        ),
    ),
}


def names_and_stems(server: ApiServer) -> tuple[set[str], set[str]]:
    """The names dataset's texts and the cached stem ids of `server`."""
    client = server.client()
    names = {i["text"] for i in client.get("/external/datasets/name").json()["items"]}
    return names, {s["stem_id"] for s in client.get("/cache/list").json()}


@pytest.mark.parametrize("kind", CHUNKED_OVER_LIMIT)
def test_chunked_body_over_the_limit_is_413_and_nothing_runs(
    limited_server: ApiServer, kind: str
) -> None:
    """The limit counts received bytes, so a body without Content-Length cannot get past it.

    Regression: this was a 400 ("error parsing the body") before BodyLimit answered it.
    """
    path, content_type, body = CHUNKED_OVER_LIMIT[kind]
    response = httpx.post(
        limited_server.base_url + path, content=body(), headers={"content-type": content_type}
    )
    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    error_of(response, 413, "payload_too_large")
    names, stems = names_and_stems(limited_server)
    assert "Chunky" not in names
    assert "stem.name.chunky" not in stems


def whole_request_then_padding(request: bytes) -> Iterator[bytes]:
    """A complete request body, a pause (so it arrives alone), then 4 KB of padding."""
    yield request
    time.sleep(0.3)
    for _ in range(4):
        yield b" " * 1000


@pytest.mark.parametrize("kind", ["json", "upload"])
def test_chunked_body_over_the_limit_never_runs_its_prefix(
    limited_server: ApiServer, kind: str
) -> None:
    if kind == "json":
        path, content_type = "/generate/name", "application/json"
        body = whole_request_then_padding(b'{"name": "Prefix Pete"}')
    else:
        path, content_type = "/external/datasets/name", "multipart/form-data; boundary=xx"
        body = whole_request_then_padding(
            b'--xx\r\nContent-Disposition: form-data; name="file"; filename="n.txt"\r\n\r\n'
            b"Prefix Paula\r\n--xx--\r\n"
        )
    response = httpx.post(
        limited_server.base_url + path, content=body, headers={"content-type": content_type}
    )
    error_of(response, 413, "payload_too_large")
    names, stems = names_and_stems(limited_server)
    if kind == "json":
        assert "stem.name.prefix_pete" not in stems, "the route ran on the prefix"
    else:
        assert "Prefix Paula" not in names, "the dataset was replaced by the prefix"


def test_413_for_an_upload_over_the_body_limit(limited_server: ApiServer) -> None:
    response = httpx.post(
        f"{limited_server.base_url}/external/datasets/name",
        files={"file": ("names.txt", b"Ann\n" * 600)},
    )
    error_of(response, 413, "payload_too_large")


# --- uploads -------------------------------------------------------------------------------


def test_upload_txt_replaces_the_dataset_and_reports_collisions(scratch: httpx.Client) -> None:
    response = upload(scratch, "name", "names.txt", "# a comment\nZoë\nzoë\n\nMarek\n")
    assert response.status_code == 200, response.text
    info = response.json()
    assert info["count"] == 2
    assert info["collisions"] == ["Zoë / zoë → stem.name.zoe__2752b88686"]
    assert info["path"].endswith("common_names.txt")
    items = scratch.get("/external/datasets/name").json()["items"]
    assert [i["text"] for i in items] == ["Zoë", "Marek"]


def test_upload_csv_and_json(scratch: httpx.Client) -> None:
    csv = upload(scratch, "developer", "devs.csv", 'developer\nAcme Homes\n"Beta, Builders"\n')
    assert csv.status_code == 200, csv.text
    assert csv.json()["count"] == 2
    assert [i["text"] for i in scratch.get("/external/datasets/developer").json()["items"]] == [
        "Acme Homes",
        "Beta, Builders",
    ]
    names = upload(scratch, "name", "names.json", json.dumps(["Ann", "Bob", "Cid"]))
    assert names.json()["count"] == 3
    scripts = {"hello": "Hi", "offer": "has an offer", "from": "from", "visit": "come by"}
    as_json = upload(scratch, "script", "scripts.json", json.dumps(scripts))
    assert as_json.status_code == 200, as_json.text
    assert as_json.json()["count"] == 4
    as_csv = upload(
        scratch,
        "script",
        "scripts.csv",
        "key,phrase\n" + "".join(f"{k},{v}\n" for k, v in scripts.items()),
    )
    assert as_csv.status_code == 200, as_csv.text
    assert {i["key"] for i in scratch.get("/external/datasets/script").json()["items"]} == set(
        scripts
    )


@pytest.mark.parametrize(
    ("kind", "filename", "data", "fragment"),
    [
        ("name", "names.csv", "name\nAnn\nBob,Smith\nCid\n", "names.csv:3"),
        ("name", "names.json", '[\n"Ann",\n"Bob",\n]\n', "names.json:4"),
        ("name", "names.json", '["Ann", 7]', "item 2"),
        ("name", "names.json", '{"Ann": 1}', "JSON list"),
        ("script", "scripts.csv", "key,phrase\nhello,Hi\noffer\n", "scripts.csv:3"),
        ("script", "scripts.txt", "hello\n", "scripts need key and phrase"),
        ("name", "names.txt", b"Zo\xeb\n", "not UTF-8"),
        ("name", "names.txt", "# only a comment\n\n", "no usable"),
        ("name", "names.xlsx", "Ann\n", "names.xlsx"),
        ("name", "names", "Ann\n", ".txt, .csv or .json"),
    ],
)
def test_malformed_upload_is_422_naming_the_line_and_changes_nothing(
    scratch: httpx.Client, kind: str, filename: str, data: str | bytes, fragment: str
) -> None:
    before = scratch.get(f"/external/datasets/{kind}").json()
    error = error_of(upload(scratch, kind, filename, data), 422)
    assert fragment in error["message"], error
    assert tempfile.gettempdir() not in error["message"]  # the server's temp path stays inside
    assert scratch.get(f"/external/datasets/{kind}").json() == before


def test_upload_over_5_mib_is_413_and_changes_nothing(scratch: httpx.Client) -> None:
    before = scratch.get("/external/datasets/name").json()
    line = b"Somebody Withaverylongname\n"
    data = line * (5 * MIB // len(line) + 1)
    assert 5 * MIB < len(data) < 8 * MIB  # under the body limit: the route itself refuses
    error = error_of(upload(scratch, "name", "names.txt", data), 413, "payload_too_large")
    assert str(5 * MIB) in error["message"]
    assert scratch.get("/external/datasets/name").json() == before


# --- NDJSON streaming ----------------------------------------------------------------------


def test_pairs_stream_sends_lines_while_it_is_still_producing(
    api_server: ApiServer, api: httpx.Client
) -> None:
    """The first line arrives while most of the stream is still to be made, and the
    server stops taking steps once the client goes away."""
    count = 100_000
    observer = api_server.client()
    start = taken(observer)
    with api.stream("GET", "/rotation/pairs_stream", params={"count": count}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/x-ndjson")
        assert "content-length" not in response.headers
        lines = response.iter_lines()
        first = json.loads(next(lines))
        produced_at_first_line = taken(observer) - start
        assert first["cycle"] * first["size"] + first["position"] == start
        assert 1 <= produced_at_first_line < count
        # Keep reading: the lines are the next positions, and the server keeps making more.
        expected = start + 1
        deadline = time.monotonic() + 15
        while taken(observer) - start <= produced_at_first_line:
            assert time.monotonic() < deadline, "server stopped producing"
            for _ in range(50):
                step = json.loads(next(lines))
                assert step["cycle"] * step["size"] + step["position"] == expected
                expected += 1
    # The client is gone: the cursor comes to rest long before `count`.
    deadline = time.monotonic() + 15
    previous = taken(observer)
    while True:
        time.sleep(0.3)
        now = taken(observer)
        if now == previous:
            break
        assert time.monotonic() < deadline, "server kept taking steps after disconnect"
        previous = now
    assert now - start < count


# --- Range requests ------------------------------------------------------------------------


def test_range_requests_return_the_exact_bytes(
    api: httpx.Client, message: dict[str, Any], message_wav: bytes
) -> None:
    size = len(message_wav)
    cases = {
        "bytes=0-43": (0, 44),
        "bytes=10-99": (10, 100),
        "bytes=-50": (size - 50, size),
        f"bytes={size - 7}-": (size - 7, size),
        f"bytes=100-{size + 1000}": (100, size),  # an end past the file is clipped
    }
    for header, (start, stop) in cases.items():
        response = api.get(message["audio_url"], headers={"Range": header})
        assert response.status_code == 206, (header, response.text)
        assert response.content == message_wav[start:stop], header
        assert response.headers["content-range"] == f"bytes {start}-{stop - 1}/{size}"
        assert int(response.headers["content-length"]) == stop - start


def test_unsatisfiable_range_is_416(
    api: httpx.Client, message: dict[str, Any], message_wav: bytes
) -> None:
    size = len(message_wav)
    for header in (f"bytes={size}-", f"bytes={size + 10}-{size + 20}"):
        response = api.get(message["audio_url"], headers={"Range": header})
        assert response.status_code == 416, header
        assert response.headers["content-range"] == f"bytes */{size}"


@pytest.mark.parametrize(
    ("header", "status"), [("bytes=999999999-", 416), ("bytes=5-2", 400), ("items=0-1", 400)]
)
def test_range_errors_use_the_envelope(
    api: httpx.Client, message: dict[str, Any], header: str, status: int
) -> None:
    """Regression: Starlette's FileResponse answered these in text/plain."""
    error = error_of(api.get(message["audio_url"], headers={"Range": header}), status)
    assert error["code"] == ("range_not_satisfiable" if status == 416 else "bad_request")


# --- jobs: progress and cancel -------------------------------------------------------------


def test_bulk_generate_job_progress_moves_then_finishes(api: httpx.Client) -> None:
    names = [f"Progress Person Number {i}" for i in range(1, 31)]
    response = api.post("/cache/bulk_generate", json={"names": names, "developers": ["Progress"]})
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    seen: list[int] = []
    deadline = time.monotonic() + 60
    while True:
        info = api.get(f"/jobs/{job_id}").json()
        if info["state"] in TERMINAL:
            break
        if info["state"] == "running" and info["total"]:
            seen.append(info["done"])
        assert time.monotonic() < deadline, f"job still {info['state']} at {info['done']}"
        time.sleep(0.005)
    assert info["state"] == "done", info
    assert (info["done"], info["total"]) == (31, 31)
    assert info["result"]["created"] == 31
    assert info["eta_seconds"] == 0.0
    assert seen == sorted(seen)  # done never goes back
    assert len(set(seen)) >= 2, f"progress seen only at {sorted(set(seen))}"


def test_cancel_stops_a_running_job(api: httpx.Client) -> None:
    names = [f"Cancel Candidate Number {i}" for i in range(1, 301)]
    job = api.post("/cache/bulk_generate", json={"names": names, "developers": []}).json()
    response = api.post(f"/jobs/{job['id']}/cancel")
    assert response.status_code == 200, response.text
    info = wait_job(api, job["id"])
    assert info["state"] == "cancelled", info
    assert info["done"] < 300
    assert info["finished_at"] is not None


def test_two_bulk_jobs_at_once_both_finish(api: httpx.Client) -> None:
    """Regression: both jobs failed with "Generator.progress must be at most 1" because
    every batch counted on the one shared Generator's `done`."""
    jobs = [
        api.post(
            "/cache/bulk_generate",
            json={"names": [f"Overlap {side} Number {i}" for i in range(12)], "developers": []},
        ).json()
        for side in ("Left", "Right")
    ]
    infos = [wait_job(api, job["id"]) for job in jobs]
    assert [(i["state"], i["done"], i["total"]) for i in infos] == [("done", 12, 12)] * 2, [
        i["errors"] for i in infos
    ]


# --- binding rules of hybrid-audio-server ---------------------------------------------------


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_server_refuses_a_public_bind_without_a_key(tmp_path: Path, host: str) -> None:
    port = free_port()
    result = subprocess.run(
        [str(SERVER), "--host", host, "--port", str(port)],
        env=server_env(make_base_dir(tmp_path / "base")),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert f"refusing to bind {host} without INTERNAL_API_KEY" in result.stderr
    assert "--insecure" in result.stderr
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_server_exits_2_on_a_bad_setting(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(SERVER), "--port", str(free_port())],
        env=server_env(make_base_dir(tmp_path / "base"), {"MAX_BODY_BYTES": "lots"}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "MAX_BODY_BYTES must be an integer" in result.stderr


def test_server_binds_a_public_address_with_insecure(
    server_factory: Callable[..., ApiServer],
) -> None:
    server = server_factory(host="0.0.0.0", args=["--insecure"])
    assert httpx.get(f"{server.base_url}/health").json()["auth_required"] is False


def test_server_binds_a_public_address_with_a_key(
    server_factory: Callable[..., ApiServer],
) -> None:
    server = server_factory(host="0.0.0.0", key="public-bind-key")
    assert httpx.get(f"{server.base_url}/health").json()["auth_required"] is True
    error_of(httpx.get(f"{server.base_url}/jobs"), 401, "unauthorized")
    assert httpx.get(f"{server.base_url}/jobs", headers=server.headers()).status_code == 200
