"""Message assembly and rotation throughput.

Cases (one run, one machine; medians of repeats):
- assemble: `Assembler.assemble("double_anchor", ...)` with every stem already cached,
  including writing the WAV and manifest (fsynced) and verifying the file from disk, on
  one thread. Target ≥ 300 messages/s.
- naive script: what a user might write instead with pydub — the same stems held in memory
  (already trimmed as ours trims them), the same silences and gaps, concatenated and
  exported to one new WAV per message, fsynced. Its samples are checked to equal ours.
  Timed interleaved with `assemble` (repeat by repeat), so both see the same machine load.
  Target (issue #14): ours ≥ 0.6× the script.
- campaign: a campaign of `--messages` rows (the same recipient, so the same message)
  through `Campaigns.run`, timed from run start to done (stems already cached), its
  messages group-committed (fsynced per batch before the rows are committed), against the
  script writing as many fsynced WAVs, interleaved. Target (issue #14): ≥ 1.0× the script.
- campaign, manifest only: the same campaign with `store="manifest"` (no WAV written, each
  message proven on its merged bytes, its manifest its only file), interleaved; reported
  beside the others, no target (the script keeps WAVs).
- CPU: the process's CPU time per message for assemble, the script and the campaigns,
  beside the wall-clock rates.
- next_pair: `RotationEngine.next_pair()` with its SQLite cursor and JSON-lines log.
  Target ≥ 5,000/s.
- memory: Python allocations while stepping through a 10⁶ × 10⁴ pair space compared with a
  100 × 100 one (the bijection needs O(1) memory, so both should be flat).

Run: `make bench` or `.venv/bin/python benchmarks/bench_assembly.py [--quick]`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
import tracemalloc
import warnings
from pathlib import Path

from common import versions, write_results
from rich.console import Console
from rich.table import Table

from hybrid_audio.assembly import Assembler, AssemblyResult
from hybrid_audio.bitmerge import Manifest
from hybrid_audio.config import Settings
from hybrid_audio.engines import create_engine
from hybrid_audio.generation import Generator
from hybrid_audio.recipients import parse_recipients
from hybrid_audio.rotation import RotationEngine
from hybrid_audio.wav import read_wav
from hybrid_audio.workspace import Workspace

with warnings.catch_warnings():
    # pydub warns at import when ffmpeg is missing; WAV in and out never needs it.
    warnings.simplefilter("ignore", RuntimeWarning)
    from pydub import AudioSegment

REPO = Path(__file__).resolve().parent.parent
#: Issue #14: single messages through the Assembler against the naive script.
TARGET_SCRIPT_RATIO = 0.6
#: Issue #14: a campaign's messages (group commit) against the naive script.
TARGET_CAMPAIGN_RATIO = 1.0


#: The temporary base dirs made by `_workspace`, removed when the run ends.
_MADE: list[Path] = []


def _workspace() -> Settings:
    base = Path(tempfile.mkdtemp(prefix="bench-asm-"))
    _MADE.append(base)
    shutil.copytree(REPO / "templates", base / "templates")
    shutil.copytree(REPO / "data", base / "data")
    return Settings(base_dir=base)


def _rate(calls: int, fn) -> float:
    return _timed(calls, fn)[0]


def _timed(calls: int, fn) -> tuple[float, float]:
    """(calls per second of wall time, CPU ms of this process per call): on a loaded
    machine the CPU figure is the steadier one (fsync waits are not in it)."""
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(calls):
        fn()
    cpu_ms = (time.process_time() - cpu) / calls * 1000
    return calls / (time.perf_counter() - start), cpu_ms


def naive_script(settings: Settings, first: AssemblyResult) -> tuple[object, Path]:
    """The pydub script a user might write, with its inputs prepared outside the timer.

    The pieces are the very segments of our first message (stems cut to the frames our
    trim kept, silences and gaps as silence), held in memory as `AudioSegment`s. Returns
    (a function writing one fsynced message per call, the folder it writes to).
    """
    document = json.loads(Path(first.manifest_path).read_bytes())
    merge = Manifest(**document["merge"])
    fmt = merge.format
    stems = Path(settings.stems_dir)
    pieces = []
    for segment in merge.segments:
        if segment.kind == "audio":
            source = document["sources"][segment.part_index]
            pcm = read_wav(stems / source["path"]).pcm
            align = fmt.block_align
            data = pcm[segment.trim_start_frame * align : segment.trim_end_frame * align]
        else:
            data = bytes([fmt.silence_byte]) * segment.byte_length
        pieces.append(
            AudioSegment(
                data=data,
                sample_width=fmt.bits_per_sample // 8,
                frame_rate=fmt.sample_rate,
                channels=fmt.channels,
            )
        )
    folder = Path(tempfile.mkdtemp(prefix="bench-naive-"))
    count = iter(range(10**9))

    def write_message() -> Path:
        path = folder / f"message{next(count)}.wav"
        message = sum(pieces[1:], pieces[0])
        with open(path, "wb") as handle:
            message.export(handle, format="wav")
            handle.flush()
            os.fsync(handle.fileno())
        return path

    ours = read_wav(first.wav_path).pcm
    theirs = read_wav(write_message()).pcm
    if theirs != ours:
        raise SystemExit("the naive script's samples differ from ours")
    return write_message, folder


def campaign_run(workspace: Workspace, rows: int, store: str = "wav"):
    """A function running one new campaign of `rows` rows (José / Brightwater Homes, as the
    single messages) in store mode `store` and returning its messages per second and CPU ms
    per message."""
    recipients = parse_recipients(("name,developer\n" + "José,Brightwater Homes\n" * rows).encode())

    def run() -> tuple[float, float]:
        """(messages per second, CPU ms per message), run start to done."""
        info = workspace.campaigns.create("double_anchor", recipients, store=store)
        start, cpu = time.perf_counter(), time.process_time()
        done = workspace.campaigns.run(info.id)
        elapsed, used = time.perf_counter() - start, time.process_time() - cpu
        if done.done != rows or done.failed:
            raise SystemExit(f"campaign made {done.done} of {rows} messages")
        return rows / elapsed, used / rows * 1000

    return run


def _step_memory(names: int, developers: int, steps: int) -> tuple[int, int]:
    """(peak bytes allocated while stepping, bytes still held after) for an N × M space."""
    settings = _workspace()
    engine = RotationEngine(
        settings=settings,
        seed=7,
        names=[f"Name{i}" for i in range(names)],
        developers=[f"Developer{i}" for i in range(developers)],
    )
    engine.next_pair()  # build keys and cursors outside the measurement
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for _ in range(steps):
        engine.next_pair()
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak - before, current - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--messages", type=int, default=300, help="assemblies per repeat")
    parser.add_argument("--pairs", type=int, default=5000, help="next_pair calls per repeat")
    parser.add_argument("--quick", action="store_true", help="small counts (smoke test)")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.messages, args.pairs = 2, 30, 500
    console = Console()

    settings = _workspace()
    generator = Generator.from_settings(settings, engine=create_engine(settings))
    assembler = Assembler(
        settings=generator.settings,
        cache=generator.cache,
        contract=generator.contract,
        generator=generator,
    )
    first = assembler.assemble("double_anchor", name="José", developer="Brightwater Homes")
    if not first.report.ok:
        raise SystemExit("assembly did not verify")

    def assemble() -> None:
        assembler.assemble("double_anchor", name="José", developer="Brightwater Homes")

    script, script_folder = naive_script(settings, first)
    workspace = Workspace.build(settings, engine=generator.engine)
    campaign = campaign_run(workspace, args.messages)
    campaign_manifest = campaign_run(workspace, args.messages, store="manifest")
    campaign()  # warm: the template, the stems' parses, the database pages
    campaign_manifest()
    messages, scripted, campaigns, scripted_beside, manifest_only = [], [], [], [], []
    cpu: dict[str, list[float]] = {
        "assemble": [],
        "script": [],
        "campaign": [],
        "campaign_manifest": [],
    }
    for _ in range(args.repeats):  # interleaved: all see the same load
        rate, used = _timed(args.messages, assemble)
        messages.append(rate)
        cpu["assemble"].append(used)
        rate, used = _timed(args.messages, script)
        scripted.append(rate)
        cpu["script"].append(used)
        rate, used = campaign()
        campaigns.append(rate)
        cpu["campaign"].append(used)
        scripted_beside.append(_rate(args.messages, script))
        rate, used = campaign_manifest()
        manifest_only.append(rate)
        cpu["campaign_manifest"].append(used)
    cpu_ms = {case: statistics.median(values) for case, values in cpu.items()}
    workspace.close()
    shutil.rmtree(script_folder, ignore_errors=True)
    outputs = assembler.list_outputs()
    if not all(o.verified for o in outputs):
        raise SystemExit("an assembled message did not verify")

    rotation = RotationEngine(settings=_workspace(), seed=1)
    pairs = [_rate(args.pairs, rotation.next_pair) for _ in range(args.repeats)]

    steps = min(args.pairs, 2000)
    small = _step_memory(100, 100, steps)
    large = _step_memory(10**6, 10**4, steps)

    message_rate, pair_rate = statistics.median(messages), statistics.median(pairs)
    script_rate = statistics.median(scripted)
    ratio = message_rate / script_rate
    campaign_rate = statistics.median(campaigns)
    campaign_ratio = campaign_rate / statistics.median(scripted_beside)
    manifest_rate = statistics.median(manifest_only)
    table = Table(title="assembly and rotation — medians")
    for column in ("case", "per second", "target", "met"):
        table.add_column(column)
    targets = {
        "assemble double_anchor (cached stems, write + verify)": (message_rate, 300),
        "next_pair() with SQLite cursor + log": (pair_rate, 5000),
    }
    for label, (value, target) in targets.items():
        table.add_row(label, f"{value:,.0f}", f"≥ {target:,}", "yes" if value >= target else "NO")
    table.add_row("naive pydub script (same stems in memory, fsynced WAV)", f"{script_rate:,.0f}")
    table.add_row(
        "ours / naive script",
        f"{ratio:.2f}×",
        f"≥ {TARGET_SCRIPT_RATIO}×",
        "yes" if ratio >= TARGET_SCRIPT_RATIO else "NO",
    )
    table.add_row(
        "campaign of the same message (group commit), run to done", f"{campaign_rate:,.0f}"
    )
    table.add_row(
        "campaign / naive script (timed beside it)",
        f"{campaign_ratio:.2f}×",
        f"≥ {TARGET_CAMPAIGN_RATIO}×",
        "yes" if campaign_ratio >= TARGET_CAMPAIGN_RATIO else "NO",
    )
    table.add_row(
        "campaign, manifest only (no WAV written), run to done",
        f"{manifest_rate:,.0f}",
        "",
        f"{manifest_rate / campaign_rate:.2f}× the WAV campaign",
    )
    console.print(table)
    console.print(
        "CPU ms per message (this process, medians; fsync waits excluded): "
        + ", ".join(f"{case} {value:.2f}" for case, value in cpu_ms.items())
    )
    console.print(
        f"memory while stepping {steps} pairs: 100×100 peak {small[0] / 1024:.1f} KiB "
        f"(held {small[1] / 1024:.1f} KiB); 10⁶×10⁴ peak {large[0] / 1024:.1f} KiB "
        f"(held {large[1] / 1024:.1f} KiB)"
    )
    path = write_results(
        "bench_assembly",
        {
            "repeats": args.repeats,
            "messages_per_repeat": args.messages,
            "assemble_messages_per_s": messages,
            "assemble_median_per_s": message_rate,
            "message_seconds": first.summary.duration,
            "naive_script_per_s": scripted,
            "naive_script_median_per_s": script_rate,
            "ours_over_naive_script": {
                "value": ratio,
                "target": TARGET_SCRIPT_RATIO,
                "met": ratio >= TARGET_SCRIPT_RATIO,
            },
            "campaign_messages_per_s": campaigns,
            "campaign_median_per_s": campaign_rate,
            "naive_script_beside_campaign_per_s": scripted_beside,
            "campaign_manifest_only_messages_per_s": manifest_only,
            "campaign_manifest_only_median_per_s": manifest_rate,
            "campaign_over_naive_script": {
                "value": campaign_ratio,
                "target": TARGET_CAMPAIGN_RATIO,
                "met": campaign_ratio >= TARGET_CAMPAIGN_RATIO,
            },
            "cpu_ms_per_message": cpu,
            "cpu_ms_per_message_median": cpu_ms,
            "pairs_per_repeat": args.pairs,
            "next_pair_per_s": pairs,
            "next_pair_median_per_s": pair_rate,
            "step_memory_bytes": {
                "steps": steps,
                "100x100": {"peak": small[0], "held": small[1]},
                "1e6x1e4": {"peak": large[0], "held": large[1]},
            },
            "targets": {
                label: {"value": value, "target": target, "met": value >= target}
                for label, (value, target) in targets.items()
            },
            "versions": versions(["numpy", "pydantic", "param", "pydub"]),
        },
    )
    console.print(f"results: {path}")


if __name__ == "__main__":
    try:
        main()
    finally:
        for made in _MADE:
            shutil.rmtree(made, ignore_errors=True)
