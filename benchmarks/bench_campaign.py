"""Campaigns: thousands of messages from a recipient list, against the unavoidable work.

Cases (one run, one machine; real Piper, real SQLite; each campaign in a fresh subprocess
on a fresh base dir, from an EMPTY cache):
- A: the first 100 shipped names × the shipped developers (extended with generated ones to
  31) = 3,100 double_anchor messages; B: 100 × 100 = 10,000. Campaign time = parse the
  CSV + `Workspace.campaigns.create` + `start` (the "campaign" job) until the job is done.
- Baseline, measured in the same subprocess right after the campaign: pure synthesis
  (`engine.synthesize` over the texts of the stems the campaign made, no cache) + pure
  assembly (`Assembler.assemble` over the same pairs with every stem cached, timestamped
  outputs in a scratch folder, no campaign). Ratio = campaign / (synthesis + assembly),
  target ≤ 1.25.
- Peak RSS (`ru_maxrss` right after the campaign) of a 1,000-message campaign
  (100 × 10) vs B's 10,000: target within 20 %.
- Zip export of A (`campaigns.export_zip` written to a file) in a fresh process: time, MB/s
  and peak RSS growth during the export; the zip is then checked (every WAV's sha256 is a
  message's).

Synthesis-heavy parts run once; the assembly baseline and the export are medians of
`--repeats`. `--profile` runs campaign A again under cProfile and prints the top costs.

Run: `make bench` or `.venv/bin/python benchmarks/bench_campaign.py [--quick]`.
"""

from __future__ import annotations

import argparse
import cProfile
import csv
import hashlib
import io
import json
import pstats
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

from common import versions, write_results
from rich.console import Console
from rich.table import Table

from hybrid_audio.assembly import Assembler
from hybrid_audio.config import Settings
from hybrid_audio.datasets import load_dataset
from hybrid_audio.engines import create_engine
from hybrid_audio.recipients import parse_recipients
from hybrid_audio.workspace import Workspace

REPO = Path(__file__).resolve().parent.parent
TEMPLATE = "double_anchor"
RATIO_TARGET = 1.25
RSS_TARGET = 0.20


def peak_rss_bytes() -> int:
    """This process's peak resident set so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def fresh_base() -> Path:
    base = Path(tempfile.mkdtemp(prefix="bench-campaign-"))
    shutil.copytree(REPO / "templates", base / "templates")
    shutil.copytree(REPO / "data", base / "data")
    return base


def recipients(names: int, developers: int) -> tuple[list[tuple[str, str]], int]:
    """`names` shipped names × `developers` developers (shipped first, then generated ones:
    a shipped first word + another's last word, "Brightwater Residences"), and how many of
    the developers are generated."""
    settings = Settings(base_dir=REPO)
    name_list = load_dataset("name", settings).texts()[:names]
    shipped = load_dataset("developer", settings).texts()
    chosen = shipped[:developers]
    known = {d.casefold() for d in shipped}
    combos = (f"{a.split()[0]} {b.split()[-1]}" for b in shipped for a in shipped)
    for candidate in combos:
        if len(chosen) >= developers:
            break
        if candidate.casefold() not in known:
            known.add(candidate.casefold())
            chosen.append(candidate)
    if len(name_list) < names or len(chosen) < developers:
        raise SystemExit(f"cannot make {names} names × {developers} developers")
    pairs = [(n, d) for n in name_list for d in chosen]
    return pairs, max(0, developers - len(shipped))


def csv_bytes(pairs: list[tuple[str, str]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["name", "developer"])
    writer.writerows(pairs)
    return out.getvalue().encode()


# --- workers (each runs in its own process) ------------------------------------------------


def run_campaign(spec: dict[str, Any]) -> dict[str, Any]:
    """One campaign from an empty cache, then (optionally) its baseline in the same process."""
    pairs, generated = recipients(spec["names"], spec["developers"])
    data = csv_bytes(pairs)
    base = Path(spec["base"])
    settings = Settings(base_dir=base, tts_engine="piper")
    engine = create_engine(settings)
    workspace = Workspace.build(settings, engine=engine)
    campaigns = workspace.campaigns
    engine.synthesize("warm up", workspace.contract)  # load the voice outside every timer
    plan = campaigns.plan(TEMPLATE, parse_recipients(data, "recipients.csv"))
    rss_before = peak_rss_bytes()

    profiler = cProfile.Profile() if spec.get("profile") else None
    start = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    parsed = parse_recipients(data, "recipients.csv")
    parse_s = time.perf_counter() - start
    info = campaigns.create(TEMPLATE, parsed)
    create_s = time.perf_counter() - start - parse_s
    job = workspace.jobs.wait(campaigns.start(info.id, source="bench").id)
    if profiler is not None:
        profiler.disable()
    campaign_s = time.perf_counter() - start
    rss_campaign = peak_rss_bytes()

    info = campaigns.get(info.id)
    stems = workspace.cache.list()
    result: dict[str, Any] = {
        "names": spec["names"],
        "developers": spec["developers"],
        "generated_developers": generated,
        "messages": len(pairs),
        "campaign_id": info.id,
        "base": str(base),
        "job_state": str(job.state),
        "state": str(info.state),
        "done": info.done,
        "failed": info.failed,
        "plan": {"distinct": plan.distinct_stems, "cached": plan.cached_stems},
        "distinct_stems": info.distinct_stems,
        "stems_synthesized": len(stems),
        "audio_seconds": None,
        "campaign_s": campaign_s,
        "parse_s": parse_s,
        "create_s": create_s,
        "messages_per_s": len(pairs) / campaign_s,
        "peak_rss_before_campaign": rss_before,
        "peak_rss_after_campaign": rss_campaign,
    }
    rows = _all_messages(campaigns, info.id)
    result["verified"] = sum(r.verified for r in rows)
    result["audio_seconds"] = sum(r.duration or 0 for r in rows)
    if job.state != "done" or info.done != len(pairs) or info.failed:
        result["error"] = f"campaign ended {info.state}: {info.done} done, {info.failed} failed"
        return result
    if profiler is not None:
        result["profile"] = _top_costs(profiler, spec.get("profile_rows", 25))
    if spec.get("baseline"):
        result["synthesis_s"] = _pure_synthesis(engine, workspace, [s.text for s in stems])
        result["assembly_s"] = [
            _pure_assembly(workspace, base, pairs) for _ in range(spec["repeats"])
        ]
        unavoidable = result["synthesis_s"] + statistics.median(result["assembly_s"])
        result["unavoidable_s"] = unavoidable
        result["ratio"] = campaign_s / unavoidable
    workspace.close()
    if not spec.get("keep"):
        shutil.rmtree(base, ignore_errors=True)
    return result


def _all_messages(campaigns: Any, campaign_id: str) -> list[Any]:
    rows: list[Any] = []
    while page := campaigns.messages(campaign_id, offset=len(rows), limit=100):
        rows.extend(page)
    return rows


def _pure_synthesis(engine: Any, workspace: Workspace, texts: list[str]) -> float:
    """The engine alone over the campaign's stem texts: no cache, no files."""
    start = time.perf_counter()
    for text in texts:
        engine.synthesize(text, workspace.contract)
    return time.perf_counter() - start


def _pure_assembly(workspace: Workspace, base: Path, pairs: list[tuple[str, str]]) -> float:
    """A fresh Assembler (cold stem memory, as the campaign's was) over the same pairs, every
    stem cached, outputs into a scratch folder removed afterwards (outside the timer)."""
    scratch = Path(tempfile.mkdtemp(prefix="bench-asm-", dir=base))
    assembler = Assembler(
        settings=Settings(base_dir=base, tts_engine="piper", output_dir=scratch),
        cache=workspace.cache,
        contract=workspace.contract,
        generator=workspace.generator,
    )
    start = time.perf_counter()
    for name, developer in pairs:
        assembler.assemble(TEMPLATE, name=name, developer=developer)
    elapsed = time.perf_counter() - start
    shutil.rmtree(scratch)
    return elapsed


def run_export(spec: dict[str, Any]) -> dict[str, Any]:
    """Stream the campaign's zip to a file `repeats` times; peak RSS growth; check the zip."""
    base = Path(spec["base"])
    workspace = Workspace.build(Settings(base_dir=base, tts_engine="piper"))
    campaigns = workspace.campaigns
    campaign_id = spec["campaign_id"]
    rows = _all_messages(campaigns, campaign_id)
    target = base / "export.zip"
    rss_before = peak_rss_bytes()
    times, size = [], 0
    for _ in range(spec["repeats"]):
        target.unlink(missing_ok=True)
        start = time.perf_counter()
        with target.open("wb") as out:
            for chunk in campaigns.export_zip(campaign_id):
                out.write(chunk)
        times.append(time.perf_counter() - start)
        size = target.stat().st_size
    rss_after = peak_rss_bytes()
    with zipfile.ZipFile(target) as archive:
        names = archive.namelist()
        wav_hashes = sorted(  # an output's sha256 is of its whole file
            hashlib.sha256(archive.read(n)).hexdigest() for n in names if n.endswith(".wav")
        )
        problems = archive.testzip()
    expected = sorted(r.sha256 for r in rows)
    median = statistics.median(times)
    workspace.close()
    return {
        "export_s": times,
        "export_median_s": median,
        "zip_bytes": size,
        "mb_per_s": size / median / 1e6,
        "entries": len(names),
        "wavs": len(wav_hashes),
        "wavs_match_messages": wav_hashes == expected,
        "has_messages_csv": any(n.endswith("messages.csv") for n in names),
        "crc_ok": problems is None,
        "peak_rss_before": rss_before,
        "peak_rss_after": rss_after,
        "peak_rss_delta": rss_after - rss_before,
    }


def _top_costs(profiler: cProfile.Profile, rows: int) -> list[dict[str, Any]]:
    stats = pstats.Stats(profiler)
    entries = []
    for (filename, line, function), (_, calls, tottime, cumtime, _) in stats.stats.items():
        entries.append(
            {
                "function": f"{Path(filename).name}:{line}({function})",
                "calls": calls,
                "tottime_s": tottime,
                "cumtime_s": cumtime,
            }
        )
    entries.sort(key=lambda e: e["tottime_s"], reverse=True)
    return entries[:rows]


WORKERS = {"campaign": run_campaign, "export": run_export}


def in_subprocess(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Run a worker in a fresh Python process (so its peak RSS is its own)."""
    with tempfile.NamedTemporaryFile("r", suffix=".json") as result:
        command = [sys.executable, __file__, "--worker", kind, json.dumps(spec), result.name]
        subprocess.run(command, check=True)
        return json.loads(Path(result.name).read_text())


# --- the run -------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="assembly and export repeats")
    parser.add_argument("--b-developers", type=int, default=100, help="developers in B")
    parser.add_argument("--profile", action="store_true", help="profile campaign A too")
    parser.add_argument("--quick", action="store_true", help="tiny campaigns (smoke test)")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, spec, out = args.worker
        Path(out).write_text(json.dumps(WORKERS[kind](json.loads(spec))))
        return
    console = Console()
    names, a_devs, small_devs = (10, 6, 2) if args.quick else (100, 31, 10)
    b_devs = 20 if args.quick else args.b_developers
    repeats = 1 if args.quick else args.repeats

    def campaign(devs: int, **extra: Any) -> dict[str, Any]:
        spec = {"names": names, "developers": devs, "base": str(fresh_base()), **extra}
        result = in_subprocess("campaign", {"repeats": repeats, **spec})
        if "error" in result:
            raise SystemExit(f"{names} × {devs}: {result['error']}")
        ratio = f", ratio {result['ratio']:.3f}" if "ratio" in result else ""
        console.print(
            f"{result['messages']:,} messages: {result['campaign_s']:.1f} s "
            f"({result['messages_per_s']:.0f}/s){ratio}"
        )
        return result

    a = campaign(a_devs, baseline=True, keep=True)
    export = in_subprocess(
        "export", {"base": a["base"], "campaign_id": a["campaign_id"], "repeats": repeats}
    )
    shutil.rmtree(a["base"], ignore_errors=True)
    b = campaign(b_devs, baseline=True)
    small = campaign(small_devs)
    profile = None
    if args.profile:
        profiled = campaign(a_devs, profile=True)
        profile = profiled["profile"]
        shutil.rmtree(profiled["base"], ignore_errors=True)

    report(console, a, b, small, export, profile, repeats)


def report(
    console: Console,
    a: dict[str, Any],
    b: dict[str, Any],
    small: dict[str, Any],
    export: dict[str, Any],
    profile: list[dict[str, Any]] | None,
    repeats: int,
) -> None:
    table = Table(
        title=f"campaigns ({TEMPLATE}, Piper, empty cache); assembly = median of {repeats}"
    )
    for column in ("campaign", "msgs", "stems", "campaign s", "msg/s", "synth s", "asm s"):
        table.add_column(column, justify="left" if column == "campaign" else "right")
    for column in ("ratio", "peak RSS MiB"):
        table.add_column(column, justify="right")
    for label, r in (("A", a), ("B", b), ("small", small)):
        has = "ratio" in r
        table.add_row(
            f"{label}: {r['names']} × {r['developers']}",
            f"{r['messages']:,}",
            str(r["stems_synthesized"]),
            f"{r['campaign_s']:.1f}",
            f"{r['messages_per_s']:.0f}",
            f"{r['synthesis_s']:.1f}" if has else "—",
            f"{statistics.median(r['assembly_s']):.1f}" if has else "—",
            f"{r['ratio']:.3f}" if has else "—",
            f"{r['peak_rss_after_campaign'] / 2**20:.0f}",
        )
    console.print(table)
    rss_growth = b["peak_rss_after_campaign"] / small["peak_rss_after_campaign"] - 1
    targets = {
        f"A ratio <= {RATIO_TARGET}": (a["ratio"], a["ratio"] <= RATIO_TARGET),
        f"B ratio <= {RATIO_TARGET}": (b["ratio"], b["ratio"] <= RATIO_TARGET),
        f"peak RSS {b['messages']:,} vs {small['messages']:,} within 20 %": (
            rss_growth,
            abs(rss_growth) <= RSS_TARGET,
        ),
    }
    console.print(
        f"zip export of A: {export['zip_bytes'] / 1e6:.0f} MB in {export['export_median_s']:.2f} s "
        f"(median of {len(export['export_s'])}) = {export['mb_per_s']:.0f} MB/s; peak RSS "
        f"+{export['peak_rss_delta'] / 2**20:.1f} MiB; {export['wavs']:,} WAVs, byte-equal "
        f"to the messages: {export['wavs_match_messages']}; CRCs ok: {export['crc_ok']}"
    )
    for goal, (value, met) in targets.items():
        console.print(f"  {goal}: {value:,.3f} → {'met' if met else 'NOT met'}")
    if profile:
        top = Table(title="campaign A under cProfile — top own time")
        for column in ("function", "calls", "own s", "cumulative s"):
            top.add_column(column, justify="left" if column == "function" else "right")
        for entry in profile:
            top.add_row(
                entry["function"],
                f"{entry['calls']:,}",
                f"{entry['tottime_s']:.2f}",
                f"{entry['cumtime_s']:.2f}",
            )
        console.print(top)
    path = write_results(
        "bench_campaign",
        {
            "template": TEMPLATE,
            "repeats": repeats,
            "note": "campaigns and pure synthesis once each; assembly baseline and export are "
            f"medians of {repeats}; each campaign in a fresh subprocess from an empty cache",
            "campaign_a": a,
            "campaign_b": b,
            "campaign_small": small,
            "export_a": export,
            "peak_rss_growth_small_to_b": rss_growth,
            "profile_a": profile,
            "targets": {k: {"value": v, "met": m} for k, (v, m) in targets.items()},
            "versions": versions(["piper-tts", "onnxruntime", "numpy", "pydantic", "param"]),
        },
    )
    console.print(f"results: {path}")


if __name__ == "__main__":
    main()
