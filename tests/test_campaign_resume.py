"""A campaign killed half-way (SIGKILL, in another process) resumes to exactly the outputs of
an uninterrupted run: none missing, none twice, the same bytes."""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hybrid_audio import campaign as campaign_module
from hybrid_audio import files as files_module
from hybrid_audio.campaign import CampaignInfo, CampaignState
from hybrid_audio.config import Settings
from hybrid_audio.engines import Engine, create_engine
from hybrid_audio.files import SyncBatch
from hybrid_audio.jobs import JobState
from hybrid_audio.recipients import parse_recipients
from hybrid_audio.workspace import Workspace
from tests.api_server import REPO, TINY_DATASETS, make_base_dir

ROWS = 600  # (at ~700 messages/s, a kill a third of the way in must not come after the end)
RUN = """
import sys
from hybrid_audio.config import Settings
from hybrid_audio.workspace import Workspace
workspace = Workspace.build(Settings(base_dir=sys.argv[1]))
job = workspace.campaigns.start(sys.argv[2], source="test")
workspace.jobs.wait(job.id)
"""


def recipients() -> bytes:
    names, developers = ("Ann", "Bob", "Cid"), ("Acme Homes", "Beta Builders")
    rows = "".join(f"{names[i % 3]},{developers[i % 2]}\n" for i in range(ROWS))
    return ("name,developer\n" + rows).encode()


def committed(database: Path, campaign_id: str) -> int:
    with sqlite3.connect(database, timeout=30) as db:
        row = db.execute("SELECT done FROM campaigns WHERE id = ?", (campaign_id,)).fetchone()
    return row[0] if row else 0


def kill_a_third_in(tmp_path: Path, script: str, engine: Engine) -> tuple[Settings, str]:
    """A campaign of ROWS rows run by `script` in another process, SIGKILLed once a third
    of its rows is committed (a little later, so into the next batch); (settings, its id)."""
    settings = Settings(base_dir=make_base_dir(tmp_path / "base", TINY_DATASETS))
    first = Workspace.build(settings, engine=engine)
    campaign_id = first.campaigns.create("double_anchor", parse_recipients(recipients())).id
    first.close()
    process = subprocess.Popen(
        [sys.executable, "-c", script, str(settings.base_dir), campaign_id],
        cwd=REPO,
        env=dict(os.environ),
    )
    try:
        deadline = time.monotonic() + 120
        while committed(settings.database_path, campaign_id) < ROWS // 3:
            assert process.poll() is None, "the campaign process ended before the kill"
            assert time.monotonic() < deadline, "the campaign made no progress"
            time.sleep(0.01)
        time.sleep(0.1)  # into the next batch: outputs made but not yet committed
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    return settings, campaign_id


def test_sigkill_half_way_then_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    engine = create_engine(Settings(tts_engine="piper"))
    settings, campaign_id = kill_a_third_in(tmp_path, RUN, engine)
    killed_at = committed(settings.database_path, campaign_id)
    assert killed_at < ROWS, "killed too late to test a resume"

    workspace = Workspace.build(settings, engine=engine)
    try:
        campaigns = workspace.campaigns
        interrupted = campaigns.get(campaign_id)
        assert interrupted.state == CampaignState.INTERRUPTED
        assert interrupted.done == killed_at
        job = workspace.jobs.wait(campaigns.resume(campaign_id).id, timeout=120)
        assert job.state == JobState.DONE
        resumed = campaigns.get(campaign_id)
        assert (resumed.state, resumed.done, resumed.failed) == ("done", ROWS, 0)

        output = Path(settings.output_dir)
        wavs = sorted(p.name for p in output.glob(f"{campaign_id}_*.wav"))
        assert wavs == [f"{campaign_id}_{row:06d}.wav" for row in range(1, ROWS + 1)]
        assert not list(output.glob(".*.tmp"))  # no temp file left behind

        again = campaigns.create("double_anchor", parse_recipients(recipients()))
        campaigns.run(again.id)
        expected = {m.row: m.sha256 for m in campaigns.iter_messages(again.id)}
        got = {m.row: m.sha256 for m in campaigns.iter_messages(campaign_id)}
        assert got == expected
        for message in campaigns.iter_messages(campaign_id):
            assert message.verified
            data = (output / f"{message.output_id}.wav").read_bytes()
            assert hashlib.sha256(data).hexdigest() == message.sha256
    finally:
        workspace.close()


def test_resume_adopts_a_recorded_output_and_replaces_a_wav_without_manifest(
    tmp_path: Path,
) -> None:
    """What a crash between writing outputs and committing their rows leaves behind: a
    recorded output (adopted, even without the manifest's campaign block that outputs made
    before it lack), a WAV without manifest and a changed WAV (both made again)."""
    settings = Settings(base_dir=make_base_dir(tmp_path / "base", TINY_DATASETS))
    workspace = Workspace.build(settings, engine=create_engine(Settings(tts_engine="piper")))
    try:
        campaigns = workspace.campaigns
        info = campaigns.create(
            "double_anchor",
            parse_recipients(
                b"name,developer\nAnn,Acme Homes\nBob,Beta Builders\nCid,Acme Homes\n"
            ),
        )
        first, second, third = (campaigns.message_output_id(info.id, row) for row in (1, 2, 3))
        made = workspace.assembler.assemble(
            "double_anchor", "Ann", "Acme Homes", None, output_id=first
        )
        # Row 3's output was written and recorded in its manifest, then changed on disk.
        changed = Path(
            workspace.assembler.assemble(
                "double_anchor", "Cid", "Acme Homes", None, output_id=third
            ).wav_path
        )
        tampered = bytearray(changed.read_bytes())
        tampered[-1] ^= 0xFF
        changed.write_bytes(bytes(tampered))
        inode = os.stat(made.wav_path).st_ino
        output = Path(settings.output_dir)
        (output / f"{second}.wav").write_bytes(b"RIFF half a file")  # no manifest
        campaigns.run(info.id)
        messages = {m.row: m for m in campaigns.messages(info.id)}
        assert os.stat(made.wav_path).st_ino == inode  # adopted, not made again
        assert messages[1].sha256 == made.summary.sha256
        assert messages[1].verified
        # made without a campaign block (as before manifests had one): adopted as it is
        assert "campaign" not in workspace.assembler.load_output(first)
        assert workspace.assembler.load_output(second)["campaign"] == {
            "id": info.id,
            "row": 2,
            "recipient_id": None,
        }
        data = (output / f"{second}.wav").read_bytes()
        assert hashlib.sha256(data).hexdigest() == messages[2].sha256
        assert messages[2].verified
        remade = changed.read_bytes()  # not adopted: made again, and proven
        assert remade != bytes(tampered)
        assert hashlib.sha256(remade).hexdigest() == messages[3].sha256
        assert (messages[3].state, messages[3].verified) == ("done", True)
    finally:
        workspace.close()


RUN_HERE = """
import sys
from hybrid_audio.config import Settings
from hybrid_audio.workspace import Workspace
workspace = Workspace.build(Settings(base_dir=sys.argv[1]))
workspace.campaigns.run(sys.argv[2])
"""


def test_a_python_run_killed_half_way_is_interrupted_not_running_forever(tmp_path: Path) -> None:
    """`Campaigns.run(id)` in a notebook or script (no job given) records a job of its own
    process, so a kill -9 of that process shows as interrupted and the campaign can be
    resumed or deleted (it stayed `running` with no job: resume and delete refused forever,
    cancel did nothing — recipients' names could no longer be erased)."""
    engine = create_engine(Settings(tts_engine="piper"))
    settings, campaign_id = kill_a_third_in(tmp_path, RUN_HERE, engine)
    workspace = Workspace.build(settings, engine=engine)
    try:
        campaigns = workspace.campaigns
        interrupted = campaigns.get(campaign_id)
        assert interrupted.state == CampaignState.INTERRUPTED
        assert interrupted.job_id is not None
        assert workspace.jobs.get(interrupted.job_id).state == JobState.INTERRUPTED
        job = workspace.jobs.wait(campaigns.resume(campaign_id).id, timeout=120)
        assert job.state == JobState.DONE
        assert campaigns.get(campaign_id).done == ROWS
        campaigns.delete(campaign_id)
    finally:
        workspace.close()


NINE_ROWS = b"name,developer\n" + b"Ann,Acme Homes\nBob,Beta Builders\nCid,Acme Homes\n" * 3


@pytest.fixture
def nine_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Workspace, CampaignInfo]]:
    """A workspace with a created campaign of nine rows, committed four at a time."""
    monkeypatch.setattr(campaign_module, "BATCH_ROWS", 4)
    monkeypatch.setattr(campaign_module, "BATCH_SECONDS", 3600.0)
    settings = Settings(base_dir=make_base_dir(tmp_path / "base", TINY_DATASETS))
    workspace = Workspace.build(settings, engine=create_engine(Settings(tts_engine="piper")))
    try:
        yield workspace, workspace.campaigns.create("double_anchor", parse_recipients(NINE_ROWS))
    finally:
        workspace.close()


def test_a_batch_whose_sync_fails_commits_no_row_and_resume_remakes_lost_files(
    nine_rows: tuple[Workspace, CampaignInfo], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Group commit: a batch's files are fsynced before its rows are committed. The sync
    of the second batch fails (as a disk error would); no row of it is `done`, and after
    what a power loss could leave of its unsynced files (an empty WAV, half a manifest),
    the resume makes exactly the outputs of an uninterrupted run."""
    workspace, info = nine_rows
    campaigns, output = workspace.campaigns, Path(workspace.settings.output_dir)
    real_sync, owed = SyncBatch.sync, []

    def sync_fails_the_second_time(self: SyncBatch) -> None:
        if owed:  # the first batch has been committed
            owed.extend(self._files)
            raise OSError(errno.EIO, "input/output error (injected)")
        owed.append(None)
        real_sync(self)

    monkeypatch.setattr(SyncBatch, "sync", sync_fails_the_second_time)
    with pytest.raises(OSError, match="injected"):
        campaigns.run(info.id)
    monkeypatch.setattr(SyncBatch, "sync", real_sync)
    done = [m for m in campaigns.iter_messages(info.id) if m.state == "done"]
    assert [m.row for m in done] == [1, 2, 3, 4]  # the first batch only
    for message in done:
        data = (output / f"{message.output_id}.wav").read_bytes()
        assert hashlib.sha256(data).hexdigest() == message.sha256
    unsynced = sorted({p.name for p in owed if p is not None})
    assert unsynced[:2] == [f"{info.id}_000005.json", f"{info.id}_000005.wav"]
    (output / f"{info.id}_000005.wav").write_bytes(b"")  # its data never reached disk
    manifest = output / f"{info.id}_000006.json"
    manifest.write_bytes(manifest.read_bytes()[:100])  # half a manifest
    assert campaigns.get(info.id).state == CampaignState.FAILED

    job = workspace.jobs.wait(campaigns.resume(info.id).id, timeout=120)
    assert job.state == JobState.DONE
    assert campaigns.get(info.id).done == 9
    again = campaigns.create("double_anchor", parse_recipients(NINE_ROWS))
    campaigns.run(again.id)
    expected = {m.row: m.sha256 for m in campaigns.iter_messages(again.id)}
    messages = list(campaigns.iter_messages(info.id))
    assert {m.row: m.sha256 for m in messages} == expected
    for message in messages:
        assert message.verified
        data = (output / f"{message.output_id}.wav").read_bytes()
        assert hashlib.sha256(data).hexdigest() == message.sha256
        assert workspace.assembler.load_output(message.output_id)["output"]["sha256"] == (
            message.sha256
        )


@pytest.mark.skipif(files_module.SYNCFS is None, reason="no syncfs (Linux >= 5.8) here")
def test_rows_whose_syncfs_failed_are_never_committed_and_resume_completes(
    nine_rows: tuple[Workspace, CampaignInfo], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kernel reports a failed write-back to the `syncfs` of the second batch (the real
    `SyncBatch`, not a stand-in): no row of that batch, nor of a later one, is `done`.
    They were: the batch had handed its files to the failed call, so the last flush of the
    run found nothing left to sync and committed the rows anyway."""
    workspace, info = nine_rows
    campaigns = workspace.campaigns
    real, calls = files_module.SYNCFS, []

    def second_call_fails(fd: int) -> int:
        calls.append(fd)
        if len(calls) == 2:
            ctypes.set_errno(errno.EIO)
            return -1
        return real(fd)

    monkeypatch.setattr(files_module, "SYNCFS", second_call_fails)
    with pytest.raises(OSError, match="Input/output error") as failure:
        campaigns.run(info.id)
    assert failure.value.errno == errno.EIO
    assert len(calls) == 2  # nothing synced, nor committed, after the failure
    done = [m.row for m in campaigns.iter_messages(info.id) if m.state == "done"]
    assert done == [1, 2, 3, 4]
    assert campaigns.get(info.id).done == 4
    monkeypatch.setattr(files_module, "SYNCFS", real)
    job = workspace.jobs.wait(campaigns.resume(info.id).id, timeout=120)
    assert job.state == JobState.DONE, job.errors
    messages = list(campaigns.iter_messages(info.id))
    assert [(m.row, m.state, m.verified) for m in messages] == [
        (row, "done", True) for row in range(1, 10)
    ]
    for message in messages:
        assert workspace.assembler.verify_output(message.output_id).ok
