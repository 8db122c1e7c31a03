"""Stem kinds, defined once: what each kind is called, where its dataset lives, its form.

A kind (`name`, `developer`, `script`, …) is the first part of a stem id
(`stem.<kind>.<slug>`), a template slot, a dataset and, when `rotation` is true, a rotation
stream. Everything that lists kinds (stem ids, datasets, templates, the API, the CLI through
`GET /kinds`, the dashboard, the rotation) reads them from here.

Dataset forms:
- `lines`: one text per line (txt), row (csv) or item (json list); the text is spoken and
  is the stem's identity.
- `mapping`: key → phrase (csv `key,phrase` or a json object); the key is the stem's
  identity (a phrase can be edited and keep its id) and the phrase is spoken.

Built-ins are `name`, `developer` and `script`. More kinds are data, not code: a JSON file
`kinds.json` beside the datasets (in `DATA_DIR`), for example

    {"kinds": [{"name": "intro", "plural": "intros", "dataset": "intros.txt"}]}

(`form` defaults to `lines`, `rotation` to false, `aliases` to none; `dataset` is a file
name inside the data folder). The registry is process-wide and only grows: once loaded, a
kind stays known to every stem id in the process (stored stems keep parsing), and a file may
add kinds but never redefine one. `load(settings)` reads the file again when it changes.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Annotated, Literal, overload

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

if TYPE_CHECKING:  # only a type here: stems (which imports this module) stays light
    from hybrid_audio.config import Settings

#: The file of extra kinds, inside the data folder.
KINDS_FILENAME = "kinds.json"
#: Words a kind may not take: `pair` is the rotation's name × developer stream.
RESERVED = frozenset({"pair"})
_WORD = r"[a-z]+"  # the stem id grammar's kind: `stem.<kind>.<slug>`
_DATASET_SUFFIXES = {"lines": (".txt", ".csv", ".json"), "mapping": (".csv", ".json")}


class KindsError(ValueError):
    """A kinds file is malformed or contradicts a kind already known."""


class Kind(BaseModel):
    """One kind of stem. `setting` (built-ins) names the Settings field holding the dataset
    path, so COMMON_NAMES_FILE & co. keep working; other kinds name a `dataset` file in the
    data folder."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(pattern=f"^{_WORD}$", max_length=32)]
    plural: Annotated[str, Field(pattern=f"^{_WORD}$", max_length=32)]
    aliases: tuple[Annotated[str, Field(pattern=f"^{_WORD}$", max_length=32)], ...] = ()
    form: Literal["lines", "mapping"] = "lines"
    dataset: str = ""
    setting: str = Field(default="", exclude=True)
    rotation: bool = False

    @field_validator("dataset")
    @classmethod
    def _inside_data_folder(cls, value: str) -> str:
        path = PurePosixPath(value)
        if value and (path.is_absolute() or ".." in path.parts or "\\" in value):
            raise ValueError(f"{value!r}: a dataset is a file name inside the data folder")
        return value

    @model_validator(mode="after")
    def _one_dataset(self) -> Kind:
        if bool(self.setting) == bool(self.dataset):
            raise ValueError(f"kind {self.name!r} needs exactly one of 'dataset' or 'setting'")
        if self.dataset and PurePosixPath(self.dataset).suffix not in _DATASET_SUFFIXES[self.form]:
            allowed = ", ".join(_DATASET_SUFFIXES[self.form])
            raise ValueError(f"kind {self.name!r}: a {self.form} dataset is one of {allowed}")
        return self

    @property
    def words(self) -> tuple[str, ...]:
        """Every spelling that means this kind: name, plural, aliases."""
        return (self.name, self.plural, *self.aliases)

    def dataset_path(self, settings: Settings) -> Path:
        """The file holding this kind's dataset under `settings`."""
        if self.setting:
            return Path(getattr(settings, self.setting))
        return Path(settings.data_dir) / self.dataset


BUILTIN: tuple[Kind, ...] = (
    Kind(name="name", plural="names", setting="common_names_file", rotation=True),
    Kind(name="developer", plural="developers", setting="developer_names_file", rotation=True),
    Kind(name="script", plural="scripts", form="mapping", setting="scripts_file", rotation=True),
)


class _KindsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kinds: list[Kind]


_lock = threading.Lock()
_registry: dict[str, Kind] = {kind.name: kind for kind in BUILTIN}
#: Kinds files read, by path: the (mtime_ns, size) they had.
_read: dict[Path, tuple[int, int]] = {}


def _register(new: Sequence[Kind], source: str) -> None:
    """Add `new` to the registry, all or none; a kind is defined once, and no spelling may
    mean two kinds."""
    with _lock:
        merged = dict(_registry)
        for kind in new:
            if kind.setting:
                raise KindsError(f"{source}: kind {kind.name!r}: 'setting' is for built-ins")
            known = merged.get(kind.name)
            if known is not None and known != kind:
                raise KindsError(f"{source}: kind {kind.name!r} is already defined differently")
            merged[kind.name] = kind
        owner: dict[str, str] = {}
        for kind in merged.values():
            for word in kind.words:
                if word in RESERVED:
                    raise KindsError(f"{source}: {word!r} is reserved (the pair stream)")
                if owner.setdefault(word, kind.name) != kind.name:
                    raise KindsError(
                        f"{source}: {word!r} would mean both {owner[word]!r} and {kind.name!r}"
                    )
        _registry.clear()
        _registry.update(merged)


def load(settings: Settings) -> tuple[Kind, ...]:
    """Every known kind, after reading `<data_dir>/kinds.json` if it exists and changed.

    Raises `KindsError` naming the file for malformed JSON, a bad field, or a kind that
    contradicts one already known.
    """
    path = Path(settings.data_dir) / KINDS_FILENAME
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return kinds()
    stamp = (stat.st_mtime_ns, stat.st_size)
    if _read.get(path) != stamp:
        source = KINDS_FILENAME
        try:
            parsed = _KindsFile.model_validate_json(path.read_bytes())
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '(file)'}: {e['msg']}"
                for e in error.errors()
            )
            raise KindsError(f"{source}: {problems}") from None
        _register(parsed.kinds, source)
        _read[path] = stamp
    return kinds()


def kinds() -> tuple[Kind, ...]:
    """Every kind known in this process, built-ins first."""
    with _lock:
        return tuple(_registry.values())


def names() -> tuple[str, ...]:
    """The names of every known kind."""
    return tuple(kind.name for kind in kinds())


def rotation_kinds() -> tuple[Kind, ...]:
    """The kinds that are rotation streams."""
    return tuple(kind for kind in kinds() if kind.rotation)


def get(word: str) -> Kind:
    """The kind `word` names (its name, plural or an alias; any case).

    Raises `KeyError` listing the known kinds.
    """
    lowered = word.lower() if isinstance(word, str) else word
    for kind in kinds():
        if lowered in kind.words:
            return kind
    raise KeyError(f"unknown kind {word!r}; known kinds: {', '.join(names())}")


def is_kind(name: object) -> bool:
    """Whether `name` is exactly the name of a known kind (not a plural or alias)."""
    with _lock:
        return name in _registry


class KindNames(Sequence[str]):
    """A live, read-only view of the known kinds' names (`stems.KINDS`): a kind loaded
    later is in it too."""

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[str, ...]: ...

    def __getitem__(self, index: int | slice) -> str | tuple[str, ...]:
        return names()[index]

    def __len__(self) -> int:
        return len(names())

    def __contains__(self, value: object) -> bool:
        return is_kind(value)

    def __iter__(self) -> Iterator[str]:
        return iter(names())

    def __repr__(self) -> str:
        return f"KindNames{names()!r}"
