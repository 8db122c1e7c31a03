"""Does refusing a wrong `X-Internal-API-Key` take the same time wherever the key differs?

`hybrid_audio.api.auth.keys_match` compares with `hmac.compare_digest`, whose time does not
depend on where the first differing byte is, so a key cannot be guessed byte by byte from
response times. This measures it, in process, where a leak would be largest (over HTTP the
nanoseconds an early exit saves vanish in network jitter):

- cases: a wrong key that differs in its first byte, one that differs in its last byte,
  and the right key, for a realistic 32-character key and a 64 KiB one (a long key makes an
  early-exit comparison visible: its cost grows with the common prefix);
- the leak measure is the ratio median(last byte wrong) / median(first byte wrong);
  target: within 1 ± 0.1 for the 64 KiB key;
- control: the same measurement of an `==` comparison (early exit) must see a ratio above
  1.2, or the run could not have seen a leak and its verdict means nothing.

Samples of the cases alternate (the order flips every round), so drift hits all alike; each
sample is the mean of N back-to-back calls, N chosen so a sample lasts ≥ 5 ms; medians
ignore scheduler outliers. The behaviour of `keys_match` (right/wrong keys, the decision made
by `compare_digest`) is tested in tests/security/test_promises.py.

Run: `.venv/bin/python benchmarks/bench_auth_timing.py [--repeats 151] [--quick]`.
Results: a table on stdout and benchmarks/results/bench_auth_timing.json.
"""

from __future__ import annotations

import argparse
import gc
import math
import time
from collections.abc import Callable
from typing import Any

from common import MIN_SAMPLE_S, TIMING_NOTE, Timing, machine_info, versions, write_results
from rich.console import Console
from rich.table import Table

from hybrid_audio.api.auth import keys_match

Compare = Callable[[str | None, str], bool]
KEY_LENGTHS = (32, 64 * 1024)
#: The key length whose ratio is judged (short keys differ by nanoseconds: noise decides).
JUDGED_LENGTH = 64 * 1024
TARGET_TOLERANCE = 0.1  # keys_match: |ratio − 1| ≤ this
CONTROL_MIN_RATIO = 1.2  # `==`: the measurement must see at least this
DEFAULT_REPEATS = 151
QUICK_REPEATS = 21


def early_exit(given: str | None, expected: str) -> bool:
    """The comparison `keys_match` must not be: `==` stops at the first differing byte."""
    return (given or "").encode() == expected.encode()


def interleaved(cases: dict[str, Callable[[], Any]], repeats: int) -> dict[str, Timing]:
    """`repeats` samples of every case, taken in alternating order round after round."""
    slowest = 0.0
    for fn in cases.values():  # warm-up, and calibration of calls per sample
        start = time.perf_counter()
        fn()
        slowest = max(slowest, time.perf_counter() - start)
    number = max(1, math.ceil(MIN_SAMPLE_S / max(slowest, 1e-9)))
    samples: dict[str, list[float]] = {name: [] for name in cases}
    order = list(cases.items())
    gc.collect()
    gc.disable()
    try:
        for round_ in range(repeats):
            for name, fn in order if round_ % 2 else order[::-1]:
                start = time.perf_counter()
                for _ in range(number):
                    fn()
                samples[name].append((time.perf_counter() - start) / number)
    finally:
        gc.enable()
    return {name: Timing(values, number) for name, values in samples.items()}


def bench_compare(compare: Compare, key_length: int, repeats: int) -> dict[str, Any]:
    """Timings of first-byte-wrong, last-byte-wrong and right keys, and the leak ratio."""
    expected = "k" * key_length
    keys = {"first byte wrong": "x" + expected[1:], "last byte wrong": expected[:-1] + "x"}
    keys["right key"] = expected
    timings = interleaved(
        {name: (lambda given=given: compare(given, expected)) for name, given in keys.items()},
        repeats,
    )
    ratio = timings["last byte wrong"].median / timings["first byte wrong"].median
    return {
        "key_length": key_length,
        "cases": {name: timing.to_dict() for name, timing in timings.items()},
        "last_over_first": ratio,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=DEFAULT_REPEATS, help="samples per case")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_REPEATS} samples (smoke)")
    args = parser.parse_args(argv)
    repeats = QUICK_REPEATS if args.quick else args.repeats
    console = Console(highlight=False)
    runs: dict[str, list[dict[str, Any]]] = {"keys_match": [], "== (control)": []}
    with console.status("timing key comparisons…"):
        for length in KEY_LENGTHS:
            runs["keys_match"].append(bench_compare(keys_match, length, repeats))
            runs["== (control)"].append(bench_compare(early_exit, length, repeats))
    judged = {
        name: next(r for r in rs if r["key_length"] == JUDGED_LENGTH) for name, rs in runs.items()
    }
    leak_ratio = judged["keys_match"]["last_over_first"]
    control_ratio = judged["== (control)"]["last_over_first"]
    targets = {
        "keys_match_ratio_within_tolerance": abs(leak_ratio - 1) <= TARGET_TOLERANCE,
        "control_sees_early_exit": control_ratio > CONTROL_MIN_RATIO,
    }
    path = write_results(
        "bench_auth_timing",
        {
            "versions": versions(),
            "machine": machine_info(),
            "repeats": repeats,
            "judged_key_length": JUDGED_LENGTH,
            "target": f"keys_match last/first within 1 ± {TARGET_TOLERANCE}; "
            f"== control above {CONTROL_MIN_RATIO}",
            "met": targets,
            "runs": runs,
        },
    )

    table = Table(title="Key comparison time by where a wrong key differs (median of samples)")
    for column in (
        "comparison",
        "key",
        "first wrong µs",
        "last wrong µs",
        "right µs",
        "last/first",
    ):
        table.add_column(column, justify="left" if column == "comparison" else "right")
    for name, rs in runs.items():
        for run in rs:
            cases = run["cases"]
            table.add_row(
                name,
                f"{run['key_length']:,} B",
                *(
                    f"{cases[c]['median_s'] * 1e6:.3f}"
                    for c in ("first byte wrong", "last byte wrong", "right key")
                ),
                f"{run['last_over_first']:.3f}",
            )
    console.print(table)
    console.print(
        f"{JUDGED_LENGTH:,} B key: keys_match {leak_ratio:.3f} (target 1 ± {TARGET_TOLERANCE}: "
        f"{'met' if targets['keys_match_ratio_within_tolerance'] else 'MISSED'}); "
        f"== control {control_ratio:.3f} (must exceed {CONTROL_MIN_RATIO}: "
        f"{'yes' if targets['control_sees_early_exit'] else 'NO — the run could not see a leak'})"
    )
    console.print(f"[dim]{TIMING_NOTE} Samples of the cases alternate.[/dim]")
    console.print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
