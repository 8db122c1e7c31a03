"""Benchmark: joining WAV stems with `bitmerge_semantic` against pydub, sox and soundfile.

Every competitor does the same job — join 6 stems (8 s of 44.1 kHz s16 mono) into one
WAV — and its output is checked to decode to exactly the samples ours holds before any
number is reported. A second part times a 10-minute merge and reports GB/s of PCM.

    python benchmarks/bench_bitmerge.py [--repeats N] [--quick]

Results: a table on stdout and benchmarks/results/bench_bitmerge.json. See README.md.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from common import (
    TIMING_NOTE,
    Interleaved,
    Timing,
    command_version,
    fmt_ms,
    fmt_ratio,
    machine_info,
    measure,
    measure_interleaved,
    spread,
    versions,
    write_results,
)
from rich.console import Console
from rich.table import Table

from hybrid_audio.bitmerge import bitmerge_semantic, verify
from hybrid_audio.contract import AudioFormat
from hybrid_audio.wav import Wav, read_wav, write_wav

with warnings.catch_warnings():
    # pydub warns at import when ffmpeg is missing; WAV in and out never needs it.
    warnings.simplefilter("ignore", RuntimeWarning)
    from pydub import AudioSegment

SEED = 20_240_517
RATE = 44_100
FMT = AudioFormat(encoding="pcm_s16le", sample_rate=RATE, channels=1)
#: Six stems, 8.0 s in all.
STEM_SECONDS = (1.2, 0.9, 1.5, 1.8, 1.1, 1.5)
LONG_STEM_SECONDS = 6.0
LONG_STEMS_FULL = 100  # 10 minutes
LONG_STEMS_QUICK = 10  # 1 minute
DEFAULT_REPEATS = 21
QUICK_REPEATS = 3

#: Targets from the issues.
TARGET_PYDUB_RATIO = 10.0  # in-memory merge at least this many times faster than pydub
TARGET_GB_S = 1.5  # 10-minute merge throughput, GB/s of PCM
#: Issue #14: from WAV bytes, merge + verify (hashing included) against pydub's parse +
#: concatenation + export, and the 10-minute merge + verify from bytes.
TARGET_BYTES_PYDUB_RATIO = 1.5
TARGET_BYTES_GB_S = 1.8

console = Console(highlight=False, width=None if sys.stdout.isatty() else 100)


# --------------------------------------------------------------------------- audio


def speech_like(rng: np.random.Generator, seconds: float) -> np.ndarray:
    """Deterministic speech-ish int16 audio: syllable-rate noise bursts, silent edges."""
    n = round(seconds * RATE)
    lead, tail = (int(rng.uniform(0.04, 0.12) * RATE) for _ in range(2))
    body = n - lead - tail
    noise = rng.standard_normal(body + 7)
    noise = np.convolve(noise, np.ones(8) / 8, mode="valid")  # tilt the spectrum down
    t = np.arange(body) / RATE
    syllables = np.sin(2 * np.pi * rng.uniform(3.0, 6.0) * t + rng.uniform(0, np.pi))
    envelope = np.clip(syllables, 0, None) ** 2
    # a word break or two: stretches of the envelope pulled to zero
    for _ in range(rng.integers(1, 3)):
        start = int(rng.integers(0, max(body - RATE // 10, 1)))
        envelope[start : start + int(rng.uniform(0.03, 0.09) * RATE)] = 0.0
    body_pcm = noise * envelope * rng.uniform(0.35, 0.8) * 32767 * 2.5
    pcm = np.zeros(n, dtype=np.int16)
    pcm[lead : lead + body] = np.clip(np.rint(body_pcm), -32768, 32767).astype(np.int16)
    return pcm


def make_stems(rng: np.random.Generator, seconds: list[float] | tuple[float, ...]) -> list[bytes]:
    """WAV files (bytes, via `write_wav`) of speech-like stems of the given lengths."""
    return [write_wav(FMT, speech_like(rng, s).tobytes()) for s in seconds]


def decode_int16(wav_bytes: bytes) -> np.ndarray:
    """Samples of a WAV as int16, decoded by libsndfile (independent of our parser)."""
    data, rate = sf.read(io.BytesIO(wav_bytes), dtype="int16", always_2d=True)
    assert rate == RATE, f"decoded rate {rate} ≠ {RATE}"
    assert data.shape[1] == 1, f"decoded {data.shape[1]} channels, expected 1"
    return data[:, 0]


def assert_same_samples(label: str, wav_bytes: bytes, expected: np.ndarray) -> None:
    got = decode_int16(wav_bytes)
    assert got.shape == expected.shape, f"{label}: {got.size} samples, expected {expected.size}"
    if not np.array_equal(got, expected):
        first = int(np.flatnonzero(got != expected)[0])
        raise AssertionError(f"{label}: samples differ from ours, first at sample {first}")


# --------------------------------------------------------------------------- cases


@dataclass
class Case:
    key: str
    group: str  # "in-memory", "file", "10-minute"
    label: str
    timing: Timing
    nbytes: int  # PCM data bytes of the output


def run_case(
    cases: list[Case],
    key: str,
    group: str,
    label: str,
    fn: Callable[..., Any],
    *,
    repeats: int,
    nbytes: int,
    setup: Callable[[], Any] | None = None,
) -> Case:
    with console.status(f"[dim]timing {label}…", spinner="dots"):
        timing = measure(fn, repeats=repeats, setup=setup)
    case = Case(key, group, label, timing, nbytes)
    cases.append(case)
    return case


def fresh_copies(blobs: list[bytes]) -> list[bytes]:
    """New bytes objects with the same content: nothing parsed or hashed for the old ones
    (bitmerge remembers both per object) is reused."""
    return [bytes(bytearray(b)) for b in blobs]


def merge_verify_from_bytes(
    cases: list[Case],
    key: str,
    group: str,
    stem_bytes: list[bytes],
    expected_wav: bytes,
    *,
    rounds: int,
    nbytes: int,
    competitors: dict[str, tuple[str, Callable[[list[bytes]], Any]]] | None = None,
) -> Interleaved:
    """`bitmerge_semantic(WAV bytes)` + `verify` with parsing and every hash inside the timer:
    each call gets new bytes objects, so nothing is reused from a previous call. The merge
    must verify and equal `expected_wav` (the merge of the parsed stems).

    `competitors` (key → label, fn of the same fresh bytes) are timed in the same rounds,
    alternating with ours: a case whose speed swings with the allocator's state (pydub's
    does, 0.2–1.1 ms) is compared with ours under the same state, round by round.
    """

    def merge_verify(parts: list[bytes]) -> Any:
        merged = bitmerge_semantic(parts)
        return merged, verify(merged.wav, merged.manifest, parts)

    fns: dict[str, Callable[..., Any]] = {key: merge_verify}
    labels = {key: "ours merge+verify from WAV bytes"}
    for other, (label, fn) in (competitors or {}).items():
        fns[other], labels[other] = fn, label
    with console.status(f"[dim]timing {group} from bytes, interleaved…", spinner="dots"):
        timed = measure_interleaved(fns, rounds=rounds, setup=lambda: fresh_copies(stem_bytes))
    for name in fns:
        cases.append(Case(name, group, labels[name], timed.wall[name], nbytes))
    merged, report = timed.wall[key].result
    assert report.ok, f"{key}: verify failed on the merge from bytes: {report.errors}"
    assert merged.wav == expected_wav, f"{key}: the merge from bytes differs from that of Wavs"
    return timed


PYDUB_BYTES_LABEL = "pydub from_wav ×6 + sum + export BytesIO"
FLOOR_LABEL = "sha256 of each stem's samples, one core (the floor)"


def sha256_floor(parts: list[bytes]) -> list[bytes]:
    """The work no proven merge from bytes can skip: one SHA-256 pass over every stem's
    samples (canonical files: all but the 44-byte header), here on one core."""
    return [hashlib.sha256(memoryview(p)[44:]).digest() for p in parts]


def pydub_bytes(parts: list[bytes]) -> bytes:
    """What a user might write instead: parse each WAV, concatenate, export in memory."""
    buf = io.BytesIO()
    sum(AudioSegment.from_wav(io.BytesIO(b)) for b in parts).export(buf, format="wav")
    return buf.getvalue()


#: Timed in the same interleaved rounds as ours (key → label, fn of the fresh bytes).
FROM_BYTES_OTHERS: dict[str, tuple[str, Callable[[list[bytes]], Any]]] = {
    "pydub_bytes": (PYDUB_BYTES_LABEL, pydub_bytes),
    "sha256_floor": (FLOOR_LABEL, sha256_floor),
}


#: glibc malloc settings that pin the allocator's state for the from-bytes comparison
#: (both sides' speed swings with it): "warm" keeps freed memory for reuse (no page
#: faults), "cold" maps fresh memory for every allocation of 128 KiB or more (a page
#: fault per 4 KiB written). A process's default state drifts between the two.
ALLOCATOR_STATES = {
    "warm": "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=268435456",
    "cold": "glibc.malloc.mmap_threshold=131072",
}


def from_bytes_child(rounds: int, long_stems: int) -> int:
    """`--from-bytes-child`: the from-bytes cases alone (the 8-second comparison and the
    long merge), JSON on stdout."""
    stem_bytes = make_stems(np.random.default_rng(SEED), STEM_SECONDS)
    expected_wav = bitmerge_semantic([read_wav(b) for b in stem_bytes]).wav
    nbytes = len(expected_wav) - 44
    timed = merge_verify_from_bytes(
        [],
        "ours_bytes_merge_verify",
        "in-memory",
        stem_bytes,
        expected_wav,
        rounds=rounds,
        nbytes=nbytes,
        competitors=FROM_BYTES_OTHERS,
    )
    small = from_bytes_detail(timed, nbytes, "pydub_bytes")
    long_bytes = make_stems(np.random.default_rng(SEED + 1), [LONG_STEM_SECONDS] * long_stems)
    long_wav = bitmerge_semantic([read_wav(b) for b in long_bytes]).wav
    long_timed = merge_verify_from_bytes(
        [],
        "long_bytes_merge_verify",
        "long",
        long_bytes,
        long_wav,
        rounds=rounds,
        nbytes=len(long_wav) - 44,
    )
    long = from_bytes_detail(long_timed, len(long_wav) - 44, None)
    sys.stdout.write(json.dumps({"small": small, "long": long}) + "\n")
    return 0


def from_bytes_allocator_states(rounds: int, long_stems: int) -> dict[str, dict[str, Any]]:
    """The from-bytes cases again in a child process per pinned allocator state:
    {state: {"small": detail, "long": detail}}."""
    if sys.platform != "linux":
        return {}
    out = {}
    for state, tunables in ALLOCATOR_STATES.items():
        with console.status(f"[dim]timing from bytes, {state} allocator…", spinner="dots"):
            proc = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--from-bytes-child",
                    "--repeats",
                    str(rounds),
                    "--long-stems",
                    str(long_stems),
                ],
                env={**os.environ, "GLIBC_TUNABLES": tunables},
                capture_output=True,
                text=True,
                check=True,
                timeout=900,
            )
        found = json.loads(proc.stdout.splitlines()[-1])
        out[state] = {
            part: {"glibc_tunables": tunables, **detail} for part, detail in found.items()
        }
    return out


def bench_small(tmp: Path, repeats: int, cases: list[Case]) -> dict[str, Any]:
    """The 8-second job, in memory and file to file, for every competitor."""
    rng = np.random.default_rng(SEED)
    stem_bytes = make_stems(rng, STEM_SECONDS)
    paths = []
    for i, data in enumerate(stem_bytes):
        path = tmp / f"stem{i}.wav"
        path.write_bytes(data)
        paths.append(path)
    expected_pcm = b"".join(read_wav(b).pcm for b in stem_bytes)
    expected = np.frombuffer(expected_pcm, dtype="<i2")
    nbytes = len(expected_pcm)

    # ---- ours, in memory
    warm_wavs = [read_wav(b) for b in stem_bytes]

    def fresh_wavs() -> list[Wav]:
        return [read_wav(b) for b in stem_bytes]  # sha256 not yet computed

    def merge(wavs: list[Wav]) -> Any:
        return bitmerge_semantic(wavs)

    def merge_verify(wavs: list[Wav]) -> Any:
        result = bitmerge_semantic(wavs)
        return result, verify(result.wav, result.manifest, wavs)

    mem = "in-memory"
    run_case(
        cases,
        "ours_mem_merge_cold",
        mem,
        "ours merge, cold hash",
        merge,
        repeats=repeats,
        nbytes=nbytes,
        setup=fresh_wavs,
    )
    run_case(
        cases,
        "ours_mem_merge_warm",
        mem,
        "ours merge, warm hash",
        lambda: merge(warm_wavs),
        repeats=repeats,
        nbytes=nbytes,
    )
    run_case(
        cases,
        "ours_mem_merge_verify_cold",
        mem,
        "ours merge+verify, cold hash",
        merge_verify,
        repeats=repeats,
        nbytes=nbytes,
        setup=fresh_wavs,
    )
    case = run_case(
        cases,
        "ours_mem_merge_verify_warm",
        mem,
        "ours merge+verify, warm hash",
        lambda: merge_verify(warm_wavs),
        repeats=repeats,
        nbytes=nbytes,
    )
    result, report = case.timing.result
    assert report.ok, f"verify failed on our own output: {report.errors}"
    ours_wav = result.wav
    assert ours_wav == write_wav(FMT, expected_pcm), "our output is not header + joined PCM"
    assert_same_samples("ours (in-memory)", ours_wav, expected)

    # ---- pydub, in memory
    segments = [AudioSegment.from_wav(io.BytesIO(b)) for b in stem_bytes]

    def pydub_mem() -> bytes:
        buf = io.BytesIO()
        sum(segments).export(buf, format="wav")
        return buf.getvalue()

    case = run_case(
        cases,
        "pydub_mem",
        mem,
        "pydub sum + export BytesIO",
        pydub_mem,
        repeats=repeats,
        nbytes=nbytes,
    )
    assert_same_samples("pydub (in-memory)", case.timing.result, expected)

    # ---- from WAV bytes: parsing and every hash inside the timer (issue #14)
    from_bytes = merge_verify_from_bytes(
        cases,
        "ours_bytes_merge_verify",
        mem,
        stem_bytes,
        ours_wav,
        rounds=repeats,
        nbytes=nbytes,
        competitors=FROM_BYTES_OTHERS,
    )
    assert_same_samples("pydub (from bytes)", from_bytes.wall["pydub_bytes"].result, expected)
    merged = from_bytes.wall["ours_bytes_merge_verify"].result[0]
    floor_hashes = [d.hex() for d in from_bytes.wall["sha256_floor"].result]
    assert floor_hashes == [s.source_sha256 for s in merged.manifest.segments], "floor ≠ ours"

    # ---- numpy + soundfile, in memory
    arrays = [sf.read(io.BytesIO(b), dtype="int16")[0] for b in stem_bytes]

    def sf_mem() -> bytes:
        buf = io.BytesIO()
        sf.write(buf, np.concatenate(arrays), RATE, format="WAV", subtype="PCM_16")
        return buf.getvalue()

    case = run_case(
        cases,
        "sf_mem",
        mem,
        "numpy concat + sf.write BytesIO",
        sf_mem,
        repeats=repeats,
        nbytes=nbytes,
    )
    assert_same_samples("numpy+soundfile (in-memory)", case.timing.result, expected)

    # ---- file to file
    out_dir = tmp / "out"
    out_dir.mkdir()
    ours_out, pydub_out = out_dir / "ours.wav", out_dir / "pydub.wav"
    sox_out, sf_out = out_dir / "sox.wav", out_dir / "sf.wav"

    def ours_file() -> Any:
        result = bitmerge_semantic(paths)
        ours_out.write_bytes(result.wav)
        return result

    def ours_file_verify() -> Any:
        result = ours_file()
        return result, verify(ours_out, result.manifest, paths)

    def pydub_file() -> None:
        total = sum(AudioSegment.from_wav(p) for p in paths)
        total.export(pydub_out, format="wav").close()

    sox_cmd = ["sox", *map(str, paths), str(sox_out)]

    def sox_file() -> None:
        subprocess.run(sox_cmd, check=True, capture_output=True)

    def sf_file() -> None:
        joined = np.concatenate([sf.read(p, dtype="int16")[0] for p in paths])
        sf.write(sf_out, joined, RATE, subtype="PCM_16")

    fil = "file"
    run_case(
        cases,
        "ours_file_merge",
        fil,
        "ours merge + write",
        ours_file,
        repeats=repeats,
        nbytes=nbytes,
    )
    assert ours_out.read_bytes() == ours_wav, "file-to-file output differs from in-memory"
    case = run_case(
        cases,
        "ours_file_merge_verify",
        fil,
        "ours merge + write + verify",
        ours_file_verify,
        repeats=repeats,
        nbytes=nbytes,
    )
    assert case.timing.result[1].ok, "verify failed on our own output file"
    run_case(
        cases,
        "pydub_file",
        fil,
        "pydub from_wav + export",
        pydub_file,
        repeats=repeats,
        nbytes=nbytes,
    )
    assert_same_samples("pydub (file)", pydub_out.read_bytes(), expected)
    if shutil.which("sox"):
        run_case(
            cases,
            "sox_file",
            fil,
            "sox in1..in6 out (subprocess)",
            sox_file,
            repeats=repeats,
            nbytes=nbytes,
        )
        assert_same_samples("sox (file)", sox_out.read_bytes(), expected)
    else:
        console.print("[yellow]sox not on PATH: skipping the sox case (make bench installs it)")
    run_case(
        cases,
        "sf_file",
        fil,
        "numpy + soundfile read/write",
        sf_file,
        repeats=repeats,
        nbytes=nbytes,
    )
    assert_same_samples("numpy+soundfile (file)", sf_out.read_bytes(), expected)

    return {
        "interleaved": from_bytes,
        "stems": len(stem_bytes),
        "stem_seconds": list(STEM_SECONDS),
        "total_seconds": len(expected) / RATE,
        "pcm_bytes": nbytes,
        "output_bytes": len(ours_wav),
        "outputs_checked": "every competitor's output decodes (libsndfile) to our samples",
    }


def bench_long(repeats: int, n_stems: int, cases: list[Case]) -> dict[str, Any]:
    """A long merge (10 minutes by default) from Wav objects: merge cold/warm, verify."""
    rng = np.random.default_rng(SEED + 1)
    with console.status("[dim]building the long input…", spinner="dots"):
        stem_bytes = make_stems(rng, [LONG_STEM_SECONDS] * n_stems)
    warm_wavs = [read_wav(b) for b in stem_bytes]
    nbytes = sum(len(w.pcm) for w in warm_wavs)

    def fresh_wavs() -> list[Wav]:
        return [read_wav(b) for b in stem_bytes]

    group = "10-minute" if n_stems == LONG_STEMS_FULL else f"{n_stems * 6 / 60:g}-minute"
    run_case(
        cases,
        "long_merge_cold",
        group,
        "ours merge, cold hash",
        bitmerge_semantic,
        repeats=repeats,
        nbytes=nbytes,
        setup=fresh_wavs,
    )
    case = run_case(
        cases,
        "long_merge_warm",
        group,
        "ours merge, warm hash",
        lambda: bitmerge_semantic(warm_wavs),
        repeats=repeats,
        nbytes=nbytes,
    )
    result = case.timing.result
    assert result.manifest.data_bytes == nbytes
    case = run_case(
        cases,
        "long_verify_warm",
        group,
        "ours verify, warm hash",
        lambda: verify(result.wav, result.manifest, warm_wavs),
        repeats=repeats,
        nbytes=nbytes,
    )
    assert case.timing.result.ok, "verify failed on the long merge"
    run_case(
        cases,
        "long_verify_cold",
        group,
        "ours verify, cold hash",
        lambda wavs: verify(result.wav, result.manifest, wavs),
        repeats=repeats,
        nbytes=nbytes,
        setup=fresh_wavs,
    )
    from_bytes = merge_verify_from_bytes(
        cases,
        "long_bytes_merge_verify",
        group,
        stem_bytes,
        result.wav,
        rounds=repeats,
        nbytes=nbytes,
    )
    return {
        "interleaved": from_bytes,
        "stems": n_stems,
        "stem_seconds": LONG_STEM_SECONDS,
        "total_seconds": n_stems * LONG_STEM_SECONDS,
        "pcm_bytes": nbytes,
        "group": group,
    }


# --------------------------------------------------------------------------- report

#: (competitor, ours) pairs whose ratio competitor/ours is reported.
RATIO_PAIRS = {
    "in-memory": (
        ["pydub_mem", "sf_mem", "pydub_bytes"],
        [
            "ours_mem_merge_cold",
            "ours_mem_merge_warm",
            "ours_mem_merge_verify_cold",
            "ours_mem_merge_verify_warm",
            "ours_bytes_merge_verify",
        ],
    ),
    "file": (["pydub_file", "sox_file", "sf_file"], ["ours_file_merge", "ours_file_merge_verify"]),
}

SHORT = {
    "pydub_mem": "pydub",
    "sf_mem": "numpy+soundfile",
    "pydub_bytes": "pydub from bytes",
    "ours_bytes_merge_verify": "merge+verify from bytes",
    "long_bytes_merge_verify": "merge+verify from bytes",
    "pydub_file": "pydub",
    "sox_file": "sox",
    "sf_file": "numpy+soundfile",
    "ours_mem_merge_cold": "merge cold",
    "ours_mem_merge_warm": "merge warm",
    "ours_mem_merge_verify_cold": "merge+verify cold",
    "ours_mem_merge_verify_warm": "merge+verify warm",
    "ours_file_merge": "merge+write",
    "ours_file_merge_verify": "merge+write+verify",
    "long_merge_cold": "merge cold",
    "long_merge_warm": "merge warm",
}


def compute_ratios(by_key: dict[str, Case]) -> list[dict[str, Any]]:
    ratios = []
    for group, (theirs, ours) in RATIO_PAIRS.items():
        for competitor in theirs:
            for own in ours:
                if competitor in by_key and own in by_key:
                    ratio = by_key[competitor].timing.median / by_key[own].timing.median
                    ratios.append(
                        {
                            "group": group,
                            "competitor": competitor,
                            "ours": own,
                            "ratio": ratio,
                            "text": f"{SHORT[competitor]} / ours {SHORT[own]} = {fmt_ratio(ratio)}",
                        }
                    )
    return ratios


def from_bytes_detail(timed: Interleaved, nbytes: int, competitor: str | None) -> dict[str, Any]:
    """Per-case wall and CPU medians of the interleaved rounds; with a competitor, the
    spread of its time and of the per-round ratio competitor / ours (wall and CPU), and,
    when the SHA-256 floor was timed, the ratio a merge that did nothing but that hashing,
    perfectly split over two cores, would reach against the competitor."""
    ours = next(iter(timed.wall))
    detail: dict[str, Any] = {
        "rounds": len(timed.wall[ours].samples),
        "calls_per_round": {name: t.number for name, t in timed.wall.items()},
        "wall_ms": {name: spread([x * 1e3 for x in t.samples]) for name, t in timed.wall.items()},
        "cpu_ms": {name: spread([x * 1e3 for x in t.samples]) for name, t in timed.cpu.items()},
        "ours_gb_s_wall": nbytes / timed.wall[ours].median / 1e9,
        "ours_gb_per_cpu_s": nbytes / timed.cpu[ours].median / 1e9,
    }
    if competitor is not None:
        detail["ratio_per_round_wall"] = spread(timed.ratios(competitor, ours, "wall"))
        detail["ratio_per_round_cpu"] = spread(timed.ratios(competitor, ours, "cpu"))
        if "sha256_floor" in timed.wall:
            two_cores = timed.wall["sha256_floor"].median / 2
            detail["two_core_floor_ms"] = two_cores * 1e3
            detail["ratio_at_two_core_floor"] = timed.wall[competitor].median / two_cores
    return detail


def compute_targets(
    by_key: dict[str, Case], long_group: str, small: dict[str, Any], long: dict[str, Any]
) -> dict[str, Any]:
    pydub = by_key["pydub_mem"].timing.median

    def vs_pydub(key: str) -> dict[str, Any]:
        ratio = pydub / by_key[key].timing.median
        return {"ours": key, "ratio": ratio, "met": ratio >= TARGET_PYDUB_RATIO}

    def gbs(key: str, target: float = TARGET_GB_S) -> dict[str, Any]:
        case = by_key[key]
        rate = case.timing.throughput(case.nbytes) / 1e9
        return {"case": key, "throughput_gb_s": rate, "met": rate >= target}

    bytes_ratio = small["ratio_per_round_wall"]["median"]
    long_rate = long["ours_gb_s_wall"]
    return {
        "bytes_merge_verify_vs_pydub": {
            "goal": "pydub from bytes / ours merge+verify from bytes "
            f"≥ {TARGET_BYTES_PYDUB_RATIO:g}× (median of interleaved rounds)",
            "threshold": TARGET_BYTES_PYDUB_RATIO,
            "checks": [
                {
                    "ours": "ours_bytes_merge_verify",
                    "ratio": bytes_ratio,
                    "met": bytes_ratio >= TARGET_BYTES_PYDUB_RATIO,
                }
            ],
            "interleaved": small,
        },
        "long_bytes_merge_verify_throughput": {
            "goal": f"{long_group} merge+verify from bytes ≥ {TARGET_BYTES_GB_S:g} GB/s of PCM",
            "threshold_gb_s": TARGET_BYTES_GB_S,
            "full_size": long_group == "10-minute",
            "checks": [
                {
                    "case": "long_bytes_merge_verify",
                    "throughput_gb_s": long_rate,
                    "met": long_rate >= TARGET_BYTES_GB_S,
                }
            ],
            "interleaved": long,
        },
        "in_memory_merge_vs_pydub": {
            "goal": f"pydub / ours in-memory merge ≥ {TARGET_PYDUB_RATIO:g}×",
            "threshold": TARGET_PYDUB_RATIO,
            "checks": [
                vs_pydub(k)
                for k in (
                    "ours_mem_merge_cold",
                    "ours_mem_merge_warm",
                    "ours_mem_merge_verify_cold",
                    "ours_mem_merge_verify_warm",
                )
            ],
        },
        "long_merge_throughput": {
            "goal": f"{long_group} merge ≥ {TARGET_GB_S:g} GB/s of PCM",
            "threshold_gb_s": TARGET_GB_S,
            "full_size": long_group == "10-minute",
            "checks": [gbs(k) for k in ("long_merge_cold", "long_merge_warm")],
        },
    }


def print_report(
    cases: list[Case], ratios: list[dict[str, Any]], targets: dict[str, Any], meta: dict[str, Any]
) -> None:
    table = Table(title="bitmerge benchmark — median of repeats", title_justify="left")
    table.add_column("group")
    table.add_column("case")
    table.add_column("median ms", justify="right")
    table.add_column("min ms", justify="right")
    table.add_column("IQR ms", justify="right")
    table.add_column("GB/s", justify="right")
    previous = None
    for case in cases:
        if previous is not None and case.group != previous:
            table.add_section()
        t = case.timing
        ours = case.key.startswith(("ours", "long"))
        table.add_row(
            case.group if case.group != previous else "",
            f"[bold]{case.label}[/]" if ours else case.label,
            fmt_ms(t.median),
            fmt_ms(t.min),
            fmt_ms(t.iqr),
            f"{t.throughput(case.nbytes) / 1e9:.2f}",
        )
        previous = case.group
    console.print(table)

    for group, (theirs, ours) in RATIO_PAIRS.items():
        grid = Table(
            title=f"{group}: competitor median / ours median (>1 = ours faster)",
            title_justify="left",
        )
        grid.add_column("competitor")
        for own in ours:
            grid.add_column(f"ours {SHORT[own]}", justify="right")
        for competitor in theirs:
            row = {r["ours"]: r["ratio"] for r in ratios if r["competitor"] == competitor}
            if row:
                grid.add_row(SHORT[competitor], *(fmt_ratio(row[o]) for o in ours))
        console.print(grid)

    targets_table = Table(title="targets", title_justify="left")
    targets_table.add_column("goal")
    targets_table.add_column("ours")
    targets_table.add_column("value", justify="right")
    targets_table.add_column("met")
    for target in targets.values():
        for i, check in enumerate(target["checks"]):
            key = check.get("ours") or check.get("case")
            value = (
                fmt_ratio(check["ratio"]) if "ratio" in check else f"{check['throughput_gb_s']:.2f}"
            )
            targets_table.add_row(
                target["goal"] if i == 0 else "",
                SHORT.get(key, key),
                value,
                "[green]yes[/]" if check["met"] else "[red]NO[/]",
            )
    console.print(targets_table)
    small = targets["bytes_merge_verify_vs_pydub"]["interleaved"]
    wall, cpu = small["ratio_per_round_wall"], small["ratio_per_round_cpu"]
    pydub = small["wall_ms"]["pydub_bytes"]
    console.print(
        f"from bytes, {small['rounds']} interleaved rounds: pydub / ours per round, wall "
        f"{fmt_ratio(wall['median'])} [{fmt_ratio(wall['min'])}–{fmt_ratio(wall['max'])}], "
        f"CPU {fmt_ratio(cpu['median'])} [{fmt_ratio(cpu['min'])}–{fmt_ratio(cpu['max'])}]; "
        f"pydub {pydub['median']:.3f} ms [{pydub['min']:.3f}–{pydub['max']:.3f}], ours "
        f"{small['wall_ms']['ours_bytes_merge_verify']['median']:.3f} ms wall, "
        f"{small['cpu_ms']['ours_bytes_merge_verify']['median']:.3f} ms CPU; a merge doing "
        f"nothing but one SHA-256 pass over the stems, split perfectly over two cores "
        f"({small['two_core_floor_ms']:.3f} ms), would be "
        f"{fmt_ratio(small['ratio_at_two_core_floor'])}"
    )
    for state, detail in small["allocator_states"].items():
        wall, cpu = detail["ratio_per_round_wall"], detail["ratio_per_round_cpu"]
        console.print(
            f"  {state} allocator ({detail['rounds']} rounds, child process): pydub / ours "
            f"wall {fmt_ratio(wall['median'])} [{fmt_ratio(wall['min'])}–"
            f"{fmt_ratio(wall['max'])}], CPU {fmt_ratio(cpu['median'])}; pydub "
            f"{detail['wall_ms']['pydub_bytes']['median']:.3f} ms, ours "
            f"{detail['wall_ms']['ours_bytes_merge_verify']['median']:.3f} ms wall; at the "
            f"SHA-256 floor ({detail['two_core_floor_ms']:.3f} ms on two cores) "
            f"{fmt_ratio(detail['ratio_at_two_core_floor'])}"
        )
    long = targets["long_bytes_merge_verify_throughput"]["interleaved"]
    console.print(
        f"long from bytes: {long['ours_gb_s_wall']:.2f} GB/s wall, "
        f"{long['ours_gb_per_cpu_s']:.2f} GB per CPU-second (both cores' CPU counted)"
    )
    for state, detail in long.get("allocator_states", {}).items():
        console.print(
            f"  {state} allocator ({detail['rounds']} rounds, child process): "
            f"{detail['ours_gb_s_wall']:.2f} GB/s wall, {detail['ours_gb_per_cpu_s']:.2f} GB "
            f"per CPU-second, {detail['wall_ms']['long_bytes_merge_verify']['median']:.1f} ms"
        )
    if not targets["long_merge_throughput"]["full_size"]:
        console.print("[yellow]--quick: the long merge is not 10 minutes; its target is indicative")
    console.print(f"[dim]{meta['note']}[/]")
    console.print(f"[dim]results: {meta['path']}[/]")


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--repeats",
        type=int,
        help=f"timed repeats per case (default {DEFAULT_REPEATS}; {QUICK_REPEATS} with --quick)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: few repeats, a 1-minute long merge"
    )
    parser.add_argument("--from-bytes-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--long-stems", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    repeats = args.repeats or (QUICK_REPEATS if args.quick else DEFAULT_REPEATS)
    if repeats < 1:
        parser.error("--repeats must be at least 1")
    n_long = LONG_STEMS_QUICK if args.quick else LONG_STEMS_FULL
    if args.from_bytes_child:
        return from_bytes_child(repeats, args.long_stems or n_long)

    machine = machine_info()
    console.print(
        f"[bold]bench_bitmerge[/] — {repeats} repeats{' (quick)' if args.quick else ''}; "
        f"{machine['cpu_model']}, {machine['cpu_count']} CPUs, {machine['ram_gib']} GiB; "
        f"Python {sys.version.split()[0]}"
    )

    cases: list[Case] = []
    with tempfile.TemporaryDirectory(prefix="bench_bitmerge_") as tmp:
        small = bench_small(Path(tmp), repeats, cases)
    long = bench_long(repeats, n_long, cases)
    by_key = {c.key: c for c in cases}
    ratios = compute_ratios(by_key)
    small_detail = from_bytes_detail(small.pop("interleaved"), small["pcm_bytes"], "pydub_bytes")
    long_detail = from_bytes_detail(long.pop("interleaved"), long["pcm_bytes"], None)
    states = from_bytes_allocator_states(repeats, n_long)
    small_detail["allocator_states"] = {state: got["small"] for state, got in states.items()}
    long_detail["allocator_states"] = {state: got["long"] for state, got in states.items()}
    targets = compute_targets(by_key, long["group"], small_detail, long_detail)

    note = (
        f"{TIMING_NOTE} File cases read stems from the page cache (files just written). "
        "'cold hash' = fresh Wav objects for every call (built outside the timer), so the "
        "sha256 of every stem is computed inside it; 'warm hash' = the same Wav objects "
        "reused, sha256 cached. GB/s = output PCM bytes / median seconds. The from-bytes "
        "cases (ours, pydub's and the SHA-256 floor: one pass over every stem's samples on "
        "one core) run in interleaved rounds in this process, each call on "
        "fresh bytes objects; their ratio is the median of per-round ratios, and CPU time "
        "(time.process_time, all threads) is recorded beside wall time. The comparison and "
        "the long merge from bytes run again in child processes with glibc's allocator "
        "pinned warm and cold (see ALLOCATOR_STATES), because their speed swings with that "
        "state (a fresh output's pages are faulted in by the kernel)."
    )
    payload = {
        "quick": args.quick,
        "repeats": repeats,
        "versions": versions(
            ["numpy", "soundfile", "pydub", "pydantic", "hybrid-audio"],
            libsndfile=sf.__libsndfile_version__,
            sox=command_version(["sox", "--version"]),
        ),
        "inputs": {"small": small, "long": long},
        "cases": {
            c.key: {"group": c.group, "label": c.label, **c.timing.to_dict(nbytes=c.nbytes)}
            for c in cases
        },
        "ratios": ratios,
        "targets": targets,
        "notes": note,
    }
    path = write_results("bench_bitmerge", payload)
    print_report(cases, ratios, targets, {"note": note, "path": path})
    return 0


if __name__ == "__main__":
    sys.exit(main())
