"""RotationEngine: real SQLite and real files; determinism, coverage, atomic cursors."""

from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from hybrid_audio.config import Settings
from hybrid_audio.feistel import (
    Bijection,
    cycle_bijection,
    cycle_key,
    domain_bits,
    permutation_block,
)
from hybrid_audio.rotation import (
    STREAMS,
    RotationEngine,
    RotationStep,
    StreamState,
    fingerprint,
)

REPO = Path(__file__).resolve().parents[1]
NAMES = [f"Name{i}" for i in range(12)]
DEVELOPERS = [f"Developer {i}" for i in range(9)]
SCRIPTS = ["hello", "offer", "visit", "thanks", "bye"]


def make_engine(base: Path, seed: int = 7, **params: object) -> RotationEngine:
    params.setdefault("names", NAMES)
    params.setdefault("developers", DEVELOPERS)
    params.setdefault("script_keys", SCRIPTS)
    return RotationEngine(settings=Settings(base_dir=base), seed=seed, **params)


def log_records(base: Path, event: str | None = None) -> list[dict]:
    path = base / "logs" / "rotation.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return [r for r in records if event is None or r["event"] == event]


# --- the bijection ----------------------------------------------------------------------


def test_golden_values_pin_the_construction_across_machines() -> None:
    # Pure integer arithmetic and hashlib: any platform must give exactly these.
    assert permutation_block(10, b"golden").tolist() == [2, 9, 7, 5, 4, 3, 6, 8, 1, 0]
    assert permutation_block(10**10, b"golden", 10**10 - 3, 3).tolist() == [
        6670074559,
        3364267098,
        2013649113,
    ]
    assert [Bijection(1000, b"golden")(i) for i in range(5)] == [558, 609, 410, 884, 701]
    assert cycle_key("pair", 42, "f" * 64, 3).hex() == (
        "e9932fd5be011df5edcb298afc02757af9f18dcd67218009ef2439861c64600f"
    )


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 15, 16, 17, 63, 64, 65, 255, 256, 257, 1000])
def test_bijection_is_a_permutation_and_scalar_equals_block(size: int) -> None:
    bijection = Bijection(size, b"k" + bytes([size % 256]))
    block = bijection.block()
    assert block.dtype == np.int64
    assert sorted(block.tolist()) == list(range(size))
    assert [bijection(p) for p in range(size)] == block.tolist()
    assert [bijection.inverse(int(i)) for i in block] == list(range(size))
    assert 2**bijection.bits >= size
    assert bijection.bits % 2 == 0
    assert bijection.bits == 2 or 2 ** (bijection.bits - 2) < size


def test_domain_bits_is_the_smallest_even_width() -> None:
    assert [domain_bits(n) for n in (1, 4, 5, 16, 17, 10**6, 10**10)] == [2, 2, 4, 4, 6, 20, 34]


def test_block_of_a_1000_by_1000_pair_space_is_a_complete_permutation(tmp_path: Path) -> None:
    names = [f"n{i}" for i in range(1000)]
    developers = [f"d{i}" for i in range(1000)]
    engine = make_engine(tmp_path, names=names, developers=developers)
    bijection = engine.bijection("pair", 0)
    block = bijection.block()
    assert np.array_equal(np.sort(block), np.arange(10**6))
    rng = np.random.default_rng(0)
    sample = [0, 1, 2, 10**6 - 1, *rng.integers(0, 10**6, 1500).tolist()]
    assert [bijection(p) for p in sample] == block[sample].tolist()
    # every name × developer combination exactly once
    name_index, developer_index = np.divmod(block, 1000)
    counts = np.zeros((1000, 1000), dtype=np.int64)
    np.add.at(counts, (name_index, developer_index), 1)
    assert (counts == 1).all()
    # pieces of the block agree with the whole, and steps agree with the block
    assert np.array_equal(bijection.block(123_456, 1000), block[123_456:124_456])
    steps = engine.take("pair", 40)
    assert [s.index for s in steps] == block[:40].tolist()
    assert [(s.name, s.developer) for s in steps] == [
        (names[i // 1000], developers[i % 1000]) for i in block[:40].tolist()
    ]


def test_bijection_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="size"):
        Bijection(0, b"k")
    with pytest.raises(ValueError, match="4 rounds"):
        Bijection(10, b"k", rounds=3)
    with pytest.raises(ValueError, match="outside"):
        Bijection(10, b"k").block(5, 6)
    with pytest.raises(IndexError):
        Bijection(10, b"k")(10)


@pytest.mark.parametrize("size", [2, 3, 4, 5, 8])
def test_tiny_lists_never_repeat_an_order_in_consecutive_cycles(size: int) -> None:
    orders = [tuple(cycle_bijection("name", 1, "fp", k, size).block().tolist()) for k in range(40)]
    assert all(a != b for a, b in itertools.pairwise(orders))
    assert len(set(orders)) > 1


# --- sequences --------------------------------------------------------------------------


def test_same_seed_same_sequence_in_two_fresh_states(tmp_path: Path) -> None:
    first, second = make_engine(tmp_path / "a"), make_engine(tmp_path / "b")
    for engine in (first, second):
        engine.seq = (  # type: ignore[attr-defined]
            [engine.next_name() for _ in range(30)],
            [engine.next_developer() for _ in range(20)],
            [engine.next_script() for _ in range(11)],
            [engine.next_pair() for _ in range(250)],
        )
    assert first.seq == second.seq  # type: ignore[attr-defined]


def test_different_seed_gives_a_different_order(tmp_path: Path) -> None:
    a, b = make_engine(tmp_path / "a", seed=1), make_engine(tmp_path / "b", seed=2)
    assert [a.next_name() for _ in range(12)] != [b.next_name() for _ in range(12)]
    assert list(a.pairs(108)) != list(b.pairs(108))


def test_each_cycle_gives_every_item_once_and_the_next_cycle_another_order(
    tmp_path: Path,
) -> None:
    names = [f"Person {i}" for i in range(50)]
    engine = make_engine(tmp_path, names=names)
    cycles = [[engine.next_name() for _ in range(50)] for _ in range(4)]
    for cycle in cycles:
        assert sorted(cycle) == sorted(names)
    assert all(a != b for a, b in itertools.pairwise(cycles))
    assert engine.state()["name"].cycle == 4
    scripts = [engine.next_script() for _ in range(10)]
    assert sorted(scripts[:5]) == sorted(SCRIPTS) == sorted(scripts[5:])
    assert scripts[:5] != scripts[5:]


def test_pairs_cover_every_combination_once_per_cycle(tmp_path: Path) -> None:
    engine = make_engine(tmp_path)
    product = set(itertools.product(NAMES, DEVELOPERS))
    first = list(engine.pairs(len(product)))
    second = list(engine.pairs(len(product)))
    assert set(first) == product == set(second)
    assert len(set(first)) == len(first)
    assert first != second
    steps = [engine.next_pair_step() for _ in range(3)]
    assert [(s.cycle, s.position) for s in steps] == [(2, 0), (2, 1), (2, 2)]
    for s in steps:
        assert s.name == NAMES[s.name_index]
        assert s.developer == DEVELOPERS[s.developer_index]
        assert s.index == s.name_index * len(DEVELOPERS) + s.developer_index


def test_take_across_cycles_equals_single_steps(tmp_path: Path) -> None:
    bulk = make_engine(tmp_path / "a").take("pair", 250)  # vectorized runs, two wraps
    single = make_engine(tmp_path / "b")
    assert bulk == [single.next_pair_step() for _ in range(250)]
    assert [(s.cycle, s.position) for s in bulk[106:110]] == [(0, 106), (0, 107), (1, 0), (1, 1)]


def test_preview_and_at_do_not_advance(tmp_path: Path) -> None:
    engine = make_engine(tmp_path)
    engine.take("name", 10)
    preview = engine.preview("name", 5)
    assert engine.state()["name"].position == 10
    assert [(s.cycle, s.position) for s in preview] == [(0, 10), (0, 11), (1, 0), (1, 1), (1, 2)]
    assert engine.take("name", 5) == preview
    assert engine.at("name", 1, 0) == preview[2]
    with pytest.raises(ValueError, match="outside"):
        engine.at("name", 0, 12)


def test_outputs_are_watchable(tmp_path: Path) -> None:
    engine = make_engine(tmp_path)
    seen: list[RotationStep] = []
    engine.param.watch(lambda event: seen.append(event.new), ["last_step"])
    pair = engine.next_pair()
    assert engine.last_step is not None
    assert (engine.last_step.name, engine.last_step.developer) == pair
    assert seen == [engine.last_step]
    assert engine.cursors["pair"].position == 1
    assert engine.next_script() == engine.last_step.item
    assert engine.next_name() == engine.last_step.item
    assert engine.cursors["name"].position == 1
    assert engine.cursors == engine.state()


# --- persistence and concurrency --------------------------------------------------------


def _pair_worker(base: str, count: int) -> list[tuple[int, int]]:
    engine = make_engine(Path(base))
    return [(s.cycle, s.position) for s in (engine.next_pair_step() for _ in range(count))]


def test_four_processes_never_get_the_same_position(tmp_path: Path) -> None:
    make_engine(tmp_path)  # the schema, before the race
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        results = pool.starmap(_pair_worker, [(str(tmp_path), 500)] * 4)
    taken = [p for worker in results for p in worker]
    assert len(taken) == 2000 == len(set(taken))
    size = len(NAMES) * len(DEVELOPERS)  # 108: the race crosses many cycles
    assert sorted(taken) == [divmod(n, size) for n in range(2000)]
    state = make_engine(tmp_path).state()["pair"]
    assert (state.cycle, state.position) == divmod(2000, size)
    steps = log_records(tmp_path, "rotation_step")
    assert len(steps) == 2000
    assert len({(r["cycle"], r["position"]) for r in steps}) == 2000


def test_threads_sharing_one_engine_never_get_the_same_position(tmp_path: Path) -> None:
    engine = make_engine(tmp_path)
    taken: list[tuple[int, int]] = []

    def work() -> None:
        got = [engine.next_pair_step() for _ in range(150)]
        taken.extend((s.cycle, s.position) for s in got)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(taken) == [divmod(n, 108) for n in range(600)]


def test_restart_continues_from_the_stored_cursor(tmp_path: Path) -> None:
    first = make_engine(tmp_path)
    before = [first.next_pair() for _ in range(40)]
    del first
    again = make_engine(tmp_path)
    after = [again.next_pair() for _ in range(68)]
    assert sorted(before + after) == sorted(itertools.product(NAMES, DEVELOPERS))
    assert again.state()["pair"].cycle == 1


def test_sigkill_mid_run_then_restart_continues_without_repeats(tmp_path: Path) -> None:
    script = (
        "import sys\nfrom pathlib import Path\n"
        "from tests.test_rotation import make_engine\n"
        "engine = make_engine(Path(sys.argv[1]))\n"
        "while True:\n    engine.next_pair_step()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], env=env, cwd=REPO)
    log = tmp_path / "logs" / "rotation.jsonl"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if log.exists() and log.read_bytes().count(b"\n") >= 300:
            break
        assert proc.poll() is None, "the stepping process died on its own"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    with sqlite3.connect(tmp_path / "state" / "hybrid_audio.sqlite3") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)

    engine = make_engine(tmp_path)
    cursor = engine.state()["pair"]
    logged = [(r["cycle"], r["position"]) for r in log_records(tmp_path, "rotation_step")]
    assert len(logged) >= 300
    assert len(set(logged)) == len(logged)
    served = cursor.cycle * 108 + cursor.position
    # at most the very last step can miss its line (killed between commit and log write)
    assert served - 1 <= len(logged) <= served
    assert max(logged) < (cursor.cycle, cursor.position)

    resumed = [engine.next_pair_step() for _ in range(150)]
    assert (resumed[0].cycle, resumed[0].position) == (cursor.cycle, cursor.position)
    assert resumed[0] == engine.at("pair", cursor.cycle, cursor.position)
    positions = logged + [(s.cycle, s.position) for s in resumed]
    assert len(set(positions)) == len(positions)
    expected = [divmod(n, 108) for n in range(served + 150)]
    assert set(positions) <= set(expected)
    assert len(positions) >= len(expected) - 1


# --- datasets ---------------------------------------------------------------------------


def write_datasets(base: Path, names: list[str], developers: list[str]) -> None:
    data = base / "data"
    data.mkdir(parents=True, exist_ok=True)
    (data / "common_names.txt").write_text("# names\n" + "\n".join(names) + "\n")
    (data / "developer_names.txt").write_text("\n".join(developers) + "\n")
    (data / "scripts.json").write_text(json.dumps({"hello": "Hi", "offer": "A new offer"}))


def test_loads_datasets_from_settings_and_returns_script_keys(tmp_path: Path) -> None:
    write_datasets(tmp_path, ["José", "Ana", "josé"], ["Brightwater Homes", "Hilton"])
    engine = RotationEngine(settings=Settings(base_dir=tmp_path), seed=3)
    names = [engine.next_name() for _ in range(2)]
    assert sorted(names) == ["Ana", "José"]  # "josé" is the same stem as "José": one item
    step = engine.step("script")
    assert step.item in {"hello", "offer"}
    assert step.text == {"hello": "Hi", "offer": "A new offer"}[step.item]
    assert {engine.next_pair() for _ in range(4)} == set(
        itertools.product(["José", "Ana"], ["Brightwater Homes", "Hilton"])
    )


def test_changed_dataset_starts_a_new_cycle_and_says_so(tmp_path: Path) -> None:
    write_datasets(tmp_path, ["Ana", "Ben", "Cai", "Dee"], ["Acme"])
    engine = RotationEngine(settings=Settings(base_dir=tmp_path), seed=3)
    engine.take("name", 2)
    engine.take("pair", 1)
    old = engine.state()["name"]
    assert (old.cycle, old.position, old.size, old.stale) == (0, 2, 4, False)

    write_datasets(tmp_path, ["Ana", "Ben", "Cai", "Dee", "Eve"], ["Acme"])
    assert engine.state()["name"].stale
    assert engine.state()["pair"].stale
    step = engine.step("name")
    assert (step.cycle, step.position, step.size) == (1, 0, 5)
    new = engine.state()["name"]
    assert (new.cycle, new.position, new.size) == (1, 1, 5)
    assert new.fingerprint != old.fingerprint
    assert not new.stale
    rest = [engine.next_name() for _ in range(4)]
    assert sorted([step.item, *rest]) == ["Ana", "Ben", "Cai", "Dee", "Eve"]

    (changed,) = log_records(tmp_path, "dataset_changed")
    assert changed["stream"] == "name"
    assert (changed["old_cycle"], changed["old_position"], changed["old_size"]) == (0, 2, 4)
    assert (changed["cycle"], changed["size"]) == (1, 5)
    assert changed["old_fingerprint"] == old.fingerprint
    assert changed["fingerprint"] == new.fingerprint
    assert engine.next_pair_step().cycle == 1  # the pair stream notices too
    assert len(log_records(tmp_path, "dataset_changed")) == 2


def test_assigning_a_new_list_is_a_dataset_change(tmp_path: Path) -> None:
    engine = make_engine(tmp_path)
    engine.take("developer", 3)
    engine.developers = [*DEVELOPERS, "New Developer"]
    step = engine.step("developer")
    assert (step.cycle, step.position, step.size) == (1, 0, 10)
    engine.developers = list(engine.developers)  # same contents: same fingerprint
    assert engine.step("developer").cycle == 1


def test_fingerprint_depends_on_order_and_contents_only() -> None:
    assert fingerprint(["a", "b"]) == fingerprint(iter(["a", "b"]))
    assert fingerprint(["a", "b"]) != fingerprint(["b", "a"])
    assert fingerprint(["ab"]) != fingerprint(["a", "b"])
    assert fingerprint(["a", "b"]) == (
        "42cf6169af8a67be870eb6fea3fef24f8686b0c2fd7218a5066b3489fd6b969d"
    )


def test_empty_or_duplicate_datasets_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="names list is empty"):
        make_engine(tmp_path, names=[]).next_name()
    with pytest.raises(ValueError, match="developers list is empty"):
        make_engine(tmp_path, developers=[]).next_pair()
    with pytest.raises(ValueError, match=r"'Ana' twice \(items 1 and 3\)"):
        make_engine(tmp_path, names=["Ana", "Ben", "Ana"]).next_name()
    files = tmp_path / "files"
    write_datasets(files, [], ["Acme"])
    engine = RotationEngine(settings=Settings(base_dir=files))
    with pytest.raises(ValueError, match=r"name dataset \(.*common_names.txt\) is empty"):
        engine.next_name()
    (files / "data" / "scripts.json").unlink()
    with pytest.raises(ValueError, match=r"scripts\.json: dataset file not found"):
        engine.next_script()
    assert engine.next_developer() == "Acme"
    assert engine.state()["name"].size == 0  # state() reports, never raises


# --- state, reset, arguments, logs ------------------------------------------------------


def test_state_reports_every_stream(tmp_path: Path) -> None:
    engine = make_engine(tmp_path)
    engine.take("pair", 27)
    states = engine.state()
    assert list(states) == list(STREAMS)
    pair = states["pair"]
    assert isinstance(pair, StreamState)
    assert (pair.cycle, pair.position, pair.size, pair.seed) == (0, 27, 108, 7)
    assert pair.progress == 0.25
    assert pair.model_dump()["progress"] == 0.25
    assert pair.created_at is not None
    assert pair.updated_at >= pair.created_at
    untouched = states["script"]
    assert (untouched.cycle, untouched.position, untouched.size) == (0, 0, 5)
    assert untouched.created_at is None
    assert untouched.fingerprint == fingerprint(SCRIPTS)
    other_seed = make_engine(tmp_path, seed=8).state()["pair"]  # seeds have own cursors
    assert other_seed.position == 0


def test_reset_starts_the_stream_again(tmp_path: Path) -> None:
    engine = make_engine(tmp_path)
    first = [engine.next_name() for _ in range(30)]
    engine.next_pair()
    state = engine.reset("name")
    assert (state.cycle, state.position) == (0, 0)
    assert [engine.next_name() for _ in range(30)] == first
    assert engine.state()["pair"].position == 1  # other streams untouched
    (reset,) = log_records(tmp_path, "rotation_reset")
    assert (reset["stream"], reset["old_cycle"], reset["old_position"]) == ("name", 2, 6)


@pytest.mark.parametrize("call", ["step", "reset", "take", "at", "preview", "bijection"])
def test_unknown_stream_lists_the_streams(tmp_path: Path, call: str) -> None:
    engine = make_engine(tmp_path)
    args = {"step": (), "reset": (), "take": (1,), "at": (0, 0), "preview": (1,)}
    with pytest.raises(ValueError, match="unknown rotation stream 'names'; streams: name, dev"):
        getattr(engine, call)("names", *args.get(call, (0,)))


@pytest.mark.parametrize("count", [-1, 1.5, "3", None, True])
def test_bad_counts_are_refused_before_iterating(tmp_path: Path, count: object) -> None:
    engine = make_engine(tmp_path)
    for method in (engine.pairs, engine.scripts, engine.preview, engine.take):
        args = (count,) if method in (engine.pairs, engine.scripts) else ("pair", count)
        with pytest.raises(ValueError, match="count must be a non-negative integer"):
            method(*args)  # type: ignore[operator]
    assert list(engine.pairs(0)) == []
    assert engine.take("name", 0) == []
    assert engine.state()["pair"].position == 0


def test_generators_are_lazy(tmp_path: Path) -> None:
    engine = make_engine(tmp_path)
    pairs = engine.pairs(5)
    assert engine.state()["pair"].position == 0
    next(pairs), next(pairs)
    assert engine.state()["pair"].position == 2
    assert len(list(engine.scripts(7))) == 7


def test_one_log_line_per_step(tmp_path: Path) -> None:
    engine = make_engine(tmp_path)
    engine.take("name", 13)
    engine.take("pair", 20)
    engine.next_script()
    records = log_records(tmp_path)
    assert len(records) == 34
    assert {r["event"] for r in records} == {"rotation_step"}
    pair = records[13]
    assert pair["stream"] == "pair"
    assert pair["seed"] == 7
    assert {"ts", "cycle", "position", "index", "name", "developer", "fingerprint"} <= set(pair)
    assert [(r["cycle"], r["position"]) for r in records[:13]] == [
        *((0, p) for p in range(12)),
        (1, 0),
    ]
    assert records[-1]["item"] in SCRIPTS
    engine.log_steps = False
    engine.next_pair()
    assert len(log_records(tmp_path)) == 34


# --- scale ------------------------------------------------------------------------------


def test_a_ten_billion_pair_space_with_flat_memory(tmp_path: Path) -> None:
    names = [f"name{i}" for i in range(10**6)]
    developers = [f"dev{i}" for i in range(10**4)]
    engine = make_engine(tmp_path, names=names, developers=developers)
    first = engine.next_pair_step()
    assert (first.cycle, first.position, first.size) == (0, 0, 10**10)
    last = engine.at("pair", 0, 10**10 - 1)
    assert (last.name, last.developer) == (names[last.name_index], developers[last.developer_index])
    bijection = engine.bijection("pair", 0)
    assert bijection.bits == 34
    tail = bijection.block(10**10 - 2000, 2000)
    assert len(set(tail.tolist())) == 2000
    assert tail.min() >= 0
    assert tail.max() < 10**10
    assert tail[-1] == last.index
    assert bijection.inverse(last.index) == 10**10 - 1
    for _ in range(100):
        engine.next_pair()  # warm caches
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(1000):
            engine.next_pair()
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert current - base < 128 * 1024, "memory grows with steps"
    assert peak - base < 512 * 1024
    assert engine.state()["pair"].position == 1101


def test_a_kind_marked_rotation_in_kinds_json_is_a_stream(tmp_path: Path) -> None:
    """Adding a rotation stream is data: a kind with `"rotation": true` in kinds.json
    (in another process: the kinds registry is process-wide and only grows)."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "greetings.txt").write_text("Hello\nGood morning\nWelcome back\n")
    kinds = {"name": "greeting", "plural": "greetings", "dataset": "greetings.txt"}
    (data / "kinds.json").write_text(json.dumps({"kinds": [{**kinds, "rotation": True}]}))
    probe = f"""
from hybrid_audio.config import Settings
from hybrid_audio.rotation import RotationEngine
engine = RotationEngine(settings=Settings(base_dir={str(tmp_path)!r}), seed=1)
assert engine.streams == ("name", "developer", "script", "greeting", "pair"), engine.streams
taken = [step.item for step in engine.take("greeting", 3)]
assert sorted(taken) == ["Good morning", "Hello", "Welcome back"], taken
assert engine.cursors["greeting"].cycle == 1
"""
    subprocess.run([sys.executable, "-c", probe], check=True, cwd=REPO, timeout=60)
