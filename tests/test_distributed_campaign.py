"""Campaign assembly on a real Dask `LocalCluster` (2 worker processes, real Piper).

The driver makes the stems (on the cluster, the bulk path) and commits nothing here: the
tests call `DaskCluster.assemble_campaign` the way `Campaigns` does and judge the updates
it hands back and the files the workers wrote, against an in-process campaign run.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hybrid_audio.campaign import CampaignInfo
from hybrid_audio.campaign_rows import CampaignRows, RowUpdate
from hybrid_audio.config import Settings
from hybrid_audio.distributed import DaskCluster
from hybrid_audio.jobs import JobState
from hybrid_audio.recipients import parse_recipients
from hybrid_audio.workspace import Workspace
from tests.api_server import TINY_DATASETS, make_base_dir
from tests.dask_workers import kill_busy_worker
from tests.processes import dead_pid

NAMES = ("Ann", "Bob", "Cid")
DEVELOPERS = ("Acme Homes", "Beta Builders")
TIMEOUT = 600  # seconds: a loaded 2-core machine


class StopError(Exception):
    """Raised by a test's `cancelled` callback."""


def recipients(count: int) -> bytes:
    rows = "".join(f"r{i},{NAMES[i % 3]},{DEVELOPERS[i % 2]}\n" for i in range(1, count + 1))
    return ("id,name,developer\n" + rows).encode()


@pytest.fixture(scope="module")
def dask_workspace(tmp_path_factory: pytest.TempPathFactory, piper) -> Iterator[Workspace]:
    base = make_base_dir(tmp_path_factory.mktemp("dask-campaign"), TINY_DATASETS)
    settings = Settings(base_dir=base, dask_scheduler_address="local", dask_local_workers=2)
    workspace = Workspace.build(settings, engine=piper)
    try:
        # the driver's part (`Campaigns._make_stems`): rows' stems on the cluster, the
        # template's fixed stems here
        report = workspace.generator.generate_rotational_stems(list(NAMES), list(DEVELOPERS))
        assert report.failed == []
        for stem in workspace.assembler.load_template("double_anchor").fixed_stems:
            workspace.generator.generate_keyed(stem.kind, str(stem))
        yield workspace
    finally:
        workspace.close()


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, piper) -> Iterator[Workspace]:
    """An in-process workspace (no cluster) whose campaigns are the expected results."""
    base = make_base_dir(tmp_path_factory.mktemp("in-process"), TINY_DATASETS)
    workspace = Workspace.build(Settings(base_dir=base), engine=piper)
    try:
        yield workspace
    finally:
        workspace.close()


@pytest.fixture
def cluster(dask_workspace: Workspace) -> DaskCluster:
    return dask_workspace.generator.cluster


def on_dask(
    workspace: Workspace, info: CampaignInfo, chunk_rows: int, finished=None, cancelled=None
) -> dict[int, RowUpdate]:
    """The pending rows of `info` assembled on the cluster: row → its update (each row
    must come back once)."""
    updates: dict[int, RowUpdate] = {}

    def record(update: RowUpdate) -> None:
        assert update[6] not in updates, f"row {update[6]} came back twice"
        updates[update[6]] = update
        if finished is not None:
            finished(update)

    workspace.generator.cluster.assemble_campaign(
        CampaignRows.of(workspace.assembler, info),
        workspace.campaigns.iter_messages(info.id, "pending"),
        record,
        cancelled=cancelled or (lambda: None),
        chunk_rows=chunk_rows,
    )
    return updates


def in_process(reference: Workspace, count: int) -> dict[int, tuple[str, float, bytes]]:
    """row → (sha256, duration, WAV bytes) of the same rows made by an in-process run."""
    campaigns = reference.campaigns
    info = campaigns.create("double_anchor", parse_recipients(recipients(count), "l.csv"))
    job = reference.jobs.wait(campaigns.start(info.id, source="test").id, timeout=TIMEOUT)
    assert job.state == JobState.DONE, job.errors
    output = Path(reference.settings.output_dir)
    return {
        m.row: (m.sha256, m.duration, (output / f"{m.output_id}.wav").read_bytes())
        for m in campaigns.iter_messages(info.id)
    }


def outputs(workspace: Workspace, campaign_id: str) -> list[str]:
    """Every file (and temp file) of the campaign's outputs, by name."""
    folder = Path(workspace.settings.output_dir)
    return sorted(p.name for p in folder.iterdir() if campaign_id in p.name)


def complete(workspace: Workspace, campaign_id: str, rows: int) -> list[str]:
    return sorted(
        f"{campaign_id}_{row:06d}{ext}" for row in range(1, rows + 1) for ext in (".json", ".wav")
    )


def check_same(
    workspace: Workspace, updates: dict[int, RowUpdate], expected: dict[int, tuple]
) -> None:
    output = Path(workspace.settings.output_dir)
    assert sorted(updates) == sorted(expected)
    for row, (state, output_id, duration, sha, verified, error, _) in updates.items():
        assert (state, verified, error) == ("done", 1, ""), updates[row]
        wav = (output / f"{output_id}.wav").read_bytes()
        assert (sha, duration, wav) == expected[row], f"row {row} differs"
        assert hashlib.sha256(wav).hexdigest() == sha


def test_rows_assembled_on_dask_are_the_in_process_bytes(
    dask_workspace: Workspace, reference: Workspace
) -> None:
    expected = in_process(reference, 30)
    campaigns = dask_workspace.campaigns
    info = campaigns.create("double_anchor", parse_recipients(recipients(30), "l.csv"))
    updates = on_dask(dask_workspace, info, chunk_rows=4)
    check_same(dask_workspace, updates, expected)
    assert outputs(dask_workspace, info.id) == complete(dask_workspace, info.id, 30)
    output = Path(dask_workspace.settings.output_dir)
    for row, update in updates.items():
        assert dask_workspace.assembler.verify_output(update[1]).ok
        manifest = json.loads((output / f"{update[1]}.json").read_bytes())
        assert manifest["campaign"] == {"id": info.id, "row": row, "recipient_id": f"r{row}"}


def test_a_manifest_campaign_on_dask_keeps_manifests_that_render_the_in_process_bytes(
    dask_workspace: Workspace, reference: Workspace
) -> None:
    """`store="manifest"` on the workers: each row's manifest alone (no WAV written), and
    rendered it gives the bytes an in-process WAV campaign made."""
    expected = in_process(reference, 8)
    campaigns = dask_workspace.campaigns
    info = campaigns.create(
        "double_anchor", parse_recipients(recipients(8), "l.csv"), store="manifest"
    )
    updates = on_dask(dask_workspace, info, chunk_rows=3)
    assert outputs(dask_workspace, info.id) == [f"{info.id}_{row:06d}.json" for row in range(1, 9)]
    assembler = dask_workspace.assembler
    for row, (state, output_id, duration, sha, verified, error, _) in updates.items():
        assert (state, verified, error) == ("done", 1, "")
        data, _ = assembler.read_output(output_id)
        assert (sha, duration, data) == expected[row], f"row {row} differs"
        assert assembler.load_output(output_id)["output"]["store"] == "manifest"
        assert assembler.verify_output(output_id).ok


def test_a_worker_killed_mid_chunk_the_chunk_is_retried_every_row_done_once(
    dask_workspace: Workspace, reference: Workspace, cluster: DaskCluster
) -> None:
    """SIGKILL of a worker busy with a chunk when the first chunk comes back: Dask runs
    the chunk again elsewhere; every row is handed back once, done, with the in-process
    bytes, and the folder holds one WAV and one manifest per row, nothing half."""
    rows = 80
    expected = in_process(reference, rows)
    campaigns = dask_workspace.campaigns
    info = campaigns.create("double_anchor", parse_recipients(recipients(rows), "l.csv"))
    old_pids = set(cluster.client.run(os.getpid).values())
    killed: list[int] = []

    def kill_a_busy_worker(update: RowUpdate) -> None:
        if not killed and (pid := kill_busy_worker(cluster.client)) is not None:
            killed.append(pid)

    updates = on_dask(dask_workspace, info, chunk_rows=20, finished=kill_a_busy_worker)
    assert killed, "no worker was busy when the first chunk came back"
    assert killed[0] in old_pids
    assert killed[0] not in cluster.client.run(os.getpid).values()  # it really died
    check_same(dask_workspace, updates, expected)
    assert outputs(dask_workspace, info.id) == complete(dask_workspace, info.id, rows)


def test_a_rerun_chunk_clears_a_dead_writers_files_and_adopts_finished_rows(
    dask_workspace: Workspace, reference: Workspace
) -> None:
    """What a worker killed mid-chunk leaves, made by hand: row 1 finished (adopted as
    is), row 2 a WAV without manifest, row 3 a WAV still linked by a dead writer's temp
    file, and a dead writer's manifest temp. The chunk run again ends like a clean run."""
    expected = in_process(reference, 3)
    campaigns = dask_workspace.campaigns
    info = campaigns.create("double_anchor", parse_recipients(recipients(3), "l.csv"))
    first = on_dask(dask_workspace, info, chunk_rows=3)
    check_same(dask_workspace, first, expected)
    folder = Path(dask_workspace.settings.output_dir)
    ids = {row: update[1] for row, update in first.items()}
    kept = (folder / f"{ids[1]}.json").read_bytes()
    (folder / f"{ids[2]}.json").unlink()
    (folder / f"{ids[3]}.json").unlink()
    dead = dead_pid()
    os.link(folder / f"{ids[3]}.wav", folder / f".{ids[3]}.wav.{dead}.{uuid.uuid4().hex}.tmp")
    (folder / f".{ids[3]}.json.{dead}.{uuid.uuid4().hex}.tmp").write_bytes(b"{")

    again = on_dask(dask_workspace, info, chunk_rows=3)
    check_same(dask_workspace, again, expected)
    assert (folder / f"{ids[1]}.json").read_bytes() == kept  # adopted, not made again
    assert outputs(dask_workspace, info.id) == complete(dask_workspace, info.id, 3)


def test_cancelling_stops_submitting(dask_workspace: Workspace) -> None:
    campaigns = dask_workspace.campaigns
    info = campaigns.create("double_anchor", parse_recipients(recipients(60), "l.csv"))
    seen: list[int] = []

    def cancelled() -> None:
        if seen:
            raise StopError

    with pytest.raises(StopError):
        on_dask(
            dask_workspace,
            info,
            chunk_rows=5,
            finished=lambda u: seen.append(u[6]),
            cancelled=cancelled,
        )
    assert 5 <= len(seen) < 60  # one chunk taken in, then stopped


def test_a_campaign_job_runs_its_rows_on_the_cluster(
    dask_workspace: Workspace, reference: Workspace
) -> None:
    """`Campaigns.start` with `DASK_SCHEDULER_ADDRESS` set: the rows go to the workers (the
    driver's own Assembler makes none), the job ends done with every row committed once,
    and the messages are the in-process run's bytes."""
    expected = in_process(reference, 12)
    campaigns = dask_workspace.campaigns
    info = campaigns.create("double_anchor", parse_recipients(recipients(12), "l.csv"))
    before = dask_workspace.assembler.last_result
    job = dask_workspace.jobs.wait(campaigns.start(info.id, source="test").id, timeout=TIMEOUT)
    assert job.state == JobState.DONE, job.errors
    assert (job.done, job.total) == (12, 12)
    assert dask_workspace.assembler.last_result is before  # assembled on the workers
    done = campaigns.get(info.id)
    assert (done.state, done.done, done.failed) == ("done", 12, 0)
    updates = {
        m.row: (m.state, m.output_id, m.duration, m.sha256, int(m.verified), m.error or "", m.row)
        for m in campaigns.iter_messages(info.id)
    }
    check_same(dask_workspace, updates, expected)
    assert outputs(dask_workspace, info.id) == complete(dask_workspace, info.id, 12)


def test_the_stem_phase_on_the_cluster_counts_each_stem_and_stops_on_cancel(
    dask_workspace: Workspace,
) -> None:
    """A campaign's new names are made on the workers: the job says how many are back
    (it said only "making stems on the Dask cluster" until all were), and a cancel stops
    the batch there (it was not checked until every stem was made: hours at Cartesia)."""
    names = [f"Zed{a}{b}" for a in "abcdef" for b in "abcde"]  # 30, none cached yet
    rows = "".join(f"z{i},{name},Acme Homes\n" for i, name in enumerate(names))
    campaigns = dask_workspace.campaigns
    info = campaigns.create(
        "double_anchor", parse_recipients(f"id,name,developer\n{rows}".encode())
    )
    counted: list[str] = []
    first = threading.Event()

    def seen(event) -> None:
        if event.new.startswith("making stems on the Dask cluster: "):
            counted.append(event.new.rsplit(" ", 1)[1])
            first.set()

    job = campaigns.start(info.id, source="test")
    job.param.watch(seen, "message")
    assert first.wait(120), "no stem was counted"
    campaigns.cancel(info.id)
    final = dask_workspace.jobs.wait(job.id, timeout=TIMEOUT)
    assert final.state == JobState.CANCELLED
    total = len(names) + 1  # and the developer, cached: counted from the start
    assert counted[0] in {f"{done}/{total}" for done in range(2, total + 1)}
    made = [name for name in names if dask_workspace.generator.current("name", name)]
    assert len(made) < len(names), "the batch went on after the cancel"
    assert campaigns.get(info.id).done == 0
