"""Datasets of every kind (`kinds`): loading, deduplication by stem id, and import.

A dataset is a list of texts to speak (a `lines` kind such as names) or of keys and the
phrases they stand for (a `mapping` kind such as scripts). Two texts with the same stem id
("John" and "john", or a name listed twice; see `stems` for the rule) are one stem: the
first one wins and the collision is reported, never silently merged. Imports accept txt,
csv and json, reject malformed files with the line number, and replace the dataset file
atomically. This module never synthesizes.

What no dataset file may hold, uploaded or edited on disk: more than
`MAX_IMPORT_BYTES` bytes or `MAX_IMPORT_ENTRIES` lines/items, an entry longer than
`MAX_ENTRY_CHARS` characters, or an invisible character (`REFUSED_CATEGORIES`: controls
such as NUL, ESC and tab; format characters such as the bidi overrides U+202A–U+202E and
U+2066–U+2069, zero-width joiners and an inner BOM; lone surrogates; line and paragraph
separators). Such a file is refused as a whole, naming every offending line (JSON: item),
because it is corrupt or hostile rather than a list with a few unusable names: a name that
renders differently from what is spoken, or that a terminal or browser interprets, has no
place in a dataset. Ordinary spaces (including no-break spaces) are text and stay. JSON
nested deeper than the decoder's recursion limit (a `[[[[…` bomb) is a clear error, caught
as the decoder stops, not a crash.
Messages name files relative to the base directory, never by their absolute server path.
"""

from __future__ import annotations

import csv
import io
import json
import reprlib
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hybrid_audio import kinds
from hybrid_audio.config import Settings
from hybrid_audio.files import atomic_write
from hybrid_audio.kinds import Kind
from hybrid_audio.stems import StemId

#: Uploads bigger than this are refused before parsing.
MAX_IMPORT_BYTES = 5 * 1024 * 1024
#: Most lines (txt, csv) or items (json) a dataset may have; the API's bulk lists allow as
#: many texts.
MAX_IMPORT_ENTRIES = 100_000
#: Longest entry, in characters (the API's single-text limit).
MAX_ENTRY_CHARS = 256
#: Unicode categories refused anywhere in an entry (see the module docstring).
REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
#: Offending entries an error message quotes; `DatasetError.problems` lists them all.
_QUOTED_PROBLEMS = 5
_UNNAMED = {"Cc": "control character", "Cs": "lone surrogate"}
_short = reprlib.Repr(maxstring=40, maxother=40, maxlevel=2, maxlist=3).repr


class DatasetError(ValueError):
    """A dataset file is malformed; the message names the file and line.

    `problems` lists each refused entry as `{"line": n, "reason": ...}` (`"item"` for JSON and
    for texts given directly) so a client can point at every one, not just the first.
    """

    def __init__(self, message: str, problems: Sequence[dict[str, object]] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems)


@dataclass(frozen=True)
class Item:
    """One entry: the text as given (spoken), its stem id, and for a mapping its key."""

    text: str
    stem_id: StemId
    key: str | None = None


@dataclass
class Dataset:
    """Entries in file order, one per stem id, plus what was dropped and why."""

    kind: str
    items: list[Item] = field(default_factory=list)
    collisions: list[tuple[str, str, str]] = field(default_factory=list)  # kept, dropped, id
    rejected: list[tuple[int, str, str]] = field(default_factory=list)  # line, text, reason

    def texts(self) -> list[str]:
        return [item.text for item in self.items]

    def __len__(self) -> int:
        return len(self.items)


def _blank(text: str) -> bool:
    """Only spaces and tabs: a blank line or cell. Other whitespace (\x1c, U+2028…) is an
    entry, so that the check refuses it instead of the strip hiding it."""
    return not text.strip(" \t")


def _entries_from_text(raw: str, suffix: str, kind: str, source: str) -> list[tuple[int, str, str]]:
    """(line, key, text) triples, unstripped; key == text except for mappings."""
    if suffix == ".json":
        return _entries_from_json(raw, kind, source)
    if suffix == ".csv":
        return _entries_from_csv(raw, kind, source)
    if suffix in (".txt", ""):
        if _is_mapping(kind):
            raise DatasetError(f"{source}: {kind}s need key and phrase: use .csv or .json")
        # Split on "\n" only: str.splitlines() would also split on \x0b, \x1c, U+2028…,
        # hiding those characters from the check and shifting every later line number.
        lines = (line.removesuffix("\r") for line in raw.split("\n"))
        return [
            (n, line, line)
            for n, line in enumerate(lines, 1)
            if not _blank(line) and not line.lstrip().startswith("#")
        ]
    raise DatasetError(f"{source}: unsupported file type {suffix!r}; use .txt, .csv or .json")


def _entries_from_csv(raw: str, kind: str, source: str) -> list[tuple[int, str, str]]:
    entries = []
    mapping = _is_mapping(kind)  # once, not per row: it looks the kind up in the registry
    reader = csv.reader(io.StringIO(raw))
    try:
        for row in reader:
            line = reader.line_num
            cells = [c.strip() for c in row]
            if all(_blank(c) for c in row) or cells[0].startswith("#"):
                continue
            if mapping:
                if len(row) != 2 or any(_blank(c) for c in row):
                    got = _short(row)
                    raise DatasetError(f"{source}:{line}: expected 'key,phrase', got {got}")
                if line == 1 and cells == ["key", "phrase"]:
                    continue
                entries.append((line, row[0], row[1]))
            else:
                if len(row) != 1:
                    got = _short(row)
                    raise DatasetError(f"{source}:{line}: expected one {kind} per row, got {got}")
                if line == 1 and cells[0].lower() == kind:
                    continue  # header row
                entries.append((line, row[0], row[0]))
    except csv.Error as error:
        raise DatasetError(f"{source}:{reader.line_num}: {error}") from None
    return entries


def _entries_from_json(raw: str, kind: str, source: str) -> list[tuple[int, str, str]]:
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as error:
        raise DatasetError(f"{source}:{error.lineno}: invalid JSON: {error.msg}") from None
    except RecursionError:  # the C decoder stops cleanly at the interpreter's depth limit
        raise DatasetError(f"{source}: JSON nested too deeply; expected a flat list") from None
    if isinstance(data, list | dict) and len(data) > MAX_IMPORT_ENTRIES:
        raise DatasetError(
            f"{source}: {len(data)} items; a dataset may have at most {MAX_IMPORT_ENTRIES}"
        )
    if _is_mapping(kind):
        if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and v.strip() for k, v in data.items()
        ):
            raise DatasetError(f'{source}: {kind}s must be a JSON object {{"key": "phrase"}}')
        return [(n, k, v) for n, (k, v) in enumerate(data.items(), 1)]
    if not isinstance(data, list):
        raise DatasetError(f"{source}: expected a JSON list of {kind}s")
    entries = []
    for n, value in enumerate(data, 1):
        if not isinstance(value, str) or not value.strip():
            raise DatasetError(f"{source}: item {n} is {_short(value)}, not a non-empty string")
        entries.append((n, value, value))
    return entries


def parse_dataset(raw: str, kind: str, suffix: str, source: str = "<upload>") -> Dataset:
    """Parse dataset text; malformed structure raises, unusable entries are listed."""
    _check_kind(kind)
    suffix = suffix.lower()
    if suffix != ".json":
        lines = raw.count("\n") + (not raw.endswith("\n"))
        if lines > MAX_IMPORT_ENTRIES:
            raise DatasetError(
                f"{source}: {lines} lines; a dataset may have at most {MAX_IMPORT_ENTRIES}"
            )
    entries = _entries_from_text(raw, suffix, kind, source)
    return _dedup(kind, _checked(entries, source, "item" if suffix == ".json" else "line"))


def dataset_from_texts(kind: str, texts: Sequence[str]) -> Dataset:
    """A dataset of texts given directly (an API request, a notebook list): no file syntax,
    so a name starting with "#" or holding a comma is just a name. Nothing is stored, so
    texts are not refused here: each one is made or refused by the engine on its own."""
    _check_kind(kind)
    return _dedup(kind, [(n, t.strip(), t.strip()) for n, t in enumerate(texts, 1) if t.strip()])


def entry_problem(text: str) -> str | None:
    """Why `text` may not be a dataset entry (too long, an invisible character), or None."""
    if len(text) > MAX_ENTRY_CHARS:
        return f"{len(text)} characters; at most {MAX_ENTRY_CHARS}"
    for char in text:
        if unicodedata.category(char) in REFUSED_CATEGORIES:
            name = unicodedata.name(char, "") or _UNNAMED.get(unicodedata.category(char), "")
            return f"invisible character U+{ord(char):04X} ({name}) is not allowed"
    return None


def _checked(
    entries: Sequence[tuple[int, str, str]], source: str, unit: str
) -> list[tuple[int, str, str]]:
    """The entries, stripped, once none is refused by `entry_problem` (checked before the
    strip, so no invisible character is let through by trimming it off an edge)."""
    problems: list[dict[str, object]] = []
    for number, key, text in entries:
        reason = entry_problem(key) or entry_problem(text)
        if reason:
            problems.append({unit: number, "reason": reason})
    if problems:
        quoted = "; ".join(f"{unit} {p[unit]}: {p['reason']}" for p in problems[:_QUOTED_PROBLEMS])
        more = (
            f" (and {len(problems) - _QUOTED_PROBLEMS} more)"
            if len(problems) > _QUOTED_PROBLEMS
            else ""
        )
        count = f"{len(problems)} entries" if len(problems) > 1 else "1 entry"
        raise DatasetError(f"{source}: {count} refused: {quoted}{more}", problems)
    return [(number, key.strip(), text.strip()) for number, key, text in entries]


def _check_kind(kind: str) -> Kind:
    if not kinds.is_kind(kind):
        raise DatasetError(f"unknown dataset kind {kind!r}; known: {', '.join(kinds.names())}")
    return kinds.get(kind)


def _is_mapping(kind: str) -> bool:
    """Whether `kind`'s entries are key → phrase (the key is the stem's identity)."""
    return _check_kind(kind).form == "mapping"


def _dedup(kind: str, entries: list[tuple[int, str, str]]) -> Dataset:
    """One item per stem id (the first wins; the rest are collisions), unusable ones listed."""
    dataset, mapping = Dataset(kind), _is_mapping(kind)
    seen: dict[StemId, str] = {}
    for line, key, text in entries:
        try:
            stem_id = StemId.for_text(kind, key)
        except ValueError as error:
            dataset.rejected.append((line, text, str(error)))
            continue
        if stem_id in seen:
            dataset.collisions.append((seen[stem_id], text, str(stem_id)))
            continue
        seen[stem_id] = text
        dataset.items.append(Item(text, stem_id, key if mapping else None))
    return dataset


_BUILTIN_NAMES = frozenset(kind.name for kind in kinds.BUILTIN)


def dataset_path(kind: str, settings: Settings) -> Path:
    """The file that holds `kind`'s dataset (kinds of `settings`' kinds.json included).

    A built-in kind's file never depends on kinds.json (which cannot redefine it), so the
    file is not looked at for those: this runs on every rotation step.
    """
    if kind not in _BUILTIN_NAMES:
        kinds.load(settings)
    return _check_kind(kind).dataset_path(settings)


def display_path(path: Path, settings: Settings) -> str:
    """`path` as a client may see it: relative to the base directory, else its file name."""
    try:
        return path.relative_to(settings.base_dir).as_posix()
    except ValueError:
        return path.name


def load_dataset(kind: str, settings: Settings) -> Dataset:
    """The current dataset of `kind` from its file."""
    path = dataset_path(kind, settings)
    source = display_path(path, settings)
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError(f"{source}: dataset file not found") from None
    except UnicodeDecodeError as error:
        raise DatasetError(f"{source}: not UTF-8 text ({error.reason})") from None
    return parse_dataset(raw, kind, path.suffix, source)


def import_dataset(kind: str, file: Path | str, settings: Settings) -> Dataset:
    """Validate `file` and make it the dataset of `kind` (atomic replace).

    Nothing is written unless the whole file parses and yields at least one entry.
    """
    source, target = Path(file), dataset_path(kind, settings)
    if source.stat().st_size > MAX_IMPORT_BYTES:
        raise DatasetError(f"{source}: larger than the limit of {MAX_IMPORT_BYTES} bytes")
    try:
        raw = source.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise DatasetError(f"{source}: not UTF-8 text ({error.reason})") from None
    dataset = parse_dataset(raw, kind, source.suffix, str(source))
    if not dataset.items:
        raise DatasetError(f"{source}: no usable {kind} entries")
    _write_dataset(dataset, target)
    return dataset


def _write_dataset(dataset: Dataset, target: Path) -> None:
    if _is_mapping(dataset.kind):
        body = json.dumps({i.key: i.text for i in dataset.items}, ensure_ascii=False, indent=2)
        target = target if target.suffix == ".json" else target.with_suffix(".json")
    else:
        body = "\n".join(dataset.texts())
    atomic_write(target, (body + "\n").encode())
