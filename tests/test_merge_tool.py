"""hybrid-audio-merge: the local command behind `make run`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hybrid_audio.bitmerge import Manifest, Silence, verify
from hybrid_audio.contract import AudioFormat
from hybrid_audio.merge_tool import main
from hybrid_audio.wav import read_wav
from tests.audio_factory import make_wav

S16 = AudioFormat(encoding="pcm_s16le", sample_rate=16000)


def test_demo_synthesizes_and_writes_a_verified_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HYBRID_AUDIO_BASE_DIR", str(tmp_path))
    assert main([]) == 0
    output = tmp_path / "output" / "demo.wav"
    manifest = Manifest.model_validate_json((tmp_path / "output" / "demo.json").read_text())
    assert [s.id for s in manifest.segments][::2] == [
        "stem.name.jose__d994e1d001",  # "José": the accent is kept, so the id is disambiguated
        "stem.developer.brightwater_homes",
        "stem.name.jose__d994e1d001",
    ]
    stems = tmp_path / "stems"
    name = stems / "name" / "stem.name.jose__d994e1d001.wav"
    developer = stems / "developer" / "stem.developer.brightwater_homes.wav"
    parts_again = [name, Silence(ms=150), developer, Silence(ms=150), name]
    report = verify(output, manifest, parts_again)
    assert report.ok, report.errors


def test_merges_given_files_with_gap(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    files = []
    for i, frames in enumerate((300, 500)):
        path = tmp_path / f"stem.name.f{i}.wav"
        path.write_bytes(make_wav(S16, frames, seed=i))
        files.append(str(path))
    out = tmp_path / "out.wav"
    assert main([*files, "-o", str(out), "--gap-ms", "10"]) == 0
    assert read_wav(out).frames == 300 + 160 + 500
    manifest = json.loads(out.with_suffix(".json").read_text())
    assert [s["kind"] for s in manifest["segments"]] == ["audio", "gap", "audio"]
    assert "every byte exact" in capsys.readouterr().out


def test_bad_input_exits_1_naming_the_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVE")
    assert main([str(bad), "-o", str(tmp_path / "o.wav")]) == 1
    assert "broken.wav" in capsys.readouterr().out
    assert not (tmp_path / "o.wav").exists()


def test_format_mismatch_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    a, b = tmp_path / "a.wav", tmp_path / "b.wav"
    a.write_bytes(make_wav(S16, 100))
    b.write_bytes(make_wav(AudioFormat(encoding="pcm_s16le", sample_rate=8000), 100))
    assert main([str(a), str(b), "-o", str(tmp_path / "o.wav")]) == 1
    assert "never converts" in capsys.readouterr().out


def test_console_script_help() -> None:
    exe = Path(sys.executable).with_name("hybrid-audio-merge")
    done = subprocess.run([exe, "--help"], capture_output=True, text=True, check=True)
    assert "sample-exactly" in done.stdout
    assert "--gap-ms" in done.stdout
