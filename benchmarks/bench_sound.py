"""Sound: what loudness + true-peak + trim + fades cost at generation, and what they buy.

Cases (one run, one machine; medians of repeats):
- generation of N distinct stems (default 300: every shipped script and developer, and
  names) into an empty cache, processing on (the default contract: −16 LUFS, −1 dBTP,
  5 ms fades) vs off (loudness off, no fades); the same engine, loaded before any timer;
  each repeat makes two fresh caches, stem by stem in turn. Target: on / off ≤ 1.10.
  `sound.process` alone is also timed over the engine's own clips (the "off" stems), so the
  processing share of synthesis is read without two noisy totals;
- loudness spread of those stems before (the engine's clips) and after (the stored stems,
  measured from their files): min, max, p5, p95, stdev. Target: all within ±0.5 LU;
- largest join step (dBFS) in 200 seeded messages (Hi <name> · <developer> has a new offer
  for you; 40 ms gaps, 150 ms pause) joined with the templates' merge-time trim and
  without it, made of the processed and of the unprocessed stems;
- encode time per minute of audio per delivery format (`hybrid_audio.delivery`), on a
  ~60 s master joined from the processed stems: median of repeats, output size.

Run: `make bench` or `.venv/bin/python benchmarks/bench_sound.py [--stems N] [--quick]`.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from common import fmt_ms, measure, versions, write_results
from rich.console import Console
from rich.table import Table

from hybrid_audio import codecs, delivery, sound
from hybrid_audio.bitmerge import Part, Silence, Trim, bitmerge_semantic
from hybrid_audio.cache import StemRecord
from hybrid_audio.config import Settings
from hybrid_audio.datasets import load_dataset
from hybrid_audio.engines import create_engine
from hybrid_audio.generation import Generator
from hybrid_audio.wav import Wav, read_wav

REPO = Path(__file__).resolve().parent.parent
DATA = Settings(base_dir=REPO)
TARGET_LUFS, TOLERANCE_LU = -16.0, 0.5
OFF = {"loudness_lufs": None, "edge_fade_ms": 0.0}


def _work(count: int) -> list[tuple[str, str, str | None]]:
    """`count` distinct (kind, text, script key or None): the scripts, then developers and names in
    turn while developers last (so a short run has both), then names."""
    scripts = [("script", i.text, i.key) for i in load_dataset("script", DATA).items]
    developers = [("developer", t, None) for t in load_dataset("developer", DATA).texts()]
    names = [("name", t, None) for t in load_dataset("name", DATA).texts()]
    mixed = [pair for two in zip(developers, names, strict=False) for pair in two]
    work = scripts + mixed + names[len(developers) :]
    if len(work) < count:
        raise SystemExit(f"the shipped datasets have {len(work)} texts; asked for {count}")
    return work[:count]


def _generator(engine, **settings: object) -> Generator:
    base = Path(tempfile.mkdtemp(prefix="bench-sound-"))
    return Generator.from_settings(Settings(base_dir=base, **settings), engine=engine)


def _generate_both(
    on: Generator, off: Generator, work: list[tuple[str, str, str | None]]
) -> tuple[float, float]:
    """Seconds to make every stem of `work` in `on` and in `off`, stem by stem in turn
    (who goes first alternates), so the machine's drift hits both runs alike."""
    seconds = {id(on): 0.0, id(off): 0.0}
    for i, (kind, text, key) in enumerate(work):
        for generator in (on, off) if i % 2 == 0 else (off, on):
            start = time.perf_counter()
            generator.generate(kind, text, slug_source=key)
            seconds[id(generator)] += time.perf_counter() - start
    return seconds[id(on)], seconds[id(off)]


def _stems(generator: Generator) -> list[tuple[StemRecord, Wav]]:
    root = Path(generator.cache.stems_dir)
    return [(r, read_wav(root / r.path)) for r in generator.cache.list()]


def _loudness(wav: Wav) -> float:
    return sound.integrated_loudness(
        codecs.decode(wav.pcm, wav.format)[:, 0], wav.format.sample_rate
    )


def _spread(values: list[float]) -> dict[str, float | int]:
    p5, p95 = np.percentile(values, [5, 95])
    return {
        "count": len(values),
        "min": min(values),
        "max": max(values),
        "p5": float(p5),
        "p95": float(p95),
        "stdev": statistics.stdev(values),
        "within_target": sum(abs(v - TARGET_LUFS) <= TOLERANCE_LU for v in values),
    }


def _largest_steps(stems: dict[str, Wav], messages: int) -> dict[str, float | int]:
    """Worst join step (dBFS) over seeded single_anchor-like messages, with the shipped
    templates' merge-time trim (−50 dBFS, keep 15 ms) and without it."""
    by_kind: dict[str, list[str]] = {}
    for stem_id in stems:
        by_kind.setdefault(stem_id.split(".")[1], []).append(stem_id)
    rng = random.Random(13)
    worst = {"trim_on": -np.inf, "trim_off": -np.inf}
    for _ in range(messages):
        ids = [
            "stem.script.hello",
            rng.choice(by_kind["name"]),
            None,
            rng.choice(by_kind["developer"]),
            "stem.script.offer",
        ]
        parts = [Silence(ms=150) if i is None else Part(stems[i], i) for i in ids]
        for case, trim in (("trim_on", Trim(-50.0, 15.0)), ("trim_off", None)):
            merged = bitmerge_semantic(parts, gap_ms=40, trim=trim)
            step = sound.largest_join_step_dbfs(read_wav(merged.wav), merged.manifest)
            worst[case] = max(worst[case], step)
    return {"messages": messages, **worst}


def _master(stems: list[Wav], seconds: float) -> Wav:
    """About `seconds` of the processed stems joined with pauses: a long message."""
    parts: list[Part | Silence] = []
    total = 0.0
    for i, wav in enumerate(stems):
        parts += [Part(wav, f"s{i}"), Silence(ms=150)]
        total += wav.duration + 0.15
        if total >= seconds:
            break
    return read_wav(bitmerge_semantic(parts).wav)


def _encode_times(master: Wav, repeats: int) -> dict[str, dict]:
    samples = codecs.decode(master.pcm, master.format)
    minutes = master.duration / 60
    out = {}
    for name, kind in delivery.FORMATS.items():
        if kind.encode is None:
            continue
        params = kind.parameters(master.format)
        timing = measure(
            lambda k=kind, p=params: k.encode(samples, master.format, p), repeats=repeats
        )
        out[name] = {
            **timing.to_dict(),
            "seconds_per_minute_of_audio": timing.median / minutes,
            "bytes": len(timing.result),
            "parameters": params,
            "encoder": kind.encoder,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stems", type=int, default=300, help="distinct stems per run")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of each generation")
    parser.add_argument("--messages", type=int, default=200, help="messages for join steps")
    parser.add_argument("--quick", action="store_true", help="30 stems, 1 repeat (smoke test)")
    args = parser.parse_args()
    if args.quick:
        args.stems, args.repeats, args.messages = 30, 1, 20
    console = Console()
    work = _work(args.stems)
    engine = create_engine(Settings(tts_engine="piper"))
    probe = _generator(engine)
    engine.synthesize("warm up", probe.contract)  # load the voice outside every timer
    sound.process(engine.synthesize("warm up", probe.contract), probe.contract)

    on_s, off_s = [], []
    for _ in range(args.repeats):  # two fresh caches each time
        on, off = _generator(engine), _generator(engine, **OFF)
        seconds = _generate_both(on, off, work)
        on_s.append(seconds[0])
        off_s.append(seconds[1])
    on_stems, off_stems = _stems(on), _stems(off)
    assert len(on_stems) == len(off_stems) == len(work), "a run did not make every stem"
    contract = on.contract
    raw = [wav for _, wav in off_stems]  # the engine's clips, as it returned them
    process = measure(lambda: [sound.process(w, contract) for w in raw], repeats=args.repeats)

    before = [_loudness(w) for w in raw]
    after = [_loudness(w) for _, w in on_stems]
    indexed = [r.loudness_after for r, _ in on_stems]
    assert np.allclose(after, indexed), "the index's loudness_after is not the file's"
    peaks = [
        sound.true_peak_dbtp(codecs.decode(w.pcm, w.format)[:, 0], w.format.sample_rate)
        for _, w in on_stems
    ]
    steps = {
        "processed": _largest_steps({r.stem_id: w for r, w in on_stems}, args.messages),
        "unprocessed": _largest_steps({r.stem_id: w for r, w in off_stems}, args.messages),
    }
    master = _master([w for _, w in on_stems], 60.0)
    encodes = _encode_times(master, repeats=5)

    on_med, off_med = statistics.median(on_s), statistics.median(off_s)
    ratio = on_med / off_med
    share = process.median / off_med
    table = Table(title=f"generation — {len(work)} distinct stems, medians of {args.repeats}")
    for col in ("case", "total s", "ms per stem"):
        table.add_column(col, justify="left" if col == "case" else "right")
    table.add_row(
        "processing off (loudness off, no fades)", f"{off_med:.2f}", fmt_ms(off_med / len(work))
    )
    table.add_row(
        "processing on (−16 LUFS, −1 dBTP, 5 ms)", f"{on_med:.2f}", fmt_ms(on_med / len(work))
    )
    table.add_row(
        "sound.process alone", f"{process.median:.2f}", fmt_ms(process.median / len(work))
    )
    console.print(table)
    spread = {"before": _spread(before), "after": _spread(after)}
    table = Table(title="loudness (LUFS, BS.1770-4; short clips by the one-block rule)")
    for col in ("", "min", "p5", "p95", "max", "stdev", f"within ±{TOLERANCE_LU}"):
        table.add_column(col, justify="right")
    for label, s in spread.items():
        table.add_row(
            label,
            *(f"{s[k]:.2f}" for k in ("min", "p5", "p95", "max", "stdev")),
            f"{s['within_target']}/{s['count']}",
        )
    console.print(table)
    console.print(
        f"true peak after: max {max(peaks):.2f} dBTP; largest join step, merge trim on / "
        f"off: processed {steps['processed']['trim_on']:.1f} / "
        f"{steps['processed']['trim_off']:.1f} dBFS, unprocessed "
        f"{steps['unprocessed']['trim_on']:.1f} / {steps['unprocessed']['trim_off']:.1f} dBFS"
    )
    table = Table(
        title=f"delivery encode — master {master.duration:.1f} s, {master.format.describe()}"
    )
    for col in ("format", "s per minute of audio", "bytes", "kbit/s"):
        table.add_column(col, justify="left" if col == "format" else "right")
    for name, e in encodes.items():
        kbps = e["bytes"] * 8 / master.duration / 1000
        table.add_row(
            name, f"{e['seconds_per_minute_of_audio']:.3f}", f"{e['bytes']:,}", f"{kbps:.0f}"
        )
    console.print(table)
    targets = {
        "on / off <= 1.10": (ratio, ratio <= 1.10),
        "all stems within ±0.5 LU after": (
            spread["after"]["within_target"],
            spread["after"]["within_target"] == len(work),
        ),
    }
    console.print(f"on / off = {ratio:.3f}; sound.process / generation off = {share:.3f}")
    for goal, (value, met) in targets.items():
        console.print(f"  {goal}: {value:,.3f} → {'met' if met else 'NOT met'}")
    path = write_results(
        "bench_sound",
        {
            "stems": len(work),
            "repeats": args.repeats,
            "audio_seconds_after": sum(w.duration for _, w in on_stems),
            "generation_on_s": on_s,
            "generation_off_s": off_s,
            "on_over_off": ratio,
            "process_alone": process.to_dict(),
            "process_over_generation_off": share,
            "loudness_lufs": spread,
            "true_peak_after_max_dbtp": max(peaks),
            "join_steps_trim_off": steps,
            "master_seconds": master.duration,
            "master_format": master.format.model_dump(mode="json"),
            "encode": encodes,
            "targets": {k: {"value": v, "met": m} for k, (v, m) in targets.items()},
            "engine": engine.describe(),
            "versions": versions(
                ["piper-tts", "onnxruntime", "numpy", "soxr", "pyloudnorm", "soundfile"]
            ),
        },
    )
    console.print(f"results: {path}")


if __name__ == "__main__":
    main()
