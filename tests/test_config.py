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


def test_keyword_construction_ignores_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A notebook or test gets what it passes, whatever the shell exports."""
    monkeypatch.setenv("TTS_ENGINE", "cartesia")
    monkeypatch.setenv("STEMS_DIR", "/somewhere/else")
    s = Settings(base_dir=tmp_path)
    assert (s.tts_engine, s.stems_dir) == ("piper", tmp_path / "stems")
    assert Settings.from_env().tts_engine == "cartesia"  # only from_env reads os.environ


def test_renamed_variables_reach_their_fields(tmp_path: Path) -> None:
    env = {
        "HYBRID_AUDIO_BASE_DIR": str(tmp_path),
        "HYBRID_AUDIO_DB": "db/index.sqlite3",
        "AUDIO_SAMPLE_RATE": "16000",
        "AUDIO_ENCODING": "pcm_mulaw",
        "AUTH_FAILURE_LIMIT": " 0 ",
    }
    s = Settings.from_env(env)
    assert s.database_path == tmp_path / "db" / "index.sqlite3"
    assert (s.sample_rate, s.encoding, s.auth_failure_limit) == (16000, "pcm_mulaw", 0)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"MAX_BODY_BYTES": "8MB"}, r"^MAX_BODY_BYTES must be an integer; got '8MB'$"),
        ({"LOG_MAX_BYTES": "1.5"}, r"^LOG_MAX_BYTES must be an integer; got '1.5'$"),
        (
            {"ROTATION_SEED": "x", "TTS_ENGINE": "say"},
            r"TTS_ENGINE must be one of .*; got 'say'; ROTATION_SEED must be an integer",
        ),
    ],
)
def test_every_bad_variable_is_named_in_one_error(values: dict[str, str], message: str) -> None:
    """An operator's typo is reported by variable name, all typos at once."""
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(values)


def test_bad_keyword_values_are_settings_errors(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="CARTESIA_MAX_CONCURRENCY must be at least 1"):
        Settings(base_dir=tmp_path, cartesia_max_concurrency=0)
    with pytest.raises(SettingsError, match="unknown setting 'stem_dir'"):
        Settings(base_dir=tmp_path, stem_dir=tmp_path)  # type: ignore[call-arg]


def test_a_rejected_secret_is_not_quoted() -> None:
    """An error about a secret never echoes it into logs."""
    with pytest.raises(SettingsError, match=r"INTERNAL_API_KEY must be text; got \*\*\*") as caught:
        Settings(internal_api_key=31337)  # type: ignore[arg-type]
    assert "31337" not in str(caught.value)


def test_settings_are_frozen_values(tmp_path: Path) -> None:
    """Shared settings cannot be changed under the objects that hold them."""
    s = Settings(base_dir=tmp_path, internal_api_key="k")
    assert s == Settings(base_dir=tmp_path, internal_api_key="k")
    assert hash(s) == hash(Settings(base_dir=tmp_path, internal_api_key="k"))
    assert s != Settings(base_dir=tmp_path, internal_api_key="other")
    with pytest.raises(ValueError, match="frozen"):
        s.tts_engine = "cartesia"  # type: ignore[misc]


def test_summary_masks_every_secret_and_shows_paths(tmp_path: Path) -> None:
    s = Settings(base_dir=tmp_path, cartesia_api_key="sk-secret")
    summary = s.summary()
    assert summary["cartesia_api_key"] == "***"
    assert summary["internal_api_key"] == ""  # unset is shown as unset
    assert summary["stems_dir"] == str(tmp_path / "stems")
    assert set(summary) == set(Settings.model_fields)


def test_from_env_reads_only_the_mapping_it_is_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`from_env(mapping)` goes through `config._Environment`, which overrides the private
    `EnvSettingsSource._load_env_vars` of pydantic-settings (no public way to read another
    mapping): if a pydantic-settings release renames or stops calling it, this fails."""
    from pydantic_settings import EnvSettingsSource

    assert callable(getattr(EnvSettingsSource, "_load_env_vars", None)), (
        "pydantic-settings no longer has EnvSettingsSource._load_env_vars: "
        "hybrid_audio/config.py _Environment must be rewritten for this version"
    )
    monkeypatch.setenv("STEMS_DIR", str(tmp_path / "from-os-environ"))
    monkeypatch.setenv("TTS_ENGINE", "cartesia")
    given = {"HYBRID_AUDIO_BASE_DIR": str(tmp_path), "OUTPUT_DIR": "given", "LOGS_DIR": " "}
    settings = Settings.from_env(given)
    assert settings.output_dir == tmp_path / "given", "the given mapping was not read"
    assert settings.stems_dir == tmp_path / "stems", "os.environ was read instead"
    assert settings.tts_engine == "piper", "os.environ was read instead"
    assert settings.logs_dir == tmp_path / "logs", "a blank value did not count as unset"
