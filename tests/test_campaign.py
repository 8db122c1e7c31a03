"""Campaigns against real Piper and SQLite: 200 recipients → 200 proven outputs (each distinct
stem synthesized once), bad rows by row number at parsing and while running, messages.csv
and the streamed zip checked by independent readers, cancel and resume, a contract change
pausing the run, rotation pairs materialised, script slots, hybrid joins, the ETA,
deletion."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import threading
import time
import tracemalloc
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import soundfile

from hybrid_audio import assembly
from hybrid_audio import campaign as campaign_module
from hybrid_audio.api.routers.campaigns import get_campaign
from hybrid_audio.campaign import CampaignError, Campaigns, CampaignState
from hybrid_audio.campaign_export import PIECE_BYTES
from hybrid_audio.config import Settings
from hybrid_audio.database import Database
from hybrid_audio.engines import create_engine
from hybrid_audio.jobs import Job, JobCancelledError, JobState
from hybrid_audio.recipients import parse_recipients
from hybrid_audio.rotation import RotationEngine
from hybrid_audio.wav import read_wav
from hybrid_audio.workspace import Workspace
from tests.api_server import TINY_DATASETS, make_base_dir
from tests.test_generation import CountingEngine

NAMES = ("Ann", "Bob", "Cid")
DEVELOPERS = ("Acme Homes", "Beta Builders")


def recipients_csv(count: int, bad_rows: str = "") -> str:
    """`count` good rows (3 names × 2 developers, ids r1…) then `bad_rows` verbatim."""
    rows = "".join(f"r{i},{NAMES[i % 3]},{DEVELOPERS[i % 2]}\n" for i in range(1, count + 1))
    return "id,name,developer,script\n" + rows + bad_rows


#: Rows 201–205: empty name, emoji only, developer missing, duplicated id, unknown script.
BAD_ROWS = (
    ",,Acme Homes,\nx1,😀,Acme Homes,\nx2,Bob,,\nr7,Cid,Acme Homes,\nx3,Ann,Acme Homes,nope\n"
)


@pytest.fixture(scope="module")
def engine() -> CountingEngine:
    """Real Piper, counting what it is asked to synthesize."""
    return CountingEngine(create_engine(Settings(tts_engine="piper")))


@pytest.fixture(scope="module")
def workspace(
    tmp_path_factory: pytest.TempPathFactory, engine: CountingEngine
) -> Iterator[Workspace]:
    base = make_base_dir(tmp_path_factory.mktemp("campaigns"), TINY_DATASETS)
    workspace = Workspace.build(Settings(base_dir=base), engine=engine)
    yield workspace
    workspace.close()


@pytest.fixture
def progress_every_row(monkeypatch: pytest.MonkeyPatch) -> None:
    """Publish a run's progress after every row (not at most every `PROGRESS_SECONDS`), for
    tests that act from a watcher of the job's `done` at an exact row."""
    monkeypatch.setattr("hybrid_audio.campaign.PROGRESS_SECONDS", 0.0)


@pytest.fixture(scope="module")
def big(workspace: Workspace, engine: CountingEngine) -> str:
    """The 200-recipient campaign with five bad rows, run to the end through its job; each
    distinct stem it needs is synthesized once (not once per row)."""
    campaigns = workspace.campaigns
    parsed = parse_recipients(recipients_csv(200, BAD_ROWS).encode(), "list.csv")
    plan = campaigns.plan("double_anchor", parsed)
    assert (plan.recipients, plan.distinct_stems, plan.to_make) == (200, 7, 7)
    info = campaigns.create("double_anchor", parsed)
    assert (info.state, info.total, info.failed, info.pending) == ("created", 205, 5, 200)
    job = campaigns.start(info.id, source="test")
    assert job.kind == "campaign"
    assert job.params == {"campaign_id": info.id, "source": "test"}
    synthesized = len(engine.calls)
    finished = workspace.jobs.wait(job.id, timeout=120)
    assert finished.state == JobState.DONE, finished.errors
    assert len(engine.calls) - synthesized == plan.to_make
    return info.id


def read_messages_csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))


def test_200_recipients_make_200_outputs_verified_from_disk(workspace: Workspace, big: str) -> None:
    campaigns = workspace.campaigns
    info = campaigns.get(big)
    assert (info.state, info.done, info.failed, info.pending) == ("done", 200, 5, 0)
    output = Path(workspace.settings.output_dir)
    assert len(list(output.glob(f"{big}_*.wav"))) == 200
    assert len(list(output.glob(f"{big}_*.json"))) == 200
    rows = read_messages_csv(campaigns.folder(big) / "messages.csv")
    assert [int(r["row"]) for r in rows] == list(range(1, 206))
    for row in rows[:200]:
        wav = output / f"{row['output_id']}.wav"
        data = wav.read_bytes()
        assert hashlib.sha256(data).hexdigest() == row["sha256"]
        assert row["verified"] == "true"
        assert row["output_id"] == f"{big}_{int(row['row']):06d}"
        audio, rate = soundfile.read(io.BytesIO(data), dtype="int16")  # libsndfile, not ours
        assert audio.size > rate  # more than a second of speech
        assert abs(len(audio) / rate - float(row["duration"])) < 1e-3
        assert read_wav(data).format == workspace.contract.audio_format
        manifest = json.loads(wav.with_suffix(".json").read_text())
        assert manifest["inputs"]["name"] == row["name"]
        assert manifest["inputs"]["developer"] == row["developer"]
        assert manifest["verify"]["ok"] is True
        assert row["recipient_id"] == f"r{row['row']}"
        # the message itself says whom it is for (not only messages.csv and the database)
        assert manifest["campaign"] == {
            "id": big,
            "row": int(row["row"]),
            "recipient_id": row["recipient_id"],
        }
        assert workspace.assembler.verify_output(row["output_id"]).ok  # proven again
    document = json.loads((campaigns.folder(big) / "campaign.json").read_text())
    assert document["counts"]["done"] == document["counts"]["verified"] == 200
    assert document["contract_signature"] == workspace.contract.signature()


def test_bad_rows_are_reported_with_row_numbers(workspace: Workspace, big: str) -> None:
    problems = {p.row: p.message for p in workspace.campaigns.problems(big)}
    assert sorted(problems) == [201, 202, 203, 204, 205]
    assert problems[201] == "the name is empty"
    assert "cannot be spoken" in problems[202]
    assert problems[203] == "the developer is empty"
    assert problems[204] == "duplicated recipient id 'r7' (first on row 7)"
    assert problems[205] == "unknown script key 'nope'"
    csv_rows = read_messages_csv(workspace.campaigns.folder(big) / "messages.csv")
    assert {int(r["row"]): r["error"] for r in csv_rows if r["error"]} == problems
    failed = workspace.campaigns.messages(big, state="failed")
    assert [m.row for m in failed] == [201, 202, 203, 204, 205]
    found = workspace.campaigns.messages(big, search="r19", limit=10)
    assert [m.recipient_id for m in found] == [
        "r19",
        "r190",
        "r191",
        "r192",
        "r193",
        "r194",
        "r195",
        "r196",
        "r197",
        "r198",
    ]


def test_zip_streams_small_chunks_and_holds_the_outputs(workspace: Workspace, big: str) -> None:
    campaigns = workspace.campaigns
    chunks = list(campaigns.export_zip(big))
    assert max(map(len, chunks)) <= PIECE_BYTES + 4096  # never the whole campaign at once
    data = b"".join(chunks)
    assert len(data) > 20 * PIECE_BYTES
    archive = zipfile.ZipFile(io.BytesIO(data))
    assert archive.testzip() is None
    names = archive.namelist()
    assert len([n for n in names if n.endswith(".wav")]) == 200
    output = Path(workspace.settings.output_dir)
    listed = read_messages_csv(campaigns.folder(big) / "messages.csv")
    for row in listed[:200]:
        assert row["file"] == f"r{row['row']}.wav"
        stem = row["file"][: -len(".wav")]
        assert archive.read(row["file"]) == (output / f"{row['output_id']}.wav").read_bytes()
        manifest = json.loads(archive.read(f"manifests/{stem}.json"))
        assert manifest["id"] == row["output_id"]
    in_zip = list(csv.DictReader(io.StringIO(archive.read("messages.csv").decode())))
    assert in_zip == listed
    assert json.loads(archive.read("campaign.json"))["counts"]["done"] == 200


def test_zip_read_one_chunk_per_thread_is_whole(
    workspace: Workspace, big: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A StreamingResponse asks for each chunk from whichever threadpool thread is free, and
    the rows are read from SQLite `CHUNK_ROWS` at a time: each read must use the connection
    of the thread it runs on (a connection made on another thread raises ProgrammingError,
    which cut every export of more than 500 rows under load)."""
    monkeypatch.setattr("hybrid_audio.campaign.CHUNK_ROWS", 7)
    chunks = workspace.campaigns.export_zip(big)
    received: list[bytes] = []

    def one(step: list[bytes | BaseException | None]) -> None:
        try:
            step.append(next(chunks, None))
        except BaseException as error:  # raised on the reading thread: report it here
            step.append(error)

    while True:
        step: list[bytes | BaseException | None] = []
        thread = threading.Thread(target=one, args=(step,))
        thread.start()
        thread.join()
        if isinstance(step[0], BaseException):
            raise step[0]
        if step[0] is None:
            break
        received.append(step[0])
    archive = zipfile.ZipFile(io.BytesIO(b"".join(received)))
    assert archive.testzip() is None
    assert len([n for n in archive.namelist() if n.endswith(".wav")]) == 200
    rows = list(csv.DictReader(io.StringIO(archive.read("messages.csv").decode())))
    assert [int(r["row"]) for r in rows] == list(range(1, 206))


def test_zip_names_without_ids_use_row_and_slug_and_never_collide(workspace: Workspace) -> None:
    campaigns = workspace.campaigns
    data = "id,name,developer\n,Ann,Acme Homes\n../x,Bob,Acme Homes\n..x,Cid,Acme Homes\n"
    info = campaigns.create("single_anchor", parse_recipients(data))
    campaigns.run(info.id)
    archive = zipfile.ZipFile(io.BytesIO(b"".join(campaigns.export_zip(info.id))))
    wavs = sorted(n for n in archive.namelist() if n.endswith(".wav"))
    assert wavs == ["000001_ann.wav", "x.wav", "x_2.wav"]


def test_messages_csv_texts_never_run_as_spreadsheet_formulas(workspace: Workspace) -> None:
    """Recipient lists come from third parties; messages.csv is opened in spreadsheets."""
    campaigns = workspace.campaigns
    data = 'id,name,developer\n"=HYPERLINK(""http://x"")",Ann,Acme Homes\n@cmd,Bob,Acme Homes\n'
    info = campaigns.create("single_anchor", parse_recipients(data))
    campaigns.run(info.id)
    rows = read_messages_csv(campaigns.folder(info.id) / "messages.csv")
    assert [r["recipient_id"] for r in rows] == ['\'=HYPERLINK("http://x")', "'@cmd"]
    assert [r["name"] for r in rows] == ["Ann", "Bob"]  # ordinary texts unchanged


def test_reading_a_campaign_does_not_load_every_refused_row(workspace: Workspace) -> None:
    """GET /campaigns/{id} shows the first MAX_PAGE problems: it must not read every failed
    row of a long list into memory to show them (it did: 30,000 refused rows, ~17 MB and a
    second per request, growing with the list)."""
    from hybrid_audio.api.models import MAX_PAGE
    from hybrid_audio.api.routers.campaigns import get_campaign

    text = "name,developer\nAnn,Acme Homes\n" + ",Acme Homes\n" * 30_000
    info = workspace.campaigns.create("double_anchor", parse_recipients(text.encode()))
    tracemalloc.start()
    try:
        detail = get_campaign(info.id, workspace)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert detail.failed == 30_000
    assert [p.row for p in detail.problems] == list(range(2, MAX_PAGE + 2))
    assert peak < 4 * 1024 * 1024, f"{peak / 1e6:.1f} MB to read one campaign"
    workspace.campaigns.delete(info.id)


def test_a_zip_taken_while_the_campaign_runs_names_only_files_it_holds(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch, progress_every_row: None
) -> None:
    """Messages finished after the zip's WAVs were written are not in it: its messages.csv
    must not name files for them (it did: a row made while messages.csv was streaming got
    a `file` the zip did not hold)."""
    monkeypatch.setattr("hybrid_audio.campaign.CHUNK_ROWS", 100)
    campaigns = workspace.campaigns
    good = "".join(f"{NAMES[i % 3]},{DEVELOPERS[i % 2]}\n" for i in range(5))
    data = "name,developer\n" + good + ",Acme Homes\n" * 195 + good  # 1-5, 201-205 made
    info = campaigns.create("double_anchor", parse_recipients(data))
    job = Job(kind="campaign")
    cancel_at(job, campaigns, 5)
    with pytest.raises(JobCancelledError):
        campaigns.run(info.id, job)
    assert campaigns.get(info.id).done == 5
    chunks = campaigns.export_zip(info.id)
    received: list[bytes] = []
    while not received or b"messages.csv" not in received[-1]:
        received.append(next(chunks))  # until messages.csv has its first 200 rows out
    campaigns.run(info.id)  # meanwhile the campaign makes rows 201-205
    assert campaigns.get(info.id).done == 10
    received += list(chunks)
    archive = zipfile.ZipFile(io.BytesIO(b"".join(received)))
    wavs = {n for n in archive.namelist() if n.endswith(".wav")}
    assert len(wavs) == 5
    rows = list(csv.DictReader(io.StringIO(archive.read("messages.csv").decode())))
    assert {r["file"] for r in rows if r["file"]} == wavs


def test_same_list_and_template_give_the_same_bytes(
    workspace: Workspace, big: str, engine: CountingEngine
) -> None:
    campaigns = workspace.campaigns
    again = campaigns.create("double_anchor", parse_recipients(recipients_csv(30)))
    synthesized = len(engine.calls)
    campaigns.run(again.id)
    assert len(engine.calls) == synthesized  # every stem was made by the first campaign
    first = {m.row: m.sha256 for m in campaigns.messages(big, limit=30)}
    second = {m.row: m.sha256 for m in campaigns.messages(again.id, limit=30)}
    assert first == second
    assert None not in second.values()


def cancel_at(job: Job, campaigns: Campaigns, rows: int) -> None:
    """Cancel `job` once it has made `rows` messages (from inside its own thread)."""
    job.param.watch(lambda event: event.new >= rows and job.cancel(), "done")


def test_cancel_then_resume_completes(workspace: Workspace, progress_every_row: None) -> None:
    campaigns = workspace.campaigns
    info = campaigns.create("double_anchor", parse_recipients(recipients_csv(60)))
    job = Job(kind="campaign")
    cancel_at(job, campaigns, 20)
    with pytest.raises(JobCancelledError):
        campaigns.run(info.id, job)
    stopped = campaigns.get(info.id)
    assert stopped.state == CampaignState.CANCELLED
    assert stopped.done == 20
    assert stopped.pending == 40
    with pytest.raises(CampaignError, match="only a created campaign starts"):
        campaigns.start(info.id)
    resumed = workspace.jobs.wait(campaigns.resume(info.id).id, timeout=60)
    assert resumed.state == JobState.DONE
    assert resumed.total == 40
    final = campaigns.get(info.id)
    assert (final.state, final.done, final.pending) == ("done", 60, 0)
    output = Path(workspace.settings.output_dir)
    assert len(list(output.glob(f"{info.id}_*.wav"))) == 60
    with pytest.raises(CampaignError, match="is done"):
        campaigns.resume(info.id)


def test_progress_is_published_at_most_every_interval_and_whenever_the_run_stops(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run publishes its job's `done` (a param update, its watchers, the job's row) not per
    row but at most every `PROGRESS_SECONDS`, and always when it stops: cancelled after
    7 rows the job says 7, and a resumed job ends with its whole count in the job store."""
    monkeypatch.setattr("hybrid_audio.campaign.PROGRESS_SECONDS", 3600.0)
    campaigns = workspace.campaigns
    info = campaigns.create("double_anchor", parse_recipients(recipients_csv(12)))
    job = Job(kind="campaign")
    seen: list[int] = []
    job.param.watch(lambda event: seen.append(event.new), "done")
    made = 0
    make_row = campaign_module.make_row

    def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal made
        made += 1
        if made == 7:
            job.cancel()  # seen before the next row
        return make_row(*args, **kwargs)

    monkeypatch.setattr(campaign_module, "make_row", counted)
    with pytest.raises(JobCancelledError):
        campaigns.run(info.id, job)
    assert seen == [1, 7]  # the first row at once, then the rest when the run stopped
    assert (job.done, job.message) == (7, "messages: row 7")
    assert campaigns.get(info.id).done == 7
    resumed = workspace.jobs.wait(campaigns.resume(info.id).id, timeout=60)
    stored = workspace.jobs.store.get(resumed.id)
    assert stored is not None
    assert (resumed.state, resumed.done, stored.done) == (JobState.DONE, 5, 5)
    assert campaigns.get(info.id).done == 12


def test_a_contract_change_mid_run_pauses_with_the_reason(
    workspace: Workspace, progress_every_row: None
) -> None:
    campaigns = workspace.campaigns
    info = campaigns.create("double_anchor", parse_recipients(recipients_csv(30)))
    pinned = info.contract_signature
    job = Job(kind="campaign")

    def change(event: object) -> None:
        if job.done == 10:
            workspace.generator.change_contract(speed=1.25)

    job.param.watch(change, "done")
    try:
        paused = campaigns.run(info.id, job)
        assert paused.state == CampaignState.PAUSED
        assert paused.done == 10
        assert paused.pause_reason.startswith(
            f"the voice contract changed from {pinned[:12]} to "
            f"{workspace.contract.signature()[:12]}"
        )
        with pytest.raises(CampaignError, match="voice contract changed"):
            campaigns.resume(info.id)
        output = Path(workspace.settings.output_dir)
        assert len(list(output.glob(f"{info.id}_*.wav"))) == 10  # nothing in the new voice
    finally:
        workspace.generator.change_contract(speed=1.0)
    assert workspace.contract.signature() == pinned
    resumed = workspace.jobs.wait(campaigns.resume(info.id).id, timeout=60)
    assert resumed.state == JobState.DONE
    assert campaigns.get(info.id).done == 30


def test_rotation_source_materialises_its_pairs(
    workspace: Workspace, progress_every_row: None
) -> None:
    campaigns = workspace.campaigns
    fresh = RotationEngine(settings=workspace.settings, seed=4242, log_steps=False)
    size = len(NAMES) * len(DEVELOPERS)  # 10 pairs run into the second cycle
    expected = [fresh.at("pair", i // size, i % size) for i in range(12)]
    info = campaigns.create("double_anchor", rotation_count=10, seed=4242)
    assert info.source == "rotation"
    assert info.params == {"rotation_count": 10, "seed": 4242}
    pairs = [(m.name, m.developer) for m in campaigns.messages(info.id)]
    assert pairs == [(step.name, step.developer) for step in expected[:10]]
    later = campaigns.create("double_anchor", rotation_count=2, seed=4242)  # the next two
    assert [(m.name, m.developer) for m in campaigns.messages(later.id)] == [
        (step.name, step.developer) for step in expected[10:]
    ]
    job = Job(kind="campaign")
    cancel_at(job, campaigns, 4)
    with pytest.raises(JobCancelledError):
        campaigns.run(info.id, job)
    workspace.jobs.wait(campaigns.resume(info.id).id, timeout=60)
    for message in campaigns.messages(info.id):
        inputs = workspace.assembler.load_output(message.output_id or "")["inputs"]
        assert (inputs["name"], inputs["developer"]) == pairs[message.row - 1]


def test_template_and_source_checks(workspace: Workspace) -> None:
    campaigns = workspace.campaigns
    parsed = parse_recipients(recipients_csv(2))
    with pytest.raises(ValueError, match="nope"):
        campaigns.create("nope", parsed)
    with pytest.raises(CampaignError, match="either recipients or rotation_count"):
        campaigns.create("double_anchor", parsed, rotation_count=3)
    with pytest.raises(CampaignError, match="join must be"):
        campaigns.create("double_anchor", parsed, join="fade")
    scripted = campaigns.plan("scripted", parsed)  # rows without a script key
    assert scripted.recipients == 0
    assert {p.message for p in scripted.problems} == {
        "template 'scripted' needs a script key; this row has none"
    }
    with pytest.raises(KeyError):
        campaigns.get("c000000000000")


def test_delete_erases_rows_files_folder_and_jobs(workspace: Workspace) -> None:
    campaigns = workspace.campaigns
    info = campaigns.create("double_anchor", parse_recipients(recipients_csv(5)))
    job = workspace.jobs.wait(campaigns.start(info.id).id, timeout=60)
    output = Path(workspace.settings.output_dir)
    assert len(list(output.glob(f"{info.id}_*"))) == 10
    assert (campaigns.folder(info.id) / "messages.csv").exists()
    before = campaigns.revision
    campaigns.delete(info.id)
    assert campaigns.revision > before
    assert list(output.glob(f"{info.id}_*")) == []
    assert not campaigns.folder(info.id).exists()
    with pytest.raises(KeyError):
        campaigns.get(info.id)
    db = workspace.database.connection()
    assert db.execute(
        "SELECT count(*) FROM campaign_messages WHERE campaign_id = ?", (info.id,)
    ).fetchone() == (0,)
    with pytest.raises(KeyError):
        workspace.jobs.get(job.id)


def test_another_process_changes_reach_refresh(workspace: Workspace) -> None:
    """Campaigns on another connection to the same database (as another server worker has)
    see a campaign created here once refresh() reads the "campaigns" revision counter."""
    other = Campaigns(
        settings=workspace.settings,
        database=Database(workspace.database.path),
        assembler=workspace.assembler,
        rotation=workspace.rotation,
        jobs=workspace.jobs,
    )
    seen = other.revision
    info = workspace.campaigns.create("double_anchor", parse_recipients(recipients_csv(2)))
    assert other.revision == seen
    assert other.refresh()
    assert other.revision > seen
    assert other.get(info.id).total == 2


def test_failures_while_running_fail_their_rows_by_number_and_the_others_finish(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not refusals at parsing: a stem the engine refuses (Han text, for the English Piper
    voice) and a message whose proof fails (its WAV reads back changed, as a bad disk would
    give it) fail their rows with the row numbers; the rows around them are made."""
    campaigns = workspace.campaigns
    data = "name,developer\nAnn,Acme Homes\n王伟,Acme Homes\nBob,Beta Builders\nCid,Acme Homes\n"
    info = campaigns.create("double_anchor", parse_recipients(data))
    assert (info.pending, info.failed) == (4, 0)  # the list is fine; the engine refuses
    corrupted = f"{campaigns.message_output_id(info.id, 3)}.wav"
    read_inside = assembly.read_inside

    def read_back(folder: Path, relative: str) -> tuple[bytes, object]:
        data, info = read_inside(folder, relative)
        if relative == corrupted:
            data = data[:-1] + bytes([data[-1] ^ 0xFF])
        return data, info

    monkeypatch.setattr(assembly, "read_inside", read_back)
    job = workspace.jobs.wait(campaigns.start(info.id, source="test").id, timeout=120)
    assert job.state == JobState.DONE
    assert len(job.errors) == 2
    assert job.errors[0].startswith("row 2: name stem: ")
    assert "cannot speak" in job.errors[0]
    assert job.errors[1] == "row 3: the message did not verify byte for byte"
    final = campaigns.get(info.id)
    assert (final.state, final.done, final.failed) == ("done", 2, 2)
    messages = {m.row: m for m in campaigns.messages(info.id)}
    assert [messages[row].state for row in (1, 2, 3, 4)] == ["done", "failed", "failed", "done"]
    assert messages[1].verified
    assert messages[4].verified
    assert not messages[3].verified
    assert {p.row: p.message for p in campaigns.problems(info.id)} == {
        2: job.errors[0].removeprefix("row 2: "),
        3: "the message did not verify byte for byte",
    }
    rows = read_messages_csv(campaigns.folder(info.id) / "messages.csv")
    assert [(r["row"], bool(r["error"])) for r in rows] == [
        ("1", False),
        ("2", True),
        ("3", True),
        ("4", False),
    ]


def test_the_counts_committed_with_each_batch_are_the_rows_states(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch adds what it changed to the campaign's counts (no recount per batch): after
    every commit, done and failed are the rows' states, refusals at creation and a failed
    proof included."""
    monkeypatch.setattr(campaign_module, "BATCH_ROWS", 2)
    monkeypatch.setattr(campaign_module, "BATCH_SECONDS", 3600.0)
    campaigns = workspace.campaigns
    data = "name,developer\n" + "Ann,Acme Homes\n" * 3 + ",Acme Homes\n" + "Bob,Beta Builders\n" * 3
    info = campaigns.create("double_anchor", parse_recipients(data))
    assert (info.pending, info.failed) == (6, 1)
    corrupted = f"{campaigns.message_output_id(info.id, 3)}.wav"
    read_inside = assembly.read_inside

    def read_back(folder: Path, relative: str) -> tuple[bytes, object]:
        data, info = read_inside(folder, relative)
        return (data[:-1] + bytes([data[-1] ^ 0xFF]) if relative == corrupted else data), info

    monkeypatch.setattr(assembly, "read_inside", read_back)
    seen: list[tuple[tuple[int, int], tuple[int, int]]] = []

    def committed(event: object) -> None:
        counted = dict(
            workspace.database.connection()
            .execute(
                "SELECT state, count(*) FROM campaign_messages WHERE campaign_id = ?"
                " GROUP BY state",
                (info.id,),
            )
            .fetchall()
        )
        now = campaigns.get(info.id)
        seen.append(((now.done, now.failed), (counted.get("done", 0), counted.get("failed", 0))))

    watcher = campaigns.param.watch(committed, "revision")
    try:
        final = campaigns.run(info.id)
    finally:
        campaigns.param.unwatch(watcher)
    assert (final.done, final.failed) == (5, 2)
    assert ((2, 1), (2, 1)) in seen  # the first batch: rows 1 and 2
    assert ((3, 2), (3, 2)) in seen  # rows 3 (its proof failed) and 5 (row 4 was refused)
    assert all(stored == rows for stored, rows in seen)


def test_a_scripted_campaign_speaks_each_rows_script_key(workspace: Workspace) -> None:
    """The `script` column names a key of the scripts dataset; the `scripted` template
    speaks it in each message."""
    campaigns = workspace.campaigns
    data = "id,name,developer,script\na,Ann,Acme Homes,offer\nb,Bob,Beta Builders,hello\n"
    info = campaigns.create("scripted", parse_recipients(data))
    campaigns.run(info.id)
    assert campaigns.get(info.id).done == 2
    for message, key in zip(campaigns.messages(info.id), ("offer", "hello"), strict=True):
        manifest = workspace.assembler.load_output(message.output_id or "")
        assert manifest["inputs"]["script"] == message.script == key
        assert "stem.script." + key in {s.get("stem_id") for s in manifest["sources"]}
        assert manifest["verify"]["ok"] is True


def test_a_scripted_rotation_keeps_its_script_keys_across_a_resume(
    workspace: Workspace, progress_every_row: None
) -> None:
    """A rotation campaign on a template with a script slot takes the rotation's script
    keys too, stored at creation: a cancelled run resumed speaks the stored keys."""
    campaigns = workspace.campaigns
    info = campaigns.create("scripted", rotation_count=4, seed=77)
    stored = [(m.name, m.developer, m.script) for m in campaigns.messages(info.id)]
    assert all(script for _, _, script in stored)
    job = Job(kind="campaign")
    cancel_at(job, campaigns, 2)
    with pytest.raises(JobCancelledError):
        campaigns.run(info.id, job)
    workspace.jobs.wait(campaigns.resume(info.id).id, timeout=60)
    assert campaigns.get(info.id).done == 4
    for message in campaigns.messages(info.id):
        inputs = workspace.assembler.load_output(message.output_id or "")["inputs"]
        assert (inputs["name"], inputs["developer"], inputs["script"]) == stored[message.row - 1]


def test_a_hybrid_join_campaign_makes_proven_hybrid_messages(workspace: Workspace) -> None:
    campaigns = workspace.campaigns
    info = campaigns.create("double_anchor", parse_recipients(recipients_csv(3)), join="hybrid")
    assert info.join == "hybrid"
    campaigns.run(info.id)
    messages = campaigns.messages(info.id)
    assert [m.state for m in messages] == ["done"] * 3
    for message in messages:
        manifest = workspace.assembler.load_output(message.output_id or "")
        assert manifest["merge"]["mode"] == "hybrid"
        assert manifest["verify"]["ok"] is True
        assert workspace.assembler.verify_output(message.output_id or "").ok


def test_the_eta_of_a_running_campaign_is_the_rest_at_the_pace_so_far(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch, progress_every_row: None
) -> None:
    """GET /campaigns/{id}'s `eta_seconds`, read while the job is at row 5 of 20: the 15
    rows left at the pace of the first 5 (bounded by the clock before and after the read),
    and none once the campaign is done."""
    campaigns = workspace.campaigns
    data = "name,developer\n" + "Eve,Acme Homes\nFay,Beta Builders\n" * 10  # new stems
    info = campaigns.create("double_anchor", parse_recipients(data))
    started = threading.Event()  # the job makes no stem before the watcher is on it
    generate = workspace.generator.generate

    def held(*args: object, **kwargs: object) -> object:
        started.wait(timeout=60)
        return generate(*args, **kwargs)

    monkeypatch.setattr(workspace.generator, "generate", held)
    job = campaigns.start(info.id, source="test")
    seen: list[tuple[float, float | None, str, float]] = []

    def sample(event: object) -> None:
        if job.done == 5:  # in the job's thread: it waits for this read
            before = time.time()
            detail = get_campaign(info.id, workspace)
            seen.append((before, detail.eta_seconds, detail.state, time.time()))

    job.param.watch(sample, "done")
    started.set()
    assert workspace.jobs.wait(job.id, timeout=120).state == JobState.DONE
    [(before, eta, state, after)] = seen
    assert state == "running"
    assert eta is not None
    assert job.total == 20
    assert job.started_at is not None
    pace_before, pace_after = (before - job.started_at) / 5, (after - job.started_at) / 5
    assert pace_before * 15 <= eta <= pace_after * 15
    assert get_campaign(info.id, workspace).eta_seconds is None
