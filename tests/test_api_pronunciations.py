"""`/pronunciations` and `/assemble/outputs/{id}/stale` on the real server (real Piper).

A fix over HTTP changes the stem (its audio too), lists the messages it made stale and
why; removing it restores the stem's bytes and the message is current again. Bad entries
are 422s in the error envelope naming the problem.
"""

# ruff: noqa: F811  (server fixtures are imported by name)

from __future__ import annotations

import hashlib
from typing import Any

import httpx
import pytest

from tests.api_server import ApiServer, tiny_server  # noqa: F401  (fixture used by name)

pytestmark = pytest.mark.slow

STALE_REASONS = {
    "remade": "made again since: other audio",
    "entry": "its pronunciation entry changed; regenerate it",
}


@pytest.fixture(scope="module")
def client(tiny_server: ApiServer) -> httpx.Client:
    return tiny_server.client(timeout=60)


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}, body
    return body["error"]


def stem_audio_sha(client: httpx.Client, stem_id: str) -> str:
    response = client.get(f"/cache/stems/{stem_id}/audio")
    assert response.status_code == 200, response.text
    return hashlib.sha256(response.content).hexdigest()


def test_a_fix_over_http_changes_the_stem_and_its_removal_restores_it(
    client: httpx.Client,
) -> None:
    message = client.post(
        "/assemble/template",
        json={"template": "double_anchor", "name": "Bob", "developer": "Beta Builders"},
    ).json()
    stem_id = "stem.developer.beta_builders"
    audio_before = stem_audio_sha(client, stem_id)
    assert client.get(f"/assemble/outputs/{message['id']}/stale").json() == []

    fixed = client.put("/pronunciations", json={"text": "Beta", "respelling": "Beeta"})

    assert fixed.status_code == 200, fixed.text
    report = fixed.json()
    assert report["entry"]["text"] == "Beta"
    assert [(r["stem_id"], r["spoken_as"]) for r in report["regenerated"]] == [
        (stem_id, "Beeta Builders")
    ]
    assert report["failed"] == []
    assert report["stale_outputs"] == [
        {
            "output_id": message["id"],
            "stems": [
                {"stem_id": stem_id, "text": "Beta Builders", "reason": STALE_REASONS["remade"]}
            ],
        }
    ]
    assert stem_audio_sha(client, stem_id) != audio_before
    assert client.get(f"/assemble/outputs/{message['id']}/stale").json() == [
        {"stem_id": stem_id, "text": "Beta Builders", "reason": STALE_REASONS["remade"]}
    ]
    stale = client.get("/pronunciations/stale-outputs").json()
    assert [o["output_id"] for o in stale] == [message["id"]]
    assert client.get("/pronunciations").json()[0]["respelling"] == "Beeta"
    preview = client.get("/pronunciations/preview", params={"text": "Hi  beta builders"}).json()
    assert preview["engine_text"] == "Hi Beeta builders"
    assert preview["entries"] == ["Beta"]
    used = client.get("/pronunciations/stems", params={"text": "BETA"}).json()
    assert [r["stem_id"] for r in used] == [stem_id]

    removed = client.delete("/pronunciations", params={"text": "beta"})

    assert removed.status_code == 200, removed.text
    assert removed.json()["removed"] is True
    assert stem_audio_sha(client, stem_id) == audio_before
    assert client.get(f"/assemble/outputs/{message['id']}/stale").json() == []
    assert client.get("/pronunciations").json() == []
    error = error_of(client.delete("/pronunciations", params={"text": "beta"}), 404)
    assert "beta" in error["message"]


def test_a_fix_without_regeneration_leaves_the_stem_and_says_so(client: httpx.Client) -> None:
    message = client.post(
        "/assemble/template",
        json={"template": "double_anchor", "name": "Cid", "developer": "Acme Homes"},
    ).json()
    fixed = client.put(
        "/pronunciations", json={"text": "Cid", "respelling": "Sid", "regenerate": False}
    ).json()
    try:
        assert fixed["regenerated"] == []
        stale = client.get(f"/assemble/outputs/{message['id']}/stale").json()
        assert stale == [
            {"stem_id": "stem.name.cid", "text": "Cid", "reason": STALE_REASONS["entry"]}
        ]
    finally:
        removed = client.delete("/pronunciations", params={"text": "Cid", "regenerate": "false"})
        assert removed.status_code == 200, removed.text
    assert client.get(f"/assemble/outputs/{message['id']}/stale").json() == []


def test_piper_phonemes_over_http(client: httpx.Client) -> None:
    """Ann said with the phonemes of Cid is the Cid stem's audio, byte for byte."""
    for name in ("Cid", "Ann"):
        assert client.post("/generate/name", json={"name": name}).status_code == 200
    report = client.put("/pronunciations", json={"text": "Ann", "phonemes": {"piper": "sˈɪd"}})
    try:
        assert report.status_code == 200, report.text
        (ann,) = report.json()["regenerated"]
        assert ann["spoken_as"] == "[[ sˈɪd ]]"
        assert stem_audio_sha(client, "stem.name.ann") == stem_audio_sha(client, "stem.name.cid")
    finally:
        client.delete("/pronunciations", params={"text": "Ann"})


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"text": ""}, "text: String should have at least 1 character"),
        ({"text": "x" * 10_000, "respelling": "y"}, "text: String should have at most 256"),
        ({"text": "Ann", "respelling": "[[ æn ]]"}, "[[, ]], << or >>"),
        ({"text": "Ann", "phonemes": {"piper": "<<a|n>>"}}, "[[, ]], << or >>"),
        ({"text": "Ann", "phonemes": {"espeak": "an"}}, "phonemes.espeak"),
        ({"text": "An\u0007n", "respelling": "Anne"}, "control characters"),
        ({"text": "Ann", "respelling": "An\u0000ne"}, "respelling contains control characters"),
        ({"text": "🎉🎉🎉", "respelling": "party"}, "nothing to speak"),
        ({"text": "Ann"}, "needs a respelling or phonemes"),
        ({"text": "Ann", "respelling": "ANN"}, "is the text itself"),
        ({"text": "Ann", "respelling": "Anne", "regenerate": "yes"}, "regenerate"),
    ],
)
def test_bad_entries_are_422_naming_the_problem(
    client: httpx.Client, body: dict[str, Any], problem: str
) -> None:
    error = error_of(client.put("/pronunciations", json=body), 422)
    assert error["code"] == "validation_error"
    assert problem in error["message"], error
    assert client.get("/pronunciations").json() == []


@pytest.mark.parametrize(
    ("path", "params", "status"),
    [
        ("/pronunciations/preview", {"text": "🎉"}, 422),
        ("/pronunciations/preview", {"text": "a\x00b"}, 422),
        ("/pronunciations/preview", {"text": "x" * 10_000}, 422),
        ("/pronunciations/stems", {"text": "\x1b[31m"}, 422),
        ("/pronunciations/preview", {}, 422),
        ("/pronunciations/stale-outputs", {"limit": 0}, 422),
        ("/assemble/outputs/20250101T000000000000Z_none/stale", {}, 404),
        ("/assemble/outputs/..x/stale", {}, 422),
    ],
)
def test_bad_reads_are_refused_in_the_envelope(
    client: httpx.Client, path: str, params: dict[str, Any], status: int
) -> None:
    error_of(client.get(path, params=params), status)


def test_the_routes_need_the_key(tiny_server: ApiServer) -> None:
    anonymous = tiny_server.client(key="")
    for method, path in [
        ("GET", "/pronunciations"),
        ("PUT", "/pronunciations"),
        ("DELETE", "/pronunciations?text=Ann"),
        ("GET", "/pronunciations/preview?text=Ann"),
        ("GET", "/pronunciations/stems?text=Ann"),
        ("GET", "/pronunciations/stale-outputs"),
        ("GET", "/assemble/outputs/20250101T000000000000Z_none/stale"),
    ]:
        assert error_of(anonymous.request(method, path), 401)["code"] == "unauthorized"
