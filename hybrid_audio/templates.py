"""Message templates: the schema of `templates/*.json`, loading, and errors that say where.

A template is a list of segments — a fixed stem (`{"stem": "stem.script.hello"}`), a slot
filled per message (`{"slot": "name"}`: any kind in `kinds`, such as developer or script) or a pause
(`{"silence_ms": 150}`) — plus join options (trim, gap, join mode). Validation is pydantic;
every error names the template file and the field (`segments[2].slot`). Script stems must
exist in the scripts dataset, so a typo is caught when the template loads, not half-way
through a campaign. This module never touches audio.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
)

from hybrid_audio import kinds
from hybrid_audio.bitmerge import Trim
from hybrid_audio.config import Settings
from hybrid_audio.stems import StemId

#: Longest pause or gap a template may ask for; longer is a typo (ms for s), not a pause.
MAX_SILENCE_MS = 10_000
_TEMPLATE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


class TemplateError(ValueError):
    """A template is missing, malformed or refers to something that does not exist."""


class _Segment(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StemSegment(_Segment):
    """A fixed stem, the same in every message."""

    stem: str

    @field_validator("stem")
    @classmethod
    def _grammar(cls, value: str) -> str:
        StemId.parse(value)
        return value


class SlotSegment(_Segment):
    """A stem chosen per message; the slot is a kind (`kinds`)."""

    slot: str

    @field_validator("slot")
    @classmethod
    def _known_kind(cls, value: str) -> str:
        if not kinds.is_kind(value):
            raise ValueError(f"unknown slot {value!r} (expected {', '.join(kinds.names())})")
        return value


class SilenceSegment(_Segment):
    """A pause of the format's own silence."""

    silence_ms: Annotated[float, Field(gt=0, le=MAX_SILENCE_MS)]


_FORMS = {StemSegment: "stem", SlotSegment: "slot", SilenceSegment: "silence_ms"}


def _segment_form(value: object) -> str | None:
    """Which of the three forms a segment is: decided by its one key, so an error speaks
    about that form only (not about all three, as a plain union would)."""
    if isinstance(value, dict):
        keys = [key for key in _FORMS.values() if key in value]
        return keys[0] if len(keys) == 1 else None
    return _FORMS.get(type(value))


Segment = Annotated[
    Annotated[StemSegment, Tag("stem")]
    | Annotated[SlotSegment, Tag("slot")]
    | Annotated[SilenceSegment, Tag("silence_ms")],
    Discriminator(
        _segment_form,
        custom_error_type="segment_form",
        custom_error_message="a segment has exactly one of 'stem', 'slot' or 'silence_ms'",
    ),
]


class TrimOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    threshold_dbfs: Annotated[float, Field(ge=-120, le=0)] = -50.0
    keep_ms: Annotated[float, Field(ge=0, le=1000)] = 10.0

    def to_trim(self, edge_fade_ms: float = 0.0) -> Trim:
        """The merge-time trim, keeping at least `edge_fade_ms` (the stems' fades, see
        `sound`) around the loud part. A processed stem's first and last frames above
        −50 dBFS lie within its fades, so at a threshold of −50 dBFS or below this trim
        finds nothing to cut and never cuts into a fade. A template asking for a higher
        threshold asks to cut quiet speech; it keeps the fade's length before what it keeps."""
        return Trim(threshold_dbfs=self.threshold_dbfs, keep_ms=max(self.keep_ms, edge_fade_ms))


class Template(BaseModel):
    """One message layout and how its segments are joined."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = ""
    description: str = ""
    segments: Annotated[list[Segment], Field(min_length=1)]
    trim: TrimOptions | None = None
    gap_ms: Annotated[float, Field(ge=0, le=MAX_SILENCE_MS)] = 0.0
    join: Literal["exact", "hybrid"] = "exact"
    crossfade_ms: Annotated[float, Field(ge=0, le=200)] = 10.0

    @property
    def slots(self) -> set[str]:
        """The slots a message must fill."""
        return {s.slot for s in self.segments if isinstance(s, SlotSegment)}

    @property
    def fixed_stems(self) -> list[StemId]:
        return [StemId.parse(s.stem) for s in self.segments if isinstance(s, StemSegment)]


def _field_path(loc: tuple) -> str:
    """`("segments", 2, "slot", "slot")` → `segments[2].slot` (the first "slot" is the tag
    of the segment's form)."""
    path, previous = "", None
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif not (isinstance(previous, int) and part in _FORMS.values()):  # the union's tag
            path += f".{part}" if path else str(part)
        previous = part
    return path or "(template)"


def _describe(error: ValidationError, source: str) -> str:
    """One line per problem, each naming the file and the field."""
    lines, seen = [], set()
    for problem in error.errors():
        where = _field_path(problem["loc"])
        if (where, problem["msg"]) in seen:
            continue
        seen.add((where, problem["msg"]))
        message = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "extra_forbidden":
            message = "unknown field"
        lines.append(f"{source}: {where}: {message}")
    return "\n".join(lines)


def parse_template(
    raw: str | bytes, name: str, source: str, script_keys: set[str] | None = None
) -> Template:
    """Validate template JSON; `script_keys` (when given) are the script stems that exist."""
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise TemplateError(f"{source}: not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise TemplateError(f"{source}: a template is a JSON object with 'segments'")
    try:
        template = Template.model_validate({**data, "name": name})
    except ValidationError as error:
        raise TemplateError(_describe(error, source)) from None
    for index, segment in enumerate(template.segments):
        if not isinstance(segment, StemSegment):
            continue
        stem = StemId.parse(segment.stem)
        if stem.kind == "script" and script_keys is not None and stem.slug not in script_keys:
            known = ", ".join(sorted(script_keys)) or "none"
            raise TemplateError(
                f"{source}: segments[{index}].stem: unknown stem {segment.stem!r} "
                f"(script keys in the scripts dataset: {known})"
            )
    return template


def template_path(name: str, settings: Settings) -> Path:
    """`double_anchor` or `double_anchor.json` → templates/double_anchor.json (no escapes)."""
    stem = name.removesuffix(".json")
    if not _TEMPLATE_NAME.fullmatch(stem):
        raise TemplateError(
            f"{name!r} is not a template name; use letters, digits, '_' and '-' "
            "(e.g. double_anchor or double_anchor.json)"
        )
    return Path(settings.templates_dir) / f"{stem}.json"


def load_template(name: str, settings: Settings, script_keys: set[str] | None = None) -> Template:
    """Load and validate `templates/<name>.json`."""
    path = template_path(name, settings)
    kinds.load(settings)  # its slots may be kinds of the data folder's kinds.json
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        known = ", ".join(list_templates(settings)) or "none"
        raise TemplateError(f"unknown template {name!r}; available: {known}") from None
    return parse_template(raw, path.stem, str(path), script_keys)


def list_templates(settings: Settings) -> list[str]:
    """Names of the templates in the templates folder."""
    folder = Path(settings.templates_dir)
    return sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []
