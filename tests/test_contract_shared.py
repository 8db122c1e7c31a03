"""One voice contract for every process on a state folder (issue #9 item 11).

Two `Workspace`s over one base dir stand for two server workers: each has its own database
connections, generator, cache and engine handle, and learns of the other's contract change
only through the state database. Real Piper, real SQLite.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hybrid_audio.campaign import CampaignState
from hybrid_audio.config import Settings
from hybrid_audio.generation import ContractFollowError
from hybrid_audio.jobs import Job, JobState
from hybrid_audio.recipients import parse_recipients
from hybrid_audio.workspace import Workspace
from tests.api_server import TINY_DATASETS, make_base_dir
from tests.test_campaign import recipients_csv


@pytest.fixture
def base(tmp_path: Path) -> Path:
    return make_base_dir(tmp_path / "base", TINY_DATASETS)


@pytest.fixture
def opened(piper) -> Iterator[list[Workspace]]:
    """Workspaces the test opens (`open_on`), closed after it."""
    made: list[Workspace] = []
    yield made
    for workspace in made:
        workspace.close()


@pytest.fixture
def open_on(opened: list[Workspace], piper):
    def open_on(base: Path, **settings: object) -> Workspace:
        workspace = Workspace.build(Settings(base_dir=base, **settings), engine=piper)
        opened.append(workspace)
        return workspace

    return open_on


def test_a_change_through_one_process_is_followed_by_the_other_before_its_next_stem(
    base: Path, open_on
) -> None:
    first, second = open_on(base), open_on(base)
    old = second.contract.signature()
    kept = second.generator.generate_name("Bob")  # a cache hit it keeps in memory
    assert second.generator.generate_name("Bob").cached

    change = first.generator.change_contract(speed=1.25)
    assert change.signature != old
    assert second.contract.signature() == old  # nothing is pushed: it looks when it works

    made = second.generator.generate_name("Ann")
    assert made.contract_signature == change.signature
    again = second.generator.generate_name("Bob")  # the kept hit is not handed out
    assert (again.cached, again.contract_signature) == (False, change.signature)
    assert kept.contract_signature == old
    assert second.contract.speed == 1.25
    message = second.assembler.assemble("double_anchor", name="Cid", developer="Acme Homes")
    assert message.summary.id
    manifest = (Path(second.settings.output_dir) / f"{message.summary.id}.json").read_text()
    assert f'"contract_signature":"{change.signature}"' in manifest.replace(" ", "")


def test_an_open_page_shows_a_change_made_by_another_process(base: Path, open_on) -> None:
    first, second = open_on(base), open_on(base)
    second.refresh()
    shown: list[float] = []
    second.contract.param.watch(lambda event: shown.append(event.new), "speed")
    first.generator.change_contract(speed=1.25)
    second.refresh()  # what the dashboard's periodic callback calls
    assert shown == [1.25]
    assert second.contract.signature() == first.contract.signature()


def test_a_change_holds_for_processes_started_later(base: Path, open_on) -> None:
    first = open_on(base)
    change = first.generator.change_contract(speed=1.25, edge_fade_ms=10.0)
    later = open_on(base)  # a worker (re)started with the same environment
    assert later.contract.signature() == change.signature
    assert (later.contract.speed, later.contract.edge_fade_ms) == (1.25, 10.0)


def test_an_environment_changed_since_wins_and_every_process_follows_it(
    base: Path, open_on
) -> None:
    first = open_on(base)
    first.generator.change_contract(speed=1.25)
    restarted = open_on(base, loudness_lufs=-20.0)  # the operator changed the environment
    assert (restarted.contract.speed, restarted.contract.loudness_lufs) == (1.0, -20.0)
    made = first.generator.generate_name("Ann")
    assert made.contract_signature == restarted.contract.signature()
    assert first.contract.signature() == restarted.contract.signature()


def test_a_contract_that_cannot_be_built_here_refuses_work_until_changed_again(
    base: Path, open_on
) -> None:
    keyed = open_on(
        base,
        cartesia_api_key="sk-test",
        cartesia_voice_id="voice-1",
        cartesia_base_url="http://127.0.0.1:9",
    )
    plain = open_on(base)  # no CARTESIA_API_KEY in this process
    old = plain.contract.signature()
    keyed.generator.change_contract(engine="cartesia")

    with pytest.raises(ContractFollowError, match="CARTESIA_API_KEY"):
        plain.generator.generate_name("Ann")
    with pytest.raises(ContractFollowError, match="CARTESIA_API_KEY"):
        plain.assembler.assemble("double_anchor", name="Ann", developer="Acme Homes")
    assert plain.contract.signature() == old  # not working under the old one either
    assert plain.cache.list() == []
    plain.refresh()  # the dashboard's refresh publishes the reason instead of raising
    assert "CARTESIA_API_KEY" in plain.generator.contract_error

    back = keyed.generator.change_contract(engine="piper")
    made = plain.generator.generate_name("Ann")
    assert made.contract_signature == back.signature
    assert plain.generator.contract_error == ""


def test_a_campaign_pauses_when_another_process_changes_the_contract(
    base: Path, open_on, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("hybrid_audio.campaign.PROGRESS_SECONDS", 0.0)  # `done` at every row
    runner, operator = open_on(base), open_on(base)
    campaigns = runner.campaigns
    info = campaigns.create("double_anchor", parse_recipients(recipients_csv(20)))
    job = Job(kind="campaign")

    def change(event: object) -> None:
        if job.done == 5:
            operator.generator.change_contract(speed=1.25)

    job.param.watch(change, "done")
    paused = campaigns.run(info.id, job)
    assert paused.state == CampaignState.PAUSED
    assert paused.done == 5
    assert "the voice contract changed" in paused.pause_reason
    output = Path(runner.settings.output_dir)
    assert len(list(output.glob(f"{info.id}_*.wav"))) == 5  # nothing in the new voice

    operator.generator.change_contract(speed=1.0)
    resumed = runner.jobs.wait(campaigns.resume(info.id).id, timeout=120)
    assert resumed.state == JobState.DONE
    assert campaigns.get(info.id).done == 20


def test_a_campaign_created_after_another_process_changed_the_contract_pins_the_new_one(
    base: Path, open_on
) -> None:
    """Creating a campaign looks at the shared contract first: pinning this process's stale
    contract would pause the campaign at its first row."""
    first, second = open_on(base), open_on(base)
    change = first.generator.change_contract(speed=1.25)
    parsed = parse_recipients(recipients_csv(2).encode(), "l.csv")
    info = second.campaigns.create("double_anchor", parsed)
    assert info.contract_signature == change.signature
    job = second.jobs.wait(second.campaigns.start(info.id, source="test").id, timeout=120)
    assert job.state == JobState.DONE, job.errors
    assert second.campaigns.get(info.id).state == CampaignState.DONE


def test_an_open_contract_editor_keeps_its_edits_and_takes_the_other_processs_change(
    base: Path, open_on
) -> None:
    """The Generate page edits a draft of the contract. Another process changes the speed:
    the open page's draft takes the new speed (it was not edited there) and keeps its own
    edit of the language, so applying it changes the language only and never quietly puts
    the other's speed back."""
    from app.views.generate import GenerateView

    first, second = open_on(base), open_on(base)
    view = GenerateView(workspace=second)
    view.draft.language = "en-GB"  # an edit on the open page
    first.generator.change_contract(speed=1.25)
    second.refresh()  # what the page's live feed does every half second
    assert (view.draft.speed, view.draft.language) == (1.25, "en-GB")
    change = view.plan_contract()
    assert (change.contract.speed, change.contract.language) == (1.25, "en-GB")
    view.confirm_contract()
    assert (first.contract.speed, first.contract.language) != (1.25, "en-GB")  # not followed yet
    first.generator.follow_contract()
    assert (first.contract.speed, first.contract.language) == (1.25, "en-GB")
    assert (view.draft.speed, view.draft.language) == (1.25, "en-GB")


def test_an_editor_that_has_not_looked_yet_does_not_revert_the_other_change(
    base: Path, open_on
) -> None:
    """Apply pressed before the page's feed delivered another process's change: the plan
    follows the shared contract first, so the draft's stale speed is not a change."""
    from app.views.generate import GenerateView

    first, second = open_on(base), open_on(base)
    view = GenerateView(workspace=second)
    view.draft.sample_rate = 16000  # the one edit made here
    first.generator.change_contract(speed=1.25)
    change = view.plan_contract()
    assert change.contract.speed == 1.25
    assert change.contract.sample_rate == 16000
