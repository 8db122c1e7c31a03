"""Push and pull as jobs, against a real `gcp-storage-emulator` and the real Piper engine.

A push uploads what the bucket lacks and leaves the two sides consistent; a pull into an
empty base dir adopts stems (bytes identical, nothing synthesized) and outputs; neither
direction ever replaces bytes that differ — it reports the conflict. Syncs are jobs of the
one job store: progress, cancellation, and a line in logs/storage.jsonl each.
"""

# The emulator fixtures are imported by name; their use as parameters is what ruff's F811
# would call a redefinition.
# ruff: noqa: F811
from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from google.cloud import storage
from requests.adapters import HTTPAdapter

from hybrid_audio.config import Settings
from hybrid_audio.delivery import deliver
from hybrid_audio.files import stem_lock
from hybrid_audio.jobs import JobState
from hybrid_audio.logs import JsonlLog
from hybrid_audio.storage.base import stem_metadata, stem_object_name
from hybrid_audio.storage.gcs import GcsStore
from hybrid_audio.workspace import Workspace
from tests.api_server import make_base_dir
from tests.gcs_emulator import Emulator, gcs_bucket, gcs_emulator  # noqa: F401

ANA, HILTON = "stem.name.ana", "stem.developer.hilton"


@pytest.fixture
def bucket(gcs_emulator: Emulator, gcs_bucket: str) -> storage.Bucket:
    return gcs_emulator.bucket(gcs_bucket)


@pytest.fixture
def open_workspace(gcs_emulator: Emulator, gcs_bucket: str, piper) -> Iterator:
    """Build workspaces over base dirs, in GCS mode (the test's bucket) or local mode."""
    opened: list[Workspace] = []

    def build(base_dir: Path, gcs: bool = True) -> Workspace:
        bucket_settings = (
            {"gcs_bucket": gcs_bucket, "storage_emulator_host": gcs_emulator.url} if gcs else {}
        )
        settings = Settings(base_dir=base_dir, gcs_retry_deadline=10, **bucket_settings)
        workspace = Workspace.build(settings, engine=piper)
        opened.append(workspace)
        return workspace

    yield build
    for workspace in opened:
        workspace.close()


def run(workspace: Workspace, direction: str, prefix: str = "") -> dict:
    job = workspace.storage.start_sync(direction, prefix, source="test")
    job = workspace.jobs.wait(job.id, timeout=60)
    assert job.state == JobState.DONE, job.errors
    assert job.kind == "storage_sync"
    assert job.params == {"direction": direction, "prefix": prefix, "source": "test"}
    assert job.done == job.total
    return job.result


def events(workspace: Workspace) -> list[dict]:
    return JsonlLog(Path(workspace.settings.logs_dir) / "storage.jsonl").read()


def files_of(folder: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and not path.name.startswith(".")
    }


def test_push_uploads_what_the_bucket_lacks_then_consistency_is_ok(
    tmp_path: Path, open_workspace, bucket
) -> None:
    base = make_base_dir(tmp_path / "a")
    local = open_workspace(base, gcs=False)  # made before the bucket was configured
    output_id = local.assembler.assemble("single_anchor", name="Ana", developer="Hilton").summary.id
    local.close()
    workspace = open_workspace(base)
    assert not workspace.storage.consistency().ok  # 6 objects missing remotely

    report = run(workspace, "push")

    assert report["transferred"] == report["considered"] == 6  # 4 stems, WAV, manifest
    assert report["conflicts"] == report["failed"] == []
    assert workspace.storage.consistency().ok
    blob = bucket.get_blob(f"output/{output_id}.json")
    assert blob.metadata["output_id"] == output_id
    assert bucket.get_blob(stem_object_name(ANA)).metadata["stem_id"] == ANA
    assert run(workspace, "push")["considered"] == 0  # nothing left to push
    sync_events = [e["event"] for e in events(workspace) if e["event"].startswith("storage_sync")]
    assert sync_events == ["storage_sync_started", "storage_sync_done"] * 2


def test_push_reports_a_conflict_and_overwrites_nothing(
    tmp_path: Path, open_workspace, bucket
) -> None:
    base = make_base_dir(tmp_path / "a")
    local = open_workspace(base, gcs=False)
    local.generator.generate_name("Ana")
    bea = local.generator.generate_name("Bea")
    local.close()
    foreign = bucket.blob(stem_object_name(ANA))  # another machine's Ana: other samples
    foreign.metadata = {**stem_metadata(bea), "stem_id": ANA, "text": "Ana"}
    foreign.upload_from_string(b"other bytes")
    workspace = open_workspace(base)

    report = run(workspace, "push", prefix="stems/name/")

    assert report["transferred"] == 1  # Bea
    [conflict] = report["conflicts"]
    assert conflict.startswith(stem_object_name(ANA))
    assert bucket.blob(stem_object_name(ANA)).download_as_bytes() == b"other bytes"
    assert workspace.cache.lookup(ANA) is not None


def test_pull_into_an_empty_base_dir_adopts_stems_and_outputs(
    tmp_path: Path, open_workspace
) -> None:
    first = open_workspace(make_base_dir(tmp_path / "first"))
    first.assembler.assemble("single_anchor", name="Ana", developer="Hilton")
    assert first.uploads.wait_idle(30)
    second = open_workspace(make_base_dir(tmp_path / "second"))

    report = run(second, "pull")

    assert report["transferred"] == report["considered"] == 6  # 4 stems, WAV, manifest
    assert report["conflicts"] == report["failed"] == []
    for folder in ("stems_dir", "output_dir"):
        mine = files_of(Path(getattr(first.settings, folder)))
        assert mine
        assert files_of(Path(getattr(second.settings, folder))) == mine
    assert {r.stem_id for r in second.cache.list()} == {r.stem_id for r in first.cache.list()}
    assert len(second.assembler.list_outputs()) == 1
    assert second.storage.consistency().ok
    assert run(second, "pull")["considered"] == 0


class Recording(HTTPAdapter):
    """The real transport, recording each request and how many were in flight at once."""

    def __init__(self) -> None:
        super().__init__(pool_maxsize=32)
        self.sent: list[tuple[str, str, dict[str, list[str]]]] = []
        self.in_flight = self.most_in_flight = 0
        self._lock = threading.Lock()

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        url = urlsplit(request.url or "")
        with self._lock:
            self.sent.append((request.method or "", url.path, parse_qs(url.query)))
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            return super().send(request, **kwargs)
        finally:
            with self._lock:
                self.in_flight -= 1


def test_a_pull_fetches_each_stem_with_one_request_a_few_at_a_time(
    tmp_path: Path, open_workspace
) -> None:
    """After the listing, one media request per stem (the listing's metadata is what the
    bytes are proven against), sent in batches with at most GCS_UPLOAD_WORKERS in flight."""
    first = open_workspace(make_base_dir(tmp_path / "first"))
    names = ["Ana", "Bea", "Caio", "Dora", "Edu", "Fabi", "Gil", "Hugo", "Ines", "Joao"]
    for name in names:
        first.generator.generate_name(name)
    assert first.uploads.wait_idle(30)
    second = open_workspace(make_base_dir(tmp_path / "second"))
    adapter = Recording()
    session = requests.Session()
    session.mount("http://", adapter)
    second.storage.store = GcsStore(second.settings, http=session)

    report = run(second, "pull", "stems/name/")

    assert report["transferred"] == report["considered"] == len(names)
    assert report["conflicts"] == report["failed"] == []
    lists = [q for method, path, q in adapter.sent if path.endswith("/o")]
    media = [(path, q) for method, path, q in adapter.sent if q.get("alt") == ["media"]]
    assert len(lists) == 1
    assert len(media) == len(names)  # no metadata request per stem
    assert len(adapter.sent) == 1 + len(names)
    assert 1 <= adapter.most_in_flight <= second.settings.gcs_upload_workers
    for record in first.cache.list():
        assert Path(second.cache.path_of(record.stem_id)).read_bytes() == (
            Path(first.cache.path_of(record.stem_id)).read_bytes()
        )


def test_pull_never_overwrites_local_bytes(tmp_path: Path, open_workspace, bucket) -> None:
    first = open_workspace(make_base_dir(tmp_path / "first"))
    output_id = first.assembler.assemble("single_anchor", name="Ana", developer="Hilton").summary.id
    bea = first.generator.generate_name("Bea")
    assert first.uploads.wait_idle(30)
    # The bucket's Ana becomes a valid stem object with other samples (Bea's).
    foreign = bucket.blob(stem_object_name(ANA))
    foreign.metadata = {**stem_metadata(bea), "stem_id": ANA, "text": "Ana"}
    foreign.upload_from_string(bucket.blob(stem_object_name("stem.name.bea")).download_as_bytes())
    base = make_base_dir(tmp_path / "second")
    local = open_workspace(base, gcs=False)  # this machine's own Ana, made before
    local.generator.generate_name("Ana")
    local.close()
    second = open_workspace(base)  # (opening removes a WAV without manifest: write it after)
    (base / "output").mkdir(exist_ok=True)
    (base / "output" / f"{output_id}.wav").write_bytes(b"this machine's file")
    ana_before = Path(second.cache.path_of(ANA)).read_bytes()

    report = run(second, "pull")

    conflicts = "\n".join(report["conflicts"])
    assert stem_object_name(ANA) in conflicts
    assert f"output/{output_id}.wav" in conflicts
    assert Path(second.cache.path_of(ANA)).read_bytes() == ana_before
    assert (base / "output" / f"{output_id}.wav").read_bytes() == b"this machine's file"
    assert not (base / "output" / f"{output_id}.json").exists()  # no half-adopted output
    assert second.cache.lookup("stem.name.bea") is not None  # the rest was pulled
    assert second.cache.lookup(HILTON) is not None


def test_a_pull_waits_for_a_generation_of_the_same_stem(
    tmp_path: Path, open_workspace, piper
) -> None:
    """A pull takes the generator's lock of the stem: one that arrives while this machine is
    making that stem waits, then finds the new local stem — a conflict, never an overwrite."""
    first = open_workspace(make_base_dir(tmp_path / "first"))
    first.generator.generate_name("Ana")
    assert first.uploads.wait_idle(30)
    second = open_workspace(make_base_dir(tmp_path / "second"))
    ours = piper.synthesize("Ana, said slowly", second.contract)  # not the first one's Ana
    with stem_lock(second.settings.state_dir, ANA):  # as generate() holds it while it works
        job = second.storage.start_sync("pull", "stems/", source="test")
        time.sleep(1.0)  # the pull reaches the stem and must wait here
        # upload=False: the emulator ignores if_generation_match, so its upload would
        # replace the bucket's Ana under the pull (GCS refuses it: a queued conflict).
        second.cache.store(ANA, "Ana", ours, upload=False)
    job = second.jobs.wait(job.id, timeout=60)
    assert job.state == JobState.DONE, job.errors
    assert [c.split(":")[0] for c in job.result["conflicts"]] == [stem_object_name(ANA)], job.result
    assert second.cache.get(ANA).sha256 == ours.sha256  # the local stem stayed


def test_a_sync_can_be_cancelled_between_batches(open_workspace, tmp_path: Path, bucket) -> None:
    wav = b"RIFF" + bytes(64)
    for index in range(60):  # 120 objects: batches of 50, 50 and 20
        output_id = f"20260101T0000000000{index:02d}Z_single_anchor_x"
        manifest = {"id": output_id, "output": {"sha256": hashlib.sha256(wav).hexdigest()}}
        bucket.blob(f"output/{output_id}.wav").upload_from_string(wav)
        bucket.blob(f"output/{output_id}.json").upload_from_string(json.dumps(manifest))
    workspace = open_workspace(make_base_dir(tmp_path / "a"))

    job = workspace.storage.start_sync("pull", "output/")
    job.param.watch(lambda _: job.cancel(), "done")  # cancel once the first batch is done
    job = workspace.jobs.wait(job.id, timeout=60)

    assert job.state == JobState.CANCELLED, job.errors
    assert job.done == 50  # the first batch, then the cancel was seen
    assert job.total == 120
    pulled = list(Path(workspace.settings.output_dir).glob("*.json"))
    assert len(pulled) == 25
    [started, failed] = [e for e in events(workspace) if e["event"].startswith("storage_sync")]
    assert (started["event"], failed["event"], failed["error"]) == (
        "storage_sync_started",
        "storage_sync_failed",
        "cancelled",
    )


def test_a_delivery_added_to_a_mirrored_manifest_is_no_difference(
    tmp_path: Path, open_workspace, bucket
) -> None:
    """Deliveries (an MP3 of a message) are recorded in the local manifest only: the bucket
    keeps the manifest as assembled, consistency stays ok, a push has nothing to send and a
    pull of that output into a machine whose manifest gained a delivery sees no conflict."""
    first = open_workspace(make_base_dir(tmp_path / "first"))
    output_id = first.assembler.assemble("single_anchor", name="Ana", developer="Hilton").summary.id
    assert first.uploads.wait_idle(30)
    assembled = bucket.blob(f"output/{output_id}.json").download_as_bytes()

    deliver(first.assembler, output_id, "mp3")

    local = (Path(first.settings.output_dir) / f"{output_id}.json").read_bytes()
    assert json.loads(local)["deliveries"]["mp3"]["size"] > 0
    assert local != assembled
    assert first.storage.consistency().ok
    assert run(first, "push")["considered"] == 0
    assert bucket.blob(f"output/{output_id}.json").download_as_bytes() == assembled

    second = open_workspace(make_base_dir(tmp_path / "second"))
    assert run(second, "pull")["conflicts"] == []
    deliver(second.assembler, output_id, "flac")
    report = run(second, "pull")
    assert report["conflicts"] == report["failed"] == []
    assert second.storage.consistency().ok
