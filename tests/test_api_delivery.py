"""Delivery formats over HTTP (the real server) and through the CLI: the bytes served are
the ones the manifest records, encoded once, re-encoded when tampered, Range works on every
format, a campaign exports in any format, bad formats are refused, everything is behind
the key."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import secrets
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import httpx
import pytest

from hybrid_audio.cli.calllog import Invocation
from hybrid_audio.cli.client import Api, CliError
from hybrid_audio.delivery import FORMAT_NAMES, FORMATS
from tests.api_server import (
    NO_FAILURE_LIMIT,
    TINY_DATASETS,
    ApiServer,
    make_base_dir,
    start_server,
)
from tests.test_cli import run

ENCODED = [f for f in FORMAT_NAMES if f != "wav"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    base = make_base_dir(tmp_path_factory.mktemp("delivery-api"), TINY_DATASETS)
    with start_server(base, key=secrets.token_urlsafe(24), env=NO_FAILURE_LIMIT) as server:
        yield server


@pytest.fixture(scope="module")
def client(server: ApiServer) -> httpx.Client:
    return server.client(timeout=60)


def _message(client: httpx.Client) -> str:
    body = {"template": "double_anchor", "name": "Ann", "developer": "Acme Homes"}
    response = client.post("/assemble/template", json=body)
    assert response.status_code == 200, response.text
    return response.json()["id"]


def _audio(client: httpx.Client, output_id: str, fmt: str, **kwargs: Any) -> httpx.Response:
    return client.get(f"/assemble/outputs/{output_id}/audio", params={"format": fmt}, **kwargs)


def _recorded(client: httpx.Client, output_id: str, fmt: str) -> str:
    """The sha256 the manifest records for `fmt`: the master's, or its delivery's."""
    manifest = client.get(f"/assemble/outputs/{output_id}").json()
    return (manifest["output"] if fmt == "wav" else manifest["deliveries"][fmt])["sha256"]


def test_formats_are_listed(client: httpx.Client) -> None:
    listed = client.get("/assemble/formats").json()
    assert [f["name"] for f in listed] == list(FORMAT_NAMES)
    assert {f["name"]: f["media_type"] for f in listed}["mp3"] == "audio/mpeg"


@pytest.mark.parametrize("fmt", FORMAT_NAMES)
def test_each_format_is_served_as_its_manifest_records_it(client: httpx.Client, fmt: str) -> None:
    output_id = _message(client)
    response = _audio(client, output_id, fmt)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == FORMATS[fmt].media_type
    filename = f"{output_id}{FORMATS[fmt].suffix}"
    assert f'filename="{filename}"' in response.headers["content-disposition"]
    sha = hashlib.sha256(response.content).hexdigest()
    manifest = client.get(f"/assemble/outputs/{output_id}").json()
    if fmt == "wav":
        assert sha == manifest["output"]["sha256"]
        assert "deliveries" not in manifest
        return
    record = manifest["deliveries"][fmt]
    assert sha == record["sha256"]
    assert record["master_sha256"] == manifest["output"]["sha256"]
    if fmt in ("flac", "mp3", "ogg"):  # decodes (ffmpeg) to audio of the master's length
        with av.open(io.BytesIO(response.content)) as container:
            stream = container.streams.audio[0]
            samples = sum(frame.samples for frame in container.decode(stream))
        assert abs(samples / stream.rate - manifest["output"]["duration"]) < 0.11


def test_a_delivery_is_encoded_once_and_a_tampered_one_is_never_served(
    client: httpx.Client, server: ApiServer
) -> None:
    output_id = _message(client)
    first = _audio(client, output_id, "mp3").content
    path = server.base_dir / "output" / "deliveries" / f"{output_id}.mp3"
    before = path.stat()
    assert _audio(client, output_id, "mp3").content == first
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    path.write_bytes(b"ID3" + first[3:-100])  # changed and cut short
    served = _audio(client, output_id, "mp3").content
    assert served == first  # MP3 encodes the same bytes again: re-encoded, not the tampered
    assert hashlib.sha256(served).hexdigest() == _recorded(client, output_id, "mp3")


@pytest.mark.parametrize("fmt", ["mp3", "ogg", "mulaw"])
def test_range_requests_work_on_deliveries(client: httpx.Client, fmt: str) -> None:
    output_id = _message(client)
    whole = _audio(client, output_id, fmt).content
    part = _audio(client, output_id, fmt, headers={"Range": "bytes=10-99"})
    assert part.status_code == 206
    assert part.content == whole[10:100]
    assert part.headers["content-range"] == f"bytes 10-99/{len(whole)}"


def test_bad_formats_and_outputs_are_refused(client: httpx.Client, server: ApiServer) -> None:
    output_id = _message(client)
    response = _audio(client, output_id, "aac")
    assert response.status_code == 422
    message = json.dumps(response.json()["error"])
    assert all(f"'{name}'" in message for name in FORMAT_NAMES)
    assert _audio(client, "20990101T000000000000Z_none", "mp3").status_code == 404
    keyless = server.client(key="")
    assert _audio(keyless, output_id, "mp3").status_code == 401
    assert keyless.get("/assemble/formats").status_code == 401


def test_a_campaign_exports_in_a_delivery_format(client: httpx.Client) -> None:
    recipients = [
        {"name": "Ann", "developer": "Acme Homes", "id": "r1"},
        {"name": "Bob", "developer": "Beta Builders", "id": "r2"},
    ]
    body = client.post("/campaigns", json={"template": "double_anchor", "recipients": recipients})
    assert body.status_code == 202, body.text
    job_id, campaign_id = body.json()["job"]["id"], body.json()["campaign"]["id"]
    deadline = time.monotonic() + 60
    while client.get(f"/jobs/{job_id}").json()["finished_at"] is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    response = client.get(f"/campaigns/{campaign_id}/export.zip", params={"format": "mp3"})
    assert response.status_code == 200, response.text
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    assert sorted(n for n in archive.namelist() if "/" not in n and n.endswith(".mp3")) == [
        "r1.mp3",
        "r2.mp3",
    ]
    rows = list(csv.DictReader(io.StringIO(archive.read("messages.csv").decode())))
    for row in rows:
        data = archive.read(row["file"])
        assert row["file_sha256"] == hashlib.sha256(data).hexdigest()
        manifest = json.loads(archive.read(f"manifests/{row['recipient_id']}.json"))
        assert manifest["deliveries"]["mp3"]["sha256"] == row["file_sha256"]
        assert manifest["output"]["sha256"] == row["sha256"]  # the master's
    bad = client.get(f"/campaigns/{campaign_id}/export.zip", params={"format": "aac"})
    assert bad.status_code == 422


def test_cli_downloads_a_format_and_checks_it(
    client: httpx.Client, server: ApiServer, tmp_path: Path
) -> None:
    output_id = _message(client)
    target = tmp_path / "x.mp3"
    result = run(
        tmp_path, server.base_url, "assemble", "download", output_id, "--format", "mp3",
        "--out", str(target), key=server.key,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert hashlib.sha256(target.read_bytes()).hexdigest() == _recorded(client, output_id, "mp3")
    wav = tmp_path / "x.wav"
    result = run(
        tmp_path, server.base_url, "assemble", "audio", output_id, "--out", str(wav),
        key=server.key,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert wav.read_bytes() == _audio(client, output_id, "wav").content
    result = run(
        tmp_path, server.base_url, "assemble", "download", output_id, "--format", "aac",
        "--out", str(tmp_path / "x.aac"), key=server.key,
    )  # fmt: skip
    assert result.returncode == 2
    assert "wav, flac, mp3, ogg, mulaw, alaw" in result.stderr
    assert not (tmp_path / "x.aac").exists()


def test_a_download_that_fails_its_check_leaves_the_target_as_it_was(
    client: httpx.Client, server: ApiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI checks a download before it takes the target's name: bytes that fail the
    check never replace a good file already there (nor leave a part file behind)."""
    output_id = _message(client)
    target = tmp_path / "x.mp3"
    target.write_bytes(b"an earlier, good download")
    monkeypatch.setenv("INTERNAL_API_KEY", server.key)
    api = Api(server.base_url, 30.0, Invocation())

    def check() -> None:
        raise CliError("sha256 differs")

    with pytest.raises(CliError, match="sha256 differs"):
        api.download(
            f"/assemble/outputs/{output_id}/audio", target, check=check, params={"format": "mp3"}
        )
    assert target.read_bytes() == b"an earlier, good download"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.mp3"]
