"""Names, developers and scripts: loading, deduplication by stem id, and import.

A dataset is a list of texts to speak. Two texts with the same stem id ("John" and
"john", or a name listed twice; see `stems` for the rule) are one stem: the first one wins
and the collision is reported, never silently merged. Imports accept txt, csv and json, reject malformed files with the line
number, and replace the dataset file atomically. This module never synthesizes.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hybrid_audio.config import Settings
from hybrid_audio.files import atomic_write
from hybrid_audio.stems import KINDS, StemId

#: Uploads bigger than this are refused before parsing.
MAX_IMPORT_BYTES = 5 * 1024 * 1024


class DatasetError(ValueError):
    """A dataset file is malformed; the message names the file and line."""


@dataclass(frozen=True)
class Item:
    """One entry: the text as given (spoken), its stem id, and for scripts the key."""

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


def _entries_from_text(raw: str, suffix: str, kind: str, source: str) -> list[tuple[int, str, str]]:
    """(line, key, text) triples; key == text except for scripts."""
    if suffix == ".json":
        return _entries_from_json(raw, kind, source)
    if suffix == ".csv":
        return _entries_from_csv(raw, kind, source)
    if suffix in (".txt", ""):
        if kind == "script":
            raise DatasetError(f"{source}: scripts need key and phrase: use .csv or .json")
        return [
            (n, line.strip(), line.strip())
            for n, line in enumerate(raw.splitlines(), 1)
            if line.strip() and not line.lstrip().startswith("#")
        ]
    raise DatasetError(f"{source}: unsupported file type {suffix!r}; use .txt, .csv or .json")


def _entries_from_csv(raw: str, kind: str, source: str) -> list[tuple[int, str, str]]:
    entries = []
    reader = csv.reader(io.StringIO(raw))
    try:
        for row in reader:
            line = reader.line_num
            cells = [c.strip() for c in row]
            if not any(cells) or cells[0].startswith("#"):
                continue
            if kind == "script":
                if len(cells) != 2 or not all(cells):
                    raise DatasetError(f"{source}:{line}: expected 'key,phrase', got {row!r}")
                if line == 1 and cells == ["key", "phrase"]:
                    continue
                entries.append((line, cells[0], cells[1]))
            else:
                if len(cells) != 1 or not cells[0]:
                    raise DatasetError(f"{source}:{line}: expected one {kind} per row, got {row!r}")
                if line == 1 and cells[0].lower() == kind:
                    continue  # header row
                entries.append((line, cells[0], cells[0]))
    except csv.Error as error:
        raise DatasetError(f"{source}:{reader.line_num}: {error}") from None
    return entries


def _entries_from_json(raw: str, kind: str, source: str) -> list[tuple[int, str, str]]:
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as error:
        raise DatasetError(f"{source}:{error.lineno}: invalid JSON: {error.msg}") from None
    if kind == "script":
        if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and v.strip() for k, v in data.items()
        ):
            raise DatasetError(f'{source}: scripts must be a JSON object {{"key": "phrase"}}')
        return [(n, k, v.strip()) for n, (k, v) in enumerate(data.items(), 1)]
    if not isinstance(data, list):
        raise DatasetError(f"{source}: expected a JSON list of {kind}s")
    entries = []
    for n, value in enumerate(data, 1):
        if not isinstance(value, str) or not value.strip():
            raise DatasetError(f"{source}: item {n} is {value!r}, not a non-empty string")
        entries.append((n, value.strip(), value.strip()))
    return entries


def parse_dataset(raw: str, kind: str, suffix: str, source: str = "<upload>") -> Dataset:
    """Parse dataset text; malformed structure raises, unusable entries are listed."""
    _check_kind(kind)
    return _dedup(kind, _entries_from_text(raw, suffix.lower(), kind, source))


def dataset_from_texts(kind: str, texts: Sequence[str]) -> Dataset:
    """A dataset of texts given directly (an API request, a notebook list): no file syntax,
    so a name starting with "#" or holding a comma is just a name."""
    _check_kind(kind)
    return _dedup(kind, [(n, t.strip(), t.strip()) for n, t in enumerate(texts, 1) if t.strip()])


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise DatasetError(f"unknown dataset kind {kind!r}; known: {', '.join(KINDS)}")


def _dedup(kind: str, entries: list[tuple[int, str, str]]) -> Dataset:
    """One item per stem id (the first wins; the rest are collisions), unusable ones listed."""
    dataset = Dataset(kind)
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
        dataset.items.append(Item(text, stem_id, key if kind == "script" else None))
    return dataset


def dataset_path(kind: str, settings: Settings) -> Path:
    """The file that holds `kind`'s dataset."""
    paths = {
        "name": settings.common_names_file,
        "developer": settings.developer_names_file,
        "script": settings.scripts_file,
    }
    _check_kind(kind)
    return paths[kind]


def load_dataset(kind: str, settings: Settings) -> Dataset:
    """The current dataset of `kind` from its file."""
    path = dataset_path(kind, settings)
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError(f"{path}: dataset file not found") from None
    except UnicodeDecodeError as error:
        raise DatasetError(f"{path}: not UTF-8 text ({error.reason})") from None
    return parse_dataset(raw, kind, path.suffix, str(path))


def import_dataset(kind: str, file: Path | str, settings: Settings) -> Dataset:
    """Validate `file` and make it the dataset of `kind` (atomic replace).

    Nothing is written unless the whole file parses and yields at least one entry.
    """
    source = Path(file)
    if source.stat().st_size > MAX_IMPORT_BYTES:
        raise DatasetError(f"{source}: larger than {MAX_IMPORT_BYTES // (1024 * 1024)} MiB")
    try:
        raw = source.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise DatasetError(f"{source}: not UTF-8 text ({error.reason})") from None
    dataset = parse_dataset(raw, kind, source.suffix, str(source))
    if not dataset.items:
        raise DatasetError(f"{source}: no usable {kind} entries")
    _write_dataset(dataset, dataset_path(kind, settings))
    return dataset


def _write_dataset(dataset: Dataset, target: Path) -> None:
    if dataset.kind == "script":
        body = json.dumps({i.key: i.text for i in dataset.items}, ensure_ascii=False, indent=2)
        target = target if target.suffix == ".json" else target.with_suffix(".json")
    else:
        body = "\n".join(dataset.texts())
    atomic_write(target, (body + "\n").encode())
