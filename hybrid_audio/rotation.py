"""RotationEngine: deterministic cycles over the rotation kinds' datasets and their pairs.

One stream per kind the registry marks `rotation` (`hybrid_audio.kinds`: built-ins `name`,
`developer` and `script`, which returns script keys), plus `pair` (a name and a
developer). Cycle *k* of a stream is a permutation of its items fixed only by (stream,
seed, dataset fingerprint, *k*) — `feistel.cycle_bijection`, O(1) memory whatever the
size — so the same seed and data give the same sequence on any machine, every item comes
exactly once per cycle, and the next cycle has another order. Pair index `i` means name
`i // M` and developer `i % M` (M developers), so a pair cycle covers every name ×
developer combination exactly once.

Cursors (cycle, position) live only in SQLite, in the `rotation_cursors` table of the
shared database: each step reads and advances its cursor inside one `BEGIN IMMEDIATE`
transaction, so threads and processes never receive the same (cycle, position), and a
restarted process continues where the last one stopped. A cursor is kept per (stream,
seed): another seed is another, independent rotation. When a stream's dataset fingerprint
differs from the stored one, the next step starts a new cycle with the new data and a
`dataset_changed` event is logged. Every step is one `rotation_step` line in
`<logs_dir>/rotation.jsonl`, written after the commit (the database is the source of
truth: a process killed between the two loses that one log line, never a cursor update).

What the engine shows is published as parameters: `last_step` and `cursors` (every
stream's cursor), kept current by this process's steps and by `refresh()` for other
processes'. This module knows nothing of assembly: turning a pair into a message is the
workspace's job (`Workspace.generate_pair`).
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import param
from pydantic import BaseModel, computed_field

from hybrid_audio import kinds
from hybrid_audio.config import Settings
from hybrid_audio.database import Database
from hybrid_audio.datasets import dataset_path, load_dataset
from hybrid_audio.feistel import MAX_SIZE, Bijection, cycle_bijection
from hybrid_audio.live import read_revision
from hybrid_audio.logs import JsonlLog

#: The pair stream: a name × developer, on top of the kinds' own streams.
PAIR = "pair"
#: The built-in streams (`RotationEngine.streams` adds the rotation kinds of a kinds.json).
STREAMS = (*(kind.name for kind in kinds.BUILTIN if kind.rotation), PAIR)
#: The engine parameter that can inject each built-in stream's list instead of its file.
_LIST_PARAM = {"name": "names", "developer": "developers", "script": "script_keys"}
#: Positions a stream reserves at a time (`RotationEngine.chunks`): the most a reader that
#: hangs up can leave taken but never handed to its connection.
STREAM_CHUNK = 16


def stream_names() -> tuple[str, ...]:
    """The streams of the kinds known in this process: the rotation kinds, then `pair`."""
    return (*(kind.name for kind in kinds.rotation_kinds()), PAIR)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _check_count(count: int) -> int:
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"count must be a non-negative integer; got {count!r}")
    return count


def fingerprint(items: Iterable[str]) -> str:
    """sha256 of the ordered items (length-prefixed UTF-8): the same data on any machine
    gives the same fingerprint; any edit, addition, removal or reordering changes it."""
    digest = hashlib.sha256(b"hybrid_audio.rotation.dataset.v1\n")
    chunk: list[bytes] = []
    for item in items:
        data = item.encode()
        chunk.append(len(data).to_bytes(4, "big"))
        chunk.append(data)
        if len(chunk) >= 8192:
            digest.update(b"".join(chunk))
            chunk.clear()
    digest.update(b"".join(chunk))
    return digest.hexdigest()


# --- results ----------------------------------------------------------------------------


class RotationStep(BaseModel):
    """One step of a stream: where it was taken (cycle, position) and what it gave.

    Single streams fill `item` (name text, developer text or script key) and `text` (what
    is spoken: the same, or a script's phrase). The pair stream fills `name`, `developer`
    and their indices; its `index` is `name_index * developers + developer_index`.
    """

    stream: str
    seed: int
    cycle: int
    position: int
    index: int
    size: int
    fingerprint: str
    item: str | None = None
    text: str | None = None
    name: str | None = None
    developer: str | None = None
    name_index: int | None = None
    developer_index: int | None = None


class StreamState(BaseModel):
    """A stream's cursor: the next step will be `position` of `cycle`.

    `stale` is True when the dataset changed since the cursor was stored, so the next step
    starts a new cycle. Streams never stepped report cycle 0, position 0 and no timestamps.
    """

    stream: str
    seed: int
    cycle: int
    position: int
    size: int
    fingerprint: str
    created_at: str | None = None
    updated_at: str | None = None
    stale: bool = False

    @computed_field  # type: ignore[prop-decorator]
    @property
    def progress(self) -> float:
        """Share of the current cycle already served."""
        return self.position / self.size if self.size else 0.0


@dataclass(frozen=True, eq=False)
class _Data:
    """The current contents of one stream: what it returns, what is spoken, fingerprint."""

    stream: str
    size: int
    fingerprint: str
    items: Sequence[str] = ()  # single streams: the returned values
    texts: Sequence[str] = ()  # single streams: the spoken texts
    names: _Data | None = None  # pair stream: its two lists
    developers: _Data | None = None


@dataclass(frozen=True)
class _Run:
    """`count` consecutive positions of one cycle, starting at `start`."""

    cycle: int
    start: int
    count: int


# --- the engine -------------------------------------------------------------------------


class RotationEngine(param.Parameterized):
    """Deterministic, persisted rotation over the rotation kinds' datasets and pairs.

    `next_name/next_developer/next_script/next_pair` return plain values; `step(stream)`,
    `next_pair_step()` and `take(stream, n)` return `RotationStep`s with cycle and position;
    `pairs(n)` / `scripts(n)` are lazy generators (one transaction per item). `at`,
    `preview` and `bijection` look without advancing. Safe to share between threads.
    Outputs to watch: `last_step` and `cursors`.
    """

    settings = param.ClassSelector(
        class_=Settings,
        doc="Where the database (cursors) and logs live, and the dataset files; "
        "None → Settings.from_env().",
    )
    seed = param.Integer(
        default=0,
        bounds=(0, 2**63 - 1),
        doc="Fixes every cycle's order together with the data; each seed has its own cursors.",
    )
    names = param.List(
        default=None,
        allow_None=True,
        item_type=str,
        doc="Names to rotate instead of the names dataset file (None → load it). "
        "Assign a new list to change it; in-place edits are not noticed.",
    )
    developers = param.List(
        default=None,
        allow_None=True,
        item_type=str,
        doc="Developers to rotate instead of the developers dataset file (None → load it).",
    )
    script_keys = param.List(
        default=None,
        allow_None=True,
        item_type=str,
        doc="Script keys to rotate instead of the scripts dataset file (None → load it). "
        "Not called `scripts`: that is the generator method, as for `pairs`.",
    )
    log_steps = param.Boolean(
        default=True, doc="Write one rotation_step line per step to <logs_dir>/rotation.jsonl."
    )

    last_step = param.ClassSelector(
        class_=RotationStep,
        default=None,
        allow_None=True,
        doc="Output: the latest step this object took, any stream.",
    )
    cursors = param.Dict(
        default={},
        doc="Output: stream → StreamState, every stream's cursor for the current seed. This "
        "process's steps and resets update it at once; `refresh()` brings other processes' "
        "steps and changed dataset files. Empty until the first step, reset or refresh.",
    )

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        if self.settings is None:
            self.settings = Settings.from_env()
        self._database: Database | None = None
        self._publish_lock = threading.RLock()  # a watcher of cursors may step in turn
        self._cursor_sources: tuple[Any, ...] | None = None  # what `cursors` was read from
        self._cursors_revision = -1  # the database's rotation revision `cursors` shows
        self._log_cache: tuple[Settings, JsonlLog] | None = None
        # stream → (signature of its source, data, object kept alive for the signature)
        self._data_cache: dict[str, tuple[Any, _Data, Any]] = {}
        # Resolved once per Settings object: they are looked up on every step.
        self._database_for: Settings | None = None
        self._files: dict[str, tuple[Settings, str]] = {}
        self._connection()  # creates the schema, fails early on a bad path

    # --- SQLite ---------------------------------------------------------------------------

    def _db(self) -> Database:
        """The database the current settings name."""
        settings = self.settings
        if self._database is None or self._database_for is not settings:
            path = Path(settings.database_path)
            if self._database is None or self._database.path != path:
                self._database = Database(path)
            self._database_for = settings
        return self._database

    def _connection(self) -> sqlite3.Connection:
        return self._db().connection()

    def close(self) -> None:
        """Close this thread's database connection (a later call opens a new one)."""
        if self._database is not None:
            self._database.close()

    def _log(self) -> JsonlLog:
        settings, cached = self.settings, self._log_cache
        if cached is None or cached[0] is not settings:
            log = JsonlLog(Path(settings.logs_dir) / "rotation.jsonl", settings.log_max_bytes)
            self._log_cache = cached = (settings, log)
        return cached[1]

    # --- streams and data -----------------------------------------------------------------

    @property
    def streams(self) -> tuple[str, ...]:
        """The rotation kinds of the registry (kinds.json included), then `pair`."""
        kinds.load(self.settings)
        return stream_names()

    def _check_stream(self, stream: str) -> str:
        if stream in STREAMS:  # built-ins always exist: no need to look at kinds.json
            return stream
        streams = self.streams
        if stream not in streams:
            raise ValueError(f"unknown rotation stream {stream!r}; streams: {', '.join(streams)}")
        return stream

    def _injected(self, stream: str) -> list[str] | None:
        """The list given for `stream` instead of its dataset file, if any."""
        return getattr(self, _LIST_PARAM[stream]) if stream in _LIST_PARAM else None

    def _source(self, stream: str) -> tuple[Any, ...]:
        """What a single stream's data comes from, cheaply: it changes when the data does
        (an injected list reassigned, a dataset file rewritten — an import, say)."""
        injected = self._injected(stream)
        if injected is not None:
            # The cache holds the list itself, so its id cannot be reused by another list.
            return ("list", id(injected), len(injected))
        path = self._dataset_file(stream)
        try:
            st = os.stat(path)
        except OSError:
            return ("file", path, None)  # load_dataset names the problem
        return ("file", path, st.st_ino, st.st_size, st.st_mtime_ns)

    def _dataset_file(self, stream: str) -> str:
        """The dataset file of `stream` under the current settings (a kind's file never
        changes once known, so it is resolved once per Settings object)."""
        settings = self.settings
        cached = self._files.get(stream)
        if cached is None or cached[0] is not settings:
            cached = (settings, os.fspath(dataset_path(stream, settings)))
            self._files[stream] = cached
        return cached[1]

    def _list_data(self, stream: str) -> _Data:
        """A single list, injected or from its dataset file; reloaded when either changes."""
        injected = self._injected(stream)
        signature = self._source(stream)
        cached = self._data_cache.get(stream)
        if cached is not None and cached[0] == signature:
            return cached[1]
        data = self._load_list(stream, injected)
        self._data_cache[stream] = (signature, data, injected)
        return data

    def _load_list(self, stream: str, injected: list[str] | None) -> _Data:
        if injected is not None:
            label = f"{_LIST_PARAM[stream]} list"
            items: list[str] = list(injected)
            texts: list[str] = items
            seen: dict[str, int] = {}
            for number, item in enumerate(items, 1):
                if item in seen:
                    raise ValueError(
                        f"the {label} has {item!r} twice (items {seen[item]} and {number}); "
                        "each item must come once per cycle"
                    )
                seen[item] = number
            del seen
        else:
            dataset = load_dataset(stream, self.settings)
            label = f"{stream} dataset ({dataset_path(stream, self.settings)})"
            if kinds.get(stream).form == "mapping":  # a script key, not its phrase
                items = [item.key or item.text for item in dataset.items]
            else:
                items = dataset.texts()
            texts = dataset.texts()
        if not items:
            raise ValueError(f"the {label} is empty: nothing to rotate")
        return _Data(stream, len(items), fingerprint(items), items=items, texts=texts)

    def _data(self, stream: str) -> _Data:
        """The current data of `stream`; `ValueError` for an unknown stream."""
        if stream != PAIR:
            return self._list_data(self._check_stream(stream))
        names, developers = self._list_data("name"), self._list_data("developer")
        cached = self._data_cache.get("pair")
        if cached is not None and cached[0][0] is names and cached[0][1] is developers:
            return cached[1]
        size = names.size * developers.size
        if size > MAX_SIZE:
            raise ValueError(f"{names.size} names × {developers.size} developers exceed 2**62")
        combined = hashlib.sha256(
            f"pair\n{names.fingerprint}\n{developers.fingerprint}".encode()
        ).hexdigest()
        data = _Data("pair", size, combined, names=names, developers=developers)
        self._data_cache["pair"] = ((names, developers), data, None)
        return data

    # --- stepping -------------------------------------------------------------------------

    @staticmethod
    def _plan(
        row: tuple[int, int, int, str] | None, data: _Data, count: int
    ) -> tuple[list[_Run], int, int, bool]:
        """Runs of positions for `count` steps from a stored cursor, the cursor after them,
        and whether the dataset changed (which starts a new cycle first)."""
        cycle, position, changed = 0, 0, False
        if row is not None:
            cycle, position, _size, stored_fingerprint = row
            if stored_fingerprint != data.fingerprint:
                cycle, position, changed = cycle + 1, 0, True
            elif position >= data.size:
                cycle, position = cycle + 1, 0
        runs = []
        while count:
            take = min(count, data.size - position)
            runs.append(_Run(cycle, position, take))
            position += take
            count -= take
            if position == data.size:  # wrap eagerly: state() then shows the next cycle
                cycle, position = cycle + 1, 0
        return runs, cycle, position, changed

    def _reserve(
        self, stream: str, seed: int, data: _Data, count: int
    ) -> tuple[list[_Run], _Data, StreamState, int]:
        """Atomically take `count` positions of `stream` (one BEGIN IMMEDIATE transaction).

        Returns the runs and the data they index: when the stored fingerprint differs from
        ours, the dataset is looked at again under the lock, so a process that read the
        file just before another process switched the cursor to a newer version follows
        that version instead of switching it back. Also returns the cursor as stored and
        the rotation revision this write made (for `cursors`).
        """
        now = _now()
        with self._db().write() as db:
            row = self._row(db, stream, seed)
            if row is not None and row[3] != data.fingerprint:
                data = self._data(stream)
            runs, cycle, position, changed = self._plan(row, data, count)
            created = db.execute(
                "INSERT INTO rotation_cursors (stream, seed, cycle, position, size, fingerprint,"
                " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (stream, seed) DO UPDATE SET cycle = excluded.cycle,"
                " position = excluded.position, size = excluded.size,"
                " fingerprint = excluded.fingerprint, updated_at = excluded.updated_at"
                " RETURNING created_at",
                (stream, seed, cycle, position, data.size, data.fingerprint, now, now),
            ).fetchone()
            revision = read_revision(db, "rotation")
        if changed:  # logged whatever log_steps says: it explains a jump in the sequence
            assert row is not None
            self._log().write(
                "dataset_changed",
                stream=stream,
                seed=seed,
                old_cycle=row[0],
                old_position=row[1],
                old_size=row[2],
                old_fingerprint=row[3],
                cycle=runs[0].cycle if runs else cycle,
                size=data.size,
                fingerprint=data.fingerprint,
            )
        cursor = StreamState(
            stream=stream,
            seed=seed,
            cycle=cycle,
            position=position,
            size=data.size,
            fingerprint=data.fingerprint,
            created_at=created[0],
            updated_at=now,
        )
        return runs, data, cursor, revision

    def _steps_of(
        self, stream: str, seed: int, data: _Data, runs: Sequence[_Run]
    ) -> list[RotationStep]:
        """The steps at the given positions: a pure function of seed, data and positions."""
        steps = []
        for run in runs:
            bijection = cycle_bijection(stream, seed, data.fingerprint, run.cycle, data.size)
            if run.count > 16:
                indices: Iterable[int] = bijection.block(run.start, run.count).tolist()
            else:
                indices = (bijection(p) for p in range(run.start, run.start + run.count))
            for offset, index in enumerate(indices):
                position = run.start + offset
                steps.append(self._make_step(stream, seed, data, run.cycle, position, index))
        return steps

    @staticmethod
    def _make_step(
        stream: str, seed: int, data: _Data, cycle: int, position: int, index: int
    ) -> RotationStep:
        common = {
            "stream": stream,
            "seed": seed,
            "cycle": cycle,
            "position": position,
            "index": index,
            "size": data.size,
            "fingerprint": data.fingerprint,
        }
        if stream == "pair":
            assert data.names is not None
            assert data.developers is not None
            name_index, developer_index = divmod(index, data.developers.size)
            return RotationStep(
                **common,
                name=data.names.items[name_index],
                developer=data.developers.items[developer_index],
                name_index=name_index,
                developer_index=developer_index,
            )
        return RotationStep(**common, item=data.items[index], text=data.texts[index])

    def _log_steps(self, steps: list[RotationStep]) -> None:
        if self.log_steps:
            log = self._log()
            for step in steps:
                fields = step.model_dump(exclude_none=True, exclude={"text", "size"})
                log.write("rotation_step", **fields)

    def _publish_cursor(self, cursor: StreamState, revision: int) -> None:
        """Show the cursor a write of this process made (revision `revision`).

        When it is the next revision after the one `cursors` shows, only this stream
        changed; after a gap (another process wrote meanwhile) every cursor is read again.
        An older revision than the one shown (a slower thread) changes nothing.
        """
        with self._publish_lock:
            if revision <= self._cursors_revision:
                return
            if revision == self._cursors_revision + 1 and cursor.seed == self.seed:
                self._cursors_revision = revision
                self.cursors = {**self.cursors, cursor.stream: cursor}
                return
        self.refresh()

    def refresh(self) -> bool:
        """Read every cursor again if the database's rotation revision, the seed or a
        stream's data changed since `cursors` was published; True if it was.

        Other processes' steps reach this process's watchers this way
        (`Workspace.refresh()` calls it), and so does a dataset file an import rewrote.
        """
        revision = read_revision(self._connection(), "rotation")
        sources = (self.seed, *(self._source(s) for s in self.streams if s != PAIR))
        with self._publish_lock:
            if revision == self._cursors_revision and sources == self._cursor_sources:
                return False
            cursors = self.state()
            self._cursor_sources, self._cursors_revision = sources, revision
            self.cursors = cursors
        return True

    def take(self, stream: str, count: int) -> list[RotationStep]:
        """The next `count` steps of `stream`, reserved in one transaction.

        Cheaper than `count` single steps; the positions are consumed even if the caller
        drops some of them, so use `steps()` to consume lazily.
        """
        _check_count(count)
        data = self._data(stream)
        if count == 0:
            return []
        seed = self.seed  # one value for the whole step, even if another thread changes it
        runs, data, cursor, revision = self._reserve(stream, seed, data, count)
        steps = self._steps_of(stream, seed, data, runs)
        self._log_steps(steps)
        self.last_step = steps[-1]
        self._publish_cursor(cursor, revision)
        return steps

    def step(self, stream: str) -> RotationStep:
        """Advance `stream` by one and return what it gave."""
        return self.take(stream, 1)[0]

    def steps(self, stream: str, count: int) -> Iterator[RotationStep]:
        """`count` steps, each taken (one transaction) only when the consumer asks for it."""
        self._check_stream(stream)
        _check_count(count)
        return (self.step(stream) for _ in range(count))

    def chunks(
        self, stream: str, count: int, size: int = STREAM_CHUNK
    ) -> Iterator[list[RotationStep]]:
        """`count` steps in lists of at most `size`, each list taken (one transaction) only
        when the consumer asks for it.

        For consumers that write to a connection: the next list is reserved only after the
        previous one was handed over, so a consumer that stops early has taken at most one
        list it did not pass on (`STREAM_CHUNK` positions), at a cost per step close to
        `take()`'s.
        """
        self._check_stream(stream)
        _check_count(count)
        if size < 1:
            raise ValueError(f"chunk size must be at least 1, not {size}")
        for start in range(0, count, size):
            yield self.take(stream, min(size, count - start))

    def next_name(self) -> str:
        """The next name text."""
        return self._item(self.step("name"))

    def next_developer(self) -> str:
        """The next developer text."""
        return self._item(self.step("developer"))

    def next_script(self) -> str:
        """The next script key."""
        return self._item(self.step("script"))

    def next_pair_step(self) -> RotationStep:
        """The next name × developer pair with its cycle, position and indices."""
        return self.step("pair")

    def next_pair(self) -> tuple[str, str]:
        """The next (name, developer)."""
        step = self.step("pair")
        assert step.name is not None
        assert step.developer is not None
        return step.name, step.developer

    def pairs(self, count: int) -> Iterator[tuple[str, str]]:
        """`count` (name, developer) pairs, taken lazily one by one."""
        return ((s.name or "", s.developer or "") for s in self.steps("pair", count))

    def scripts(self, count: int) -> Iterator[str]:
        """`count` script keys, taken lazily one by one."""
        return (self._item(s) for s in self.steps("script", count))

    @staticmethod
    def _item(step: RotationStep) -> str:
        assert step.item is not None
        return step.item

    # --- inspection (no cursor changes) ---------------------------------------------------

    def at(self, stream: str, cycle: int, position: int) -> RotationStep:
        """What `stream` gives at (cycle, position) with the current data and seed."""
        data = self._data(stream)
        if cycle < 0 or not 0 <= position < data.size:
            raise ValueError(f"(cycle {cycle}, position {position}) outside a {data.size} cycle")
        seed = self.seed
        bijection = cycle_bijection(stream, seed, data.fingerprint, cycle, data.size)
        return self._make_step(stream, seed, data, cycle, position, bijection(position))

    def bijection(self, stream: str, cycle: int) -> Bijection:
        """The permutation of `stream`'s cycle `cycle` with the current data and seed."""
        data = self._data(stream)
        return cycle_bijection(stream, self.seed, data.fingerprint, cycle, data.size)

    def preview(self, stream: str, count: int) -> list[RotationStep]:
        """The next `count` steps as they would come now, without taking them."""
        _check_count(count)
        data = self._data(stream)
        seed = self.seed
        runs, *_ = self._plan(self._row(self._connection(), stream, seed), data, count)
        return self._steps_of(stream, seed, data, runs)

    @staticmethod
    def _row(db: sqlite3.Connection, stream: str, seed: int) -> tuple[int, int, int, str] | None:
        """The stored cursor of (`stream`, `seed`): cycle, position, size, fingerprint."""
        return db.execute(
            "SELECT cycle, position, size, fingerprint FROM rotation_cursors "
            "WHERE stream = ? AND seed = ?",
            (stream, seed),
        ).fetchone()

    def state(self) -> dict[str, StreamState]:
        """Every stream's cursor. Never raises for a bad dataset: a stream whose data cannot
        be loaded reports its stored cursor (or size 0) and `stale` False."""
        rows = {
            row[0]: row
            for row in self._connection().execute(
                "SELECT stream, cycle, position, size, fingerprint, created_at, updated_at "
                "FROM rotation_cursors WHERE seed = ?",
                (self.seed,),
            )
        }
        states = {}
        for stream in self.streams:
            try:
                data: _Data | None = self._data(stream)
            except ValueError:
                data = None
            if stream in rows:
                _, cycle, position, size, stored, created, updated = rows[stream]
                stale = data is not None and data.fingerprint != stored
                states[stream] = StreamState(
                    stream=stream,
                    seed=self.seed,
                    cycle=cycle,
                    position=position,
                    size=size,
                    fingerprint=stored,
                    created_at=created,
                    updated_at=updated,
                    stale=stale,
                )
            else:
                states[stream] = StreamState(
                    stream=stream,
                    seed=self.seed,
                    cycle=0,
                    position=0,
                    size=data.size if data else 0,
                    fingerprint=data.fingerprint if data else "",
                )
        return states

    def reset(self, stream: str) -> StreamState:
        """Start `stream` again at cycle 0, position 0 (with whatever data is current)."""
        self._check_stream(stream)
        with self._db().write() as db:
            row = db.execute(
                "DELETE FROM rotation_cursors WHERE stream = ? AND seed = ? "
                "RETURNING cycle, position",
                (stream, self.seed),
            ).fetchone()
        if self.log_steps:
            self._log().write(
                "rotation_reset",
                stream=stream,
                seed=self.seed,
                old_cycle=row[0] if row else None,
                old_position=row[1] if row else None,
            )
        self.refresh()
        return self.cursors[stream]
