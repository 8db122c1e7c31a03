"""Stem ids (`stem.<kind>.<slug>`), name normalization and stem paths.

A stem id is the only thing that decides where a stem lives on disk, so this module is
where hostile text is made safe: `normalize()` turns any text into `[a-z0-9_]` or refuses
it, `StemId.parse()` accepts only the grammar, and `stem_path()` is a pure function that
cannot leave the stems folder. It never touches the filesystem.
"""

from __future__ import annotations

import os
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

#: Kinds of stem. Add a kind here (and a generator for it) to support a new one.
KINDS = ("name", "developer", "script")
MAX_SLUG = 64
#: Longer input is not a name or a script key but a mistake (or an attack); refuse it
#: instead of silently keeping its first 64 characters.
MAX_TEXT = 256

_SLUG_RUN = re.compile(r"[^a-z0-9]+")
#: Latin letters that NFKD does not decompose into an ASCII base letter; without this table
#: "Søren" would become "sren" and "Łukasz" "ukasz". Applied after casefolding.
_LATIN_EXTRA = str.maketrans(
    {"ø": "o", "æ": "ae", "œ": "oe", "ł": "l", "đ": "d", "ð": "d", "þ": "th", "ħ": "h", "ı": "i"}
)
_STEM_ID = re.compile(r"stem\.([a-z]+)\.([a-z0-9]+(?:_[a-z0-9]+)*)")


def normalize(text: str) -> str:
    """The slug of `text`: casefold, NFKD to ASCII, runs of other characters → `_`.

    "José María" → "jose_maria", "O'Brien" → "o_brien", "Straße" → "strasse", "Søren" →
    "soren" (a few Latin letters NFKD leaves alone are mapped by hand). Raises
    `ValueError` when nothing usable is left (empty, only emoji or symbols, a script with
    no Latin letters) or when the text is longer than `MAX_TEXT` characters.
    """
    if not isinstance(text, str):
        raise TypeError(f"expected text, got {type(text).__name__}")
    if len(text) > MAX_TEXT:
        raise ValueError(f"text is {len(text)} characters long; at most {MAX_TEXT} allowed")
    folded = unicodedata.normalize("NFKD", text.casefold().translate(_LATIN_EXTRA))
    ascii_text = folded.encode("ascii", "ignore").decode("ascii")
    slug = _SLUG_RUN.sub("_", ascii_text).strip("_")[:MAX_SLUG].rstrip("_")
    if not slug:
        raise ValueError(
            f"{text!r} has no letters or digits that fold to ASCII (a-z, 0-9); "
            "cannot make a stem id from it"
        )
    return slug


@dataclass(frozen=True, order=True)
class StemId:
    """`stem.<kind>.<slug>`; construct with `for_text()` or `parse()`."""

    kind: str
    slug: str

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown stem kind {self.kind!r}; known kinds: {', '.join(KINDS)}")
        if len(self.slug) > MAX_SLUG or not _STEM_ID.fullmatch(f"stem.{self.kind}.{self.slug}"):
            raise ValueError(
                f"invalid slug {self.slug!r}: use a-z, 0-9 and single inner '_', "
                f"at most {MAX_SLUG} characters"
            )

    @classmethod
    def for_text(cls, kind: str, text: str) -> StemId:
        """The stem id of `text` spoken as a `kind` ("José" → stem.name.jose)."""
        return cls(kind, normalize(text))

    @classmethod
    def parse(cls, value: str) -> StemId:
        """Parse `stem.<kind>.<slug>`; anything else raises `ValueError`."""
        match = _STEM_ID.fullmatch(value) if isinstance(value, str) else None
        if match is None:
            raise ValueError(
                f"{value!r} is not a stem id; expected stem.<kind>.<slug> "
                "with a slug of a-z, 0-9 and '_' (e.g. stem.name.jose_maria)"
            )
        return cls(match.group(1), match.group(2))

    def __str__(self) -> str:
        return f"stem.{self.kind}.{self.slug}"

    @property
    def filename(self) -> str:
        return f"{self}.wav"


def stem_path(stem_id: StemId | str, stems_dir: Path | str) -> Path:
    """`stem.name.john` → `<stems_dir>/name/stem.name.john.wav` (pure; no disk access)."""
    sid = stem_id if isinstance(stem_id, StemId) else StemId.parse(stem_id)
    root = Path(stems_dir)
    path = root / sid.kind / sid.filename
    # The grammar already forbids separators and dots in kind and slug; this guards the
    # invariant itself should the grammar ever be loosened.
    if not Path(os.path.normpath(path)).is_relative_to(os.path.normpath(root)):
        raise ValueError(f"{sid} would resolve outside {root}")
    return path
