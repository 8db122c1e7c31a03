"""Assembler with real Piper stems: exact bytes (checked by the stdlib), proof, errors."""

from __future__ import annotations

import json
import os
import threading
import wave
from pathlib import Path

import numpy as np
import pytest

from hybrid_audio import assembly, codecs, sound
from hybrid_audio.assembly import Assembler, AssemblyError
from hybrid_audio.bitmerge import _trim_range
from hybrid_audio.cache import CorruptStemError
from hybrid_audio.config import Settings
from hybrid_audio.contract import VoiceContract
from hybrid_audio.generation import Generator
from hybrid_audio.templates import TemplateError, TrimOptions
from hybrid_audio.wav import Wav
from hybrid_audio.workspace import Workspace
from tests.api_server import make_base_dir
from tests.processes import dead_pid


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(base_dir=make_base_dir(tmp_path))


@pytest.fixture
def assembler(settings: Settings, piper) -> Assembler:
    generator = Generator.from_settings(settings, engine=piper)
    return Assembler(
        settings=settings, cache=generator.cache, contract=generator.contract, generator=generator
    )


def _frames_of(path: Path) -> tuple[bytes, int]:
    """Sample bytes and rate by the stdlib's own WAV reader (independent of ours)."""
    with wave.open(str(path)) as reader:
        return reader.readframes(reader.getnframes()), reader.getframerate()


def _stem_pcm(assembler: Assembler, stem_id: str) -> bytes:
    record = assembler.generator.cache.get(stem_id)
    assert record is not None
    return _frames_of(Path(assembler.settings.stems_dir) / record.path)[0]


def _write_template(settings: Settings, name: str, body: dict | str) -> None:
    text = body if isinstance(body, str) else json.dumps(body)
    (Path(settings.templates_dir) / f"{name}.json").write_text(text)


def _trimmed(pcm: bytes, rate: int, threshold_dbfs: float, keep_ms: float) -> bytes:
    """Independent trim: 16-bit mono samples louder than the threshold, ± keep_ms."""
    x = np.frombuffer(pcm, "<i2").astype(np.float64) / 32768
    loud = np.flatnonzero(np.abs(x) > 10 ** (threshold_dbfs / 20))
    keep = round(keep_ms * rate / 1000)
    start, end = max(0, loud[0] - keep), min(len(x), loud[-1] + 1 + keep)
    return pcm[start * 2 : end * 2]


def test_untrimmed_output_is_the_concatenation(assembler: Assembler, settings: Settings) -> None:
    _write_template(
        settings,
        "plain",
        {"segments": [{"slot": "name"}, {"silence_ms": 100}, {"slot": "developer"}], "gap_ms": 20},
    )
    result = assembler.assemble("plain", name="José", developer="Brightwater Homes")
    data, rate = _frames_of(Path(result.wav_path))
    name = _stem_pcm(assembler, "stem.name.jose__d994e1d001")
    developer = _stem_pcm(assembler, "stem.developer.brightwater_homes")
    gap, pause = bytes(2 * rate * 20 // 1000), bytes(2 * round(rate * 0.1))
    assert data == name + gap + pause + gap + developer
    assert result.report.ok


def test_double_anchor_is_trimmed_stems_and_says_the_name_twice(assembler: Assembler) -> None:
    result = assembler.assemble("double_anchor", name="José", developer="Brightwater Homes")
    data, rate = _frames_of(Path(result.wav_path))
    tpl = json.loads((Path(assembler.settings.templates_dir) / "double_anchor.json").read_text())
    trim = tpl["trim"]

    def stem(stem_id: str) -> bytes:
        return _trimmed(
            _stem_pcm(assembler, stem_id), rate, trim["threshold_dbfs"], trim["keep_ms"]
        )

    def silence(ms: float) -> bytes:
        return bytes(2 * round(rate * ms / 1000))

    name = stem("stem.name.jose__d994e1d001")
    gap = silence(tpl["gap_ms"])
    expected = gap.join(
        [
            stem("stem.script.hello"),
            name,
            silence(150),
            stem("stem.developer.brightwater_homes"),
            stem("stem.script.offer"),
            silence(100),
            name,
        ]
    )
    assert data == expected
    assert data.count(name) == 2
    assert result.report.ok
    assert all(check.exact for check in result.report.segments)


def test_outputs_are_named_listed_loaded_and_verified(assembler: Assembler) -> None:
    result = assembler.assemble("scripted", name="Zoë", developer="Hilton", script="visit")
    summary = result.summary
    assert summary.id.endswith("_scripted_zoe_hilton")
    assert Path(result.wav_path).name == f"{summary.id}.wav"
    assert summary.verified
    assert [o.id for o in assembler.list_outputs()] == [summary.id]
    document = assembler.load_output(summary.id)
    assert document["inputs"] == {"name": "Zoë", "developer": "Hilton", "script": "visit"}
    assert document["contract_signature"] == assembler.generator.contract.signature()
    assert document["verify"]["ok"] is True
    assert document["output"]["sha256"] == summary.sha256
    assert assembler.verify_output(summary.id).ok


def test_one_tampered_byte_is_named(assembler: Assembler) -> None:
    result = assembler.assemble("double_anchor", name="Ana", developer="Hilton")
    path = Path(result.wav_path)
    data = bytearray(path.read_bytes())
    offset = len(data) // 2
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))
    report = assembler.verify_output(result.summary.id)
    assert not report.ok
    assert report.first_diff_offset == offset


def test_a_regenerated_stem_is_reported_as_changed(assembler: Assembler) -> None:
    result = assembler.assemble("double_anchor", name="Ana", developer="Hilton")
    assembler.generator.contract.speed = 1.2
    assembler.generator.generate_name("Ana")  # replaces stem.name.ana
    report = assembler.verify_output(result.summary.id)
    assert not report.ok
    assert any("source changed" in s.detail for s in report.segments)


def test_same_microsecond_does_not_collide(
    assembler: Assembler, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(assembly, "utc_stamp", lambda: "20260101T000000000000Z")
    first = assembler.assemble("single_anchor", name="Ana", developer="Hilton")
    second = assembler.assemble("single_anchor", name="Ana", developer="Hilton")
    assert first.summary.id == "20260101T000000000000Z_single_anchor_ana_hilton"
    assert second.summary.id == first.summary.id + "_2"
    assert assembler.verify_output(first.summary.id).ok
    assert assembler.verify_output(second.summary.id).ok


def test_threads_assembling_at_once(assembler: Assembler) -> None:
    assembler.assemble("single_anchor", name="Ana", developer="Hilton")  # stems made once
    results, errors = [], []

    def run() -> None:
        try:
            results.append(assembler.assemble("single_anchor", name="Ana", developer="Hilton"))
        except Exception as error:  # collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert len({r.summary.id for r in results}) == 8
    assert all(assembler.verify_output(r.summary.id).ok for r in results)
    assert not list(Path(assembler.settings.output_dir).glob(".*.tmp"))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"segments": [{"slot": "nmae"}]}, r"bad\.json: segments\[0\]\.slot: unknown slot"),
        ({"segments": []}, r"bad\.json: segments: List should have at least 1 item"),
        ({"segments": [{"silence_ms": -5}]}, r"segments\[0\]\.silence_ms: .*greater than 0"),
        ({"segments": [{"silence_ms": 60000}]}, r"segments\[0\]\.silence_ms: .*10000"),
        ({"segments": [{"stem": "stem.script.nope"}]}, r"segments\[0\]\.stem: unknown stem"),
        ({"segments": [{"stem": "../../x"}]}, r"segments\[0\]\.stem: '\.\./\.\./x' is not a stem"),
        ({"segments": [{"slot": "name", "silence_ms": 5}]}, r"segments\[0\]: a segment has"),
        ({"segments": [{"slot": "name"}], "gap": 5}, r"bad\.json: gap: unknown field"),
        ({"segments": [{"slot": "name"}], "join": "blend"}, r"join: Input should be"),
        ("{not json", r"bad\.json: not valid JSON"),
    ],
)
def test_template_errors_name_file_and_field(
    assembler: Assembler, settings: Settings, body: dict | str, message: str
) -> None:
    _write_template(settings, "bad", body)
    with pytest.raises(TemplateError, match=message):
        assembler.assemble("bad", name="Ana", developer="Hilton")
    assert assembler.list_outputs() == []


@pytest.mark.parametrize("name", ["nope", "../templates/double_anchor", "a/b", "", "x" * 100])
def test_unknown_or_hostile_template_names(assembler: Assembler, name: str) -> None:
    with pytest.raises(TemplateError, match=r"unknown template|not a template name"):
        assembler.assemble(name, name="Ana", developer="Hilton")


def test_missing_inputs_are_named(assembler: Assembler) -> None:
    with pytest.raises(AssemblyError, match="needs: developer, script"):
        assembler.assemble("scripted", name="Ana")


def test_hostile_name_is_refused_and_nothing_written(assembler: Assembler) -> None:
    with pytest.raises(ValueError, match="no letters or digits"):
        assembler.assemble("double_anchor", name="😀", developer="Hilton")
    assert assembler.list_outputs() == []


def test_without_generate_missing_a_missing_stem_is_an_error(assembler: Assembler) -> None:
    with pytest.raises(AssemblyError, match="generate_missing"):
        assembler.assemble("double_anchor", name="Ana", developer="Hilton", generate_missing=False)
    assert assembler.generator.cache.list() == []


def test_a_stem_changed_on_disk_is_refused(assembler: Assembler) -> None:
    assembler.assemble("single_anchor", name="Ana", developer="Hilton")
    record = assembler.generator.cache.get("stem.name.ana")
    path = Path(assembler.settings.stems_dir) / record.path
    data = bytearray(path.read_bytes())
    data[-2] ^= 0x7F
    path.write_bytes(bytes(data))
    before = sorted(Path(assembler.settings.output_dir).iterdir())
    with pytest.raises(CorruptStemError, match="changed on disk"):
        assembler.assemble("single_anchor", name="Ana", developer="Hilton")
    assert sorted(Path(assembler.settings.output_dir).iterdir()) == before  # nothing written


def test_hybrid_mode_reports_only_the_crossfades(assembler: Assembler) -> None:
    result = assembler.assemble("single_anchor", name="Ana", developer="Hilton", mode="hybrid")
    assert result.report.ok
    assert result.report.crossfades
    document = assembler.load_output(result.summary.id)
    assert document["merge"]["mode"] == "hybrid"


def test_bad_output_ids(assembler: Assembler) -> None:
    with pytest.raises(AssemblyError, match="not an output id"):
        assembler.load_output("../../etc/passwd")
    with pytest.raises(KeyError, match="no output"):
        assembler.load_output("20260101T000000000000Z_x_y_z")


def test_last_result_is_observable(assembler: Assembler) -> None:
    seen = []
    assembler.param.watch(lambda event: seen.append(event.new.summary.id), "last_result")
    result = assembler.assemble("single_anchor", name="Ana", developer="Hilton")
    assert seen == [result.summary.id]
    assert assembler.last_result is result
    with pytest.raises(TypeError, match="Constant parameter"):
        assembler.last_result = None  # still read-only to everyone but the assembler


def test_workspace_generate_pair_makes_each_pair_a_message(settings: Settings, piper) -> None:
    workspace = Workspace.build(settings, engine=piper)
    rotation = workspace.rotation
    rotation.param.update(
        seed=3, names=["Ana", "José"], developers=["Hilton"], script_keys=["visit", "thanks"]
    )
    try:
        first = workspace.generate_pair("scripted")
        second = workspace.generate_pair("scripted", join="hybrid")
        assert {first.step.name, second.step.name} == {"Ana", "José"}
        assert {first.script, second.script} == {"visit", "thanks"}
        for made in (first, second):
            assert made.result.report.ok
            assert made.result.summary.name == made.step.name
            assert made.result.summary.script == made.script
        with pytest.raises(TemplateError, match="unknown template"):
            workspace.generate_pair("nope")
        assert rotation.state()["pair"].position == 0  # 2 of 2 taken: next cycle, no extra step
        assert rotation.state()["pair"].cycle == 1
    finally:
        workspace.close()


def test_an_assembler_without_generator_uses_cached_stems_only(assembler: Assembler) -> None:
    """Assembling from the cache alone never synthesizes: a missing stem is named."""
    assembler.assemble("single_anchor", name="Ana", developer="Hilton")  # makes its stems
    cached_only = Assembler(
        settings=assembler.settings, cache=assembler.cache, contract=assembler.contract
    )
    assert cached_only.assemble("single_anchor", name="Ana", developer="Hilton").report.ok
    with pytest.raises(AssemblyError, match="no generator to make it"):
        cached_only.assemble("single_anchor", name="Bea", developer="Hilton")


def test_a_template_trim_keeping_less_than_the_fade_never_cuts_into_it() -> None:
    """A template may ask to keep 0 ms around speech; on a processed stem (5 ms fades) the
    merge-time trim still keeps every frame, while the same trim without the fade's floor
    would cut into the fade (so the floor is what keeps it whole)."""
    contract = VoiceContract()
    fmt = contract.audio_format
    rng = np.random.default_rng(7)
    speech = rng.standard_normal(fmt.sample_rate // 2) * 0.1
    engine_audio = np.concatenate([np.zeros(2000), speech, np.zeros(2000)])
    stem, _ = sound.process(Wav(format=fmt, pcm=codecs.encode(engine_audio, fmt)), contract)
    options = TrimOptions(keep_ms=0)
    assert _trim_range(stem, options.to_trim(contract.edge_fade_ms)) == (0, stem.frames)
    assert _trim_range(stem, options.to_trim()) != (0, stem.frames)


def test_recovery_never_deletes_an_output_whose_writer_finishes_meanwhile(
    assembler: Assembler, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process starting an Assembler (a Dask worker joining a campaign) sweeps the
    folder while this one writes: the writer finishes (manifest written, then its temp link
    dropped) exactly between the sweep's two looks at the WAV. The sweep must keep it."""
    done = assembler.assemble("double_anchor", "José", "Brightwater Homes")
    wav, manifest = Path(done.wav_path), Path(done.manifest_path)
    kept = manifest.read_bytes()
    manifest.unlink()  # the moment before the writer's manifest exists…
    tmp = wav.with_name(f".{wav.name}.{os.getpid()}.live.tmp")
    os.link(wav, tmp)  # …while its temp name still links the WAV
    real = assembly.writer_finished

    def writer_finishes_now(path: Path) -> bool:
        if path == wav and not manifest.exists():
            manifest.write_bytes(kept)  # the writer: manifest first,
            tmp.unlink()  # then its temp link
        return real(path)

    monkeypatch.setattr(assembly, "writer_finished", writer_finishes_now)
    assembler.recover_outputs()
    assert wav.exists()
    assert manifest.exists()
    assert assembler.verify_output(done.summary.id).ok


def test_recovery_goes_on_past_a_wav_removed_while_it_sweeps(
    assembler: Assembler, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sweep lists the folder once and looks again only at WAVs listed without their
    manifest; one of those removed meanwhile (its output deleted by another process) is
    skipped, and the sweep still removes the other leftovers (it stopped at the first)."""
    done = assembler.assemble("double_anchor", "José", "Brightwater Homes")
    data, stamp = Path(done.wav_path).read_bytes(), done.summary.id.split("_")[0]
    orphans = [assembler.output_dir / f"{stamp}_x_orphan_{i}.wav" for i in range(3)]
    for orphan in orphans:
        orphan.write_bytes(data)
    real = assembly.writer_finished

    def first_one_removed(path: Path) -> bool:
        if path == orphans[0]:
            path.unlink()
        return real(path)

    monkeypatch.setattr(assembly, "writer_finished", first_one_removed)
    assert assembler.recover_outputs() == 2
    assert not any(orphan.exists() for orphan in orphans)
    assert [o.id for o in assembler.list_outputs()] == [done.summary.id]
    assert assembler.verify_output(done.summary.id).ok


def test_recovery_removes_a_dead_writers_wav_whatever_order_the_folder_lists(
    assembler: Assembler, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer killed before its manifest leaves its WAV linked by its temp name (two
    links): the sweep removes the temp file first, then the WAV, in one start-up, even when
    the folder lists the WAV first (it kept the WAV then, until the next start)."""
    done = assembler.assemble("double_anchor", "José", "Brightwater Homes")
    stamp = done.summary.id.split("_")[0]
    wav = assembler.output_dir / f"{stamp}_x_killed_before_manifest.wav"
    temp = wav.with_name(f".{wav.name}.{dead_pid()}.{'0' * 32}.tmp")
    temp.write_bytes(Path(done.wav_path).read_bytes())
    os.link(temp, wav)
    real = os.listdir
    monkeypatch.setattr(
        assembly.os, "listdir", lambda path: sorted(real(path), key=lambda n: n[-4:] != ".wav")
    )
    assert assembler.recover_outputs() == 2
    assert not wav.exists()
    assert not temp.exists()
    assert [o.id for o in assembler.list_outputs()] == [done.summary.id]
