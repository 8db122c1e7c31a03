"""Campaigns kept as manifests (`store="manifest"`), against real Piper, SQLite and a real
server: the same list in both store modes gives byte-identical messages, rendered on
request with Range; a stem changed since refuses to render (409 naming it), never serving
other audio; the export zip holds the same bytes; deliveries render the master first."""

from __future__ import annotations

import hashlib
import io
import json
import secrets
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hybrid_audio import assembly, files
from hybrid_audio.assembly import AssemblyError
from hybrid_audio.campaign import CampaignError
from hybrid_audio.config import Settings
from hybrid_audio.delivery import read_delivery
from hybrid_audio.engines import create_engine
from hybrid_audio.recipients import recipients_from_dicts
from hybrid_audio.render import StemChangedError
from hybrid_audio.wav import read_wav
from hybrid_audio.workspace import Workspace
from tests.api_server import NO_FAILURE_LIMIT, TINY_DATASETS, ApiServer, make_base_dir, start_server

SIX = [
    {"name": name, "developer": developer, "id": f"r{index}"}
    for index, (name, developer) in enumerate(
        ((n, d) for n in ("Ann", "Bob", "Cid") for d in ("Acme Homes", "Beta Builders")), 1
    )
]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    base = make_base_dir(tmp_path_factory.mktemp("manifest_mode"), TINY_DATASETS)
    engine = create_engine(Settings(tts_engine="piper"))
    workspace = Workspace.build(Settings(base_dir=base), engine=engine)
    yield workspace
    workspace.close()


@pytest.fixture(scope="module")
def pair(workspace: Workspace) -> tuple[str, str]:
    """(wav-mode campaign, manifest-mode campaign) of the same list, both run to the end."""
    campaigns = workspace.campaigns
    ids = []
    for store in ("wav", "manifest"):
        info = campaigns.create("double_anchor", recipients_from_dicts(SIX), store=store)
        final = campaigns.run(info.id)
        assert (final.state, final.done, final.failed) == ("done", 6, 0)
        ids.append(info.id)
    return ids[0], ids[1]


def outputs(workspace: Workspace, campaign_id: str) -> list[str]:
    return [m.output_id or "" for m in workspace.campaigns.iter_messages(campaign_id)]


def flipped_sample(path: Path) -> bytes:
    """Flip one bit of the file's last sample byte (same size, other samples); the old
    bytes are returned so the caller can put them back."""
    old = path.read_bytes()
    path.write_bytes(old[:-1] + bytes([old[-1] ^ 1]))
    return old


def test_manifest_mode_keeps_only_manifests_that_render_the_same_bytes(
    workspace: Workspace, pair: tuple[str, str]
) -> None:
    wav_mode, manifest_mode = pair
    assembler = workspace.assembler
    assert workspace.campaigns.get(manifest_mode).params["store"] == "manifest"
    for kept, rendered in zip(
        outputs(workspace, wav_mode), outputs(workspace, manifest_mode), strict=True
    ):
        assert not (assembler.output_dir / f"{rendered}.wav").exists()
        manifest = assembler.output_dir / f"{rendered}.json"
        expected = (assembler.output_dir / f"{kept}.wav").read_bytes()
        assert manifest.stat().st_size * 5 < len(expected)
        document = json.loads(manifest.read_bytes())
        assert document["output"]["store"] == "manifest"
        data, _ = assembler.read_output(rendered)
        assert data == expected
        assert hashlib.sha256(data).hexdigest() == document["output"]["sha256"]
        assert assembler.verify_output(rendered).ok
        assert read_wav(data).frames > 0


def test_export_zip_holds_the_same_bytes_in_both_modes(
    workspace: Workspace, pair: tuple[str, str]
) -> None:
    archives = [
        zipfile.ZipFile(io.BytesIO(b"".join(workspace.campaigns.export_zip(campaign_id))))
        for campaign_id in pair
    ]
    wavs = [{n: a.read(n) for n in a.namelist() if n.endswith(".wav")} for a in archives]
    assert sorted(wavs[0]) == [f"r{i}.wav" for i in range(1, 7)]
    assert wavs[0] == wavs[1]
    manifest = json.loads(archives[1].read("manifests/r1.json"))
    assert manifest["output"]["store"] == "manifest"


def test_a_delivery_of_a_manifest_only_message_is_encoded_from_the_rendered_master(
    workspace: Workspace, pair: tuple[str, str]
) -> None:
    wav_mode, manifest_mode = pair
    kept = outputs(workspace, wav_mode)[0]
    rendered = outputs(workspace, manifest_mode)[0]
    want, want_data, _ = read_delivery(workspace.assembler, kept, "flac")
    got, got_data, _ = read_delivery(workspace.assembler, rendered, "flac")
    assert got.master_sha256 == want.master_sha256
    assert got_data == want_data
    assert not (workspace.assembler.output_dir / f"{rendered}.wav").exists()


def test_a_stem_changed_since_refuses_to_render_naming_it(
    workspace: Workspace, pair: tuple[str, str]
) -> None:
    output_id = outputs(workspace, pair[1])[0]
    document = workspace.assembler.load_output(output_id)
    source = next(s for s in document["sources"] if s["kind"] == "stem")
    path = Path(workspace.settings.stems_dir) / source["path"]
    old = flipped_sample(path)
    try:
        with pytest.raises(StemChangedError, match=source["stem_id"]):
            workspace.assembler.read_output(output_id)
        report = workspace.assembler.verify_output(output_id)
        assert not report.ok
        assert source["stem_id"] in report.errors[0]
    finally:
        path.write_bytes(old)
    assert workspace.assembler.read_output(output_id)[0]


def test_a_resumed_manifest_campaign_drops_the_wav_of_a_message_it_adopts(
    workspace: Workspace,
) -> None:
    """A crash after a message was assembled but before its WAV was dropped: the resume
    adopts the message and keeps its manifest only."""
    campaigns = workspace.campaigns
    info = campaigns.create("double_anchor", recipients_from_dicts(SIX[:2]), store="manifest")
    output_id = campaigns.message_output_id(info.id, 1)
    workspace.assembler.assemble(
        "double_anchor", SIX[0]["name"], SIX[0]["developer"], output_id=output_id
    )
    final = campaigns.run(info.id)
    assert (final.done, final.failed) == (2, 0)
    assert not (workspace.assembler.output_dir / f"{output_id}.wav").exists()
    assert workspace.assembler.verify_output(output_id).ok


def test_a_manifest_campaign_never_writes_a_wav(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its messages are proven on the merged bytes and kept as manifests from the start:
    writing each WAV, rewriting its manifest and removing the WAV made this mode, meant to
    be the light one, take twice the time of keeping WAVs."""
    written: list[str] = []
    real = assembly.write_temp

    def recorded(target: Path, data: Any, **kwargs: Any) -> Path:
        if target.parent == workspace.assembler.output_dir:  # (not stems, not campaign files)
            written.append(target.name)
        return real(target, data, **kwargs)

    monkeypatch.setattr(assembly, "write_temp", recorded)
    monkeypatch.setattr(files, "write_temp", recorded)  # (create_new's, for the manifest)
    campaigns = workspace.campaigns
    info = campaigns.create("double_anchor", recipients_from_dicts(SIX[:3]), store="manifest")
    final = campaigns.run(info.id)
    assert (final.done, final.failed) == (3, 0)
    made = outputs(workspace, info.id)
    assert sorted(written) == sorted(f"{output_id}.json" for output_id in made)
    for output_id in made:
        assert not (workspace.assembler.output_dir / f"{output_id}.wav").exists()
        document = workspace.assembler.load_output(output_id)
        assert document["output"]["store"] == "manifest"
        assert document["verify"]["ok"] is True
        data, _ = workspace.assembler.read_output(output_id)
        assert hashlib.sha256(data).hexdigest() == document["output"]["sha256"]
        assert len(data) == document["output"]["bytes"]


def test_a_manifest_only_message_needs_its_id_and_never_replaces_one(
    workspace: Workspace,
) -> None:
    assembler = workspace.assembler
    with pytest.raises(AssemblyError, match="needs its campaign id"):
        assembler.assemble("double_anchor", "Ann", "Acme Homes", keep_wav=False)
    output_id = "c0123456789ab_000001"
    made = assembler.assemble(
        "double_anchor", "Ann", "Acme Homes", output_id=output_id, keep_wav=False
    )
    manifest = Path(made.manifest_path)
    before = manifest.read_bytes()
    with pytest.raises(AssemblyError, match="already exists"):
        assembler.assemble(
            "double_anchor", "Bob", "Acme Homes", output_id=output_id, keep_wav=False
        )
    assert manifest.read_bytes() == before
    assert sorted(p.name for p in assembler.output_dir.glob(f"*{output_id}*")) == [manifest.name]


def test_an_unknown_store_mode_is_refused(workspace: Workspace) -> None:
    with pytest.raises(CampaignError, match="store must be one of wav, manifest"):
        workspace.campaigns.create("double_anchor", recipients_from_dicts(SIX), store="zip")


# --- over HTTP ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    base = make_base_dir(tmp_path_factory.mktemp("manifest_api"), TINY_DATASETS)
    with start_server(base, key=secrets.token_urlsafe(24), env=NO_FAILURE_LIMIT) as server:
        yield server


@pytest.fixture(scope="module")
def client(server: ApiServer) -> httpx.Client:
    return server.client(timeout=60)


def run_campaign(client: httpx.Client, store: str) -> tuple[str, list[dict[str, Any]]]:
    """Start a campaign of SIX in `store` mode, follow its job to the end: (its id, its
    messages)."""
    response = client.post(
        "/campaigns", params={"store": store}, json={"template": "double_anchor", "recipients": SIX}
    )
    assert response.status_code == 202, response.text
    body = response.json()
    deadline = time.monotonic() + 120
    while client.get(f"/jobs/{body['job']['id']}").json()["finished_at"] is None:
        assert time.monotonic() < deadline, "campaign still running"
        time.sleep(0.05)
    campaign = client.get(f"/campaigns/{body['campaign']['id']}").json()
    assert (campaign["state"], campaign["done"]) == ("done", 6), campaign
    return campaign["id"], client.get(f"/campaigns/{campaign['id']}/messages").json()


def test_audio_of_a_manifest_only_message_is_rendered_with_range(
    server: ApiServer, client: httpx.Client
) -> None:
    _, kept = run_campaign(client, "wav")
    campaign_id, rendered = run_campaign(client, "manifest")
    for wav_message, message in zip(kept, rendered, strict=True):
        assert not (server.base_dir / "output" / f"{message['output_id']}.wav").exists()
        url = f"/assemble/outputs/{message['output_id']}/audio"
        whole = client.get(url)
        assert whole.status_code == 200
        assert whole.headers["content-type"] == "audio/wav"
        assert (
            whole.content
            == client.get(f"/assemble/outputs/{wav_message['output_id']}/audio").content
        )
        assert hashlib.sha256(whole.content).hexdigest() == message["sha256"]
        part = client.get(url, headers={"Range": "bytes=100-1123"})
        assert part.status_code == 206
        assert part.headers["content-range"] == f"bytes 100-1123/{len(whole.content)}"
        assert part.content == whole.content[100:1124]
        assert client.get(f"/assemble/outputs/{message['output_id']}/verify").json()["ok"]
    exported = client.get(f"/campaigns/{campaign_id}/export.zip")
    assert exported.status_code == 200
    archive = zipfile.ZipFile(io.BytesIO(exported.content))
    first = client.get(f"/assemble/outputs/{kept[0]['output_id']}/audio").content
    assert archive.read("r1.wav") == first


def test_a_stem_changed_since_is_409_naming_it_never_other_audio(
    server: ApiServer, client: httpx.Client
) -> None:
    message = run_campaign(client, "manifest")[1][0]
    document = client.get(f"/assemble/outputs/{message['output_id']}").json()
    source = next(s for s in document["sources"] if s["kind"] == "stem")
    path = server.base_dir / "stems" / source["path"]
    old = flipped_sample(path)
    try:
        response = client.get(f"/assemble/outputs/{message['output_id']}/audio")
        assert response.status_code == 409, response.text
        assert source["stem_id"] in response.json()["error"]["message"]
        ranged = client.get(
            f"/assemble/outputs/{message['output_id']}/audio", headers={"Range": "bytes=0-99"}
        )
        assert ranged.status_code == 409
    finally:
        path.write_bytes(old)
    assert client.get(f"/assemble/outputs/{message['output_id']}/audio").status_code == 200


def test_an_unknown_store_mode_is_422(client: httpx.Client) -> None:
    response = client.post(
        "/campaigns", params={"store": "zip"}, json={"template": "double_anchor", "recipients": SIX}
    )
    assert response.status_code == 422, response.text
