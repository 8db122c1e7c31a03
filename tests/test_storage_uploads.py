"""The durable upload queue and the background uploader, against a real emulator.

The queue is a table of the state database: rows are written in the stem's own
transaction, survive a bucket that is down (backing off, reporting the error) and a
restart (a new Workspace on the same base dir uploads them), and end as uploaded, as a
reported conflict, or dropped when the local file changed since. Real Piper, real
SQLite, the real client on a real emulator; nothing is mocked.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from hybrid_audio.config import Settings
from hybrid_audio.database import Database
from hybrid_audio.engines import Engine
from hybrid_audio.live import read_revisions
from hybrid_audio.storage.base import (
    ObjectExistsError,
    ObjectInfo,
    UploadItem,
    metadata_text,
    output_object_names,
    stem_metadata,
    stem_object_name,
)
from hybrid_audio.storage.gcs import GcsStore
from hybrid_audio.storage.uploads import BACKOFF_CAP, UploadQueue, Uploads
from hybrid_audio.wav import read_wav
from tests.api_server import free_port, make_base_dir
from tests.gcs_emulator import flaky_proxy, gcs_bucket, gcs_emulator, start_emulator  # noqa: F401
from tests.test_storage_readthrough import Bucket, calls, dead_url, gcs_settings, workspace

STEM = "stem.name.ana"
STEM_OBJECT = stem_object_name(STEM)


@pytest.fixture
def bucket(request: pytest.FixtureRequest) -> Bucket:
    return Bucket(
        request.getfixturevalue("gcs_emulator").url, request.getfixturevalue("gcs_bucket")
    )


class PreconditionStore(GcsStore):
    """A GcsStore that refuses to create an object that exists, as GCS does (412).

    The emulator ignores `if_generation_match` and overwrites (tests/gcs_emulator.py);
    the precondition GcsStore sends is tested on the request itself
    (tests/test_storage_gcs_requests.py). This gives the emulator that one GCS behaviour,
    so the uploader's handling of the refusal runs against real objects.
    """

    def upload_many(
        self, items: Sequence[UploadItem], workers: int | None = None
    ) -> list[ObjectInfo | Exception]:
        return [
            ObjectExistsError(item[0]) if self.exists(item[0]) else self.upload(*item)
            for item in items
        ]


# --- the queue --------------------------------------------------------------------------


def test_failures_back_off_doubling_to_a_cap_and_retry_now_clears_them(tmp_path: Path) -> None:
    queue = UploadQueue(Database(tmp_path / "state.db"))
    with queue.database.write() as db:
        queue.add(db, STEM_OBJECT, "a" * 64)
    assert [row.name for row in queue.due()] == [STEM_OBJECT]
    assert queue.due() == []  # leased to the first taker

    waits = []
    for _ in range(12):
        before = time.time()
        queue.failed(STEM_OBJECT, "bucket down", "a" * 64)
        waits.append(queue.rows()[0]["next_attempt_at"] - before)
    assert [round(wait) for wait in waits[:4]] == [1, 2, 4, 8]
    assert round(waits[-1]) == BACKOFF_CAP
    counts = queue.counts()
    assert (counts.pending, counts.failing, counts.due) == (1, 1, 0)
    assert counts.last_error == "bucket down"

    assert queue.retry_now() == 1
    assert queue.counts().due == 1


def test_an_output_queued_before_its_commit_is_held_until_released(tmp_path: Path) -> None:
    queue = UploadQueue(Database(tmp_path / "state.db"))
    queue.add_output("20260101T000000Z_single_anchor_ana", "a" * 64, b"{}")
    assert queue.due() == []  # the manifest is not in place yet
    assert queue.counts().pending == 2
    queue.release("20260101T000000Z_single_anchor_ana")
    assert sorted(row.name for row in queue.due()) == sorted(
        output_object_names("20260101T000000Z_single_anchor_ana")
    )


def test_a_conflict_is_not_due_and_a_newer_version_replaces_the_row(tmp_path: Path) -> None:
    queue = UploadQueue(Database(tmp_path / "state.db"))
    with queue.database.write() as db:
        queue.add(db, STEM_OBJECT, "a" * 64)
    queue.conflict(STEM_OBJECT, "other bytes there")
    counts = queue.counts()
    assert (counts.pending, counts.conflicts, counts.due) == (0, 1, 0)
    assert queue.due() == []
    assert queue.retry_now(conflicts=False) == 0  # what a restart does: conflicts stay
    assert queue.counts().conflicts == 1

    with queue.database.write() as db:  # the stem is made again: a fresh pending row
        queue.add(db, STEM_OBJECT, "b" * 64)
    queue.done(STEM_OBJECT, "a" * 64)  # settling the old version leaves the new one
    (row,) = queue.rows()
    assert (row["sha256"], row["state"], row["attempts"]) == ("b" * 64, "pending", 0)
    queue.done(STEM_OBJECT, "b" * 64)
    assert queue.rows() == []


def test_a_stored_stem_is_queued_in_its_own_transaction(
    tmp_path: Path, bucket: Bucket, piper: Engine
) -> None:
    settings = gcs_settings(make_base_dir(tmp_path), bucket.name, bucket.url)
    with workspace(settings, piper) as ws:
        ws.uploads.close()  # nothing drains the queue: what store() wrote stays visible
        before = read_revisions(ws.database.connection())["uploads"]
        record = ws.generator.generate_name("Ana")
        wav = ws.cache.load(record.stem_id)
        ws.cache.store("stem.name.bob", "Bob", wav, upload=False)  # adopted: not queued

        assert [(r["object_name"], r["sha256"]) for r in ws.uploads.queue.rows()] == [
            (STEM_OBJECT, record.sha256)
        ]
        assert read_revisions(ws.database.connection())["uploads"] > before


def test_local_mode_has_no_queue_and_no_read_through(tmp_path: Path, piper: Engine) -> None:
    with workspace(Settings(base_dir=make_base_dir(tmp_path)), piper) as ws:
        assert ws.store.mode == "local"
        assert ws.uploads is None
        assert ws.generator.remote is None
        ws.generator.generate_name("Ana")
        assert UploadQueue(ws.database).rows() == []


# --- the uploader -----------------------------------------------------------------------


def test_an_assembled_message_uploads_its_stems_and_output(
    tmp_path: Path, bucket: Bucket, piper: Engine
) -> None:
    settings = gcs_settings(make_base_dir(tmp_path), bucket.name, bucket.url)
    with workspace(settings, piper) as ws:
        result = ws.assembler.assemble("double_anchor", name="Ana", developer="Hilton")
        assert ws.uploads.wait_idle(30)
        assert ws.uploads.queue.rows() == []
        assert ws.uploads.uploaded == 6  # four stems, the WAV and its manifest

        wav_name, json_name = output_object_names(result.summary.id)
        manifest = json.loads(Path(result.manifest_path).read_bytes())
        for name, path in ((wav_name, result.wav_path), (json_name, result.manifest_path)):
            data, info = ws.store.download(name)
            assert data == Path(path).read_bytes()
            assert info.metadata == {
                "output_id": result.summary.id,
                "sha256": hashlib.sha256(data).hexdigest(),
                "template": "double_anchor",
                "contract_signature": manifest["contract_signature"],
            }
        for record in ws.cache.list():
            data, info = ws.store.download(stem_object_name(record.stem_id))
            assert data == ws.cache.path_of(record.stem_id).read_bytes()
            assert info.metadata == stem_metadata(record)
            # What another machine needs to adopt it, as the issue names it:
            assert info.metadata["stem_id"] == record.stem_id
            assert info.metadata["kind"] == record.stem_id.split(".")[1]
            assert metadata_text(info.metadata) == record.text
            assert info.metadata["contract_signature"] == ws.contract.signature()
            assert info.metadata["engine"] == "piper"
            assert info.metadata["sha256"] == read_wav(data).sha256


def test_uploads_wait_out_an_unreachable_bucket_and_a_restart_resumes_them(
    tmp_path: Path, bucket: Bucket, piper: Engine
) -> None:
    base_dir = make_base_dir(tmp_path)
    down = gcs_settings(base_dir, bucket.name, dead_url(), deadline=0.5)
    with workspace(down, piper) as ws:
        result = ws.assembler.assemble("double_anchor", name="Ana", developer="Hilton")
        assert result.report.ok  # local work succeeds with the bucket down
        assert ws.uploads.wait_idle(30)  # every row tried once, now backing off
        rows = ws.uploads.queue.rows()
        assert len(rows) == 6
        assert all(row["state"] == "pending" and row["attempts"] >= 1 for row in rows)
        assert all(bucket.name in row["last_error"] for row in rows)
        assert (ws.uploads.pending, ws.uploads.failing) == (6, 6)
        assert bucket.name in ws.uploads.last_error
        expected = {row["object_name"] for row in rows}

    with workspace(gcs_settings(base_dir, bucket.name, bucket.url), piper) as ws:
        assert ws.uploads.wait_idle(30)
        assert ws.uploads.queue.rows() == []
        assert calls(ws) == []
        assert {info.name for info in ws.store.iterate("")} == expected
        assert ws.store.download(output_object_names(result.summary.id)[0])[0] == (
            Path(result.wav_path).read_bytes()
        )


def test_an_upload_failing_transiently_is_retried_by_the_library_policy(
    tmp_path: Path, bucket: Bucket, piper: Engine
) -> None:
    """The bucket answers the first upload 503 (a real proxy in front of the emulator): the
    client's retry policy sends it again, with the same create-only precondition, and the
    queue never sees a failure."""
    with flaky_proxy(bucket.url, failures=1) as proxy:
        settings = gcs_settings(make_base_dir(tmp_path), bucket.name, proxy.url, deadline=30)
        with workspace(settings, piper) as ws:
            ws.generator.generate_name("Ana")
            assert ws.uploads.wait_idle(30)
            assert ws.uploads.queue.rows() == []
            assert (ws.uploads.uploaded, ws.uploads.failing) == (1, 0)
            local = ws.cache.path_of(STEM).read_bytes()
    assert len(proxy.uploads) == 2  # the 503, then the retry
    assert all("ifGenerationMatch=0" in query for query in proxy.uploads)
    direct = GcsStore(gcs_settings(tmp_path, bucket.name, bucket.url))  # not via the proxy
    assert direct.download(STEM_OBJECT)[0] == local


def test_uploads_resume_in_the_same_process_once_the_bucket_is_back(
    tmp_path: Path, piper: Engine
) -> None:
    """The bucket goes away (its emulator stopped), a stem is made, its upload fails and
    backs off; the emulator comes back on the same port and the same running uploader
    uploads it — no restart, no retry button."""
    port = free_port()
    emulator = start_emulator(tmp_path, port)
    name = emulator.new_bucket()
    settings = gcs_settings(make_base_dir(tmp_path / "base"), name, emulator.url, deadline=0.5)
    try:
        with workspace(settings, piper) as ws:
            emulator.stop()
            ws.generator.generate_name("Ana")
            assert ws.uploads.wait_idle(30)  # tried, failed, backing off
            [row] = ws.uploads.queue.rows()
            assert row["attempts"] >= 1
            assert name in row["last_error"]

            emulator = start_emulator(tmp_path, port)  # in memory: the bucket is made again
            emulator.client().create_bucket(name)
            deadline = time.monotonic() + 120  # backoff waits up to 1 + 2 + 4 … s
            while ws.uploads.queue.rows() and time.monotonic() < deadline:
                time.sleep(0.2)
            assert ws.uploads.queue.rows() == []
            assert ws.uploads.uploaded == 1
            remote = emulator.bucket(name).blob(STEM_OBJECT).download_as_bytes()
            assert remote == ws.cache.path_of(STEM).read_bytes()
    finally:
        emulator.stop()


@pytest.mark.parametrize("theirs", ["other", "same", "same_sha256_other_bytes"])
def test_an_object_already_in_the_bucket_is_a_conflict_unless_it_is_the_same(
    tmp_path: Path, bucket: Bucket, piper: Engine, theirs: str
) -> None:
    """Same bytes → done; other bytes → a conflict, also when the object's metadata claims
    the right sha256 (corrupted bytes, or an upload the bucket stored wrong and whose retry
    met the object): judged by the object's CRC32C, not by its metadata alone."""
    settings = gcs_settings(make_base_dir(tmp_path), bucket.name, bucket.url)
    with workspace(settings, piper) as ws:
        ws.uploads.close()
        record = ws.generator.generate_name("Ana")
        local = ws.cache.path_of(STEM).read_bytes()
        # Another machine's object under that name, arrived after this one made its stem.
        metadata = {"sha256": "f" * 64 if theirs == "other" else record.sha256, "stem_id": STEM}
        their_bytes = local if theirs == "same" else b"their bytes"
        ws.store.upload(STEM_OBJECT, their_bytes, metadata, "audio/wav")

        uploads = Uploads(
            settings=settings,
            store=PreconditionStore(settings),
            queue=ws.uploads.queue,
            cache=ws.cache,
        )
        uploads.start()
        try:
            assert uploads.wait_idle(30)
            time.sleep(0.3)
            assert uploads.wait_idle(30)  # a conflict is not retried
            rows = ws.uploads.queue.rows()
        finally:
            uploads.close()

        if theirs == "same":
            assert rows == []  # someone uploaded the same stem first: done
            assert uploads.conflicts == 0
        else:
            assert [(r["state"], r["attempts"]) for r in rows] == [("conflict", 1)]
            assert STEM_OBJECT in rows[0]["last_error"]
            assert uploads.conflicts == 1
            assert STEM_OBJECT in uploads.last_error
            ws.uploads.refresh()  # the workspace's own uploader reads the shared queue
            assert ws.storage.status().conflicts == 1  # GET /storage, storage status
        assert uploads.uploaded == 0
        assert ws.store.download(STEM_OBJECT)[0] == their_bytes  # never overwritten
        assert ws.cache.path_of(STEM).read_bytes() == local
        assert ws.cache.read(ws.cache.get(STEM)).record.sha256 == record.sha256


def test_a_row_whose_stem_was_invalidated_is_dropped_not_uploaded(
    tmp_path: Path, bucket: Bucket, piper: Engine
) -> None:
    settings = gcs_settings(make_base_dir(tmp_path), bucket.name, bucket.url)
    with workspace(settings, piper) as ws:
        ws.uploads.close()
        ws.generator.generate_name("Ana")
        assert ws.cache.invalidate(STEM)
        assert len(ws.uploads.queue.rows()) == 1

        uploads = Uploads(settings=settings, store=ws.store, queue=ws.uploads.queue, cache=ws.cache)
        uploads.start()
        try:
            assert uploads.wait_idle(30)
        finally:
            uploads.close()
        assert ws.uploads.queue.rows() == []
        assert not ws.store.exists(STEM_OBJECT)


def test_refresh_shows_rows_another_process_queued(
    tmp_path: Path, bucket: Bucket, piper: Engine
) -> None:
    settings = gcs_settings(make_base_dir(tmp_path), bucket.name, bucket.url)
    with workspace(settings, piper) as ws:
        ws.uploads.close()
        ws.refresh()
        assert ws.uploads.pending == 0
        other = UploadQueue(Database(settings.database_path))  # another process's connection
        with other.database.write() as db:
            other.add(db, STEM_OBJECT, "a" * 64)
        assert ws.uploads.pending == 0  # nothing arrives by itself
        ws.refresh()
        assert ws.uploads.pending == 1


EXIT_SCRIPT = """
import sys, time
from pathlib import Path
from hybrid_audio.config import Settings
from hybrid_audio.engines import create_engine
from hybrid_audio.workspace import Workspace

base_dir, url = Path(sys.argv[1]), sys.argv[2]
settings = Settings(
    base_dir=base_dir, gcs_bucket="down-bucket", storage_emulator_host=url,
    gcs_retry_deadline=10, gcs_upload_workers=1,
)
ws = Workspace.build(settings, engine=create_engine(Settings(tts_engine="piper")))
ws.uploads.close()  # make the stems with the uploader stopped and no read-through
ws.generator.remote = None
for name in ("Ana", "Bob"):
    ws.generator.generate_name(name)
uploads = ws.uploads.__class__(
    settings=settings, store=ws.store, queue=ws.uploads.queue, cache=ws.cache
)
uploads.start()
while not uploads.queue.counts().due == 0:  # the batch is taken: its uploads are in flight
    time.sleep(0.01)
time.sleep(0.2)
uploads.close(timeout=0.2)
ws.close()
print("closed", flush=True)
"""


def test_a_process_exits_at_once_with_uploads_in_flight_to_a_bucket_that_is_down(
    tmp_path: Path,
) -> None:
    """Uploads in flight when a process ends are abandoned, not waited for: their rows
    stay queued (leased) and the next start resumes them. Before, the pool's worker
    threads were joined at interpreter exit, so a server stopped with the bucket down hung
    for every upload of the batch in turn, each retried for GCS_RETRY_DEADLINE: 64 rows,
    8 workers, 60 s → 8 minutes. Here: 2 rows, 1 worker, 10 s each at most."""
    base_dir = make_base_dir(tmp_path)
    root = Path(__file__).resolve().parent.parent
    process = subprocess.Popen(
        [sys.executable, "-c", EXIT_SCRIPT, str(base_dir), dead_url()],
        stdout=subprocess.PIPE,
        text=True,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "closed"
        closed = time.monotonic()
        assert process.wait(timeout=30) == 0
        assert time.monotonic() - closed < 2.0
    finally:
        process.kill()
        process.wait()
    rows = UploadQueue(Database(Settings(base_dir=base_dir).database_path)).rows()
    assert len(rows) == 2  # nothing lost: the next start uploads them


CRASH_SCRIPT = """
import os, signal, sys
from pathlib import Path
from hybrid_audio.config import Settings
from hybrid_audio.engines import create_engine
from hybrid_audio.workspace import Workspace

base_dir, bucket, url = sys.argv[1:]
settings = Settings(base_dir=base_dir, gcs_bucket=bucket, storage_emulator_host=url)
ws = Workspace.build(settings, engine=create_engine(Settings(tts_engine="piper")))
ws.uploads.close()  # nothing leaves this process: only the restart can upload
output_dir = Path(settings.output_dir).resolve()
rename = os.replace


def rename_then_die(source, target):
    rename(source, target)  # the real rename: the manifest is in place, the output committed
    target = Path(target)
    if target.suffix == ".json" and target.resolve().parent == output_dir:
        os.kill(os.getpid(), signal.SIGKILL)


os.replace = rename_then_die
ws.assembler.assemble("double_anchor", name="Ana", developer="Hilton")
print("not killed", flush=True)
"""


def test_a_process_killed_as_its_output_commits_still_uploads_it_after_a_restart(
    tmp_path: Path, bucket: Bucket, piper: Engine
) -> None:
    """The output's queue row is written before its manifest commits it. A process killed
    (SIGKILL, by itself, the instant the manifest's rename returns: the real rename, the
    real queue, real SQLite) leaves a committed output whose upload the next start makes.
    Before, the row was written after the manifest: this output never reached the bucket."""
    base_dir = make_base_dir(tmp_path)
    root = Path(__file__).resolve().parent.parent
    crashed = subprocess.run(
        [sys.executable, "-c", CRASH_SCRIPT, str(base_dir), bucket.name, bucket.url],
        capture_output=True,
        text=True,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        timeout=120,
        check=False,
    )
    assert crashed.returncode == -9, crashed.stderr[-2000:]
    settings = gcs_settings(base_dir, bucket.name, bucket.url)
    [manifest] = list(Path(settings.output_dir).glob("*.json"))
    output_id = manifest.stem

    with workspace(settings, piper) as ws:
        assert ws.uploads.wait_idle(30)
        assert ws.uploads.queue.rows() == []
        assert [o.id for o in ws.assembler.list_outputs()] == [output_id]  # kept: committed
        for name, path in zip(
            output_object_names(output_id), (manifest.with_suffix(".wav"), manifest), strict=True
        ):
            assert ws.store.download(name)[0] == path.read_bytes()


class ErasedInFlightStore(GcsStore):
    """A GcsStore during whose batch an output is erased (as `Campaigns.delete` does: its
    files, its queue rows and its bucket copies) after the uploader read its bytes."""

    def __init__(self, settings: Settings, erase: list[Path], queue: UploadQueue) -> None:
        super().__init__(settings)
        self.erase, self.queue = erase, queue

    def upload_many(
        self, items: Sequence[UploadItem], workers: int | None = None
    ) -> list[ObjectInfo | Exception]:
        for path in self.erase:
            path.unlink()
            name = f"output/{path.name}"
            self.queue.done(name)
            self.delete(name)  # nothing there yet: the erasure finds no bucket copy
        self.erase = []
        return super().upload_many(items, workers)


def test_an_output_erased_while_its_upload_is_in_flight_does_not_stay_in_the_bucket(
    tmp_path: Path, bucket: Bucket, piper: Engine
) -> None:
    """Erasing a campaign removes its messages here and in the bucket (personal data). An
    upload already in flight lands after that erasure looked at the bucket, so the
    uploader itself removes an output it has just uploaded whose local file is gone."""
    settings = gcs_settings(make_base_dir(tmp_path), bucket.name, bucket.url)
    with workspace(settings, piper) as ws:
        ws.uploads.close()
        result = ws.assembler.assemble("double_anchor", name="Ana", developer="Hilton")
        erase = [Path(result.wav_path), Path(result.manifest_path)]
        store = ErasedInFlightStore(settings, erase, ws.uploads.queue)
        uploads = Uploads(settings=settings, store=store, queue=ws.uploads.queue, cache=ws.cache)
        uploads.start()
        try:
            assert uploads.wait_idle(30)
        finally:
            uploads.close()

        assert ws.uploads.queue.rows() == []
        names = {info.name for info in ws.store.iterate("")}
        assert names == {stem_object_name(r.stem_id) for r in ws.cache.list()}  # stems only
