"""The pronunciation dictionary: how a word or phrase should be said, for every engine.

A mispronounced name is the first thing a campaign's reviewer hears. An entry maps a word
or phrase as written ("Nguyen") to a *respelling* any engine reads ("Win") and, optionally,
*phonemes* per engine, in that engine's own notation: espeak phonemes for Piper (sent as
Piper's `[[ … ]]` raw-phoneme input) and IPA phonemes for Cartesia (sent as Sonic's inline
`<<p|h|o|n|e|m|e|s>>`). Entries are applied at generation, before synthesis (shared/DESIGN.md
"Order of sound processing"): whole words, case-insensitively, longest entry first, so
"Nguyen" also fixes "Nguyen Homes". The text the engine is given (`Pronounced.engine_text`)
and the hash of the entries applied (`entry_hash`) are recorded per stem; the hash is part
of what makes the stem, so adding, changing or removing an entry makes the stems that use it
stale and the next generation makes them again — removing it restores the old bytes.

The dictionary lives in the state database (`pronunciations`, migration 8), shared by every
process; its revision counter tells a process that another one changed it.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import unicodedata
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import param
from pydantic import BaseModel, Field

from hybrid_audio.contract import ENGINES
from hybrid_audio.database import Database
from hybrid_audio.live import RevisionPublisher, read_revision
from hybrid_audio.stems import MAX_TEXT, spoken_text

#: How each engine takes phonemes inline (Piper: raw espeak phonemes; Sonic: IPA, `|`-joined).
PHONEME_SYNTAX = {
    "piper": lambda phonemes: f"[[ {phonemes} ]]",
    "cartesia": lambda phonemes: "<<" + "|".join(phonemes.replace("|", " ").split()) + ">>",
}
#: Characters an entry's fields may not hold: they would break the engines' inline syntax.
_RESERVED = re.compile(r"\[\[|\]\]|<<|>>")
#: A bracket right before another: where `plain` puts a space.
_BRACKET_PAIR = re.compile(r"([\[\]<>])(?=[\[\]<>])")
_BRACKETS = "[]<>"
#: Where a whole word may start and end (see `whole_words`).
_WORD_START = r"(?<!\w)(?<!\w['’])"
_WORD_END = r"(?!\w)(?!['’](?!s(?!\w))\w)"


def whole_words(words: Iterable[str]) -> re.Pattern[str] | None:
    """The matcher of `words` as whole words or phrases, any case, longest first (so a
    phrase wins over a word it starts with); None for no words. Entries are applied with it,
    and `staleness.stems_using` finds the stems an entry touches with it.

    A word ends at anything but a letter, digit or `_` — a hyphen too ("Smith-Nguyen") —
    except an apostrophe inside a word: "Can" is not in "can't" nor "Brien" in "O'Brien",
    but a possessive "'s" still ends it ("Can's").

    `re.IGNORECASE` folds one character to one: each word is also matched in its full
    casefold, so "Straße" meets "STRASSE" as well as "straße". (Named groups would say which
    word matched, and spellings that differ only in case would be redundant, but either
    costs sre its fast literal scan: 40-1000x slower at 5000 entries.)"""
    spellings: set[str] = set()
    for word in words:  # a second spelling only where it folds otherwise ("ß"): speed
        spellings |= {word, word.casefold()} if word.casefold() != word.lower() else {word}
    ordered = sorted(spellings, key=lambda word: (-len(word), word))
    if not ordered:
        return None
    alternatives = "|".join(re.escape(word) for word in ordered)
    return re.compile(rf"{_WORD_START}(?:{alternatives}){_WORD_END}", re.IGNORECASE)


def plain(text: str) -> str:
    """`text` with the engines' inline syntax (`[[`, `]]`, `<<`, `>>`) broken apart, so a
    name or a respelling is read as words: only an entry's phonemes reach an engine as
    phonemes (Piper would read `[[ … ]]` in a name as raw phonemes, a stem that says
    something other than its text)."""
    return _BRACKET_PAIR.sub(r"\1 ", text)


class PronunciationEntry(BaseModel):
    """One entry: the text as written, and how to say it."""

    text: str
    respelling: str = ""
    phonemes: dict[str, str] = Field(default_factory=dict)  # engine → phonemes
    note: str = ""
    updated_at: str = ""


class Pronounced(BaseModel):
    """What an engine is given for a spoken text, and which entries made it so."""

    engine_text: str
    entry_hash: str  # sha256 of the entries applied; "" when none applied
    entries: list[str]  # texts of the entries applied, in order of appearance


def _key(text: str) -> str:
    """The entry's identity: its spoken form, casefolded (matching ignores case)."""
    return spoken_text(text).casefold()


def _clean(value: str, what: str) -> str:
    value = " ".join(value.split())
    if len(value) > MAX_TEXT:
        raise ValueError(f"{what} is {len(value)} characters long; at most {MAX_TEXT} allowed")
    if _RESERVED.search(value):
        raise ValueError(f"{what} must not contain [[, ]], << or >> (the engines' own syntax)")
    controls = sorted({f"U+{ord(c):04X}" for c in value if unicodedata.category(c) == "Cc"})
    if controls:  # they would reach the engine, or a terminal listing the entries
        raise ValueError(f"{what} contains control characters ({', '.join(controls)})")
    return value


class PronunciationDictionary(param.Parameterized):
    """The entries of the state database, applied to texts before synthesis."""

    database_path = param.Path(default=None, check_exists=False, doc="The state database.")
    revision = param.Integer(
        default=0,
        bounds=(0, None),
        doc="The state database's pronunciations revision as last seen (watch it to follow "
        "the dictionary; `refresh()` brings in other processes' changes).",
    )

    def __init__(self, **params) -> None:
        super().__init__(**params)
        if self.database_path is None:
            raise ValueError("PronunciationDictionary needs database_path")
        self._db = Database(Path(self.database_path), rows_as_dicts=True)
        self._revision = RevisionPublisher(self, "revision")
        self._lock = threading.Lock()
        self._compiled: tuple[int, re.Pattern[str] | None, dict[str, PronunciationEntry]] = (
            -1,
            None,
            {},
        )
        self.refresh()

    # --- reading ------------------------------------------------------------------------

    def list(self) -> list[PronunciationEntry]:
        """Every entry, ordered by text."""
        rows = self._db.connection().execute("SELECT * FROM pronunciations ORDER BY key")
        return [_entry(row) for row in rows.fetchall()]

    def get(self, text: str) -> PronunciationEntry | None:
        """The entry for `text` (any case), or None."""
        row = (
            self._db.connection()
            .execute("SELECT * FROM pronunciations WHERE key = ?", (_key(text),))
            .fetchone()
        )
        return _entry(row) if row else None

    def resolve(self, spoken: str, engine: str) -> Pronounced:
        """The text `engine` should be given for `spoken`, with the entries applied.

        An entry with phonemes for `engine` is sent as phonemes; otherwise its respelling;
        an entry with neither for this engine does not apply.
        """
        pattern, entries = self._current()
        applied: list[tuple[str, str]] = []
        pieces: list[str] = []  # plain text (respellings in it) and phonemes, alternately
        run, done = "", 0
        for match in pattern.finditer(spoken) if pattern is not None else ():
            entry = _matched(match.group(), entries)
            phonemes = entry.phonemes.get(engine, "")
            said = PHONEME_SYNTAX[engine](phonemes) if phonemes else entry.respelling
            if not said:
                continue
            run += spoken[done : match.start()]
            if phonemes:
                pieces += [plain(run), said]
                run = ""
            else:
                run += said
            applied.append((entry.text, said))
            done = match.end()
        pieces.append(plain(run + spoken[done:]))
        if not applied:
            return Pronounced(engine_text=_join(pieces), entry_hash="", entries=[])
        canonical = json.dumps(applied, ensure_ascii=False, separators=(",", ":"))
        return Pronounced(
            engine_text=_join(pieces),
            entry_hash=hashlib.sha256(canonical.encode()).hexdigest(),
            entries=[text for text, _ in applied],
        )

    def _current(self) -> tuple[re.Pattern[str] | None, dict[str, PronunciationEntry]]:
        """The matcher of the entries at the database's revision (rebuilt when it moved)."""
        revision = read_revision(self._db.connection(), "pronunciations")
        with self._lock:
            built, pattern, entries = self._compiled
            if built != revision:
                entries = {entry.text.casefold(): entry for entry in self.list()}
                pattern = whole_words(entry.text for entry in entries.values())
                self._compiled = (revision, pattern, entries)
        self._revision.publish(revision)
        return pattern, entries

    def refresh(self) -> bool:
        """Show the revision the database holds (changes of other processes)."""
        return self._revision.publish(read_revision(self._db.connection(), "pronunciations"))

    # --- writing ------------------------------------------------------------------------

    def set(
        self,
        text: str,
        respelling: str = "",
        phonemes: dict[str, str] | None = None,
        note: str = "",
    ) -> PronunciationEntry:
        """Add or replace the entry for `text`; ValueError for an entry that says nothing,
        an unknown engine, text that cannot be spoken, or the engines' reserved syntax."""
        spoken = _clean(spoken_text(text), "text")
        respelling = _clean(respelling, "respelling")
        phonemes = {
            engine: _clean(value, f"{engine} phonemes")
            for engine, value in (phonemes or {}).items()
            if value.strip()
        }
        unknown = sorted(set(phonemes) - set(ENGINES))
        if unknown:
            raise ValueError(f"unknown engines {unknown}; known: {', '.join(ENGINES)}")
        if not respelling and not phonemes:
            raise ValueError(f"an entry for {spoken!r} needs a respelling or phonemes")
        if respelling and respelling.casefold() == spoken.casefold():
            raise ValueError(f"the respelling of {spoken!r} is the text itself")
        entry = PronunciationEntry(
            text=spoken,
            respelling=respelling,
            phonemes=phonemes,
            note=" ".join(note.split())[:MAX_TEXT],
            updated_at=datetime.now(UTC).isoformat(timespec="microseconds"),
        )
        with self._db.write() as db:
            db.execute(
                "INSERT INTO pronunciations (key, text, respelling, phonemes, note, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(key) DO UPDATE SET text = excluded.text, "
                "respelling = excluded.respelling, phonemes = excluded.phonemes, "
                "note = excluded.note, updated_at = excluded.updated_at",
                (
                    _key(spoken),
                    entry.text,
                    entry.respelling,
                    json.dumps(entry.phonemes, ensure_ascii=False, sort_keys=True),
                    entry.note,
                    entry.updated_at,
                ),
            )
            revision = read_revision(db, "pronunciations")
        self._revision.publish(revision)
        return entry

    def remove(self, text: str) -> bool:
        """Delete the entry for `text` (any case); True if there was one."""
        with self._db.write() as db:
            deleted = db.execute("DELETE FROM pronunciations WHERE key = ?", (_key(text),))
            revision = read_revision(db, "pronunciations")
        self._revision.publish(revision)
        return bool(deleted.rowcount)


def _matched(found: str, entries: dict[str, PronunciationEntry]) -> PronunciationEntry:
    """The entry whose text the matcher found as `found`: by casefold, or (where
    `re.IGNORECASE` pairs letters casefold does not, like "İ" with "i") the first entry, in
    the matcher's order, that matches it."""
    entry = entries.get(found.casefold())
    if entry is not None:
        return entry
    ordered = sorted(entries.values(), key=lambda entry: (-len(entry.text), entry.text))
    return next(
        entry
        for entry in ordered
        for spelling in (entry.text, entry.text.casefold())
        if re.fullmatch(re.escape(spelling), found, re.IGNORECASE)
    )


def _join(pieces: list[str]) -> str:
    """The pieces as one text, a space between two brackets that would make `[[` or `<<`."""
    text = ""
    for piece in pieces:
        if text[-1:] and piece[:1] and text[-1] in _BRACKETS and piece[0] in _BRACKETS:
            text += " "
        text += piece
    return text


def _entry(row: dict) -> PronunciationEntry:
    return PronunciationEntry(
        text=row["text"],
        respelling=row["respelling"],
        phonemes=json.loads(row["phonemes"] or "{}"),
        note=row["note"],
        updated_at=row["updated_at"],
    )
