"""Scale: HTTP assemble with 1 and 2 server processes, bulk generation on a LocalCluster.

Cases (one run, one machine; medians):
- assemble, in `--rounds` rounds of three back to back, so others' load hits all alike:
  in-process `Assembler.assemble("double_anchor", ...)` in a loop on one thread (cached
  stems, the base dir the servers use, both servers idle); then `POST /assemble/template`
  (double_anchor, cached stems) from `--clients` keep-alive clients (bench_api's load
  generator) for `--seconds` against `hybrid-audio-server --workers 1`, then `--workers 2`
  (both serve the one base dir). The load generator shares the 2 cores: its own CPU (this
  process) and each server's (supervisor + workers) are reported. Target: 1 worker ≥ 0.7×
  in-process.
- bulk: `generate_rotational_stems` of `--names` names into a fresh cache, in-process
  (bench_generation's case) vs on a warm `LocalCluster` of 2 worker processes (cluster
  started and every worker's voice loaded before the timer; start-up reported apart).
  Interleaved repeats, same texts, the two caches' stems compared byte for byte.
  Target: cluster / in-process ≤ 1.15.

Run: `make bench` or `.venv/bin/python benchmarks/bench_scale.py [--quick]`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil  # a dependency of dask.distributed
from bench_api import COMBOS, Run, load, prepare, verified
from bench_api import assemble as http_assemble
from bench_generation import _bulk, _names
from common import versions, write_results
from rich.console import Console
from rich.table import Table

from hybrid_audio.assembly import Assembler
from hybrid_audio.config import Settings
from hybrid_audio.contract import VoiceContract
from hybrid_audio.distributed import PLUGIN_NAME, DaskCluster
from hybrid_audio.engines import create_engine
from hybrid_audio.generation import Generator

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.api_server import ApiServer, make_base_dir, start_server  # noqa: E402

TARGET_HTTP_RATIO = 0.7
TARGET_CLUSTER_OVERHEAD = 1.15


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and all its descendants (the server's workers)."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def _own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def in_process_assembler(settings: Settings) -> Assembler:
    """The core the server wraps, on the server's own base dir (same stems, same folder)."""
    generator = Generator.from_settings(settings, engine=create_engine(settings))
    return Assembler(
        settings=settings, cache=generator.cache, contract=generator.contract, generator=generator
    )


def in_process_rate(assembler: Assembler, messages: int) -> float:
    """Messages/s of `Assembler.assemble` on one thread over the combos, every one verified."""
    start = time.perf_counter()
    for i in range(messages):
        name, developer = COMBOS[i % len(COMBOS)]
        result = assembler.assemble(
            "double_anchor", name=name, developer=developer, generate_missing=False
        )
        if not result.report.ok:
            raise SystemExit("an in-process message did not verify")
    return messages / (time.perf_counter() - start)


def http_window(server: ApiServer, workers: int, *, clients: int, seconds: float) -> dict[str, Any]:
    """One load run against a `--workers N` server, with the CPU of both sides."""
    server_before, own_before = _cpu_seconds(server.process.pid), _own_cpu_seconds()
    run: Run = asyncio.run(
        load(server, "assemble", http_assemble, verified, clients=clients, seconds=seconds)
    )
    server_cpu = _cpu_seconds(server.process.pid) - server_before
    own_cpu = _own_cpu_seconds() - own_before
    summary = run.summary()
    summary.update(
        workers=workers,
        unverified=sum(1 for ok in run.payloads if not ok),
        server_cpu_s=server_cpu,
        server_cpu_cores=server_cpu / run.seconds,
        load_generator_cpu_s=own_cpu,
        load_generator_cpu_cores=own_cpu / run.seconds,
    )
    return summary


def assemble_case(
    base: Path, *, rounds: int, messages: int, clients: int, seconds: float
) -> tuple[list[float], dict[int, list[dict[str, Any]]]]:
    """Rounds of (in-process, HTTP 1 worker, HTTP 2 workers), so others' load hits all three.

    Both servers serve `base` at once (idle, a server costs nothing), so no round waits
    for a start; the in-process assembler runs while both are idle.
    """
    key = secrets.token_urlsafe(24)
    servers: dict[int, ApiServer] = {}
    try:
        for workers in (1, 2):
            servers[workers] = start_server(
                base, key=key, args=["--workers", str(workers)], timeout=120
            )
            prepare(servers[workers])  # the first makes the stems; then it only warms up
        assembler = in_process_assembler(Settings(base_dir=base))
        in_process_rate(assembler, 20)  # warm-up
        core: list[float] = []
        http: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
        for _ in range(rounds):
            core.append(in_process_rate(assembler, messages))
            for workers, server in servers.items():
                http[workers].append(http_window(server, workers, clients=clients, seconds=seconds))
        return core, http
    finally:
        for server in servers.values():
            server.stop()


def _warm_worker(text: str, values: dict[str, Any], dask_worker: Any = None) -> float:
    """Run on every worker before the timer: one synthesis, so the voice is truly loaded."""
    contract = VoiceContract(**values)
    start = time.perf_counter()
    dask_worker.plugins[PLUGIN_NAME].engine(contract.engine).synthesize(text, contract)
    return time.perf_counter() - start


def _worker_threads(dask_worker: Any = None) -> int:
    """The onnxruntime intra-op threads of a worker's Piper session (0: every core)."""
    engine = dask_worker.plugins[PLUGIN_NAME].engine("piper")
    return engine.loaded_voice.voice.session.get_session_options().intra_op_num_threads


def _stem_hashes(generator: Generator) -> dict[str, str]:
    return {r.stem_id: r.sha256 for r in generator.cache.list()}


def bulk_case(names: list[str], repeats: int) -> dict[str, Any]:
    engine = create_engine(Settings(tts_engine="piper"))
    probe = Generator.from_settings(Settings(base_dir=Path(tempfile.mkdtemp())), engine=engine)
    engine.synthesize("warm up", probe.contract)  # the in-process voice, outside every timer
    settings = Settings(
        base_dir=Path(tempfile.mkdtemp(prefix="bench-scale-driver-")),
        tts_engine="piper",
        dask_scheduler_address="local",
        dask_local_workers=2,
    )
    start = time.perf_counter()
    cluster = DaskCluster.open(settings, engine="piper")
    assert cluster is not None
    opened = time.perf_counter() - start
    try:
        warm = cluster.client.run(_warm_worker, "warm up", probe.contract.values())
        started = time.perf_counter() - start
        threads = cluster.client.run(_worker_threads)
        local, remote, identical, folders = [], [], [], []
        local_cpu, remote_cpu = [], []
        for _ in range(repeats):  # interleaved: drift and others' load hit both alike
            before = _cpu_seconds(os.getpid())
            elapsed, in_process = _bulk(engine, names)
            local.append(elapsed)
            middle = _cpu_seconds(os.getpid())  # this process and the cluster's workers
            elapsed, on_cluster = _bulk(engine, names, cluster)
            remote.append(elapsed)
            local_cpu.append(middle - before)
            remote_cpu.append(_cpu_seconds(os.getpid()) - middle)
            identical.append(_stem_hashes(in_process) == _stem_hashes(on_cluster))
            folders += [in_process.settings.base_dir, on_cluster.settings.base_dir]
        syntheses = cluster.syntheses()
    finally:
        cluster.close()
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)
    return {
        "names": len(names),
        "repeats": repeats,
        "in_process_s": local,
        "cluster_s": remote,
        "in_process_cpu_s": local_cpu,
        "cluster_cpu_s": remote_cpu,
        "cluster_workers": settings.dask_local_workers,
        "onnxruntime_threads_per_worker": threads,
        "cluster_open_s": opened,
        "cluster_startup_s": started,
        "worker_first_synthesis_s": warm,
        "cluster_syntheses": syntheses,
        "byte_identical_stems": identical,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16, help="concurrent HTTP clients")
    parser.add_argument("--seconds", type=float, default=10.0, help="per HTTP window")
    parser.add_argument("--rounds", type=int, default=5, help="assemble rounds (3 cases each)")
    parser.add_argument("--messages", type=int, default=600, help="in-process per round")
    parser.add_argument("--repeats", type=int, default=3, help="bulk repeats")
    parser.add_argument("--names", type=int, default=300, help="stems in the bulk case")
    parser.add_argument("--quick", action="store_true", help="short windows (smoke test)")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.rounds, args.messages, args.repeats, args.names = 2, 1, 40, 1, 30
    console = Console()
    load_before = os.getloadavg()
    began = time.perf_counter()

    base = make_base_dir(Path(tempfile.mkdtemp(prefix="bench-scale-")) / "server")
    console.print(
        f"assemble: {args.rounds} rounds of in-process ({args.messages} messages), HTTP 1 "
        f"and 2 workers ({args.seconds:g} s, {args.clients} clients each) …"
    )
    try:
        core_rates, http = assemble_case(
            base,
            rounds=args.rounds,
            messages=args.messages,
            clients=args.clients,
            seconds=args.seconds,
        )
    finally:
        shutil.rmtree(base.parent, ignore_errors=True)
    console.print(f"bulk generation of {args.names} stems: in-process vs LocalCluster …")
    bulk = bulk_case(_names(args.names), args.repeats)
    load_after = os.getloadavg()

    core = statistics.median(core_rates)
    rate = {w: statistics.median(r["requests_per_s"] for r in runs) for w, runs in http.items()}
    errors = sum(r["errors"] + r["unverified"] for runs in http.values() for r in runs)
    table = Table(title=f"assemble double_anchor — {args.clients} clients, cached stems")
    for column in (
        "case",
        "msg/s",
        "× in-process",
        "p50 ms",
        "p99 ms",
        "server CPU",
        "loadgen CPU",
    ):
        table.add_column(column, justify="left" if column == "case" else "right")
    table.add_row("in-process Assembler, 1 thread", f"{core:,.0f}", "1.00×", "", "", "", "")
    for workers, runs in http.items():

        def med(key: str, runs: list[dict[str, Any]] = runs) -> float:
            return statistics.median(r[key] for r in runs)

        table.add_row(
            f"HTTP, {workers} server worker(s)",
            f"{rate[workers]:,.0f}",
            f"{rate[workers] / core:.2f}×",
            f"{med('p50_ms'):.1f}",
            f"{med('p99_ms'):.1f}",
            f"{med('server_cpu_cores'):.2f} cores",
            f"{med('load_generator_cpu_cores'):.2f} cores",
        )
    console.print(table)

    local_s, remote_s = (
        statistics.median(bulk["in_process_s"]),
        statistics.median(bulk["cluster_s"]),
    )
    overhead = remote_s / local_s
    console.print(
        f"bulk {bulk['names']} stems: in-process {local_s:.2f} s ({bulk['names'] / local_s:.0f}"
        f"/s), LocalCluster of 2 {remote_s:.2f} s ({bulk['names'] / remote_s:.0f}/s): "
        f"{overhead:.2f}× (target ≤ {TARGET_CLUSTER_OVERHEAD}); cluster start-up "
        f"{bulk['cluster_startup_s']:.1f} s (untimed); CPU (this process + workers) "
        f"{statistics.median(bulk['cluster_cpu_s']):.1f} s vs "
        f"{statistics.median(bulk['in_process_cpu_s']):.1f} s in-process; onnxruntime "
        f"threads per worker {sorted(bulk['onnxruntime_threads_per_worker'].values())}; "
        "byte-identical stems: "
        f"{all(bulk['byte_identical_stems'])}"
    )
    targets = {
        "http_1_worker_over_in_process": (rate[1] / core, f">= {TARGET_HTTP_RATIO}"),
        "cluster_over_in_process_bulk": (overhead, f"<= {TARGET_CLUSTER_OVERHEAD}"),
    }
    met = {
        "http_1_worker_over_in_process": rate[1] / core >= TARGET_HTTP_RATIO,
        "cluster_over_in_process_bulk": overhead <= TARGET_CLUSTER_OVERHEAD,
    }
    for label, (value, goal) in targets.items():
        console.print(
            f"  {label} = {value:.3f} (goal {goal}) → {'met' if met[label] else 'NOT met'}"
        )
    path = write_results(
        "bench_scale",
        {
            "quick": args.quick,
            "load_average_before": load_before,
            "load_average_after": load_after,
            "wall_s": time.perf_counter() - began,
            "clients": args.clients,
            "window_seconds": args.seconds,
            "rounds": args.rounds,
            "in_process_messages_per_round": args.messages,
            "in_process_per_s": core_rates,
            "in_process_median_per_s": core,
            "http_runs": {f"{w}_workers": runs for w, runs in http.items()},
            "http_median_per_s": {f"{w}_workers": r for w, r in rate.items()},
            "http_over_in_process": {f"{w}_workers": r / core for w, r in rate.items()},
            "http_errors_or_unverified": errors,
            "bulk": bulk,
            "bulk_in_process_median_s": local_s,
            "bulk_cluster_median_s": remote_s,
            "targets": {
                label: {"value": value, "goal": goal, "met": met[label]}
                for label, (value, goal) in targets.items()
            },
            "versions": versions(
                ["uvicorn", "httpx", "dask", "distributed", "piper-tts", "onnxruntime"]
            ),
        },
    )
    console.print(f"results: {path}")


if __name__ == "__main__":
    main()
