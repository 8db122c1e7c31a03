"""Consistency and audit against a real `gcp-storage-emulator`, and the local-mode audit.

Stems come from the real Piper engine through a `Workspace` in GCS mode; its background
uploader puts them in the bucket, then the tests break the bucket or the base dir the way
the world does (a deleted object, a deleted local stem, other bytes under the same
metadata, edited metadata, a stray object) with the raw client, and read the report.
The emulator ignores page sizes, so paging is the store's own client-side cut (see
tests/test_storage_gcs_requests.py for the requests themselves).
"""

# The emulator fixtures are imported by name; their use as parameters is what ruff's F811
# would call a redefinition.
# ruff: noqa: F811
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.cloud import storage

from app.views.storage import StorageView
from hybrid_audio.config import Settings
from hybrid_audio.jobs import JobState
from hybrid_audio.logs import JsonlLog
from hybrid_audio.storage.base import StorageUnavailableError, stem_object_name
from hybrid_audio.storage.reports import LOCAL_STATUSES, REMOTE_STATUSES
from hybrid_audio.storage.service import LOCAL_AUDIT_NOTE, LOCAL_NOTE
from hybrid_audio.workspace import Workspace
from tests.api_server import free_port, make_base_dir
from tests.gcs_emulator import Emulator, gcs_bucket, gcs_emulator  # noqa: F401

ANA, HILTON = "stem.name.ana", "stem.developer.hilton"


def gcs_settings(base_dir: Path, emulator: Emulator, bucket: str) -> Settings:
    return Settings(
        base_dir=base_dir,
        gcs_bucket=bucket,
        storage_emulator_host=emulator.url,
        gcs_retry_deadline=1,
    )


@pytest.fixture
def workspace(
    tmp_path: Path, gcs_emulator: Emulator, gcs_bucket: str, piper
) -> Iterator[Workspace]:
    settings = gcs_settings(make_base_dir(tmp_path / "a"), gcs_emulator, gcs_bucket)
    workspace = Workspace.build(settings, engine=piper)
    yield workspace
    workspace.close()


@pytest.fixture
def bucket(gcs_emulator: Emulator, gcs_bucket: str) -> storage.Bucket:
    """The test's bucket through the raw client: how the tests break it."""
    return gcs_emulator.bucket(gcs_bucket)


def make_message(workspace: Workspace) -> str:
    """Four stems (Ana, Hilton, two script phrases) and one output, all uploaded; returns
    the output id."""
    result = workspace.assembler.assemble("single_anchor", name="Ana", developer="Hilton")
    assert workspace.uploads is not None
    assert workspace.uploads.wait_idle(30)
    return result.summary.id


def storage_log(workspace: Workspace) -> list[dict]:
    return JsonlLog(Path(workspace.settings.logs_dir) / "storage.jsonl").read()


def by_name(report) -> dict[str, list[str]]:
    rows: dict[str, list[str]] = {}
    for row in report.rows:
        rows.setdefault(row.name, []).append(row.status)
    return rows


def test_a_consistent_state_reports_ok(workspace: Workspace) -> None:
    make_message(workspace)
    report = workspace.storage.consistency()
    assert report.ok, report.rows
    assert (report.mode, report.bucket) == ("gcs", workspace.settings.gcs_bucket)
    assert report.checked_local == report.checked_remote == 6  # 4 stems, a WAV, a manifest
    assert report.summary == dict.fromkeys(REMOTE_STATUSES, 0)
    assert workspace.storage.last_report == report
    [line] = [e for e in storage_log(workspace) if e["event"] == "gcs_consistency"]
    assert line["ok"] is True
    assert line["summary"] == report.summary
    assert line["source"] == "headless"  # called from Python, not through the API
    assert "rows" not in line


def test_consistency_finds_each_kind_of_difference(workspace: Workspace, bucket) -> None:
    output_id = make_message(workspace)
    for name in ("Bea", "Cleo"):
        workspace.generator.generate_name(name)
    assert workspace.uploads.wait_idle(30)
    bea, cleo = stem_object_name("stem.name.bea"), stem_object_name("stem.name.cleo")

    bucket.blob(stem_object_name(ANA)).delete()  # missing remotely
    assert workspace.cache.invalidate(HILTON)  # missing locally
    # Other bytes under Bea's name, with Bea's metadata untouched: only CRC32C can tell.
    other = bucket.blob(bea)
    other.metadata = bucket.get_blob(bea).metadata
    other.upload_from_string(bucket.blob(cleo).download_as_bytes())
    # Cleo's metadata now claims another contract.
    blob = bucket.get_blob(cleo)
    blob.metadata = {**blob.metadata, "contract_signature": "0" * 16}
    blob.patch()
    # The output WAV's metadata names other samples (its bytes are still right).
    wav = bucket.get_blob(f"output/{output_id}.wav")
    wav.metadata = {**wav.metadata, "sha256": "f" * 64}
    wav.patch()
    bucket.blob("stems/name/notes.txt").upload_from_string(b"not a stem")  # orphans
    bucket.blob("stems/name/stem.name.zed.wav").upload_from_string(b"no metadata")

    report = workspace.storage.consistency()

    assert not report.ok
    assert by_name(report) == {
        stem_object_name(ANA): ["missing_remote"],
        stem_object_name(HILTON): ["missing_local"],
        bea: ["checksum_mismatch"],
        cleo: ["contract_mismatch"],
        f"output/{output_id}.wav": ["checksum_mismatch"],
        "stems/name/notes.txt": ["orphan_remote"],
        "stems/name/stem.name.zed.wav": ["orphan_remote"],
    }
    rows = {row.name: row for row in report.rows}
    assert "crc32c" in rows[bea].detail
    assert rows[f"output/{output_id}.wav"].remote_sha256 == "f" * 64
    assert rows[stem_object_name(ANA)].stem_id == ANA
    assert report.summary == {
        "missing_remote": 1,
        "missing_local": 1,
        "checksum_mismatch": 2,
        "contract_mismatch": 1,
        "orphan_remote": 2,
    }
    assert (report.checked_local, report.checked_remote) == (7, 9)


def test_consistency_of_one_stem(workspace: Workspace, bucket) -> None:
    make_message(workspace)
    bucket.blob(stem_object_name(ANA)).delete()

    one = workspace.storage.consistency(stem_id=ANA)
    assert [(row.status, row.stem_id) for row in one.rows] == [("missing_remote", ANA)]
    assert (one.checked_local, one.checked_remote) == (1, 0)
    assert workspace.storage.consistency(stem_id=HILTON).ok

    nowhere = workspace.storage.consistency(stem_id="stem.name.nobody")
    assert nowhere.ok
    assert "neither" in nowhere.note
    with pytest.raises(ValueError, match="not a stem id"):
        workspace.storage.consistency(stem_id="../etc")
    lines = [e for e in storage_log(workspace) if e["event"] == "gcs_consistency"]
    assert [line["stem_id"] for line in lines] == [ANA, HILTON, "stem.name.nobody"]


def test_audit_walks_every_page(workspace: Workspace, bucket) -> None:
    names = [f"stems/name/stem.name.n{index:02d}.wav" for index in range(12)]
    for name in names:
        blob = bucket.blob(name)
        blob.metadata = {"stem_id": name.rsplit("/", 1)[1][:-4], "sha256": "0" * 64}
        blob.upload_from_string(name.encode())
    bucket.blob("output/elsewhere.json").upload_from_string(b"{}")

    pages, token = [], None
    while True:
        page = workspace.storage.audit("stems/name/", limit=5, page_token=token)
        pages.append(page)
        token = page.next_page_token
        if token is None:
            break
    assert [len(page.objects) for page in pages] == [5, 5, 2]
    listed = [obj for page in pages for obj in page.objects]
    assert [obj.name for obj in listed] == names
    assert all(obj.size == len(obj.name) and obj.crc32c and obj.updated for obj in listed)
    assert listed[0].metadata["stem_id"] == "stem.name.n00"
    audits = [e for e in storage_log(workspace) if e["event"] == "gcs_audit"]
    assert [(a["prefix"], a["objects"], a["more"]) for a in audits] == [
        ("stems/name/", 5, True),
        ("stems/name/", 5, True),
        ("stems/name/", 2, False),
    ]
    with pytest.raises(ValueError, match="stems/ or output/"):
        workspace.storage.audit("state/")
    with pytest.raises(ValueError, match="limit"):
        workspace.storage.audit("", limit=0)


def test_status_and_invalidate_remote(workspace: Workspace, bucket) -> None:
    make_message(workspace)
    status = workspace.storage.status()
    assert (status.storage.mode, status.pending, status.uploaded) == ("gcs", 0, 6)

    outcome = workspace.storage.invalidate(ANA, remote=True)
    assert (outcome.local, outcome.remote) == (True, True)
    assert workspace.cache.get(ANA) is None
    assert bucket.get_blob(stem_object_name(ANA)) is None
    kept = workspace.storage.invalidate(HILTON)
    assert (kept.local, kept.remote) == (True, False)
    assert bucket.get_blob(stem_object_name(HILTON)) is not None
    events = [e for e in storage_log(workspace) if e["event"] == "storage_invalidate"]
    assert [(e["stem_id"], e["remote"]) for e in events] == [(ANA, True), (HILTON, False)]


def test_an_unreachable_bucket_is_named_and_logged(tmp_path: Path, piper) -> None:
    settings = Settings(
        base_dir=make_base_dir(tmp_path / "a"),
        gcs_bucket="nobody-listens",
        storage_emulator_host=f"http://127.0.0.1:{free_port()}",
        gcs_retry_deadline=0.5,
    )
    workspace = Workspace.build(settings, engine=piper)
    try:
        with pytest.raises(StorageUnavailableError, match="nobody-listens"):
            workspace.storage.consistency()
        with pytest.raises(StorageUnavailableError, match="nobody-listens"):
            workspace.storage.audit("output/")
        lines = storage_log(workspace)
        assert [line["event"] for line in lines] == ["gcs_consistency", "gcs_audit"]
        assert all("nobody-listens" in line["error"] for line in lines)
    finally:
        workspace.close()


def test_the_dashboards_audit_listing_and_pull_are_logged_as_the_dashboards(
    tmp_path: Path, workspace: Workspace, gcs_emulator: Emulator, gcs_bucket: str, piper
) -> None:
    """The Storage page's view object, driven in-process: Re-audit, the listing and Pull
    each write their storage.jsonl line saying they came from the dashboard."""
    make_message(workspace)
    second = Workspace.build(
        gcs_settings(make_base_dir(tmp_path / "b"), gcs_emulator, gcs_bucket), engine=piper
    )
    try:
        view = StorageView(workspace=second)
        view.audit_button.clicks += 1
        assert second.storage.last_report.summary["missing_local"] == 6
        view.list_button.clicks += 1
        assert view.listing is not None
        job = view.sync("pull")
        job = second.jobs.wait(job.id, timeout=60)
        assert job.state == JobState.DONE, job.errors
        assert job.result["transferred"] == 6
        assert second.storage.consistency().ok  # (headless) the pull made them level
        lines = [(e["event"], e.get("source")) for e in storage_log(second)]
    finally:
        second.close()
    assert ("gcs_consistency", "dashboard") in lines  # Re-audit
    assert ("gcs_audit", "dashboard") in lines  # the listing
    assert ("storage_sync_started", "dashboard") in lines
    assert ("storage_sync_done", "dashboard") in lines
    assert lines.count(("gcs_consistency", "dashboard")) == 2  # again once the pull ended


# --- local mode --------------------------------------------------------------------------


@pytest.fixture
def local_workspace(tmp_path: Path, piper) -> Iterator[Workspace]:
    workspace = Workspace.build(Settings(base_dir=make_base_dir(tmp_path / "local")), engine=piper)
    yield workspace
    workspace.close()


def test_local_mode_audits_the_files_against_the_index(local_workspace: Workspace) -> None:
    workspace = local_workspace
    result = workspace.assembler.assemble("single_anchor", name="Ana", developer="Hilton")
    workspace.generator.generate_name("Bea")
    assert workspace.storage.consistency().ok

    stems = Path(workspace.settings.stems_dir)
    cache = workspace.cache
    os.remove(stems / cache.get(HILTON).path)  # missing file
    bea = stems / cache.get("stem.name.bea").path
    (stems / "name" / "stem.name.zed.wav").write_bytes(bea.read_bytes())  # orphan file
    bea.write_bytes((stems / cache.get(ANA).path).read_bytes())  # other samples
    (stems / "name" / ".stem.name.x.wav.999999999.0a1b.tmp").write_bytes(b"half")  # dead writer
    Path(result.wav_path).write_bytes(b"RIFF tampered")  # the output's WAV changed

    report = workspace.storage.consistency()

    assert (report.mode, report.bucket, report.note) == ("local", None, LOCAL_NOTE)
    assert not report.ok
    assert by_name(report) == {
        stem_object_name(HILTON): ["missing_file"],
        "stems/name/stem.name.zed.wav": ["orphan_file"],
        "stems/name/stem.name.bea.wav": ["hash_mismatch"],
        "stems/name/.stem.name.x.wav.999999999.0a1b.tmp": ["temp_file"],
        f"output/{result.summary.id}.wav": ["hash_mismatch"],
    }
    assert report.summary == {
        "missing_file": 1,
        "orphan_file": 1,
        "hash_mismatch": 2,
        "unreadable": 0,
        "temp_file": 1,
    }
    assert set(report.summary) == set(LOCAL_STATUSES)
    assert report.checked_local == 6  # 5 stems indexed, 1 output
    [line] = [e for e in storage_log(workspace) if e["event"] == "gcs_consistency"][-1:]
    assert (line["mode"], line["ok"]) == ("local", False)


def test_a_local_mode_listing_says_no_bucket_is_configured(local_workspace: Workspace) -> None:
    local_workspace.generator.generate_name("Ana")
    page = local_workspace.storage.audit("stems/")
    assert (page.mode, page.bucket, page.note) == ("local", None, LOCAL_AUDIT_NOTE)
    assert "no bucket is configured" in page.note
    assert [info.name for info in page.objects] == [stem_object_name(ANA)]


def test_local_mode_refuses_what_needs_a_bucket(local_workspace: Workspace) -> None:
    with pytest.raises(ValueError, match="no bucket is configured"):
        local_workspace.storage.start_sync("push")
    with pytest.raises(ValueError, match="no bucket is configured"):
        local_workspace.storage.invalidate(ANA, remote=True)
    status = local_workspace.storage.status()
    assert (status.storage.mode, status.pending, status.uploaded) == ("local", 0, 0)
