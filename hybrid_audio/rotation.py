"""RotationEngine: deterministic cycles over names, developers, scripts and their pairs.

Four streams: `name`, `developer`, `script` (returns script keys) and `pair` (a name and a
developer). Cycle *k* of a stream is a permutation of its items fixed only by (stream,
seed, dataset fingerprint, *k*), so the same seed and data give the same sequence on any
machine, every item comes exactly once per cycle, and the next cycle has another order.

The permutation is a keyed bijection (`Bijection`): a balanced Feistel network on the
smallest even-bit-width power-of-two domain that holds the stream, shrunk to exactly
`[0, n)` by cycle-walking. It costs O(1) memory and a few microseconds per lookup whatever
`n` is, so a pair cycle over 10⁶ names × 10⁴ developers (10¹⁰ pairs) is as cheap as one
over ten. Pair index `i` means name `i // M` and developer `i % M` (M developers), so a pair
cycle covers every name × developer combination exactly once.

Cursors (cycle, position) live only in SQLite, in the `rotation_cursors` table of the
shared database: each step reads and advances its cursor inside one `BEGIN IMMEDIATE`
transaction, so threads and processes never receive the same (cycle, position), and a
restarted process continues where the last one stopped. A cursor is kept per (stream,
seed): another seed is another, independent rotation. When a stream's dataset fingerprint
differs from the stored one, the next step starts a new cycle with the new data and a
`dataset_changed` event is logged. Every step is one `rotation_step` line in
`<logs_dir>/rotation.jsonl`, written after the commit (the database is the source of
truth: a process killed between the two loses that one log line, never a cursor update).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import param
from pydantic import BaseModel, computed_field

from hybrid_audio.assembly import Assembler, AssemblyResult
from hybrid_audio.config import Settings
from hybrid_audio.database import Database
from hybrid_audio.datasets import dataset_path, load_dataset
from hybrid_audio.logs import JsonlLog

STREAMS = ("name", "developer", "script", "pair")
#: Dataset kind behind each single-list stream, and the engine parameter that can inject it.
_LIST_PARAM = {"name": "names", "developer": "developers", "script": "script_keys"}
#: Feistel rounds. Four make a pseudo-random permutation in theory (Luby–Rackoff); six give
#: margin for the tiny half-widths of small lists at no measurable cost.
ROUNDS = 6
#: Positions a stream reserves at a time (`RotationEngine.chunks`): the most a reader that
#: hangs up can leave taken but never handed to its connection.
STREAM_CHUNK = 16
#: Largest stream: indices and cursors stay well inside SQLite's signed 64-bit integers.
MAX_SIZE = 1 << 62
#: Streams up to this size alternate permutation parity between cycles (see
#: `cycle_bijection`), which guarantees that consecutive cycles differ in order. Above it,
#: equal orders in two cycles are as likely as a 64-bit key collision.
PARITY_LIMIT = 256

_M64 = (1 << 64) - 1
_C1 = 0xBF58476D1CE4E5B9  # splitmix64 finalizer constants (Steele, Lea, Flood 2014)
_C2 = 0x94D049BB133111EB
_U_C1, _U_C2 = np.uint64(_C1), np.uint64(_C2)
_U30, _U27, _U31 = np.uint64(30), np.uint64(27), np.uint64(31)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _check_stream(stream: str) -> str:
    if stream not in STREAMS:
        raise ValueError(f"unknown rotation stream {stream!r}; streams: {', '.join(STREAMS)}")
    return stream


def _check_count(count: int) -> int:
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"count must be a non-negative integer; got {count!r}")
    return count


# --- the keyed bijection ----------------------------------------------------------------


def domain_bits(size: int) -> int:
    """The smallest even bit width w ≥ 2 with 2**w ≥ size (Feistel halves must be equal)."""
    bits = max(2, (size - 1).bit_length())
    return bits + (bits & 1)


def round_keys(key_material: bytes, rounds: int = ROUNDS) -> tuple[int, ...]:
    """One 64-bit key per round: blake2b(key_material ‖ round), the same on every platform."""
    return tuple(
        int.from_bytes(
            hashlib.blake2b(
                key_material + r.to_bytes(4, "big"), digest_size=8, person=b"ha.rot.round"
            ).digest(),
            "little",
        )
        for r in range(rounds)
    )


class Bijection:
    """A keyed permutation of `range(size)` with O(1) memory, scalar or vectorized.

    Why it is a bijection: each Feistel round maps (L, R) → (R, L ⊕ F(R)), which is
    invertible whatever F is ((L, R) = (R' ⊕ F(L'), L')), so the network permutes
    `[0, 2**w)`. Cycle-walking then applies the network again while the value is ≥ size.
    Starting from i < size, the walk follows i's cycle of that permutation, which returns
    to i at the latest, so it stops at some value < size; and two different starts cannot
    stop at the same value, because the walk backwards from it (the inverse network) is
    unique. The result is a permutation of `[0, size)`. Since 2**w < 4·size, a walk
    takes fewer than four network evaluations on average.

    F is a splitmix64-style multiply/xorshift mix on uint64, masked to the half width: only
    wrap-around integer arithmetic, so Python ints and numpy uint64 arrays give identical
    bits. `swap_first_two` composes the permutation with the swap of positions 0 and 1,
    which flips its parity (used by `cycle_bijection`).
    """

    __slots__ = ("_keys", "_mask", "_ukeys", "bits", "half", "rounds", "size", "swap_first_two")

    def __init__(
        self,
        size: int,
        key_material: bytes,
        *,
        rounds: int = ROUNDS,
        swap_first_two: bool = False,
    ) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_SIZE:
            raise ValueError(f"size must be an integer in [1, 2**62]; got {size!r}")
        if rounds < 4:
            raise ValueError(f"a Feistel network needs at least 4 rounds here; got {rounds}")
        self.size = size
        self.rounds = rounds
        self.bits = domain_bits(size)
        self.half = self.bits // 2
        self._mask = (1 << self.half) - 1
        self._keys = round_keys(bytes(key_material), rounds)
        self._ukeys = tuple(np.uint64(k) for k in self._keys)
        self.swap_first_two = bool(swap_first_two and size >= 2)

    def __len__(self) -> int:
        return self.size

    def __repr__(self) -> str:
        return f"Bijection(size={self.size}, bits={self.bits}, rounds={self.rounds})"

    # scalar path -------------------------------------------------------------------------

    def _encrypt(self, x: int) -> int:
        half, mask = self.half, self._mask
        left, right = x >> half, x & mask
        for key in self._keys:
            z = right ^ key
            z = ((z ^ (z >> 30)) * _C1) & _M64
            z = ((z ^ (z >> 27)) * _C2) & _M64
            left, right = right, left ^ ((z ^ (z >> 31)) & mask)
        return (left << half) | right

    def _decrypt(self, x: int) -> int:
        half, mask = self.half, self._mask
        left, right = x >> half, x & mask
        for key in reversed(self._keys):
            z = left ^ key
            z = ((z ^ (z >> 30)) * _C1) & _M64
            z = ((z ^ (z >> 27)) * _C2) & _M64
            left, right = right ^ ((z ^ (z >> 31)) & mask), left
        return (left << half) | right

    def __call__(self, position: int) -> int:
        """The index at `position` of the permuted order."""
        size = self.size
        if not 0 <= position < size:
            raise IndexError(f"position {position} outside [0, {size})")
        if self.swap_first_two and position < 2:
            position ^= 1
        x = self._encrypt(position)
        while x >= size:
            x = self._encrypt(x)
        return x

    def inverse(self, index: int) -> int:
        """The position at which `index` comes (so `inverse(self(p)) == p`)."""
        size = self.size
        if not 0 <= index < size:
            raise IndexError(f"index {index} outside [0, {size})")
        x = self._decrypt(index)
        while x >= size:
            x = self._decrypt(x)
        if self.swap_first_two and x < 2:
            x ^= 1
        return x

    # vectorized path ---------------------------------------------------------------------

    def _encrypt_array(self, x: np.ndarray) -> np.ndarray:
        half, mask = np.uint64(self.half), np.uint64(self._mask)
        left, right = x >> half, x & mask
        for key in self._ukeys:
            z = right ^ key
            z = (z ^ (z >> _U30)) * _U_C1  # uint64 arrays wrap modulo 2**64, like & _M64
            z = (z ^ (z >> _U27)) * _U_C2
            left, right = right, left ^ ((z ^ (z >> _U31)) & mask)
        return (left << half) | right

    def block(self, start: int = 0, count: int | None = None) -> np.ndarray:
        """`[self(p) for p in range(start, start + count)]` as an int64 array, bit-identical
        to the scalar path but vectorized (cycle-walks only the values still ≥ size)."""
        if count is None:
            count = self.size - start
        if not (start >= 0 and count >= 0 and start + count <= self.size):
            raise ValueError(f"block [{start}, {start}+{count}) is outside [0, {self.size})")
        positions = np.arange(start, start + count, dtype=np.uint64)
        if self.swap_first_two and start < 2:
            positions[: 2 - start] ^= np.uint64(1)
        out = self._encrypt_array(positions)
        size = np.uint64(self.size)
        todo = np.flatnonzero(out >= size)
        while todo.size:
            walked = self._encrypt_array(out[todo])
            out[todo] = walked
            todo = todo[walked >= size]
        return out.astype(np.int64)


def permutation_block(
    domain_size: int, key_material: bytes, start: int = 0, count: int | None = None
) -> np.ndarray:
    """Positions `[start, start + count)` of the keyed permutation of `range(domain_size)`."""
    return Bijection(domain_size, key_material).block(start, count)


def cycle_key(stream: str, seed: int, fingerprint: str, cycle: int) -> bytes:
    """Key material of one cycle: a hash of everything that fixes its order."""
    canonical = json.dumps(
        {"v": 1, "stream": stream, "seed": seed, "fingerprint": fingerprint, "cycle": cycle},
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    return hashlib.blake2b(canonical, digest_size=32, person=b"ha.rot.cycle").digest()


def _parity(order: np.ndarray) -> int:
    """0 for an even permutation, 1 for an odd one (n minus its number of cycles)."""
    seen = np.zeros(len(order), dtype=bool)
    cycles = 0
    for start in range(len(order)):
        if not seen[start]:
            cycles += 1
            i = start
            while not seen[i]:
                seen[i] = True
                i = int(order[i])
    return (len(order) - cycles) & 1


@lru_cache(maxsize=256)
def cycle_bijection(stream: str, seed: int, fingerprint: str, cycle: int, size: int) -> Bijection:
    """The permutation of cycle `cycle` (cached: key derivation is not redone per step).

    For small streams (2 ≤ size ≤ PARITY_LIMIT) the permutation is made even in even
    cycles and odd in odd ones, by swapping its first two positions when needed: two
    consecutive cycles then can never have the same order, which a keyed hash alone would
    give a 1-in-size! chance (1 in 2 for two items). Still a pure function of the inputs.
    """
    _check_stream(stream)
    key = cycle_key(stream, seed, fingerprint, cycle)
    bijection = Bijection(size, key)
    if 2 <= size <= PARITY_LIMIT and _parity(bijection.block()) != cycle & 1:
        bijection = Bijection(size, key, swap_first_two=True)
    return bijection


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


class PairMessage(BaseModel):
    """A rotation step turned into an assembled message."""

    step: RotationStep
    script: str | None
    result: AssemblyResult


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
    """Deterministic, persisted rotation over names, developers, scripts and pairs.

    `next_name/next_developer/next_script/next_pair` return plain values; `step(stream)`,
    `next_pair_step()` and `take(stream, n)` return `RotationStep`s with cycle and position;
    `pairs(n)` / `scripts(n)` are lazy generators (one transaction per item). `at`,
    `preview` and `bijection` look without advancing. Safe to share between threads.
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
    assembler = param.ClassSelector(
        class_=Assembler,
        default=None,
        allow_None=True,
        doc="Turns a pair into a message for generate_pair().",
    )

    last_step = param.ClassSelector(
        class_=RotationStep,
        default=None,
        allow_None=True,
        constant=True,
        doc="The latest step this object took, any stream (for dashboards to watch).",
    )
    last_pair = param.Tuple(
        default=None, allow_None=True, length=2, constant=True, doc="Latest (name, developer)."
    )
    last_name = param.String(default=None, allow_None=True, constant=True, doc="Latest name.")
    last_developer = param.String(
        default=None, allow_None=True, constant=True, doc="Latest developer."
    )
    last_script = param.String(
        default=None, allow_None=True, constant=True, doc="Latest script key."
    )

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        if self.settings is None:
            self.settings = Settings.from_env()
        self._database: Database | None = None
        self._publish_lock = threading.Lock()
        self._log_cache: tuple[Settings, JsonlLog] | None = None
        # stream → (signature of its source, data, object kept alive for the signature)
        self._data_cache: dict[str, tuple[Any, _Data, Any]] = {}
        self._connection()  # creates the schema, fails early on a bad path

    # --- SQLite ---------------------------------------------------------------------------

    def _db(self) -> Database:
        """The database the current settings name."""
        path = Path(self.settings.database_path)
        if self._database is None or self._database.path != path:
            self._database = Database(path)
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

    # --- data -----------------------------------------------------------------------------

    def _list_data(self, stream: str) -> _Data:
        """A single list, injected or from its dataset file; reloaded when either changes."""
        injected = getattr(self, _LIST_PARAM[stream])
        if injected is not None:
            # The cache holds the list itself, so its id cannot be reused by another list.
            signature: tuple[Any, ...] = ("list", id(injected), len(injected))
        else:
            path = dataset_path(stream, self.settings)
            try:
                st = os.stat(path)
                signature = ("file", path, st.st_ino, st.st_size, st.st_mtime_ns)
            except OSError:
                signature = ("file", path, None)  # load_dataset names the problem
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
            if stream == "script":
                items = [item.key or item.text for item in dataset.items]
            else:
                items = dataset.texts()
            texts = dataset.texts()
        if not items:
            raise ValueError(f"the {label} is empty: nothing to rotate")
        return _Data(stream, len(items), fingerprint(items), items=items, texts=texts)

    def _data(self, stream: str) -> _Data:
        if stream != "pair":
            return self._list_data(_check_stream(stream))
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

    def _reserve(self, stream: str, seed: int, data: _Data, count: int) -> tuple[list[_Run], _Data]:
        """Atomically take `count` positions of `stream` (one BEGIN IMMEDIATE transaction).

        Returns the runs and the data they index: when the stored fingerprint differs from
        ours, the dataset is looked at again under the lock, so a process that read the
        file just before another process switched the cursor to a newer version follows
        that version instead of switching it back.
        """
        now = _now()
        with self._db().write() as db:
            row = db.execute(
                "SELECT cycle, position, size, fingerprint FROM rotation_cursors "
                "WHERE stream = ? AND seed = ?",
                (stream, seed),
            ).fetchone()
            if row is not None and row[3] != data.fingerprint:
                data = self._data(stream)
            runs, cycle, position, changed = self._plan(row, data, count)
            db.execute(
                "INSERT INTO rotation_cursors (stream, seed, cycle, position, size, fingerprint,"
                " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (stream, seed) DO UPDATE SET cycle = excluded.cycle,"
                " position = excluded.position, size = excluded.size,"
                " fingerprint = excluded.fingerprint, updated_at = excluded.updated_at",
                (stream, seed, cycle, position, data.size, data.fingerprint, now, now),
            )
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
        return runs, data

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

    def _publish(self, steps: list[RotationStep]) -> None:
        """Log each step, then show the latest on the output parameters."""
        if not steps:
            return
        if self.log_steps:
            log = self._log()
            for step in steps:
                fields = step.model_dump(exclude_none=True, exclude={"text", "size"})
                log.write("rotation_step", **fields)
        last = steps[-1]
        output = "last_pair" if last.stream == "pair" else f"last_{last.stream}"
        value = (last.name, last.developer) if last.stream == "pair" else last.item
        # Unlocks just these two constants: param.edit_constant unlocks every parameter
        # and costs more than the whole step. The lock keeps threads from relocking
        # a parameter another thread is about to set.
        step_param, stream_param = self.param["last_step"], self.param[output]
        with self._publish_lock:
            step_param.constant = stream_param.constant = False
            try:
                setattr(self, output, value)
                self.last_step = last
            finally:
                step_param.constant = stream_param.constant = True

    def take(self, stream: str, count: int) -> list[RotationStep]:
        """The next `count` steps of `stream`, reserved in one transaction.

        Cheaper than `count` single steps; the positions are consumed even if the caller
        drops some of them, so use `steps()` to consume lazily.
        """
        _check_count(count)
        data = self._data(_check_stream(stream))
        if count == 0:
            return []
        seed = self.seed  # one value for the whole step, even if another thread changes it
        runs, data = self._reserve(stream, seed, data, count)
        steps = self._steps_of(stream, seed, data, runs)
        self._publish(steps)
        return steps

    def step(self, stream: str) -> RotationStep:
        """Advance `stream` by one and return what it gave."""
        return self.take(stream, 1)[0]

    def steps(self, stream: str, count: int) -> Iterator[RotationStep]:
        """`count` steps, each taken (one transaction) only when the consumer asks for it."""
        _check_stream(stream)
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
        _check_stream(stream)
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

    def generate_pair(self, template: str = "double_anchor") -> PairMessage:
        """The next pair (and script, if the template has a script slot) as a message."""
        if self.assembler is None:
            raise ValueError("generate_pair needs an assembler (RotationEngine(assembler=...))")
        tpl = self.assembler.load_template(template)  # fail before taking a step
        step = self.next_pair_step()
        script = self.next_script() if "script" in tpl.slots else None
        result = self.assembler.assemble(
            template, name=step.name, developer=step.developer, script=script
        )
        return PairMessage(step=step, script=script, result=result)

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
        data = self._data(_check_stream(stream))
        if cycle < 0 or not 0 <= position < data.size:
            raise ValueError(f"(cycle {cycle}, position {position}) outside a {data.size} cycle")
        seed = self.seed
        bijection = cycle_bijection(stream, seed, data.fingerprint, cycle, data.size)
        return self._make_step(stream, seed, data, cycle, position, bijection(position))

    def bijection(self, stream: str, cycle: int) -> Bijection:
        """The permutation of `stream`'s cycle `cycle` with the current data and seed."""
        data = self._data(_check_stream(stream))
        return cycle_bijection(stream, self.seed, data.fingerprint, cycle, data.size)

    def preview(self, stream: str, count: int) -> list[RotationStep]:
        """The next `count` steps as they would come now, without taking them."""
        _check_count(count)
        data = self._data(_check_stream(stream))
        seed = self.seed
        runs, *_ = self._plan(self._row(stream, seed), data, count)
        return self._steps_of(stream, seed, data, runs)

    def _row(self, stream: str, seed: int) -> tuple[int, int, int, str] | None:
        return (
            self._connection()
            .execute(
                "SELECT cycle, position, size, fingerprint FROM rotation_cursors "
                "WHERE stream = ? AND seed = ?",
                (stream, seed),
            )
            .fetchone()
        )

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
        for stream in STREAMS:
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
        _check_stream(stream)
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
        return self.state()[stream]
