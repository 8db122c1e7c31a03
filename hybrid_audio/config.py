"""Settings: every path and environment variable Hybrid Audio reads, in one place.

`Settings` is a frozen `pydantic-settings` model. `Settings.from_env()` is the only code that
reads the environment (through pydantic-settings' `EnvSettingsSource`); keyword construction
(`Settings(base_dir=tmp_path, tts_engine="piper")`) reads nothing else, so tests and
notebooks get exactly what they pass, whatever the shell exports. Paths given relative
resolve against `base_dir` (`HYBRID_AUDIO_BASE_DIR`, default the current directory). Secrets
never appear in `repr` or `summary()`, nor in the message of a `SettingsError`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from hybrid_audio.contract import (
    DEFAULT_EDGE_FADE_MS,
    DEFAULT_LOUDNESS_LUFS,
    DEFAULT_TRUE_PEAK_DBTP,
    ENGINES,
)

DEFAULT_CARTESIA_MODEL = "sonic-3-2025-10-27"

#: Where a path defaults to: a folder name under `base_dir`, or (folder field, file name).
_PATH_DEFAULTS: dict[str, str | tuple[str, str]] = {
    "stems_dir": "stems",
    "output_dir": "output",
    "logs_dir": "logs",
    "templates_dir": "templates",
    "data_dir": "data",
    "state_dir": "state",
    "database_path": ("state_dir", "hybrid_audio.sqlite3"),
    "common_names_file": ("data_dir", "common_names.txt"),
    "developer_names_file": ("data_dir", "developer_names.txt"),
    "scripts_file": ("data_dir", "scripts.json"),
}
#: Reasons for pydantic error types, worded for someone editing an environment file.
_REASONS = {
    "int_parsing": "must be an integer",
    "int_type": "must be an integer",
    "int_from_float": "must be a whole number",
    "greater_than_equal": "must be at least {ge}",
    "string_type": "must be text",
    "path_type": "must be a path",
    "float_parsing": "must be a number",
}


class SettingsError(ValueError):
    """A setting (environment variable or keyword) holds a value we cannot use."""


def _path(variable: str, doc: str) -> Any:
    """A path setting read from `variable`; unset or blank → its default under base_dir."""
    return Field(default=None, validation_alias=variable, validate_default=True, description=doc)


def _secret(doc: str) -> Any:
    """A secret: hidden from `repr`, masked in `summary()` and in error messages."""
    return Field(default="", repr=False, description=doc)


class _Environment(EnvSettingsSource):
    """The variables of `environ`; blank values count as unset.

    pydantic-settings has no public way to read a mapping other than `os.environ`, so this
    overrides its `_load_env_vars` hook: pyproject.toml pins the minor versions it was
    checked with, and tests/test_config.py fails loudly if the hook stops being called.
    """

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {
            name.lower(): value.strip() for name, value in self._environ.items() if value.strip()
        }


class Settings(BaseSettings):
    """Resolved configuration. Build with `Settings.from_env()` or keyword arguments.

    Each field reads the environment variable of its upper-cased name unless it names
    another (`validation_alias`). The model is frozen and hashable: the core shares one
    instance and compares settings by value.
    """

    model_config = SettingsConfigDict(
        frozen=True, extra="forbid", validate_by_name=True, validate_by_alias=True
    )

    base_dir: Path = Field(
        default_factory=Path.cwd,
        validation_alias="HYBRID_AUDIO_BASE_DIR",
        description="Root of every relative path below (default: the current directory).",
    )
    stems_dir: Path = _path("STEMS_DIR", "Cached stems, stems/<kind>/stem.<kind>.<slug>.wav.")
    output_dir: Path = _path("OUTPUT_DIR", "Assembled messages and their manifests.")
    logs_dir: Path = _path("LOGS_DIR", "JSON-lines logs.")
    templates_dir: Path = _path("TEMPLATES_DIR", "Message templates.")
    data_dir: Path = _path("DATA_DIR", "Datasets.")
    state_dir: Path = _path("STATE_DIR", "SQLite state and stem locks.")
    database_path: Path = _path("HYBRID_AUDIO_DB", "The state database (in state_dir).")
    common_names_file: Path = _path("COMMON_NAMES_FILE", "Names dataset (in data_dir).")
    developer_names_file: Path = _path("DEVELOPER_NAMES_FILE", "Developers dataset (in data_dir).")
    scripts_file: Path = _path("SCRIPTS_FILE", "Script phrases, key → text (in data_dir).")

    tts_engine: str = Field(default="piper", description="TTS engine: piper or cartesia.")
    piper_voice: str = Field(default="", description="Another Piper .onnx voice (path).")
    sample_rate: int = Field(
        default=22050, validation_alias="AUDIO_SAMPLE_RATE", description="Stem sample rate (Hz)."
    )
    encoding: str = Field(
        default="pcm_s16le", validation_alias="AUDIO_ENCODING", description="Stem encoding."
    )
    loudness_lufs: float | None = Field(
        default=DEFAULT_LOUDNESS_LUFS,
        ge=-40.0,
        le=-5.0,
        description="Loudness every stem is gained to (LUFS); 'off' keeps the engine's level.",
    )
    true_peak_dbtp: float = Field(
        default=DEFAULT_TRUE_PEAK_DBTP, ge=-12.0, le=0.0, description="True-peak ceiling (dBTP)."
    )
    edge_fade_ms: float = Field(
        default=DEFAULT_EDGE_FADE_MS, ge=0.0, le=50.0, description="Fade at each stem edge (ms)."
    )

    cartesia_api_key: str = _secret("Cartesia API key.")
    cartesia_voice_id: str = Field(default="", description="Cartesia voice id.")
    cartesia_model_id: str = Field(
        default=DEFAULT_CARTESIA_MODEL, description="Pinned, dated Cartesia model snapshot."
    )
    cartesia_base_url: str = Field(default="", description="Cartesia API URL (default: prod).")
    cartesia_max_concurrency: int = Field(
        default=2, ge=1, description="Cartesia requests in flight per process (the plan's limit)."
    )

    rotation_seed: int = Field(default=0, description="Seed of the rotation's cycle orders.")
    max_body_bytes: int = Field(
        default=8 * 1024 * 1024, description="Largest request body the API accepts."
    )

    gcs_bucket: str = Field(
        default="", description="Google Cloud Storage bucket; set → GCS mode (storage/)."
    )
    gcs_prefix: str = Field(
        default="", description="Folder inside the bucket, so several projects can share it."
    )
    gcs_project: str = Field(
        default="", description="Google Cloud project (default: from the credentials)."
    )
    gcs_retry_deadline: float = Field(
        default=60.0,
        ge=0,
        description="Seconds a transient GCS error (5xx, timeout, refused) is retried.",
    )
    gcs_upload_workers: int = Field(
        default=8, ge=1, description="Uploads and downloads in flight at once."
    )
    storage_emulator_host: str = Field(
        default="", description="GCS emulator URL (http://host:port), for tests."
    )
    internal_api_key: str = _secret("When set, every route but /health requires it.")
    log_max_bytes: int = Field(
        default=10 * 1024 * 1024, description="Size at which a JSON-lines log rotates."
    )
    dashboard_session_seconds: int = Field(
        default=12 * 3600, description="Lifetime of a dashboard session."
    )
    auth_failure_limit: int = Field(
        default=10, description="Wrong keys/logins per client per window; 0 = no limit."
    )
    auth_failure_window: int = Field(default=60, description="That limit's window, in seconds.")
    dask_scheduler_address: str = Field(
        default="",
        description="Bulk generation on Dask: unset → in-process; 'local' → a LocalCluster of "
        "this machine; tcp://host:8786 or tls://host:8786 → that cluster's scheduler.",
    )
    dask_local_workers: int = Field(
        default=2, ge=1, description="Worker processes of the 'local' cluster (1 thread each)."
    )
    piper_threads: int = Field(
        default=1,
        ge=0,
        description="onnxruntime intra-op threads of Piper in every process, in-process and on "
        "Dask workers alike (0 → onnxruntime's default, every core). A stem's bytes can depend "
        "on it (float summation order): keep it the same wherever stems of one cache are made.",
    )
    dask_tls_ca_file: str = Field(default="", description="CA certificate (PEM) of tls://.")
    dask_tls_cert: str = Field(default="", description="Client certificate (PEM) for tls://.")
    dask_tls_key: str = Field(default="", description="Client certificate's key (PEM), tls://.")

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as error:
            raise SettingsError(_explain(error)) from None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Keyword arguments only: the environment is read by `from_env`, never implicitly."""
        return (init_settings,)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Settings from environment variables (default `os.environ`; unset or blank → default)."""
        return cls(**_Environment(cls, os.environ if environ is None else environ)())

    @field_validator("base_dir", mode="after")
    @classmethod
    def _absolute_base(cls, value: Path) -> Path:
        return value.expanduser().absolute()

    @field_validator(*_PATH_DEFAULTS, mode="before")
    @classmethod
    def _resolve_path(cls, value: object, info: ValidationInfo) -> object:
        """Fill the default and anchor relative paths at base_dir (fields resolve in order)."""
        base = info.data.get("base_dir")
        default = _PATH_DEFAULTS[str(info.field_name)]
        if isinstance(default, tuple):
            folder, filename = default
            default = info.data[folder] / filename if folder in info.data else None
        if base is None or default is None:  # an earlier path was invalid and is reported
            return Path() if value is None else value
        if value is None or (isinstance(value, str) and not value.strip()):
            value = default
        if not isinstance(value, str | os.PathLike):
            return value  # pydantic reports the wrong type
        path = Path(value).expanduser()
        return path if path.is_absolute() else base / path

    @field_validator("loudness_lufs", mode="before")
    @classmethod
    def _loudness_off(cls, value: object) -> object:
        """`off` / `none` (any case) switch loudness normalisation off."""
        if isinstance(value, str) and value.strip().lower() in ("off", "none"):
            return None
        return value

    @field_validator("gcs_prefix", mode="after")
    @classmethod
    def _folder_prefix(cls, value: str) -> str:
        """`a/b`, `/a/b/` → `a/b/`: a folder, never a name fragment or an absolute path."""
        parts = [part for part in value.split("/") if part]
        if any(part in (".", "..") for part in parts):
            raise ValueError("must be a folder path without . or .. parts")
        return "".join(f"{part}/" for part in parts)

    @field_validator("dask_scheduler_address", mode="after")
    @classmethod
    def _dask_address(cls, value: str) -> str:
        if value and value != "local" and not value.startswith(("tcp://", "tls://")):
            raise ValueError("must be 'local', tcp://host:port or tls://host:port")
        return value

    @field_validator("tts_engine", mode="after")
    @classmethod
    def _known_engine(cls, value: str) -> str:
        if value not in ENGINES:
            raise ValueError(f"must be one of {', '.join(ENGINES)}")
        return value

    def summary(self) -> dict[str, str]:
        """Setting → effective value with secrets masked, safe to log or show."""
        return {
            name: ("***" if value else "") if _is_secret(name) else str(value)
            for name, value in self
        }


def _variable(name: str) -> str:
    """The environment variable a field reads."""
    alias = Settings.model_fields[name].validation_alias
    return alias if isinstance(alias, str) else name.upper()


def _is_secret(name: str) -> bool:
    field = Settings.model_fields.get(name)
    return field is not None and field.repr is False


def _shown(name: str, value: object) -> str:
    """A rejected value as an error message may quote it (never a secret)."""
    return "***" if _is_secret(name) else repr(value)


def _explain(error: ValidationError) -> str:
    """One clause per bad setting: the variable, what it must be, what it holds."""
    by_alias = {f.validation_alias: name for name, f in Settings.model_fields.items()}
    clauses = []
    for problem in error.errors():
        location = str(problem["loc"][0]) if problem["loc"] else ""
        name = str(by_alias.get(location, location))
        if name not in Settings.model_fields:
            clauses.append(f"unknown setting {location!r}")
            continue
        context = problem.get("ctx", {})
        if problem["type"] == "value_error":
            reason = str(context["error"])
        else:
            reason = _REASONS.get(problem["type"], problem["msg"]).format(**context)
        clauses.append(f"{_variable(name)} {reason}; got {_shown(name, problem['input'])}")
    return "; ".join(clauses)
