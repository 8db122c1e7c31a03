"""Storage push and pull of 1,000 stem-sized objects against gcp-storage-emulator.

Cases (one run, one machine; medians of repeats; the real GCS client throughout):
- push, bulk: `GcsStore.upload_many` (`GCS_UPLOAD_WORKERS` requests in flight; one
  multipart request per object, `if_generation_match=0` + CRC32C);
- push, sequential: `GcsStore.upload` once per object, same client;
- push, transfer_manager (reference): `transfer_manager.upload_many` with the same
  precondition, checksum and workers — shows why `upload_many` does not use it (its
  sizeless file objects make each upload resumable: two requests per object);
- pull, bulk: `GcsStore.download_many` (`transfer_manager.download_many`, one media request
  per object, CRC32C checked);
- pull, sequential: the same with one worker (one request at a time, same client);
- pull, download(): `GcsStore.download` per object (metadata, then bytes: two requests);
- push job / pull job: what the product runs — `StorageService.start_sync` push of 1,000
  indexed stems from a base dir (fresh emulator each repeat), and pull of them into an
  empty base dir (listing, batches of `download_many`, each stem proven and stored
  through the cache under its lock), timed from submit to the job's end.

Requests are counted at the HTTP adapter. The emulator serves one request at a time (a
single-threaded `http.server`, one connection per request; tests/gcs_emulator.py raises
its listen backlog so parallel connections queue rather than being dropped) and each
upload costs it more the more objects it holds, so concurrency cannot speed it up and
every push repeat gets a fresh emulator. The real-bucket figures are an ESTIMATE from the
request count and an assumed per-request latency, not a measurement.

Run: `make bench` or `.venv/bin/python benchmarks/bench_storage.py [--objects N] [--quick]`.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import requests
from common import fmt_ratio, versions, write_results
from google.cloud.storage import transfer_manager
from requests.adapters import HTTPAdapter
from rich.console import Console
from rich.table import Table

from hybrid_audio.config import Settings
from hybrid_audio.contract import AudioFormat
from hybrid_audio.engines import Engine, create_engine
from hybrid_audio.jobs import JobState
from hybrid_audio.stems import StemId
from hybrid_audio.storage.base import UploadItem, stem_object_name
from hybrid_audio.storage.gcs import GcsStore
from hybrid_audio.wav import read_wav, write_wav
from hybrid_audio.workspace import Workspace

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the emulator and base-dir helpers live with the tests
from tests.api_server import make_base_dir  # noqa: E402
from tests.gcs_emulator import Emulator, start_emulator  # noqa: E402

FORMAT = AudioFormat(encoding="pcm_s16le", sample_rate=22050)
#: ~0.9 s of 16-bit 22.05 kHz mono: a spoken name's size (~40 kB).
FRAMES = 20_000
#: Assumed per-request latency of a real bucket from a nearby machine (small objects).
LATENCIES_S = (0.030, 0.050)
Case = Callable[[GcsStore], int]


class CountingAdapter(HTTPAdapter):
    """Counts the HTTP requests the client sends (thread-safe)."""

    def __init__(self, pool: int) -> None:
        super().__init__(pool_connections=pool, pool_maxsize=pool)
        self.count = 0
        self._lock = threading.Lock()

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        with self._lock:
            self.count += 1
        return super().send(request, **kwargs)


def payloads(count: int) -> list[UploadItem]:
    rng = np.random.default_rng(11)
    return [
        (
            stem_object_name(f"stem.name.bench_{i:05d}"),
            write_wav(FORMAT, rng.integers(-3000, 3000, FRAMES, dtype=np.int16).tobytes()),
            {"stem_id": f"stem.name.bench_{i:05d}", "kind": "name"},
            "audio/wav",
        )
        for i in range(count)
    ]


def store_on(emulator: Emulator, bucket: str, workers: int) -> tuple[GcsStore, CountingAdapter]:
    adapter = CountingAdapter(pool=max(10, workers))
    session = requests.Session()
    session.mount("http://", adapter)
    settings = Settings(
        base_dir=Path(tempfile.mkdtemp(prefix="bench-storage-")),
        gcs_bucket=bucket,
        storage_emulator_host=emulator.url,
        gcs_upload_workers=workers,
    )
    return GcsStore(settings, http=session), adapter


def once(emulator: Emulator, bucket: str, workers: int, case: Case) -> tuple[float, int, int]:
    """(seconds, requests sent, objects moved) of one `case(store)` on a new client."""
    store, adapter = store_on(emulator, bucket, workers)
    start = time.perf_counter()
    count = case(store)
    return time.perf_counter() - start, adapter.count, count


def on_fresh_emulator(log_dir: Path, workers: int, case: Case) -> tuple[float, int, int]:
    """`once` on an emulator of its own: it slows as it fills, so each push starts empty."""
    emulator = start_emulator(log_dir)
    try:
        return once(emulator, emulator.new_bucket("bench"), workers, case)
    finally:
        emulator.stop()


def indexed_stems(count: int, engine: Engine) -> Path:
    """A base dir whose index holds `count` name stems (local mode: nothing queued)."""
    base_dir = make_base_dir(Path(tempfile.mkdtemp(prefix="bench-storage-stems-")))
    workspace = Workspace.build(Settings(base_dir=base_dir), engine=engine)
    try:
        fmt = workspace.contract.audio_format
        rng = np.random.default_rng(11)
        for index in range(count):
            text = f"Bench {index:05d}"
            pcm = rng.integers(-3000, 3000, FRAMES, dtype=np.int16).tobytes()
            workspace.cache.store(
                StemId.for_text("name", text), text, read_wav(write_wav(fmt, pcm))
            )
    finally:
        workspace.close()
    return base_dir


def sync_job(
    emulator: Emulator, bucket: str, base_dir: Path, engine: Engine, workers: int, direction: str
) -> tuple[float, int, int]:
    """(seconds, requests sent, objects moved) of one storage_sync job over `base_dir`."""
    settings = Settings(
        base_dir=base_dir,
        gcs_bucket=bucket,
        storage_emulator_host=emulator.url,
        gcs_upload_workers=workers,
    )
    workspace = Workspace.build(settings, engine=engine)
    try:
        adapter = CountingAdapter(pool=max(10, workers))
        session = requests.Session()
        session.mount("http://", adapter)
        workspace.storage.store = GcsStore(settings, http=session)  # counted, same settings
        start = time.perf_counter()
        job = workspace.storage.start_sync(direction, "stems/", source="bench")
        job = workspace.jobs.wait(job.id, timeout=3600)
        seconds = time.perf_counter() - start
    finally:
        workspace.close()
    if job.state != JobState.DONE or job.result["failed"] or job.result["conflicts"]:
        raise SystemExit(f"{direction} job ended {job.state}: {job.errors or job.result}")
    return seconds, adapter.count, job.result["transferred"]


def sync_jobs(log_dir: Path, count: int, workers: int, repeats: int) -> dict[str, dict[str, Any]]:
    """The push job of `count` stems (a fresh emulator each repeat), then the pull job of
    them into a new empty base dir each repeat."""
    engine = create_engine(Settings(tts_engine="piper"))
    source = indexed_stems(count, engine)
    pushes: list[tuple[float, int, int]] = []
    pulls: list[tuple[float, int, int]] = []
    for repeat in range(repeats):
        emulator = start_emulator(log_dir)
        try:
            bucket = emulator.new_bucket("bench")
            pushes.append(sync_job(emulator, bucket, source, engine, workers, "push"))
            if repeat == repeats - 1:  # pull what the last push left, into empty base dirs
                for _ in range(repeats):
                    empty = make_base_dir(Path(tempfile.mkdtemp(prefix="bench-storage-pull-")))
                    pulls.append(sync_job(emulator, bucket, empty, engine, workers, "pull"))
        finally:
            emulator.stop()
    return {
        "push job (StorageService sync)": summary(pushes),
        "pull job (StorageService sync)": summary(pulls),
    }


def summary(runs: list[tuple[float, int, int]]) -> dict[str, Any]:
    seconds = [s for s, _, _ in runs]
    median, count = statistics.median(seconds), runs[0][2]
    requests_sent = statistics.median(r for _, r, _ in runs)
    return {
        "seconds": seconds,
        "median_s": median,
        "objects": count,
        "objects_per_s": count / median,
        "requests": requests_sent,
        "requests_per_object": requests_sent / count,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=Settings().gcs_upload_workers)
    parser.add_argument("--quick", action="store_true", help="100 objects, 1 repeat (smoke)")
    args = parser.parse_args()
    if args.quick:
        args.objects, args.repeats = 100, 1
    console = Console()
    items = payloads(args.objects)
    names = [name for name, *_ in items]
    mean_size = statistics.mean(len(data) for _, data, *_ in items)

    def checked(results: list) -> int:
        errors = [r for r in results if isinstance(r, Exception)]
        if errors:
            raise SystemExit(f"{len(errors)} transfers failed, first: {errors[0]!r}")
        return len(results)

    def push_bulk(store: GcsStore) -> int:
        return checked(store.upload_many(items))

    def push_sequential(store: GcsStore) -> int:
        return checked([store.upload(*item) for item in items])

    def push_transfer_manager(store: GcsStore) -> int:
        blobs = []
        for name, _, metadata, content_type in items:
            blob = store.bucket.blob(name)
            blob.metadata, blob.content_type = dict(metadata), content_type
            blobs.append(blob)
        results = transfer_manager.upload_many(
            [(io.BytesIO(data), blob) for (_, data, *_), blob in zip(items, blobs, strict=True)],
            upload_kwargs={"if_generation_match": 0, "checksum": "crc32c"},
            worker_type=transfer_manager.THREAD,
            max_workers=store.workers,
        )
        return checked(results)

    def pulled(results: list) -> int:
        count = checked(results)
        if results != [data for _, data, *_ in items]:
            raise SystemExit("a pulled object differs from what was pushed")
        return count

    def pull_bulk(store: GcsStore) -> int:
        return pulled(store.download_many(names))

    def pull_sequential(store: GcsStore) -> int:
        return pulled(store.download_many(names, workers=1))

    def pull_download(store: GcsStore) -> int:
        return pulled([store.download(name)[0] for name in names])

    results: dict[str, dict[str, Any]] = {}
    pushes = {
        "push upload_many": push_bulk,
        "push upload() sequential": push_sequential,
        "push transfer_manager.upload_many (reference)": push_transfer_manager,
    }
    log_dir = Path(tempfile.mkdtemp(prefix="bench-storage-emulator-"))
    for label, case in pushes.items():
        results[label] = summary(
            [on_fresh_emulator(log_dir, args.workers, case) for _ in range(args.repeats)]
        )
    emulator = start_emulator(log_dir)
    try:
        bucket = emulator.new_bucket("bench")
        store, _ = store_on(emulator, bucket, args.workers)
        checked(store.upload_many(items))
        pulls = {
            "pull download_many": pull_bulk,
            "pull download_many sequential (1 worker)": pull_sequential,
            "pull download() (metadata + bytes)": pull_download,
        }
        for label, case in pulls.items():
            results[label] = summary(
                [once(emulator, bucket, args.workers, case) for _ in range(args.repeats)]
            )
    finally:
        emulator.stop()
    results.update(sync_jobs(log_dir, args.objects, args.workers, args.repeats))

    push_ratio = (
        results["push upload_many"]["objects_per_s"]
        / results["push upload() sequential"]["objects_per_s"]
    )
    pull_ratio = (
        results["pull download_many"]["objects_per_s"]
        / results["pull download_many sequential (1 worker)"]["objects_per_s"]
    )
    # The pull job downloads a batch, then adopts its stems one by one (prove, write,
    # index): that local cost per stem is the job's time less download_many's, and adds
    # to the download's latency / workers per stem on a real bucket.
    adopt_s = max(
        0.0,
        (
            results["pull job (StorageService sync)"]["median_s"]
            - results["pull download_many"]["median_s"]
        )
        / args.objects,
    )
    estimate = {
        f"{latency * 1000:.0f} ms": {
            "bulk_objects_per_s": args.workers / latency,
            "sequential_objects_per_s": 1 / latency,
            "push_1000_bulk_s": 1000 * latency / args.workers,
            "push_1000_sequential_s": 1000 * latency,
            "pull_job_stems_per_s": 1 / (latency / args.workers + adopt_s),
            "read_through_miss_ms": latency * 1000,
        }
        for latency in LATENCIES_S
    }

    table = Table(title=f"storage vs gcp-storage-emulator — {args.objects} objects, medians")
    for column in ("case", "objects/s", "requests/object", "median s"):
        table.add_column(column)
    for label, row in results.items():
        table.add_row(
            label,
            f"{row['objects_per_s']:,.0f}",
            f"{row['requests_per_object']:.2f}",
            f"{row['median_s']:.2f}",
        )
    console.print(table)
    console.print(
        f"bulk / sequential: push {fmt_ratio(push_ratio)}, pull {fmt_ratio(pull_ratio)} "
        f"(workers={args.workers}; the emulator serves one request at a time)"
    )
    for latency, row in estimate.items():
        console.print(
            f"ESTIMATE for a real bucket at {latency}/request: bulk ≈ "
            f"{row['bulk_objects_per_s']:,.0f} objects/s, sequential ≈ "
            f"{row['sequential_objects_per_s']:,.0f} objects/s (1 request per object); "
            f"pull job ≈ {row['pull_job_stems_per_s']:,.0f} stems/s (adopting costs "
            f"{adopt_s * 1000:.1f} ms a stem here); a read-through miss (new stem) costs "
            f"{row['read_through_miss_ms']:.0f} ms: one request while the bucket answered "
            "lately (two, the first time)"
        )
    path = write_results(
        "bench_storage",
        {
            "objects": args.objects,
            "mean_object_bytes": mean_size,
            "repeats": args.repeats,
            "workers": args.workers,
            "cases": results,
            "bulk_over_sequential": {"push": push_ratio, "pull": pull_ratio},
            "emulator_note": (
                "gcp-storage-emulator is a single-threaded http.server (one connection per "
                "request) whose uploads slow as it fills: concurrency cannot help here, "
                "and a fresh emulator serves each push repeat"
            ),
            "real_bucket_estimate": {
                "note": (
                    "ESTIMATE, not measured: small objects take one request each way, "
                    "`workers` requests in flight, each taking the assumed latency; "
                    "bandwidth (≈ objects/s × mean_object_bytes) is far below a VM's. "
                    "The pull job adds its measured local adoption cost per stem "
                    "(adopt_ms). A read-through miss (a stem the bucket lacks, before it "
                    "is synthesized) is the object GET (404) alone while the bucket answered "
                    "a request in the last BUCKET_SEEN_SECONDS (as in a running campaign); "
                    "else a one-object listing follows, telling a missing object from a "
                    "missing bucket."
                ),
                "adopt_ms": adopt_s * 1000,
                **estimate,
            },
            "versions": versions(
                ["google-cloud-storage", "google-api-core", "gcp-storage-emulator", "requests"]
            ),
        },
    )
    console.print(f"results: {path}")


if __name__ == "__main__":
    main()
