"""Stem ids (`stem.<kind>.<slug>`), the text a stem speaks, and stem paths.

A stem's identity is the exact text it speaks (NFC), so two texts that could sound
different never share audio, and the same text gets the same id on every machine. Ids stay
readable: the slug is the text folded to `[a-z0-9_]` (`normalize`), and where that fold
loses information the id carries a disambiguator made from the text's sha256.

The rule, step by step (`StemId.for_text`):

1. `spoken_text`: NFC; every run of whitespace becomes one space, ends are stripped.
   Spacing never changes speech, so "Mary  Ann" and " Mary Ann" are one stem. Other
   control characters (NUL, ESC…) are refused, as are texts with no letter or digit of
   any script ("😀", "../.."), and (for an id) texts over `MAX_TEXT` characters.
2. `identity_key`: the spoken text with one case rule: a word (run of letters) of two or
   more letters whose letters after the first are all lowercase gets a lowercase first
   letter ("John" → "john", "Lucía" → "lucía"). Capitalising a word's first letter does
   not change how it is read; every other case difference is kept apart, because it can:
   "JOSE" may be read as an acronym, Piper reads "McDonald" and "Mcdonald" differently,
   and a single letter ("A") may be a letter name or a word.
3. The key *loses nothing* when it is lowercase ASCII words (`[a-z0-9]+`) separated by
   single spaces, at most `MAX_SLUG` characters: its slug (spaces → `_`) maps back to it
   one to one, so the id is `stem.<kind>.<slug>`, exactly as before: "John" →
   `stem.name.john`, "Brightwater Homes" → `stem.developer.brightwater_homes`.
4. Any other key gets `stem.<kind>.<fold>__<first 10 hex of sha256(key)>`, where `<fold>`
   is `normalize(key)` (accents folded, punctuation to `_`, cut at 64) or `x` when nothing
   folds to ASCII: "José" → `stem.name.jose__…`, "李" → `stem.name.x__…`. Plain slugs
   never contain `__` (runs collapse to one `_`), so a disambiguated id can never equal a
   plain one, and two different keys share an id only if their sha256 share 40 bits.

Whether a text can be *spoken* is the engine's decision, not this module's: an id exists
for "李Wei", and the English Piper voice refuses it with `InvalidTextError`.

`StemId.parse()` accepts only the grammar, and `stem_path()` is a pure function that
cannot leave the stems folder. Nothing here touches the filesystem.
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from hybrid_audio.kinds import KindNames

#: Names of the kinds of stem known in this process: a live view of the registry in
#: `hybrid_audio.kinds` (built-ins, plus those of a loaded kinds.json).
KINDS = KindNames()
#: Longest readable slug (the part before any `__` disambiguator).
MAX_SLUG = 64
#: Longer input is not a name or a script key but a mistake (or an attack); refuse it
#: instead of silently keeping its first 64 characters.
MAX_TEXT = 256
#: Hex digits of sha256 in a disambiguator (40 bits).
DISAMBIGUATOR_HEX = 10
#: The slug of a text none of whose letters fold to ASCII ("李" → `x__<hash>`).
NO_ASCII_SLUG = "x"

_SLUG_RUN = re.compile(r"[^a-z0-9]+")
#: Latin letters that NFKD does not decompose into an ASCII base letter; without this table
#: "Søren" would become "sren" and "Łukasz" "ukasz". Applied after casefolding.
_LATIN_EXTRA = str.maketrans(
    {"ø": "o", "æ": "ae", "œ": "oe", "ł": "l", "đ": "d", "ð": "d", "þ": "th", "ħ": "h", "ı": "i"}
)
_WORD = re.compile(r"[^\W\d_]+")  # a run of letters, any script
#: Keys whose slug loses nothing: lowercase ASCII words, single spaces.
_LOSSLESS = re.compile(r"[a-z0-9]+(?: [a-z0-9]+)*")
_SLUG = r"[a-z0-9]+(?:_[a-z0-9]+)*"
_STEM_ID = re.compile(rf"stem\.([a-z]+)\.({_SLUG}(?:__[0-9a-f]{{{DISAMBIGUATOR_HEX}}})?)")


def normalize(text: str) -> str:
    """The readable fold of `text`: casefold, NFKD to ASCII, runs of other characters → `_`.

    "José María" → "jose_maria", "O'Brien" → "o_brien", "Straße" → "strasse", "Søren" →
    "soren" (a few Latin letters NFKD leaves alone are mapped by hand). Many texts share a
    fold, so it is an id only through `StemId.for_text`. Raises `ValueError` when nothing
    usable is left (empty, only emoji or symbols, a script with no Latin letters) or when
    the text is longer than `MAX_TEXT` characters.
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


def spoken_text(text: str) -> str:
    """What is spoken and stored for `text`: NFC, whitespace runs → one space, stripped.

    Raises `ValueError` for text with a control character or with no letter or digit
    (nothing to say).
    """
    if not isinstance(text, str):
        raise TypeError(f"expected text, got {type(text).__name__}")
    spoken = " ".join(unicodedata.normalize("NFC", text).split())
    controls = sorted({f"U+{ord(c):04X}" for c in spoken if unicodedata.category(c) == "Cc"})
    if controls:
        raise ValueError(f"{text!r} contains control characters ({', '.join(controls)})")
    if not any(unicodedata.category(c)[0] in "LN" for c in spoken):
        raise ValueError(f"{text!r} has no letters or digits; there is nothing to speak")
    return spoken


def _lower_initial(match: re.Match[str]) -> str:
    word = match.group()
    rest = word[1:]
    if rest and rest == rest.lower():
        return word[0].lower() + rest
    return word


def identity_key(text: str) -> str:
    """The stem identity of `text`: its spoken text with capitalised words lowercased.

    Two texts are one stem exactly when their keys are equal (see the module docstring).
    """
    return _WORD.sub(_lower_initial, spoken_text(text))


def same_identity(first: str, second: str) -> bool:
    """Whether two texts are one stem's text (equal identity keys); False if either is
    not speakable text at all."""
    try:
        return identity_key(first) == identity_key(second)
    except ValueError:
        return False


def loses_nothing(key: str) -> bool:
    """Whether `key`'s slug (spaces → `_`) maps back to it one to one, so needs no hash."""
    return len(key) <= MAX_SLUG and _LOSSLESS.fullmatch(key) is not None


def slug_for(text: str) -> str:
    """The slug of `text`'s identity: plain when lossless, else `<fold>__<sha256 prefix>`.

    Raises `ValueError` for text over `MAX_TEXT` characters (checked first: a 10 kB
    "name" is a mistake or an attack) or that `spoken_text` refuses.
    """
    if isinstance(text, str) and len(text) > MAX_TEXT:
        raise ValueError(f"text is {len(text)} characters long; at most {MAX_TEXT} allowed")
    key = identity_key(text)
    if loses_nothing(key):
        return key.replace(" ", "_")
    try:
        fold = normalize(key)
    except ValueError:
        fold = NO_ASCII_SLUG
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:DISAMBIGUATOR_HEX]
    return f"{fold}__{digest}"


@dataclass(frozen=True, order=True)
class StemId:
    """`stem.<kind>.<slug>[__<hash>]`; construct with `for_text()` or `parse()`."""

    kind: str
    slug: str

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown stem kind {self.kind!r}; known kinds: {', '.join(KINDS)}")
        readable = self.slug.partition("__")[0] if isinstance(self.slug, str) else ""
        if len(readable) > MAX_SLUG or not _STEM_ID.fullmatch(f"stem.{self.kind}.{self.slug}"):
            raise ValueError(
                f"invalid slug {self.slug!r}: use a-z, 0-9 and single inner '_' "
                f"(at most {MAX_SLUG} characters), optionally followed by "
                f"'__' and {DISAMBIGUATOR_HEX} hex digits"
            )

    @classmethod
    def for_text(cls, kind: str, text: str) -> StemId:
        """The stem id of `text` spoken as a `kind` ("John" → stem.name.john).

        The only way text becomes a stem id; see the module docstring for the rule.
        """
        return cls(kind, slug_for(text))

    @classmethod
    def parse(cls, value: str) -> StemId:
        """Parse `stem.<kind>.<slug>`; anything else raises `ValueError`."""
        match = _STEM_ID.fullmatch(value) if isinstance(value, str) else None
        if match is None:
            raise ValueError(
                f"{value!r} is not a stem id; expected stem.<kind>.<slug> with a slug of "
                "a-z, 0-9 and '_', optionally '__' and a 10-hex disambiguator "
                "(e.g. stem.name.jose_maria, stem.name.jose__1a2b3c4d5e)"
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
