"""`hybrid-audio-merge`: join WAV files bit-exactly from the shell and show the proof.

A thin local front end over `bitmerge_semantic` and `verify` (the HTTP-only `hybrid-audio`
CLI comes with the API). Without files it runs a demo on generated audio, so `make run`
shows the whole promise on a fresh machine: merge, write, re-read from disk, byte-diff.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from hybrid_audio.bitmerge import (
    MergeError,
    Part,
    Silence,
    Trim,
    VerifyReport,
    bitmerge_semantic,
    verify,
)
from hybrid_audio.codecs import encode
from hybrid_audio.config import Settings
from hybrid_audio.contract import AudioFormat
from hybrid_audio.wav import WavError, write_wav


def _demo_parts(folder: Path) -> list[Part | Silence]:
    """Three stand-in stems (tone bursts), written as files, in a double-anchor layout."""
    fmt = AudioFormat(encoding="pcm_s16le", sample_rate=22050)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, pitch, seconds in (("name.jose", 330.0, 0.6), ("developer.hilton", 440.0, 0.9)):
        t = np.arange(int(seconds * fmt.sample_rate)) / fmt.sample_rate
        envelope = np.sin(np.pi * t / seconds) ** 2
        path = folder / f"stem.{name}.wav"
        path.write_bytes(
            write_wav(fmt, encode(0.4 * envelope * np.sin(2 * np.pi * pitch * t), fmt))
        )
        paths[name] = path
    name = Part(paths["name.jose"], "stem.name.jose")
    return [
        name,
        Silence(ms=150),
        Part(paths["developer.hilton"], "stem.developer.hilton"),
        Silence(ms=150),
        name,
    ]


def _report_table(report: VerifyReport) -> Table:
    table = Table(title="byte-diff proof", show_lines=False)
    for column in ("#", "segment", "bytes", "verdict"):
        table.add_column(column)
    for check in report.segments:
        span = f"{check.byte_offset}–{check.byte_offset + check.byte_length}"
        verdict = "✓ exact" if check.exact else f"✗ {check.detail}"
        table.add_row(str(check.index), check.id, span, verdict)
    for fade in report.crossfades:
        span = f"{fade.byte_offset}–{fade.byte_offset + fade.byte_length}"
        verdict = "✓ crossfade as declared" if fade.matches else "✗ crossfade differs"
        table.add_row("", "crossfade", span, verdict)
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="hybrid-audio-merge",
        description="Join WAV files sample-exactly (no resampling, no re-encoding), write the "
        "result and a JSON manifest, then re-read it from disk and prove every byte.",
        epilog="Without FILES, runs a demo on generated audio into OUTPUT_DIR/demo.wav.",
    )
    parser.add_argument("files", nargs="*", type=Path, help="WAV files, in order")
    parser.add_argument("-o", "--output", type=Path, help="output WAV (default OUTPUT_DIR/...)")
    parser.add_argument("--gap-ms", type=float, default=0.0, help="silence between parts")
    parser.add_argument("--trim", action="store_true", help="trim quiet edges (-50 dBFS)")
    parser.add_argument("--mode", choices=("exact", "hybrid"), default="exact")
    args = parser.parse_args(argv)
    console = Console()
    settings = Settings.from_env()
    parts = list(args.files) or _demo_parts(settings.output_dir / "demo_stems")
    output = args.output or settings.output_dir / ("merged.wav" if args.files else "demo.wav")
    try:
        result = bitmerge_semantic(
            parts, gap_ms=args.gap_ms, trim=Trim() if args.trim else None, mode=args.mode
        )
    except (MergeError, WavError, OSError) as error:
        console.print(f"[red]error:[/red] {error}")
        return 1
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(result.wav)
    manifest_path = output.with_suffix(".json")
    manifest_path.write_text(json.dumps(result.manifest.model_dump(mode="json"), indent=2))
    report = verify(output, result.manifest, parts)
    console.print(_report_table(report))
    m = result.manifest
    console.print(
        f"{output} — {m.duration:.3f} s, {m.format.describe()}, sha256 {result.sha256[:16]}…\n"
        f"manifest: {manifest_path}\n"
        + ("[green]verified: every byte exact[/green]" if report.ok else "[red]NOT exact[/red]")
    )
    return 0 if report.ok else 3


if __name__ == "__main__":
    sys.exit(main())
