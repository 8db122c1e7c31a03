"""Bulk generation on a real Dask `LocalCluster` (2 worker processes, real Piper).

One workspace built with `DASK_SCHEDULER_ADDRESS=local` owns the cluster for the module
(its `close()` closes it); generators of other base dirs borrow its cluster.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from distributed import LocalCluster
from distributed.security import Security

from hybrid_audio.config import Settings, SettingsError
from hybrid_audio.distributed import PLUGIN_NAME, DaskCluster, DaskConfigError
from hybrid_audio.engines import create_engine
from hybrid_audio.engines.piper import PiperEngine
from hybrid_audio.generation import Generator
from hybrid_audio.jobs import JobRunner, JobState
from hybrid_audio.stems import StemId
from hybrid_audio.storage.base import stem_object_name
from hybrid_audio.workspace import Workspace
from tests.api_server import make_base_dir
from tests.dask_workers import kill_busy_worker
from tests.gcs_emulator import gcs_bucket, gcs_emulator  # noqa: F401
from tests.test_generation import CountingEngine
from tests.test_storage_readthrough import Bucket, CountingStore, dead_url, gcs_settings

NAMES = ["Ana", "Bruno", "Chloé", "Dmitri", "Eve", "Farah"]
DEVELOPERS = ["Brightwater Homes", "Kestrel Living"]
STEMS = len(NAMES) + len(DEVELOPERS)
TIMEOUT = 600  # seconds: a loaded 2-core machine


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, piper) -> Iterator[Workspace]:
    settings = Settings(
        base_dir=tmp_path_factory.mktemp("dask"),
        dask_scheduler_address="local",
        dask_local_workers=2,
    )
    workspace = Workspace.build(settings, engine=piper)
    cluster = workspace.generator.cluster
    try:
        yield workspace
    finally:
        workspace.close()
    assert cluster.cluster.status.name == "closed"
    assert cluster.client.status == "closed"


@pytest.fixture
def cluster(workspace: Workspace) -> DaskCluster:
    return workspace.generator.cluster


@pytest.fixture
def bucket(request: pytest.FixtureRequest) -> Bucket:
    """A fresh bucket on the session's GCS emulator."""
    return Bucket(
        request.getfixturevalue("gcs_emulator").url, request.getfixturevalue("gcs_bucket")
    )


def _stems(generator: Generator) -> dict[str, str]:
    """stem id → sha256 of the stored file's bytes."""
    stems_dir = Path(generator.cache.stems_dir)
    return {
        record.stem_id: hashlib.sha256((stems_dir / record.path).read_bytes()).hexdigest()
        for record in generator.cache.list()
    }


def _temp_files(base: Path) -> list[Path]:
    return [path for path in base.rglob("*") if path.name.endswith((".tmp", ".aside"))]


def test_dask_batch_gives_the_in_process_bytes_each_stem_made_once(
    tmp_path: Path, piper, cluster: DaskCluster
) -> None:
    engine = CountingEngine(piper)
    local = Generator.from_settings(Settings(base_dir=tmp_path / "local"), engine=engine)
    local_report = local.generate_rotational_stems(NAMES, DEVELOPERS)
    assert (local_report.created, local_report.failed, len(engine.calls)) == (STEMS, [], STEMS)

    remote = Generator.from_settings(Settings(base_dir=tmp_path / "dask"), engine=piper)
    remote.cluster = cluster
    seen: list[int] = []
    before_syntheses, before_revision = cluster.syntheses(), remote.cache.revision
    report = remote.generate_rotational_stems(
        NAMES, DEVELOPERS, on_progress=lambda done, total, record: seen.append(done)
    )
    assert (report.total, report.created, report.cached, report.failed) == (STEMS, STEMS, 0, [])
    assert cluster.syntheses() - before_syntheses == STEMS  # each stem synthesized once
    assert remote.cache.revision - before_revision == STEMS  # and stored once
    assert seen == list(range(1, STEMS + 1))

    assert _stems(remote) == _stems(local)
    assert len(_stems(remote)) == STEMS
    by_id = {r.stem_id: r for r in local.cache.list()}
    for record in remote.cache.list():
        twin = by_id[record.stem_id]
        assert (record.sha256, record.loudness_after, record.gain_db, record.spoken_as) == (
            twin.sha256,
            twin.loudness_after,
            twin.gain_db,
            twin.spoken_as,
        )
    assert remote.cache.verify().ok

    again = remote.generate_rotational_stems(NAMES, DEVELOPERS)
    assert (again.created, again.cached) == (0, STEMS)
    assert cluster.syntheses() - before_syntheses == STEMS  # nothing made twice


def test_a_worker_killed_mid_run_the_job_completes_each_stem_stored_once(
    workspace: Workspace, cluster: DaskCluster
) -> None:
    """SIGKILL of a worker that is running a task: Dask reruns its tasks elsewhere (its
    nanny restarts it); the driver stores every stem once, nothing half is left."""
    killed: list[int] = []
    lock = threading.Lock()

    def kill_a_busy_worker(done: int, total: int, record) -> None:
        with lock:
            if not killed and (pid := kill_busy_worker(cluster.client)) is not None:
                killed.append(pid)

    generator = workspace.generator
    revision = generator.cache.revision
    old_pids = set(cluster.client.run(os.getpid).values())
    job = workspace.jobs.submit(
        "bulk_generate",
        lambda job: generator.generate_rotational_stems(
            NAMES, DEVELOPERS, on_progress=kill_a_busy_worker, job=job
        ).model_dump(),
        STEMS,
    )
    job = workspace.jobs.wait(job.id, timeout=TIMEOUT)
    assert job.state == JobState.DONE, job.info()
    assert killed, "no worker was busy at the first stem's progress"
    assert killed[0] in old_pids
    assert killed[0] not in cluster.client.run(os.getpid).values()  # it really died
    assert (job.result["created"], job.result["failed"], job.done) == (STEMS, [], STEMS)

    records = generator.cache.list()
    assert len(records) == STEMS
    assert generator.cache.revision - revision == STEMS  # stored exactly once each
    assert all(record.created_at == record.updated_at for record in records)
    assert generator.cache.verify().ok
    assert _temp_files(Path(workspace.settings.base_dir)) == []


def test_cancelling_a_dask_batch_stops_it(tmp_path: Path, piper, cluster: DaskCluster) -> None:
    generator = Generator.from_settings(Settings(base_dir=tmp_path), engine=piper)
    generator.cluster = cluster
    runner = JobRunner()
    try:
        job = runner.submit(
            "bulk_generate",
            lambda job: generator.generate_rotational_stems(
                NAMES, DEVELOPERS, on_progress=lambda *_: job.cancel(), job=job
            ).model_dump(),
            STEMS,
        )
        job = runner.wait(job.id, timeout=TIMEOUT)
    finally:
        runner.shutdown()
    assert job.state == JobState.CANCELLED
    assert 1 <= job.done < STEMS  # cancelled at the first stem's progress, checked at the next
    assert len(generator.cache.list()) < STEMS
    assert generator.cache.verify().ok


def test_unset_address_keeps_the_in_process_path(tmp_path: Path, piper) -> None:
    settings = Settings(base_dir=tmp_path)
    assert DaskCluster.open(settings) is None
    workspace = Workspace.build(settings, engine=piper)
    try:
        assert workspace.generator.cluster is None
    finally:
        workspace.close()


def test_tls_address_without_its_files_is_a_clear_error(tmp_path: Path) -> None:
    bare = Settings(base_dir=tmp_path, dask_scheduler_address="tls://127.0.0.1:8786")
    with pytest.raises(DaskConfigError, match="DASK_TLS_CA_FILE, DASK_TLS_CERT, DASK_TLS_KEY"):
        DaskCluster.open(bare)
    absent = bare.model_copy(
        update={
            "dask_tls_ca_file": str(tmp_path / "ca.pem"),
            "dask_tls_cert": str(tmp_path / "cert.pem"),
            "dask_tls_key": str(tmp_path / "key.pem"),
        }
    )
    with pytest.raises(DaskConfigError, match="TLS files not found: DASK_TLS_CA_FILE="):
        DaskCluster.open(absent)
    with pytest.raises(SettingsError, match="DASK_SCHEDULER_ADDRESS must be 'local'"):
        Settings.from_env({"DASK_SCHEDULER_ADDRESS": "http://127.0.0.1:8786"})


def test_a_tls_cluster_is_reached_with_the_tls_files(tmp_path: Path, piper) -> None:
    """A scheduler that speaks only TLS (a temporary CA from Dask): DASK_TLS_* files
    given, bulk generation runs on it (one in-process worker keeps this test light)."""
    pems = Security.temporary()
    files = {}
    for field, pem in (
        ("dask_tls_ca_file", pems.tls_ca_file),
        ("dask_tls_cert", pems.tls_client_cert),
        ("dask_tls_key", pems.tls_client_key),
    ):
        files[field] = str(tmp_path / f"{field}.pem")
        Path(files[field]).write_text(pem)
    with LocalCluster(
        protocol="tls://",
        security=pems,
        n_workers=1,
        threads_per_worker=1,
        processes=False,
        dashboard_address=":0",
    ) as tls:
        assert tls.scheduler_address.startswith("tls://")
        address = tls.scheduler_address
        settings = Settings(base_dir=tmp_path, dask_scheduler_address=address, **files)
        cluster = DaskCluster.open(settings)
        try:
            generator = Generator.from_settings(settings, engine=piper)
            generator.cluster = cluster
            report = generator.generate_rotational_stems(NAMES[:2], [])
            assert (report.created, report.failed, cluster.syntheses()) == (2, [], 2)
            assert generator.cache.verify().ok
        finally:
            cluster.close()


def test_in_gcs_mode_the_cluster_synthesizes_only_what_the_bucket_lacks(
    tmp_path: Path, piper, cluster: DaskCluster, bucket: Bucket
) -> None:
    """Machine A (in-process) makes and uploads stems; machine B (Dask, same bucket, empty
    base dir) adopts each of them, byte for byte, and sends only the new stem to workers."""
    made_here = NAMES[:3]
    first = gcs_settings(make_base_dir(tmp_path / "a"), bucket.name, bucket.url, 30.0)
    machine_a = Workspace.build(first, engine=piper)
    try:
        report = machine_a.generator.generate_rotational_stems(made_here, [])
        assert (report.created, report.failed) == (3, [])
        assert machine_a.uploads.wait_idle(60)
        uploaded = _stems(machine_a.generator)
    finally:
        machine_a.close()

    second = gcs_settings(tmp_path / "b", bucket.name, bucket.url, 30.0)
    machine_b = Generator.from_settings(second, engine=piper)
    machine_b.remote = CountingStore(second)
    machine_b.cluster = cluster
    before = cluster.syntheses()
    report = machine_b.generate_rotational_stems([*made_here, "Zoltan"], [])

    assert (report.total, report.created, report.cached, report.failed) == (4, 1, 3, [])
    assert cluster.syntheses() - before == 1  # only the stem the bucket lacked
    wanted = [stem_object_name(StemId.for_text("name", n)) for n in [*made_here, "Zoltan"]]
    assert sorted(machine_b.remote.downloads) == sorted(wanted)  # each looked for once
    stems = _stems(machine_b)
    assert {sid: stems[sid] for sid in uploaded} == uploaded  # adopted, byte-identical
    assert set(stems) - set(uploaded) == {str(StemId.for_text("name", "Zoltan"))}
    assert machine_b.cache.verify().ok
    again = machine_b.generate_rotational_stems([*made_here, "Zoltan"], [])
    assert (again.created, again.cached, cluster.syntheses() - before) == (0, 4, 1)


def test_in_gcs_mode_with_the_bucket_down_the_cluster_makes_every_stem(
    tmp_path: Path, piper, cluster: DaskCluster
) -> None:
    """An unreachable bucket costs one look (then `READ_THROUGH_PAUSE`), never the batch."""
    settings = gcs_settings(tmp_path, "down-bucket", dead_url(), 0.5)
    generator = Generator.from_settings(settings, engine=piper)
    generator.remote = CountingStore(settings)
    generator.cluster = cluster
    before = cluster.syntheses()
    report = generator.generate_rotational_stems(NAMES[:3], [])
    assert (report.created, report.cached, report.failed) == (3, 0, [])
    assert cluster.syntheses() - before == 3
    assert len(generator.remote.downloads) == 1  # not asked again for the next stems
    assert generator.cache.verify().ok


def _session_threads(dask_worker) -> int:
    engine = dask_worker.plugins[PLUGIN_NAME].engine("piper")
    return engine.loaded_voice.voice.session.get_session_options().intra_op_num_threads


def test_workers_run_piper_with_the_drivers_thread_count(cluster: DaskCluster, piper) -> None:
    """PIPER_THREADS (default 1) reaches every worker with the driver's settings: each of
    the 2 worker processes of this 2-core machine runs onnxruntime on 1 thread, as this
    process does, so neither claims every core and both make the same bytes."""
    assert set(cluster.client.run(_session_threads).values()) == {1}
    assert piper.loaded_voice.voice.session.get_session_options().intra_op_num_threads == 1


def test_the_piper_threads_setting(tmp_path: Path) -> None:
    assert Settings().piper_threads == 1
    assert Settings.from_env({"PIPER_THREADS": "0"}).piper_threads == 0
    with pytest.raises(SettingsError, match="PIPER_THREADS"):
        Settings.from_env({"PIPER_THREADS": "-1"})
    every_core = create_engine(Settings(base_dir=tmp_path, piper_threads=0))
    assert isinstance(every_core, PiperEngine)
    options = every_core.loaded_voice.voice.session.get_session_options()
    assert options.intra_op_num_threads == 0  # onnxruntime's default: every core
    default = create_engine(Settings(base_dir=tmp_path))
    assert every_core.loaded_voice is not default.loaded_voice  # one session per count
    assert create_engine(Settings(base_dir=tmp_path)).loaded_voice is default.loaded_voice
