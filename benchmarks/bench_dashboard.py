"""The dashboard's two latency claims: the waveform of a long message, and Assemble → proof.

Cases:
- waveform (in process): a 10-minute message is built with `bitmerge_semantic` from
  synthetic speech-like parts (tone bursts with noise and quiet edges, silences and gaps
  between them, as a template makes; 22.05 kHz s16 mono, the default contract), written to
  a temporary WAV, and the waveform view is prepared from it as the dashboard does:
  `segment_boundaries` + `envelope` (1200 columns) + `segment_spans`. Timed three ways:
  from the parsed `Wav` (the target: median < 150 ms), including `read_wav` of the file,
  and the whole Bokeh figure of `app/views/common.waveform_figure` when it is importable.
- assemble (browser): the real `hybrid-audio-server` (Piper, temp base dir, as
  `tests/api_server.py` starts it) with the dashboard mounted at `/dashboard`, Debian's
  Chromium through Playwright. On the Assemble page `double_anchor` is assembled for
  "José" + "Hilton Ridge Developments" once untimed (stems generated), then each timed
  sample is one click on "Assemble" until the new result is rendered: the result text
  changed and every `.byte-diff` row shows ✓ (checked in the page on every animation
  frame). Median of `--clicks` samples.

Run: `.venv/bin/python benchmarks/bench_dashboard.py [--repeats 15] [--clicks 5] [--no-browser]`.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from common import (
    TIMING_NOTE,
    Timing,
    command_version,
    fmt_ms,
    machine_info,
    measure,
    versions,
    write_results,
)
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the server helper lives with the tests; app/ with the repo

from hybrid_audio.bitmerge import Part, Silence, Trim, bitmerge_semantic  # noqa: E402
from hybrid_audio.contract import AudioFormat  # noqa: E402
from hybrid_audio.wav import Wav, read_wav, write_wav  # noqa: E402
from hybrid_audio.waveform import envelope, segment_boundaries, segment_spans  # noqa: E402

MESSAGE_S = 600.0
SAMPLE_RATE = 22050
COLUMNS = 1200  # the dashboard's figure width
WAVEFORM_TARGET_MS = 150.0
FORMAT = AudioFormat(encoding="pcm_s16le", sample_rate=SAMPLE_RATE)
NAME, DEVELOPER = "José", "Hilton Ridge Developments"
TIMEOUT_MS = 30_000


# --- waveform ---------------------------------------------------------------------------


def _speech_like(rng: np.random.Generator, seconds: float) -> Wav:
    """Tone bursts with noise, 30 ms of near-silence at each edge (so trimming has work)."""
    frames = int(seconds * SAMPLE_RATE)
    t = np.arange(frames) / SAMPLE_RATE
    carrier = np.sin(2 * np.pi * rng.uniform(110, 300) * t)
    syllables = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(3, 6) * t)
    signal = 0.6 * carrier * syllables + 0.05 * rng.standard_normal(frames)
    edge = int(0.03 * SAMPLE_RATE)
    signal[:edge] *= 1e-4
    signal[-edge:] *= 1e-4
    pcm = np.clip(signal * 32767, -32768, 32767).astype("<i2").tobytes()
    return read_wav(write_wav(FORMAT, pcm))


def build_message(seconds: float = MESSAGE_S, seed: int = 0) -> tuple[bytes, dict[str, Any]]:
    """A merged WAV of about `seconds` and its bitmerge manifest (as a JSON dict)."""
    rng = np.random.default_rng(seed)
    stems = [_speech_like(rng, rng.uniform(1.0, 9.0)) for _ in range(24)]
    parts: list[Part | Silence] = []
    total = 0.0
    while total < seconds * 1.02:  # trimming takes a little off each part
        wav = stems[len(parts) % len(stems)]
        parts.append(Part(wav, f"stem.script.part_{len(parts) % len(stems)}"))
        parts.append(Silence(ms=150))
        total += wav.duration + 0.15 + 2 * 0.04
    merged = bitmerge_semantic(
        parts, gap_ms=40, trim=Trim(threshold_dbfs=-50, keep_ms=15), format=FORMAT
    )
    return merged.wav, merged.manifest.model_dump(mode="json")


def prepare_view(wav: Wav, manifest: dict[str, Any]) -> tuple[Any, list]:
    """What the Assemble page computes before plotting: envelope and segment spans."""
    env = envelope(wav, COLUMNS, boundaries=segment_boundaries(manifest))
    return env, segment_spans(manifest)


def bench_waveform(repeats: int) -> dict[str, Any]:
    wav_bytes, manifest = build_message()
    with tempfile.TemporaryDirectory(prefix="bench-dashboard-") as tmp:
        path = Path(tmp) / "message.wav"
        path.write_bytes(wav_bytes)
        wav = read_wav(path)
        cases: dict[str, Timing] = {
            "envelope + spans (parsed Wav)": measure(
                lambda: prepare_view(wav, manifest), repeats=repeats
            ),
            "read_wav + envelope + spans": measure(
                lambda: prepare_view(read_wav(path), manifest), repeats=repeats
            ),
        }
        figure = _figure_builder()
        if figure is not None:
            spans = segment_spans(manifest)
            boundaries = segment_boundaries(manifest)
            cases["Bokeh figure (waveform_figure)"] = measure(
                lambda: figure(wav_bytes, spans, boundaries, width=COLUMNS), repeats=repeats
            )
    env, spans = prepare_view(wav, manifest)
    return {
        "message": {
            "duration_s": wav.duration,
            "frames": wav.frames,
            "bytes": len(wav_bytes),
            "segments": len(manifest["segments"]),
            "format": FORMAT.model_dump(mode="json"),
            "columns_requested": COLUMNS,
            "columns": len(env),
            "spans": len(spans),
        },
        "target_ms": WAVEFORM_TARGET_MS,
        "cases": {name: timing.to_dict() for name, timing in cases.items()},
        "meets_target": cases["envelope + spans (parsed Wav)"].median * 1e3 < WAVEFORM_TARGET_MS,
    }


def _figure_builder() -> Callable[..., Any] | None:
    try:
        from app.views.common import waveform_figure
    except ImportError:
        return None
    return waveform_figure


# --- Assemble in the browser ------------------------------------------------------------

#: Resolves (on an animation frame) once the page shows an assembly other than `oldText`,
#: with all of its byte-diff rows rendered and every one ✓; returns what it saw. Panel
#: renders into shadow roots, so the queries walk them.
RENDERED = r"""([oldText, oldRows]) => {
  const deepAll = (root, selector) => {
    const out = [];
    const visit = scope => {
      out.push(...scope.querySelectorAll(selector));
      for (const el of scope.querySelectorAll("*")) if (el.shadowRoot) visit(el.shadowRoot);
    };
    if (root.shadowRoot) visit(root.shadowRoot);
    visit(root);
    return out;
  };
  const deepText = node => {
    let text = "";
    const scope = node.shadowRoot ?? node;
    for (const child of scope.childNodes) {
      if (child.nodeType === 3) text += child.textContent;
      else if (child.nodeType === 1 && child.tagName !== "STYLE") text += deepText(child);
    }
    if (node.shadowRoot) {
      for (const child of node.childNodes) if (child.nodeType === 1) text += deepText(child);
    }
    return text;
  };
  const result = deepAll(document, ".assemble-result").map(deepText)
    .find(t => t.includes("verified"));
  if (!result || result === oldText) return false;
  const counts = result.match(/(\d+)\/(\d+) segments byte-exact/);
  if (!counts) return false;
  const rows = deepAll(document, ".byte-diff")
    .flatMap(table => deepAll(table, ".tabulator-row"))
    .filter(row => row.getClientRects().length > 0);
  if (rows.length !== Number(counts[2])) return false;
  const texts = rows.map(deepText);
  if (!texts.every(t => t.includes("✓"))) return false;
  const joined = texts.join("\n");
  if (oldRows !== null && joined === oldRows) return false;
  return {text: result, rows: joined};
}"""


def bench_browser(clicks: int) -> dict[str, Any]:
    """Median time from a click on Assemble to the rendered, fully ✓ byte-diff proof."""
    from playwright.sync_api import sync_playwright

    from tests.api_server import CHROMIUM_ARGS, make_base_dir, start_server

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise RuntimeError("Debian chromium is not installed (make system-deps)")
    # Two developers alternate, so each click's byte ranges differ from the one before:
    # the wait cannot be satisfied by the previous click's table.
    developers = [DEVELOPER, "Brightwater Homes"]
    samples: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-dashboard-") as tmp:
        server = start_server(make_base_dir(Path(tmp)))
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.set_default_timeout(TIMEOUT_MS)
                page.goto(server.base_url + "/dashboard")
                tab = page.locator(".dashboard-tabs .bk-tab", has_text="Assemble")
                tab.filter(visible=True).first.click()
                page.get_by_label("Template", exact=True).filter(visible=True).first.select_option(
                    "double_anchor"
                )
                name = page.get_by_label("Name", exact=True).filter(visible=True).first
                developer = page.get_by_label("Developer", exact=True).filter(visible=True).first
                button = page.get_by_role("button", name="Assemble", exact=True)
                button = button.filter(visible=True).first
                name.fill(NAME)
                name.press("Tab")
                seen: dict[str, Any] = {"text": None, "rows": None, "compare_rows": True}
                rows_by_developer: dict[str, str] = {}

                def assemble_for(who: str) -> float:
                    developer.fill(who)
                    developer.press("Tab")
                    start = time.perf_counter()
                    button.click()
                    handle = page.wait_for_function(
                        RENDERED,
                        arg=[seen["text"], seen["rows"] if seen["compare_rows"] else None],
                        polling="raf",
                        timeout=TIMEOUT_MS,
                    )
                    elapsed = time.perf_counter() - start
                    seen.update(handle.json_value())
                    rows_by_developer[who] = seen["rows"]
                    return elapsed

                for who in developers:  # untimed: stems are synthesized here
                    assemble_for(who)
                if len(set(rows_by_developer.values())) == 1:
                    seen["compare_rows"] = False  # same byte ranges: only the text differs
                for i in range(clicks):
                    samples.append(assemble_for(developers[i % 2]))
                browser.close()
        finally:
            server.stop()
    timing = Timing(samples)
    return {
        "template": "double_anchor",
        "name": NAME,
        "developers": developers,
        "clicks": clicks,
        "click_to_rendered": timing.to_dict(),
        "samples_s": samples,
        "chromium": command_version([chromium, "--version"]),
    }


# --- report -----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=15, help="waveform samples per case")
    parser.add_argument("--clicks", type=int, default=5, help="timed Assemble clicks")
    parser.add_argument("--no-browser", action="store_true", help="skip the browser case")
    args = parser.parse_args(argv)
    console = Console()
    payload: dict[str, Any] = {
        "versions": versions(["numpy", "panel", "bokeh", "playwright"]),
        "machine": machine_info(),
    }
    with console.status("waveform of a 10-minute message…"):
        payload["waveform"] = bench_waveform(args.repeats)
    if not args.no_browser:
        with console.status("Assemble clicks in Chromium…"):
            payload["browser"] = bench_browser(args.clicks)
    path = write_results("dashboard", payload)

    wave = payload["waveform"]
    message = wave["message"]
    table = Table(title="Dashboard latency (median of repeats)")
    table.add_column("case")
    table.add_column("median ms", justify="right")
    table.add_column("min ms", justify="right")
    table.add_column("IQR ms", justify="right")
    table.add_column("samples", justify="right")
    table.add_column("target", justify="right")
    for name, case in wave["cases"].items():
        target = f"< {WAVEFORM_TARGET_MS:.0f} ms" if name.startswith("envelope") else ""
        table.add_row(
            f"waveform: {name}",
            fmt_ms(case["median_s"]),
            fmt_ms(case["min_s"]),
            fmt_ms(case["iqr_s"]),
            str(case["repeats"]),
            target,
        )
    if "browser" in payload:
        case = payload["browser"]["click_to_rendered"]
        table.add_row(
            "browser: Assemble click → ✓ byte-diff rendered",
            fmt_ms(case["median_s"]),
            fmt_ms(case["min_s"]),
            fmt_ms(case["iqr_s"]),
            str(case["repeats"]),
            "",
        )
    console.print(table)
    console.print(
        f"message: {message['duration_s']:.1f} s, {message['segments']} segments, "
        f"{message['bytes'] / 1e6:.1f} MB → {message['columns']} columns; "
        f"waveform target met: {wave['meets_target']}"
    )
    console.print(f"[dim]{TIMING_NOTE}[/dim]")
    console.print(f"results: {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
