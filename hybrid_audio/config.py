"""Settings: every path and environment variable Hybrid Audio reads, in one place.

`Settings.from_env()` is the only code that reads the environment; everything else takes a
`Settings` (or the values it needs) as an argument, so tests and notebooks can build one
with plain keyword arguments. Paths given relative resolve against `base_dir`
(`HYBRID_AUDIO_BASE_DIR`, default the current directory). Secrets never appear in `repr`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from hybrid_audio.contract import ENGINES

DEFAULT_CARTESIA_MODEL = "sonic-3-2025-10-27"

#: Path settings: (field, environment variable, default relative to base_dir).
_PATHS = (
    ("stems_dir", "STEMS_DIR", "stems"),
    ("output_dir", "OUTPUT_DIR", "output"),
    ("logs_dir", "LOGS_DIR", "logs"),
    ("templates_dir", "TEMPLATES_DIR", "templates"),
    ("data_dir", "DATA_DIR", "data"),
    ("state_dir", "STATE_DIR", "state"),
)
#: Files inside other folders: (field, variable, folder field, file name).
_FILES = (
    ("database_path", "HYBRID_AUDIO_DB", "state_dir", "hybrid_audio.sqlite3"),
    ("common_names_file", "COMMON_NAMES_FILE", "data_dir", "common_names.txt"),
    ("developer_names_file", "DEVELOPER_NAMES_FILE", "data_dir", "developer_names.txt"),
    ("scripts_file", "SCRIPTS_FILE", "data_dir", "scripts.json"),
)


class SettingsError(ValueError):
    """An environment variable holds a value we cannot use."""


@dataclass(frozen=True)
class Settings:
    """Resolved configuration. Build with `Settings.from_env()` or keyword arguments."""

    base_dir: Path = field(default_factory=Path.cwd)
    stems_dir: Path | None = None
    output_dir: Path | None = None
    logs_dir: Path | None = None
    templates_dir: Path | None = None
    data_dir: Path | None = None
    state_dir: Path | None = None
    database_path: Path | None = None
    common_names_file: Path | None = None
    developer_names_file: Path | None = None
    scripts_file: Path | None = None

    tts_engine: str = "piper"
    piper_voice: str = ""
    sample_rate: int = 22050
    encoding: str = "pcm_s16le"

    cartesia_api_key: str = field(default="", repr=False)
    cartesia_voice_id: str = ""
    cartesia_model_id: str = DEFAULT_CARTESIA_MODEL
    cartesia_base_url: str = ""
    cartesia_max_concurrency: int = 2

    rotation_seed: int = 0
    max_body_bytes: int = 8 * 1024 * 1024

    gcs_bucket: str = ""
    storage_emulator_host: str = ""
    internal_api_key: str = field(default="", repr=False)
    log_max_bytes: int = 10 * 1024 * 1024
    dashboard_session_seconds: int = 12 * 3600
    auth_failure_limit: int = 10  # wrong keys/logins per client per window; 0 = no limit
    auth_failure_window: int = 60

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: fill derived defaults once, here
        base = Path(self.base_dir).expanduser().absolute()
        set_(self, "base_dir", base)
        for name, _var, default in _PATHS:
            set_(self, name, self._under(base, getattr(self, name), default))
        for name, _var, folder, filename in _FILES:
            set_(
                self, name, self._under(base, getattr(self, name), getattr(self, folder) / filename)
            )
        if self.tts_engine not in ENGINES:
            raise SettingsError(
                f"TTS_ENGINE must be one of {', '.join(ENGINES)}; got {self.tts_engine!r}"
            )
        if self.cartesia_max_concurrency < 1:
            raise SettingsError("CARTESIA_MAX_CONCURRENCY must be at least 1")

    @staticmethod
    def _under(base: Path, value: Path | str | None, default: Path | str) -> Path:
        path = Path(value if value not in (None, "") else default).expanduser()
        return path if path.is_absolute() else base / path

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Settings from environment variables (unset or empty → default)."""
        env = os.environ if environ is None else environ

        def get(var: str) -> str | None:
            value = env.get(var, "").strip()
            return value or None

        def get_int(var: str, default: int) -> int:
            value = get(var)
            if value is None:
                return default
            try:
                return int(value)
            except ValueError:
                raise SettingsError(f"{var} must be an integer; got {value!r}") from None

        kwargs: dict[str, object] = {
            "tts_engine": get("TTS_ENGINE") or "piper",
            "piper_voice": get("PIPER_VOICE") or "",
            "sample_rate": get_int("AUDIO_SAMPLE_RATE", 22050),
            "encoding": get("AUDIO_ENCODING") or "pcm_s16le",
            "cartesia_api_key": get("CARTESIA_API_KEY") or "",
            "cartesia_voice_id": get("CARTESIA_VOICE_ID") or "",
            "cartesia_model_id": get("CARTESIA_MODEL_ID") or DEFAULT_CARTESIA_MODEL,
            "cartesia_base_url": get("CARTESIA_BASE_URL") or "",
            "cartesia_max_concurrency": get_int("CARTESIA_MAX_CONCURRENCY", 2),
            "rotation_seed": get_int("ROTATION_SEED", 0),
            "max_body_bytes": get_int("MAX_BODY_BYTES", 8 * 1024 * 1024),
            "gcs_bucket": get("GCS_BUCKET") or "",
            "storage_emulator_host": get("STORAGE_EMULATOR_HOST") or "",
            "internal_api_key": get("INTERNAL_API_KEY") or "",
            "log_max_bytes": get_int("LOG_MAX_BYTES", 10 * 1024 * 1024),
            "dashboard_session_seconds": get_int("DASHBOARD_SESSION_SECONDS", 12 * 3600),
            "auth_failure_limit": get_int("AUTH_FAILURE_LIMIT", 10),
            "auth_failure_window": get_int("AUTH_FAILURE_WINDOW", 60),
        }
        if base := get("HYBRID_AUDIO_BASE_DIR"):
            kwargs["base_dir"] = Path(base)
        for name, var, *_ in (*_PATHS, *_FILES):
            if value := get(var):
                kwargs[name] = Path(value)
        return cls(**kwargs)  # type: ignore[arg-type]

    def summary(self) -> dict[str, str]:
        """Setting → effective value with secrets masked, safe to log or show."""
        shown = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.endswith("_key"):
                value = "***" if value else ""
            shown[f.name] = str(value)
        return shown
