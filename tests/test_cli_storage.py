"""The storage commands of the real `hybrid-audio` console script against a real server.

`cache bucket-list`, `cache check-in-bucket` (its exit code, and `make cli-cache`),
`cache invalidate --remote`, `storage status` and `storage sync push|pull --wait`, with the
server in GCS mode on a real `gcp-storage-emulator` bucket, and refused in local mode.
Servers synthesize with the fake Cartesia (fast and deterministic; tests/fakes).
"""

# ruff: noqa: F811  (fixtures are imported by name)

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.api_server import (  # noqa: F401  (fixtures are used by name)
    REPO,
    ApiServer,
    server_factory,
    start_server,
)
from tests.fakes.cartesia import FakeCartesia
from tests.gcs_emulator import Emulator, gcs_bucket, gcs_emulator  # noqa: F401
from tests.test_api_storage import bucket_env, cartesia_env, plant
from tests.test_cli import ok, one_line_error, run, run_make

KEY = "cli-storage-key"


@pytest.fixture
def fake() -> Iterator[FakeCartesia]:
    with FakeCartesia() as started:
        yield started


@pytest.fixture
def gcs_env(gcs_emulator: Emulator, gcs_bucket: str, fake: FakeCartesia) -> dict[str, str]:
    """A server's environment: GCS mode on the test's bucket, Cartesia answered by the fake."""
    return bucket_env(gcs_emulator.url, gcs_bucket) | cartesia_env(fake)


def hybrid_audio(tmp_path: Path, server: ApiServer, *args: str) -> subprocess.CompletedProcess[str]:
    """`hybrid-audio ARGS` against `server`, with its key."""
    return run(tmp_path, server.base_url, *args, key=server.key)


def wait_uploaded(tmp_path: Path, server: ApiServer, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while json.loads(ok(hybrid_audio(tmp_path, server, "--json", "storage", "status")))["pending"]:
        assert time.monotonic() < deadline
        time.sleep(0.2)


def test_bucket_list_shows_objects_and_follows_pages(
    tmp_path: Path,
    server_factory: Callable[..., ApiServer],
    gcs_emulator: Emulator,
    gcs_bucket: str,
) -> None:
    plant(gcs_emulator.bucket(gcs_bucket), [f"stems/name/stem.name.x{i}.wav" for i in range(5)])
    server = server_factory(key=KEY, env=bucket_env(gcs_emulator.url, gcs_bucket))
    listing = ["cache", "bucket-list", "--prefix", "stems/name/", "--limit", "2"]

    every = json.loads(ok(hybrid_audio(tmp_path, server, "--json", *listing, "--all")))
    assert [o["name"] for o in every["objects"]] == [
        f"stems/name/stem.name.x{i}.wav" for i in range(5)
    ]
    assert every["next_page_token"] is None

    first = hybrid_audio(tmp_path, server, *listing)
    table = ok(first)
    assert "stem.name.x0" in table
    assert "José 0" in table  # the metadata's percent-encoded text, decoded
    assert "stem.name.x2" not in table  # one page of 2
    token = first.stderr.split("--page-token", 1)[1].split()[0]
    second = ok(hybrid_audio(tmp_path, server, *listing, "--page-token", token))
    assert "stem.name.x2" in second
    assert "stem.name.x0" not in second


def test_check_in_bucket_exits_0_when_consistent_and_1_on_differences(
    tmp_path: Path,
    server_factory: Callable[..., ApiServer],
    gcs_emulator: Emulator,
    gcs_bucket: str,
    gcs_env: dict[str, str],
) -> None:
    server = server_factory(key=KEY, env=gcs_env)
    ok(hybrid_audio(tmp_path, server, "generate", "name", "Ann"))
    wait_uploaded(tmp_path, server)
    assert "consistency" in ok(hybrid_audio(tmp_path, server, "cache", "check-in-bucket"))
    make = run_make(tmp_path, server, "cli-cache", "check-in-bucket")  # the Makefile shortcut
    assert make.returncode == 0, make.stdout + make.stderr
    assert gcs_bucket in make.stdout

    gcs_emulator.bucket(gcs_bucket).blob("stems/name/stem.name.ann.wav").delete()
    result = hybrid_audio(tmp_path, server, "cache", "check-in-bucket")
    assert "missing_remote" in result.stdout
    assert "stem.name.ann" in result.stdout
    assert "1 missing_remote" in one_line_error(result, 1)
    as_json = hybrid_audio(tmp_path, server, "--json", "cache", "check-in-bucket")
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout)["ok"] is False
    only = ["cache", "check-in-bucket", "--stem-id", "stem.name.ann"]
    assert hybrid_audio(tmp_path, server, *only).returncode == 1


def test_sync_push_follows_the_job_then_invalidate_remote(
    tmp_path: Path,
    server_factory: Callable[..., ApiServer],
    gcs_emulator: Emulator,
    gcs_bucket: str,
    fake: FakeCartesia,
    gcs_env: dict[str, str],
) -> None:
    """Stems made in local mode are pushed by `storage sync push --wait` (progress bar,
    exit 0), after which the check passes; `--remote` deletes the bucket copy."""
    local = server_factory(key=KEY, env=cartesia_env(fake))
    ok(hybrid_audio(tmp_path, local, "generate", "name", "Ann"))
    ok(hybrid_audio(tmp_path, local, "generate", "name", "Bob"))
    local.stop()
    with start_server(local.base_dir, key=KEY, env=gcs_env) as server:
        assert hybrid_audio(tmp_path, server, "cache", "check-in-bucket").returncode == 1
        pushed = hybrid_audio(tmp_path, server, "storage", "sync", "push", "--wait")
        stdout = ok(pushed)
        assert " done: " in stdout
        assert "storage_sync" in pushed.stderr  # the progress bar's description
        ok(hybrid_audio(tmp_path, server, "cache", "check-in-bucket"))
        assert gcs_bucket in ok(hybrid_audio(tmp_path, server, "storage", "status"))

        invalidate = ["cache", "invalidate", "stem.name.ann", "--remote"]
        assert "invalidated; bucket copy deleted" in ok(hybrid_audio(tmp_path, server, *invalidate))
        assert not gcs_emulator.bucket(gcs_bucket).blob("stems/name/stem.name.ann.wav").exists()

        started = hybrid_audio(tmp_path, server, "--json", "storage", "sync", "pull")
        job = json.loads(ok(started))
        assert (job["kind"], job["params"]["direction"]) == ("storage_sync", "pull")


def test_sync_pull_wait_adopts_what_another_server_made(
    tmp_path: Path,
    server_factory: Callable[..., ApiServer],
    fake: FakeCartesia,
    gcs_env: dict[str, str],
) -> None:
    """`storage sync pull --wait` on a second server follows the job to its end (progress
    bar, exit 0) and leaves that server consistent with the bucket."""
    first = server_factory(key=KEY, env=gcs_env)
    ok(hybrid_audio(tmp_path, first, "generate", "name", "Ann"))
    wait_uploaded(tmp_path, first)
    second = server_factory(key=KEY, env=gcs_env)
    assert hybrid_audio(tmp_path, second, "cache", "check-in-bucket").returncode == 1

    pulled = hybrid_audio(tmp_path, second, "storage", "sync", "pull", "--wait")

    assert " done: " in ok(pulled)
    assert "storage_sync" in pulled.stderr  # the progress bar's description
    ok(hybrid_audio(tmp_path, second, "cache", "check-in-bucket"))
    stem = "stems/name/stem.name.ann.wav"
    assert (second.base_dir / stem).read_bytes() == (first.base_dir / stem).read_bytes()
    assert fake.request_count == 1  # the first server's synthesis only


def test_local_mode_refuses_sync_and_remote_invalidate(
    tmp_path: Path, server_factory: Callable[..., ApiServer]
) -> None:
    server = server_factory(key=KEY)
    for args in (
        ["storage", "sync", "push", "--wait"],
        ["cache", "invalidate", "stem.name.ann", "--remote"],
    ):
        line = one_line_error(hybrid_audio(tmp_path, server, *args), 1)
        assert "storage_not_configured" in line
        assert "GCS_BUCKET" in line
    status = json.loads(ok(hybrid_audio(tmp_path, server, "--json", "storage", "status")))
    assert status["storage"]["mode"] == "local"
    checked = hybrid_audio(tmp_path, server, "cache", "check-in-bucket")
    ok(checked)
    assert "no bucket" in checked.stderr  # the report's note
    sideways = hybrid_audio(tmp_path, server, "storage", "sync", "sideways")
    assert sideways.returncode == 2
