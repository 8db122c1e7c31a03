"""A campaign in GCS mode: its messages reach the bucket through the upload queue,
messages.csv names their objects (with GCS_PREFIX), and deleting the campaign erases the
bucket copies too. Real Piper, real SQLite, the real client against the emulator."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from hybrid_audio.config import Settings
from hybrid_audio.engines import create_engine
from hybrid_audio.jobs import JobState
from hybrid_audio.recipients import parse_recipients
from hybrid_audio.workspace import Workspace
from tests.api_server import TINY_DATASETS, make_base_dir
from tests.gcs_emulator import Emulator, gcs_bucket, gcs_emulator  # noqa: F401

# ruff: noqa: F811  (fixtures are imported by name)

PREFIX = "team-a/"
LIST = "id,name,developer\nr1,Ann,Acme Homes\nr2,Bob,Beta Builders\nr3,Cid,Acme Homes\n"


@pytest.fixture
def workspace(tmp_path: Path, gcs_emulator: Emulator, gcs_bucket: str) -> Iterator[Workspace]:
    settings = Settings(
        base_dir=make_base_dir(tmp_path / "base", TINY_DATASETS),
        gcs_bucket=gcs_bucket,
        gcs_prefix=PREFIX,
        storage_emulator_host=gcs_emulator.url,
        gcs_retry_deadline=10,
    )
    workspace = Workspace.build(settings, engine=create_engine(Settings(tts_engine="piper")))
    yield workspace
    workspace.close()


def test_a_campaigns_messages_reach_the_bucket_and_its_deletion_erases_them(
    workspace: Workspace, gcs_emulator: Emulator, gcs_bucket: str
) -> None:
    campaigns = workspace.campaigns
    info = campaigns.create("double_anchor", parse_recipients(LIST.encode(), "list.csv"))
    job = workspace.jobs.wait(campaigns.start(info.id, source="test").id, timeout=120)
    assert job.state == JobState.DONE, job.errors
    assert workspace.uploads is not None
    assert workspace.uploads.wait_idle(timeout=60)

    bucket = gcs_emulator.bucket(gcs_bucket)
    folder = campaigns.folder(info.id)
    rows = list(csv.DictReader(io.StringIO((folder / "messages.csv").read_text("utf-8"))))
    assert [row["recipient_id"] for row in rows] == ["r1", "r2", "r3"]
    output_dir = Path(workspace.settings.output_dir)
    for row in rows:
        output_id = row["output_id"]
        assert row["object_name"] == f"{PREFIX}output/{output_id}.wav"
        assert row["manifest_object_name"] == f"{PREFIX}output/{output_id}.json"
        remote = bucket.blob(row["object_name"]).download_as_bytes()
        assert remote == (output_dir / f"{output_id}.wav").read_bytes()
        assert bucket.blob(row["manifest_object_name"]).exists()

    campaigns.delete(info.id)
    left = [blob.name for blob in bucket.list_blobs(prefix=f"{PREFIX}output/{info.id}_")]
    assert left == []  # the personal data is gone from the bucket as well
    assert not list(output_dir.glob(f"{info.id}_*"))
    assert not folder.exists()
