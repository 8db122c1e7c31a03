"""Shared helpers for the scripts in benchmarks/: timing, machine facts, results files.

`measure(fn, repeats=..., setup=...)` times `fn` with `time.perf_counter` and returns a
`Timing`: median, min and interquartile range over `repeats` samples, in seconds per call.
Fast calls are batched as `timeit` does (each sample is the mean of N back-to-back calls,
N chosen so a sample lasts ≥ 5 ms). `setup`, when given, runs once per call *outside* the
timer and its return value is passed to `fn`, so per-call preparation (fresh objects, say)
is never counted. The garbage collector is disabled inside the timer.

`machine_info()` and `versions()` describe where and with what a run happened;
`write_results(name, payload)` stores `benchmarks/results/<name>.json` with both added.
Benchmarks are plain scripts: `python benchmarks/bench_x.py` puts this directory on
`sys.path`, so they import this module as `common`.
"""

from __future__ import annotations

import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"

#: A sample of a fast call averages enough back-to-back calls to last this long.
MIN_SAMPLE_S = 0.005

#: Printed (and stored) with every results table so readers know how the clock ran.
TIMING_NOTE = (
    "Wall clock (time.perf_counter); gc disabled inside the timer; one untimed warm-up call "
    "per case; calls under 5 ms are batched (each sample = mean of N back-to-back calls, as "
    "timeit does); per-call setup runs outside the timer."
)


@dataclass
class Timing:
    """Wall-clock samples of one case: seconds per call, one value per repeat."""

    samples: list[float]
    number: int = 1  # calls averaged into each sample
    result: Any = field(default=None, repr=False)  # what the last timed call returned

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def min(self) -> float:
        return min(self.samples)

    @property
    def iqr(self) -> float:
        """Interquartile range (75th minus 25th percentile, linear interpolation)."""
        q1, q3 = np.percentile(self.samples, [25, 75])
        return float(q3 - q1)

    def throughput(self, nbytes: int) -> float:
        """Bytes per second at the median time."""
        return nbytes / self.median

    def to_dict(self, *, nbytes: int | None = None) -> dict[str, Any]:
        """Summary for a results file; with `nbytes`, throughput at the median in GB/s."""
        out: dict[str, Any] = {
            "median_s": self.median,
            "min_s": self.min,
            "iqr_s": self.iqr,
            "repeats": len(self.samples),
            "calls_per_repeat": self.number,
        }
        if nbytes is not None:
            out["bytes"] = nbytes
            out["throughput_gb_s"] = self.throughput(nbytes) / 1e9
        return out


def measure(
    fn: Callable[..., Any],
    *,
    repeats: int,
    setup: Callable[[], Any] | None = None,
    number: int | None = None,
    min_sample_s: float = MIN_SAMPLE_S,
    max_number: int = 200,
) -> Timing:
    """Time `fn()` (or `fn(setup())` when `setup` is given): `repeats` samples.

    Each sample is the mean of `number` back-to-back calls, as `timeit` does. By default
    `number` is calibrated from one untimed warm-up call so a sample lasts at least
    `min_sample_s` (at most `max_number` calls); slow calls get `number=1`. Batching
    matters for sub-millisecond calls: allocator and page-fault effects can make single
    calls alternate between two speeds, and a median of such samples would pick one at
    random. `setup` runs once per call, all of a sample's setups before its timer starts.
    The garbage collector is collected once per case and disabled inside the timer.
    """
    if repeats < 1:
        raise ValueError("repeats must be at least 1")

    def sample(n: int) -> tuple[float, Any]:
        args = [() if setup is None else (setup(),) for _ in range(n)]
        value = None
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            start = time.perf_counter()
            for a in args:
                value = fn(*a)
            elapsed = time.perf_counter() - start
        finally:
            if was_enabled:
                gc.enable()
        del args
        return elapsed / n, value

    gc.collect()
    first, _ = sample(1)  # warm-up, and calibration
    if number is None:
        number = min(max_number, max(1, math.ceil(min_sample_s / max(first, 1e-9))))
    samples, result = [], None
    for _ in range(repeats):
        elapsed, result = sample(number)
        samples.append(elapsed)
    return Timing(samples, number, result)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _total_ram_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def machine_info() -> dict[str, Any]:
    """Platform, CPU model, logical CPU count and total RAM of this machine."""
    ram = _total_ram_bytes()
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "ram_bytes": ram,
        "ram_gib": round(ram / 2**30, 1) if ram else None,
    }


def package_version(name: str) -> str | None:
    """Installed version of a distribution, or None."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def command_version(argv: list[str]) -> str | None:
    """First non-empty output line of a `--version` style command, or None if it fails."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in (proc.stdout + proc.stderr).splitlines():
        if line.strip():
            return " ".join(line.split())
    return None


def versions(packages: Iterable[str] = (), **extra: str | None) -> dict[str, str | None]:
    """Python and the given distributions' versions, plus any `extra` entries."""
    out: dict[str, str | None] = {
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
    }
    for name in packages:
        out[name] = package_version(name)
    out.update(extra)
    return out


def utc_timestamp() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def write_results(name: str, payload: dict[str, Any]) -> Path:
    """Write `benchmarks/results/<name>.json`, adding timestamp, argv and machine facts.

    Keys already in `payload` win over the added ones.
    """
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    doc = {
        "benchmark": name,
        "timestamp_utc": utc_timestamp(),
        "argv": sys.argv[1:],
        "machine": machine_info(),
        "timing": TIMING_NOTE,
        **payload,
    }
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n")
    return path


def fmt_ms(seconds: float) -> str:
    """Seconds as milliseconds with sensible precision for a table."""
    ms = seconds * 1e3
    if ms < 1:
        return f"{ms:.3f}"
    if ms < 100:
        return f"{ms:.2f}"
    return f"{ms:.0f}"


def fmt_ratio(ratio: float) -> str:
    """A speed ratio such as 0.14×, 2.3× or 150×."""
    if ratio < 1:
        return f"{ratio:.2f}×"
    return f"{ratio:.1f}×" if ratio < 100 else f"{ratio:.0f}×"


@dataclass
class Interleaved:
    """Cases timed in alternating rounds in one process: per case, wall-clock and CPU
    (`time.process_time`, every thread of the process) samples of the same calls."""

    wall: dict[str, Timing]
    cpu: dict[str, Timing]

    def ratios(self, slower: str, faster: str, clock: str = "wall") -> list[float]:
        """Per round: `slower`'s time / `faster`'s time (>1 = `faster` is faster)."""
        timings = self.wall if clock == "wall" else self.cpu
        return [
            s / f
            for s, f in zip(timings[slower].samples, timings[faster].samples, strict=True)
            if f > 0
        ]


def spread(values: list[float]) -> dict[str, float]:
    """Median, min, max and interquartile range of `values`."""
    q1, q3 = np.percentile(values, [25, 75])
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "iqr": float(q3 - q1),
    }


def measure_interleaved(
    fns: dict[str, Callable[..., Any]],
    *,
    rounds: int,
    setup: Callable[[], Any] | None = None,
    min_sample_s: float = MIN_SAMPLE_S,
    max_number: int = 200,
) -> Interleaved:
    """Time several cases in `rounds` rounds, each round one sample of every case in turn.

    Cases whose speed depends on the process's state (allocator, page cache, a busy
    neighbour) see the same state within a round, so the per-round ratio of two cases is
    steadier than the ratio of two separately taken medians. Each sample is the mean of
    N back-to-back calls (N calibrated per case as `measure` does); `setup` runs per call,
    outside the timer; gc is disabled inside it.
    """
    if rounds < 1:
        raise ValueError("rounds must be at least 1")

    def sample(fn: Callable[..., Any], n: int) -> tuple[float, float, Any]:
        args = [() if setup is None else (setup(),) for _ in range(n)]
        value = None
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            cpu, start = time.process_time(), time.perf_counter()
            for a in args:
                value = fn(*a)
            elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        finally:
            if was_enabled:
                gc.enable()
        del args
        return elapsed / n, cpu / n, value

    gc.collect()
    numbers = {}
    for name, fn in fns.items():
        first, _, _ = sample(fn, 1)  # warm-up, and calibration
        numbers[name] = min(max_number, max(1, math.ceil(min_sample_s / max(first, 1e-9))))
    wall: dict[str, list[float]] = {name: [] for name in fns}
    cpu: dict[str, list[float]] = {name: [] for name in fns}
    results: dict[str, Any] = {}
    for _ in range(rounds):
        for name, fn in fns.items():
            w, c, results[name] = sample(fn, numbers[name])
            wall[name].append(w)
            cpu[name].append(c)
    return Interleaved(
        wall={n: Timing(wall[n], numbers[n], results[n]) for n in fns},
        cpu={n: Timing(cpu[n], numbers[n], results[n]) for n in fns},
    )
