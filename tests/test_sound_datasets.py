"""Sound on the shipped datasets, with real Piper: 100 names, 30 developers, every script.

Every stem is measured again from its file (not trusted from the index): within ±0.5 LU of
−16 LUFS (a clip shorter than one 400 ms gating block by the short-clip rule: one block of
its own length) and under −1 dBTP. Then 200 seeded messages of the shipped templates are
assembled: each verifies byte-exact and has no join step above −40 dBFS, with the
templates' merge-time trim on and with it off. About 140 syntheses: marked slow.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from hybrid_audio import codecs, sound
from hybrid_audio.bitmerge import (
    Manifest,
    MergeResult,
    Part,
    Silence,
    Trim,
    _trim_range,
    bitmerge_semantic,
)
from hybrid_audio.bitmerge import verify as verify_merge
from hybrid_audio.cache import StemRecord
from hybrid_audio.config import Settings
from hybrid_audio.datasets import load_dataset
from hybrid_audio.engines import create_engine
from hybrid_audio.templates import TrimOptions
from hybrid_audio.wav import Wav, read_wav
from hybrid_audio.workspace import Workspace
from tests.api_server import make_base_dir

pytestmark = pytest.mark.slow

TARGET_LUFS, CEILING_DBTP, TOLERANCE_LU = -16.0, -1.0, 0.5
MAX_JOIN_STEP_DBFS = -40.0
NAMES, DEVELOPERS, MESSAGES = 100, 30, 200
TEMPLATES = ("single_anchor", "double_anchor", "scripted")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    """A base dir with copies of the shipped templates and datasets, default contract."""
    base = make_base_dir(tmp_path_factory.mktemp("sound"))
    engine = create_engine(Settings(tts_engine="piper"))
    workspace = Workspace.build(Settings(base_dir=base), engine=engine)
    yield workspace
    workspace.close()


@pytest.fixture(scope="module")
def sample(workspace: Workspace) -> dict[str, list[str]]:
    """The texts of the sample, per slot (scripts by key)."""
    settings = workspace.settings
    texts = {
        "name": load_dataset("name", settings).texts()[:NAMES],
        "developer": load_dataset("developer", settings).texts()[:DEVELOPERS],
        "script": [item.key for item in load_dataset("script", settings).items],
    }
    assert (len(texts["name"]), len(texts["developer"])) == (NAMES, DEVELOPERS)
    return texts


@pytest.fixture(scope="module")
def stems(workspace: Workspace, sample: dict[str, list[str]]) -> list[StemRecord]:
    generator = workspace.generator
    made = [generator.generate("name", text) for text in sample["name"]]
    made += [generator.generate("developer", text) for text in sample["developer"]]
    made += [generator.generate_keyed("script", key) for key in sample["script"]]
    return made


def _stored(workspace: Workspace, record: StemRecord) -> Wav:
    return read_wav(Path(workspace.settings.stems_dir) / record.path)


def test_every_stem_is_at_the_target_and_under_the_ceiling(
    workspace: Workspace, stems: list[StemRecord]
) -> None:
    assert workspace.contract.loudness_lufs == TARGET_LUFS
    assert workspace.contract.true_peak_dbtp == CEILING_DBTP
    misses = []
    for record in stems:
        wav = _stored(workspace, record)
        x = codecs.decode(wav.pcm, wav.format)[:, 0]
        rate = wav.format.sample_rate
        loudness, peak = sound.integrated_loudness(x, rate), sound.true_peak_dbtp(x, rate)
        if abs(loudness - TARGET_LUFS) > TOLERANCE_LU or peak > CEILING_DBTP:
            misses.append(f"{record.stem_id}: {loudness:.2f} LUFS, {peak:.2f} dBTP")
        # The index records the measure before and after; after is the file's own.
        assert record.loudness_before is not None, record.stem_id
        assert record.loudness_after == pytest.approx(loudness, abs=1e-6), record.stem_id
        assert record.true_peak_after == pytest.approx(peak, abs=1e-6), record.stem_id
    assert not misses, misses
    before = [r.loudness_before for r in stems]
    assert max(before) - min(before) > 3.0  # the engine's spread the processing removed


def test_every_stem_starts_and_ends_on_silence_and_the_merge_trim_cuts_nothing(
    workspace: Workspace, stems: list[StemRecord]
) -> None:
    """The "never cuts into a fade" rule: the generation-time trim left only the fade's room
    around the speech, so neither the default merge-time trim (−50 dBFS, keep 10 ms) nor
    the shipped templates' (keep 15 ms) finds anything to cut."""
    assert Trim().threshold_dbfs == TrimOptions().threshold_dbfs == sound.TRIM_DBFS
    trims = {TrimOptions().to_trim()}
    for name in TEMPLATES:
        template = workspace.assembler.load_template(name)
        assert template.trim is not None
        trims.add(template.trim.to_trim())
    for record in stems:
        wav = _stored(workspace, record)
        silence = bytes([wav.format.silence_byte]) * wav.format.block_align
        assert wav.pcm[: wav.format.block_align] == silence, record.stem_id
        assert wav.pcm[-wav.format.block_align :] == silence, record.stem_id
        for trim in trims:
            assert _trim_range(wav, trim) == (0, wav.frames), (record.stem_id, trim)


def _messages(sample: dict[str, list[str]]) -> list[tuple[str, str, str, str]]:
    """200 seeded (template, name, developer, script) picks."""
    rng = random.Random(13)
    return [
        (
            rng.choice(TEMPLATES),
            rng.choice(sample["name"]),
            rng.choice(sample["developer"]),
            rng.choice(sample["script"]),
        )
        for _ in range(MESSAGES)
    ]


def _untrimmed(workspace: Workspace, document: dict) -> tuple[MergeResult, bool]:
    """The message of `document` (its manifest) joined again with the merge-time trim off,
    from the same stems and pauses: its WAV and its byte-exact proof."""
    tpl = workspace.assembler.load_template(document["template"])
    parts: list[Part | Silence] = [
        Part(workspace.cache.load(source["stem_id"]), source["stem_id"])
        if source["kind"] == "stem"
        else Silence(ms=source["ms"])
        for source in document["sources"]
    ]
    fmt = workspace.contract.audio_format
    merged = bitmerge_semantic(parts, gap_ms=tpl.gap_ms, trim=None, format=fmt)
    return merged, verify_merge(merged.wav, merged.manifest, parts).ok


def test_200_messages_verify_byte_exact_with_no_join_step_over_minus_40_dbfs(
    workspace: Workspace, sample: dict[str, list[str]], stems: list[StemRecord]
) -> None:
    made = len(workspace.cache.list())
    for template, name, developer, script in _messages(sample):
        result = workspace.assembler.assemble(template, name, developer, script)
        assert result.report.ok, result.summary
        output_id = result.summary.id
        assert workspace.assembler.verify_output(output_id).ok
        document = workspace.assembler.load_output(output_id)
        manifest = Manifest(**document["merge"])
        assert manifest.trim == {"threshold_dbfs": -50.0, "keep_ms": 15.0}
        for segment in manifest.segments:  # the trim kept every stem whole
            if segment.kind == "audio":
                assert (segment.trim_start_frame, segment.trim_end_frame) == (
                    0,
                    segment.source_frames,
                )
        data, _ = workspace.assembler.read_output(output_id)
        on = sound.largest_join_step_dbfs(read_wav(data), manifest)
        merged, exact = _untrimmed(workspace, document)
        assert exact
        off = sound.largest_join_step_dbfs(read_wav(merged.wav), merged.manifest)
        assert on <= MAX_JOIN_STEP_DBFS, (output_id, on)
        assert off <= MAX_JOIN_STEP_DBFS, (output_id, off)
        # Stronger than the issue asks: every stem starts and ends on exact silence, so
        # every join is silence to silence — no step at all. (Piper's own clips, joined
        # unprocessed, reach −42 dBFS: benchmarks/bench_sound.py.)
        assert on == off == -math.inf, (output_id, on, off)
    assert len(workspace.cache.list()) == made  # every message used the sample's stems
