"""Schemathesis against the real server's /openapi.json: no 5xx, every error in the envelope.

The schema is built in-process from `create_app(...)` at import time (so pytest can make one
test per operation) and the cases are sent to the real server; a test checks that the
server publishes exactly this schema. (`schemathesis.pytest.from_fixture` would load it from
the server, but schemathesis 4.32 sets `request.node._nodeid`, which pytest 9 no longer
has.)

Why a tiny server: omitted lists in `/generate/rotational` and `/cache/bulk_generate` mean
"the whole dataset", which with the repository's data is ~360 syntheses per call; with 3
names and 2 developers it is 5. NDJSON `count` is capped in the test (the schema allows
100,000, which would take ~30 s of cursor steps) and the streams are covered in test_api.py.
"""

from __future__ import annotations

# The server fixtures are imported from tests/api_server.py (not a conftest), so pytest sees
# them here; their use as parameters is what ruff's F811 would call a redefinition.
# ruff: noqa: F811
import tempfile
import time
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    missing_required_header,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from hybrid_audio.api.app import create_app
from hybrid_audio.config import Settings
from tests.api_server import ApiServer, tiny_server  # noqa: F401  (fixture used by name)

pytestmark = pytest.mark.slow
#: Largest `count` sent to the NDJSON streams, and largest rotation campaign.
MAX_STREAM = 20


def _published_schema() -> dict[str, Any]:
    """What `create_app` publishes at /openapi.json (no server, no files needed)."""
    with tempfile.TemporaryDirectory() as base:
        return create_app(Settings(base_dir=base)).openapi()


OPENAPI = _published_schema()
schema = schemathesis.openapi.from_dict(OPENAPI)
# Unknown query parameters are ignored, as HTTP APIs usually do; the schema does not forbid
# them, so sending them is not a negative test.
# The key is sent by the test (headers=...), not generated: a negative case that mangles a
# generated key would be "fixed" by that header and then wrongly reported as accepted.
schema.config.generation.update(allow_extra_parameters=False, with_security_parameters=False)


def test_server_publishes_the_schema_under_test(tiny_server: ApiServer) -> None:
    published = httpx.get(f"{tiny_server.base_url}/openapi.json", headers=tiny_server.headers())
    assert published.json() == OPENAPI


def envelope(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every non-2xx answer is `{"error": {"code", "message", "details"?}}` in JSON."""
    if response.status_code < 300:
        return None
    media = response.headers.get("content-type", [""])
    media = media[0] if isinstance(media, list) else media
    assert media.startswith("application/json"), f"{response.status_code} is {media!r}"
    body = response.json()
    assert isinstance(body, dict), body
    assert set(body) == {"error"}, body
    error = body["error"]
    assert {"code", "message"} <= set(error) <= {"code", "message", "details"}, error
    assert isinstance(error["code"], str), error
    assert isinstance(error["message"], str), error
    return True


#: The bar (no 5xx, every error in the envelope) plus Schemathesis's conformance checks.
#: Left out: positive_data_acceptance, because an upload must be named .txt/.csv/.json,
#: which the schema cannot say (test_api.py covers that rule); allow_header_conformance,
#: because a path with two routes lists one route's method in Allow (strict xfail:
#: test_api.py::test_405_lists_every_method_of_a_path_with_two_routes).
CHECKS = [
    not_a_server_error,
    envelope,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    missing_required_header,
    ignored_auth,
    unsupported_method,
]


@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_never_answers_5xx(case: Any, tiny_server: ApiServer) -> None:
    count = str((case.query or {}).get("count", ""))
    if case.path.endswith("_stream") and count.isdigit() and MAX_STREAM < int(count) <= 100_000:
        case.query["count"] = MAX_STREAM  # still valid, just shorter
    rotation = case.body.get("rotation") if isinstance(case.body, dict) else None
    limit = rotation.get("count") if isinstance(rotation, dict) else None
    if type(limit) is int and MAX_STREAM < limit <= 100_000:
        rotation["count"] = MAX_STREAM  # still valid; 100,000 messages would take minutes
    case.call_and_validate(
        base_url=tiny_server.base_url,
        headers=tiny_server.headers(),
        checks=CHECKS,
    )


def test_jobs_started_by_generated_requests_did_not_crash(tiny_server: ApiServer) -> None:
    """Bulk routes answer 202 at once; their jobs must end done (or cancelled), not failed.

    Two bulk jobs of its own, started together, make sure there is something to check when
    this test runs alone (then no generated request has started a job).
    """
    client = tiny_server.client()
    own = [
        client.post("/cache/bulk_generate", json={}),
        client.post("/generate/rotational", json={"names": ["Schema Check"]}),
    ]
    assert [r.status_code for r in own] == [202, 202], [r.text for r in own]
    deadline = time.monotonic() + 30
    while True:
        jobs = client.get("/jobs").json()
        if all(job["state"] in {"done", "failed", "cancelled"} for job in jobs):
            break
        assert time.monotonic() < deadline, [j for j in jobs if j["state"] == "running"]
        time.sleep(0.1)
    # Overlapping jobs used to fail each other here (see test_api.py's
    # test_two_bulk_jobs_at_once_both_finish).
    assert [job for job in jobs if job["state"] == "failed"] == []
    states = {job["id"]: (job["state"], job["done"], job["total"]) for job in jobs}
    assert [states.get(r.json()["id"]) for r in own] == [("done", 5, 5), ("done", 1, 1)]
