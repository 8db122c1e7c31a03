"""Settings: defaults under the base folder, per-path overrides, bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from hybrid_audio.config import Settings, SettingsError


def test_defaults_live_under_base_dir(tmp_path: Path) -> None:
    s = Settings.from_env({"HYBRID_AUDIO_BASE_DIR": str(tmp_path)})
    assert s.base_dir == tmp_path
    assert s.stems_dir == tmp_path / "stems"
    assert s.output_dir == tmp_path / "output"
    assert s.logs_dir == tmp_path / "logs"
    assert s.templates_dir == tmp_path / "templates"
    assert s.data_dir == tmp_path / "data"
    assert s.database_path == tmp_path / "state" / "hybrid_audio.sqlite3"
    assert s.common_names_file == tmp_path / "data" / "common_names.txt"
    assert s.developer_names_file == tmp_path / "data" / "developer_names.txt"
    assert s.scripts_file == tmp_path / "data" / "scripts.json"
    assert s.tts_engine == "piper"


def test_base_dir_defaults_to_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert Settings.from_env({}).stems_dir == tmp_path / "stems"


def test_each_path_can_be_overridden(tmp_path: Path) -> None:
    env = {
        "HYBRID_AUDIO_BASE_DIR": str(tmp_path),
        "STEMS_DIR": "/var/stems",
        "OUTPUT_DIR": "out",  # relative → under base
        "DATA_DIR": "mydata",
        "COMMON_NAMES_FILE": "/etc/names.csv",
    }
    s = Settings.from_env(env)
    assert s.stems_dir == Path("/var/stems")
    assert s.output_dir == tmp_path / "out"
    assert s.common_names_file == Path("/etc/names.csv")
    # a moved data folder moves the files that default into it
    assert s.developer_names_file == tmp_path / "mydata" / "developer_names.txt"


def test_empty_variables_mean_default(tmp_path: Path) -> None:
    s = Settings.from_env({"HYBRID_AUDIO_BASE_DIR": str(tmp_path), "STEMS_DIR": "  "})
    assert s.stems_dir == tmp_path / "stems"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CARTESIA_MAX_CONCURRENCY": "many"}, "CARTESIA_MAX_CONCURRENCY must be an integer"),
        ({"CARTESIA_MAX_CONCURRENCY": "0"}, "at least 1"),
        ({"TTS_ENGINE": "espeak"}, "TTS_ENGINE must be one of piper, cartesia"),
        ({"AUDIO_SAMPLE_RATE": "22.05k"}, "AUDIO_SAMPLE_RATE must be an integer"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


def test_secrets_stay_out_of_repr_and_summary() -> None:
    s = Settings.from_env({"CARTESIA_API_KEY": "sk-secret", "INTERNAL_API_KEY": "hunter2"})
    assert s.cartesia_api_key == "sk-secret"
    assert "sk-secret" not in repr(s)
    assert "hunter2" not in repr(s)
    summary = s.summary()
    assert summary["cartesia_api_key"] == "***"
    assert "hunter2" not in str(summary)


def test_keyword_construction_for_notebooks(tmp_path: Path) -> None:
    s = Settings(base_dir=tmp_path, tts_engine="cartesia")
    assert s.stems_dir == tmp_path / "stems"
    assert s.tts_engine == "cartesia"
