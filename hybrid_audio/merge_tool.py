"""`hybrid-audio-merge`: join WAV files bit-exactly from the shell and show the proof.

A thin local front end over `bitmerge_semantic` and `verify` (the HTTP-only `hybrid-audio`
CLI comes with the API). Without files it runs a demo: two stems synthesized by the
configured engine (Piper by default) joined as a double-anchor message, so `make run` shows
the whole promise on a fresh machine: synthesize, cache, merge, write, re-read, byte-diff.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

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
from hybrid_audio.config import Settings
from hybrid_audio.engines import EngineError
from hybrid_audio.generation import Generator
from hybrid_audio.wav import WavError


def _demo_parts(settings: Settings) -> list[Part | Silence]:
    """A double-anchor message from real stems: José · Brightwater Homes · José.

    The stems come from the configured engine through the Generator (Piper by default),
    so the first run synthesizes them and later runs take them from the cache.
    """
    generator = Generator.from_settings(settings)
    stems = Path(settings.stems_dir)
    name, developer = generator.generate_combined("José", "Brightwater Homes")
    name_part = Part(stems / name.path, name.stem_id)
    pause = Silence(ms=150)
    return [name_part, pause, Part(stems / developer.path, developer.stem_id), pause, name_part]


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
        epilog="Without FILES, synthesizes José and Brightwater Homes with the configured "
        "engine and writes a double-anchor demo to OUTPUT_DIR/demo.wav.",
    )
    parser.add_argument("files", nargs="*", type=Path, help="WAV files, in order")
    parser.add_argument("-o", "--output", type=Path, help="output WAV (default OUTPUT_DIR/...)")
    parser.add_argument("--gap-ms", type=float, default=0.0, help="silence between parts")
    parser.add_argument("--trim", action="store_true", help="trim quiet edges (-50 dBFS)")
    parser.add_argument("--mode", choices=("exact", "hybrid"), default="exact")
    args = parser.parse_args(argv)
    console = Console()
    settings = Settings.from_env()
    output = args.output or settings.output_dir / ("merged.wav" if args.files else "demo.wav")
    try:
        parts = list(args.files) or _demo_parts(settings)
        result = bitmerge_semantic(
            parts, gap_ms=args.gap_ms, trim=Trim() if args.trim else None, mode=args.mode
        )
    except (MergeError, WavError, EngineError, OSError) as error:
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
