"""HTTP API under bounded load on loopback: the real `hybrid-audio-server`, many clients.

Cases (each: `--clients` concurrent keep-alive clients for `--seconds`, asyncio + httpx):
- assemble: `POST /assemble/template` (double_anchor) over a few name/developer combos whose
  stems were generated beforehand, so every request is merge + write + verify, no TTS.
- next_pair: `GET /rotation/next_pair`; every response's (cycle, position) is collected and
  checked: none may be handed out twice, and together they must be one gap-free run.
- Each is also run briefly with one client: its latency is the service time without
  queueing, which explains the loaded latency (Little's law: latency ≈ clients ÷ rate).

The server is started as `tests/api_server.py` starts it for the tests (its own base dir
with copies of templates/ and data/, an INTERNAL_API_KEY, wait for /health) and stopped at
the end. Targets (from the issue): 0 errors, assemble p99 < 100 ms, no duplicate pair.

Run: `.venv/bin/python benchmarks/bench_api.py [--seconds 20] [--clients 32] [--quick]`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from common import machine_info, versions, write_results
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the server helper lives with the tests

from tests.api_server import ApiServer, make_base_dir, start_server  # noqa: E402

#: Name/developer combos the assemble case cycles through (stems made before timing).
COMBOS = [
    ("José", "Hilton Ridge Developments"),
    ("Mary", "Brightwater Homes"),
    ("Søren", "Silver Oak Residences"),
    ("Aisha", "Blue Harbor Living"),
]
P99_TARGET_MS = 100.0
Request = Callable[[httpx.AsyncClient, int], Awaitable[httpx.Response]]


@dataclass
class Run:
    """What one load run measured."""

    case: str
    clients: int
    seconds: float
    latencies: list[float] = field(default_factory=list)  # seconds, successful requests
    statuses: Counter[str] = field(default_factory=Counter)
    payloads: list[Any] = field(default_factory=list)
    server_cpu_s: float = 0.0

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())

    @property
    def errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if not status.startswith("2"))

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies, q) * 1e3) if self.latencies else float("nan")

    def summary(self) -> dict[str, Any]:
        return {
            "case": self.case,
            "clients": self.clients,
            "seconds": round(self.seconds, 3),
            "requests": self.requests,
            "requests_per_s": self.requests / self.seconds,
            "errors": self.errors,
            "statuses": dict(self.statuses),
            "p50_ms": self.percentile_ms(50),
            "p90_ms": self.percentile_ms(90),
            "p99_ms": self.percentile_ms(99),
            "max_ms": max(self.latencies) * 1e3 if self.latencies else None,
            "server_cpu_s": self.server_cpu_s,
            "server_cpu_utilization": self.server_cpu_s / self.seconds,
        }


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc), 0 where unavailable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


async def load(
    server: ApiServer,
    case: str,
    request: Request,
    extract: Callable[[httpx.Response], Any],
    *,
    clients: int,
    seconds: float,
) -> Run:
    """`clients` loops sending `request` until `seconds` have passed; every answer recorded."""
    run = Run(case, clients, seconds)
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)

    async def client_loop(index: int, deadline: float) -> None:
        async with httpx.AsyncClient(
            base_url=server.base_url, headers=server.headers(), timeout=30, limits=limits
        ) as client:
            sent = 0
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                try:
                    response = await request(client, index + sent * clients)
                except httpx.HTTPError as error:
                    run.statuses[type(error).__name__] += 1
                    continue
                finally:
                    sent += 1
                elapsed = time.perf_counter() - start
                run.statuses[str(response.status_code)] += 1
                if response.is_success:
                    run.latencies.append(elapsed)
                    run.payloads.append(extract(response))

    cpu_before = process_cpu_seconds(server.process.pid)
    started = time.perf_counter()
    deadline = started + seconds
    await asyncio.gather(*(client_loop(i, deadline) for i in range(clients)))
    run.seconds = time.perf_counter() - started
    run.server_cpu_s = process_cpu_seconds(server.process.pid) - cpu_before
    return run


async def assemble(client: httpx.AsyncClient, n: int) -> httpx.Response:
    name, developer = COMBOS[n % len(COMBOS)]
    return await client.post(
        "/assemble/template",
        json={
            "template": "double_anchor",
            "name": name,
            "developer": developer,
            "generate_missing": False,  # cached stems only: a miss is an error, not a synthesis
        },
    )


async def next_pair(client: httpx.AsyncClient, n: int) -> httpx.Response:
    return await client.get("/rotation/next_pair")


def verified(response: httpx.Response) -> bool:
    return bool(response.json()["verified"])


def pair_position(response: httpx.Response) -> tuple[int, int, int]:
    step = response.json()
    return step["cycle"], step["position"], step["size"]


def prepare(server: ApiServer) -> None:
    """Generate every stem of the assemble mix and warm both routes up."""
    with server.client(timeout=120) as client:
        for name, developer in COMBOS:
            response = client.post(
                "/generate/combined", json={"name": name, "developer": developer}
            )
            response.raise_for_status()
        for key in ("hello", "offer"):
            client.post("/generate/script", json={"key": key}).raise_for_status()
        for name, developer in COMBOS * 3:
            response = client.post(
                "/assemble/template",
                json={"template": "double_anchor", "name": name, "developer": developer},
            )
            response.raise_for_status()
            if not response.json()["verified"]:
                raise SystemExit(f"warm-up message for {name} did not verify")
        for _ in range(20):
            client.get("/rotation/next_pair").raise_for_status()


def check_pairs(run: Run) -> dict[str, Any]:
    """Duplicates among handed-out (cycle, position)s, and gaps in their run."""
    keys = [(cycle, position) for cycle, position, _ in run.payloads]
    duplicates = [key for key, n in Counter(keys).items() if n > 1]
    absolute = sorted(cycle * size + position for cycle, position, size in run.payloads)
    gaps = (absolute[-1] - absolute[0] + 1 - len(set(absolute))) if absolute else 0
    return {
        "pairs": len(keys),
        "distinct": len(set(keys)),
        "duplicates": len(duplicates),
        "duplicate_examples": duplicates[:5],
        "gaps": gaps,
        "cycles_touched": sorted({cycle for cycle, _ in keys})[:10],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="per loaded case")
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients")
    parser.add_argument("--baseline-seconds", type=float, default=2.0, help="one-client runs")
    parser.add_argument("--quick", action="store_true", help="3 s, 8 clients (smoke test)")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.clients, args.baseline_seconds = 3.0, 8, 1.0
    console = Console()

    base = Path(tempfile.mkdtemp(prefix="bench-api-"))
    server = start_server(make_base_dir(base / "server"), key=secrets.token_urlsafe(24))
    try:
        prepare(server)
        runs: list[Run] = []
        pair_checks: dict[str, dict[str, Any]] = {}
        for case, request, extract in (
            ("assemble", assemble, verified),
            ("next_pair", next_pair, pair_position),
        ):
            for clients, seconds in ((1, args.baseline_seconds), (args.clients, args.seconds)):
                console.print(f"{case}: {clients} client(s) for {seconds:g} s …")
                run = asyncio.run(
                    load(server, case, request, extract, clients=clients, seconds=seconds)
                )
                runs.append(run)
                if case == "next_pair":
                    pair_checks[f"{clients}_clients"] = check_pairs(run)
        unverified = sum(
            1 for run in runs if run.case == "assemble" for ok in run.payloads if not ok
        )
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)

    machine = machine_info()
    table = Table(title=f"HTTP API on loopback — {machine['cpu_count']} CPUs, one uvicorn process")
    for column in ("case", "clients", "req/s", "p50 ms", "p99 ms", "max ms", "errors", "srv CPU"):
        table.add_column(column, justify="right" if column != "case" else "left")
    for run in runs:
        s = run.summary()
        table.add_row(
            run.case,
            str(run.clients),
            f"{s['requests_per_s']:,.0f}",
            f"{s['p50_ms']:.1f}",
            f"{s['p99_ms']:.1f}",
            f"{s['max_ms']:.1f}" if s["max_ms"] is not None else "-",
            str(s["errors"]),
            f"{s['server_cpu_utilization']:.0%}",
        )
    console.print(table)

    loaded = {run.case: run for run in runs if run.clients == args.clients}
    single = {run.case: run for run in runs if run.clients == 1}
    duplicates = sum(check["duplicates"] for check in pair_checks.values())
    gaps = sum(check["gaps"] for check in pair_checks.values())
    assemble_p99 = loaded["assemble"].percentile_ms(99)
    targets = {
        "errors (all runs)": (sum(run.errors for run in runs) + unverified, "0"),
        f"assemble p99 ms at {args.clients} clients": (round(assemble_p99, 1), "< 100"),
        "duplicate (cycle, position)": (duplicates, "0"),
    }
    met = {
        "errors (all runs)": targets["errors (all runs)"][0] == 0,
        f"assemble p99 ms at {args.clients} clients": assemble_p99 < P99_TARGET_MS,
        "duplicate (cycle, position)": duplicates == 0,
    }
    target_table = Table(title="targets")
    for column in ("target", "value", "goal", "met"):
        target_table.add_column(column)
    for label, (value, goal) in targets.items():
        target_table.add_row(label, str(value), goal, "yes" if met[label] else "NO")
    console.print(target_table)
    rate = loaded["assemble"].requests / loaded["assemble"].seconds
    service_ms = single["assemble"].percentile_ms(50)
    notes = [
        f"assemble: one client sees {service_ms:.1f} ms (service time); at {args.clients} "
        f"clients the server completes {rate:,.0f}/s, so by Little's law a request waits "
        f"≈ {args.clients / rate * 1e3:.0f} ms on average: the latency is queueing.",
        "The server is one uvicorn process: one event loop plus a thread pool for the sync "
        "routes, all under one GIL, so it uses about one core "
        f"(measured {loaded['assemble'].server_cpu_s / loaded['assemble'].seconds:.0%} of a "
        "core under load) while the load generator runs on the other core of this machine.",
        (
            f"p99 < {P99_TARGET_MS:.0f} ms at {args.clients} clients needs ≈ "
            f"{args.clients / (P99_TARGET_MS / 1e3):,.0f} req/s, about "
            f"{args.clients / (P99_TARGET_MS / 1e3) / rate:.1f}× this process: several server "
            "processes on more cores (hybrid-audio-server has no --workers option today; "
            "cursors and the stem index are process-safe in SQLite, but jobs live in one "
            "process's memory, so /jobs/{id} would need sticky routing or a shared store)."
            if assemble_p99 >= P99_TARGET_MS
            else f"p99 < {P99_TARGET_MS:.0f} ms is met at {args.clients} clients."
        ),
        f"next_pair: {pair_checks[f'{args.clients}_clients']['pairs']:,} pairs at "
        f"{args.clients} clients, {duplicates} duplicates, {gaps} gaps; p50 "
        f"{loaded['next_pair'].percentile_ms(50):.1f} ms but p99 "
        f"{loaded['next_pair'].percentile_ms(99):.1f} ms. Each step is one BEGIN IMMEDIATE "
        "transaction in a pool thread: the tail comes from those threads contending for the "
        "SQLite write lock (whose busy handler sleeps, up to 100 ms a turn) and the GIL.",
    ]
    for note in notes:
        console.print(f"• {note}")

    path = write_results(
        "bench_api",
        {
            "quick": args.quick,
            "clients": args.clients,
            "seconds": args.seconds,
            "baseline_seconds": args.baseline_seconds,
            "combos": COMBOS,
            "runs": [run.summary() for run in runs],
            "assemble_unverified": unverified,
            "next_pair_checks": pair_checks,
            "targets": {
                label: {"value": value, "goal": goal, "met": met[label]}
                for label, (value, goal) in targets.items()
            },
            "notes": notes,
            "versions": versions(["fastapi", "starlette", "uvicorn", "httpx", "pydantic", "h11"]),
        },
    )
    console.print(f"results: {path}")


if __name__ == "__main__":
    main()
