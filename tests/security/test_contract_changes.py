"""A careless operator changing the voice contract: the change is whole or nothing, and says
what it costs (item 11 of the hardening issue). Real Piper, real SQLite, no widgets."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from hybrid_audio.config import Settings
from hybrid_audio.database import Database
from hybrid_audio.engines import EngineConfigError
from hybrid_audio.generation import Generator
from hybrid_audio.shared_contract import read


@pytest.fixture
def generator(tmp_path: Path, piper) -> Generator:
    return Generator.from_settings(Settings(base_dir=tmp_path), engine=piper)


def test_a_failed_engine_switch_leaves_the_whole_contract_as_it_was(generator: Generator) -> None:
    """Choosing Cartesia without a key changes nothing: engine, parameters and signature."""
    generator.generate_name("Ann")
    before = (generator.contract.values(), generator.contract.signature(), generator.engine)
    with pytest.raises(EngineConfigError, match="CARTESIA_API_KEY"):
        generator.change_contract(engine="cartesia", sample_rate=16000)
    after = (generator.contract.values(), generator.contract.signature(), generator.engine)
    assert after == before
    # Stems made afterwards carry the Piper contract, and the cached one is still compatible.
    record = generator.generate_name("Bea")
    assert record.contract_signature == before[1]
    assert generator.cache.list(compatible=False) == []


def test_a_value_restored_without_events_still_signs_what_it_says() -> None:
    """The signature follows the values even when param events are discarded."""
    import param

    from hybrid_audio.contract import VoiceContract

    contract = VoiceContract()
    piper_signature = contract.signature()
    with param.parameterized.discard_events(contract):
        contract.engine = "cartesia"
    assert contract.signature() == VoiceContract(engine="cartesia").signature()
    with param.parameterized.discard_events(contract):
        contract.engine = "piper"
    assert contract.signature() == piper_signature


def test_a_planned_change_counts_the_stems_it_makes_incompatible(generator: Generator) -> None:
    """The plan says how many cached stems would stop matching; only applying changes them."""
    for name in ("Ann", "Bea", "Cid"):
        generator.generate_name(name)
    active = generator.contract.signature()
    plan = generator.plan_contract_change(sample_rate=16000)
    assert (plan.incompatible, plan.compatible) == (3, 0)
    assert "makes 3 cached stems incompatible" in plan.describe()
    assert generator.contract.signature() == active  # planning applies nothing
    assert len(generator.cache.list(compatible=True)) == 3
    generator.apply_contract_change(plan)
    assert generator.contract.signature() == plan.signature
    assert len(generator.cache.list(compatible=False)) == 3
    # Going back is free: the old stems match again.
    back = generator.plan_contract_change(sample_rate=22050)
    assert (back.incompatible, back.compatible) == (0, 3)


def test_a_change_naming_an_unknown_parameter_is_refused(generator: Generator) -> None:
    """A typo in a parameter name is an error, not a silently ignored change."""
    before = generator.contract.signature()
    with pytest.raises(ValueError, match="not contract parameters: sample_rat"):
        generator.change_contract(sample_rat=16000)
    with pytest.raises(ValueError, match="speed"):
        generator.change_contract(sample_rate=16000, speed=9.0)  # out of bounds: neither
    assert generator.contract.signature() == before


def test_a_change_the_state_database_refuses_changes_nothing_anywhere(
    generator: Generator,
) -> None:
    """The shared row is written first: when SQLite refuses that write, this process keeps
    its contract too, so no process works under a contract the others never see."""
    database = Database(generator.cache.database_path)
    stored = read(database.connection())
    before = (generator.contract.values(), generator.contract.signature(), generator.engine)
    database.connection().execute(
        "CREATE TRIGGER refuse BEFORE UPDATE ON active_contract "
        "BEGIN SELECT RAISE(ABORT, 'the state database refuses'); END"
    )
    with pytest.raises(sqlite3.IntegrityError, match="refuses"):
        generator.change_contract(sample_rate=16000)
    assert (generator.contract.values(), generator.contract.signature(), generator.engine) == (
        before
    )
    assert read(database.connection()) == stored
    assert generator.generate_name("Ann").contract_signature == before[1]
