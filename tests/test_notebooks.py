"""The notebooks and the headless script, run as a user would, against a fresh base folder.

Each notebook is executed by a real Jupyter kernel (nbclient) from `notebooks/` with its
`parameters` cell overridden papermill-style (an injected cell right after it), real Piper
and a temp base folder holding copies of `templates/` and `data/`; the tests then check
what the run left on disk through the core, not the notebook's printed text. The notebooks
must be committed without outputs, so a diff shows code, not base64 audio.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from hybrid_audio.assembly import Assembler
from hybrid_audio.config import Settings
from hybrid_audio.workspace import Workspace
from tests.api_server import REPO, make_base_dir

NOTEBOOKS = REPO / "notebooks"
SCRIPT = REPO / "scripts" / "headless_batch.py"


@pytest.fixture
def base_dir(tmp_path: Path) -> Path:
    """A fresh base folder with the repository's templates and datasets, nothing else."""
    return make_base_dir(tmp_path)


@pytest.fixture
def workspace(base_dir: Path):
    """The core objects over `base_dir`, opened after a run to inspect what it left."""
    ws = Workspace.build(Settings(base_dir=base_dir))
    yield ws
    ws.close()


def execute(name: str, **parameters: object) -> nbformat.NotebookNode:
    """Run notebooks/`name` in a kernel started in notebooks/, with `parameters` injected."""
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    tagged = [i for i, c in enumerate(notebook.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{name}: exactly one cell must be tagged 'parameters'"
    injected = "\n".join(f"{key} = {value!r}" for key, value in parameters.items())
    notebook.cells.insert(tagged[0] + 1, nbformat.v4.new_code_cell(injected))
    client = NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    return client.execute()


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def assert_outputs_verify(assembler: Assembler, count: int) -> list[str]:
    """Exactly `count` outputs exist and each verifies from disk, byte for byte."""
    ids = assembler.output_ids()
    assert len(ids) == count
    for output_id in ids:
        assert assembler.verify_output(output_id).ok, output_id
    return ids


def test_notebooks_are_committed_without_outputs() -> None:
    """A notebook saved after a run (outputs, execution counts) is refused."""
    notebooks = sorted(NOTEBOOKS.glob("*.ipynb"))
    assert [p.name for p in notebooks] == [
        "01_quickstart.ipynb",
        "02_rotation_and_bulk.ipynb",
        "03_headless_batch.ipynb",
        "04_campaign.ipynb",
        "05_sound.ipynb",
    ]
    for path in notebooks:
        notebook = nbformat.read(path, as_version=4)
        nbformat.validate(notebook)
        for index, cell in enumerate(notebook.cells):
            if cell.cell_type == "code":
                where = f"{path.name} cell {index}"
                assert cell.outputs == [], f"{where} has outputs: clear them before committing"
                assert cell.execution_count is None, f"{where} has an execution count"


def test_quickstart_proves_the_message_and_names_the_tampered_byte(
    base_dir: Path, workspace: Workspace
) -> None:
    """01 makes three stems and a proven message, and verify names the byte it flips."""
    notebook = execute("01_quickstart.ipynb", base_dir=str(base_dir))

    stems = {r.text for r in workspace.cache.list()}
    assert {"José", "Brightwater Homes", "Hi"} <= stems
    (output_id,) = assert_outputs_verify(workspace.assembler, 1)  # the byte was put back
    document = workspace.assembler.load_output(output_id)
    assert document["template"] == "double_anchor"
    assert document["inputs"]["name"] == "José"
    printed = "".join(
        o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.outputs
    )
    assert "ok=False, first differing offset" in printed


def test_rotation_and_bulk_runs_a_logged_job_and_a_clean_audit(
    base_dir: Path, workspace: Workspace
) -> None:
    """02 steps the rotation, runs a bulk job to the end (logged), shown by the Cache page's
    own job panel, and audits a clean cache."""
    notebook = execute("02_rotation_and_bulk.ipynb", base_dir=str(base_dir), pairs=3, bulk_count=4)
    (bulk_cell,) = [c for c in notebook.cells if c.get("id") == "02-09"]
    shown = "".join(o.get("data", {}).get("text/html", "") for o in bulk_cell.outputs)
    assert "bulk-progress" in shown, "the job is not shown by the Cache page's panel"
    assert "bulk-status" in shown

    cursors = workspace.rotation.state()
    assert cursors["pair"].cycle == 0
    assert cursors["pair"].position == 4  # three steps shown, one message assembled
    assert_outputs_verify(workspace.assembler, 1)
    kinds = [r.kind for r in workspace.cache.list()]
    assert kinds.count("name") >= 4
    assert kinds.count("developer") >= 4
    assert workspace.cache.verify().ok

    (job,) = workspace.jobs.list()
    assert job.state == "done"
    assert job.params == {"source": "notebook", "names": 4, "developers": 4}
    events = jsonl(base_dir / "logs" / "jobs.jsonl")
    assert [e["event"] for e in events if e.get("job") == job.id] == ["job_started", "job_done"]
    audits = [e for e in events if e["event"] == "cache_audit"]
    assert len(audits) == 1  # the notebook's audit is logged as the server's are
    assert audits[0]["ok"] is True


def test_campaign_notebook_runs_a_list_to_a_zip_and_audits_storage(
    base_dir: Path, workspace: Workspace
) -> None:
    """04 turns a small list (one bad row) into verified messages, a zip and a logged audit."""
    recipients = "id,name,developer\nr1,Ann,Hilton\nr2,Bob,Hilton\nr3,,Hilton\n"
    execute("04_campaign.ipynb", base_dir=str(base_dir), recipients=recipients)

    (info,) = workspace.campaigns.list()
    assert (info.state, info.done, info.failed) == ("done", 2, 1)
    assert [p.row for p in workspace.campaigns.problems(info.id)] == [3]
    assert_outputs_verify(workspace.assembler, 2)
    zip_path = base_dir / "output" / "campaigns" / f"{info.id}.zip"
    with zipfile.ZipFile(zip_path) as archive:
        assert archive.testzip() is None
        assert {"r1.wav", "r2.wav", "messages.csv", "campaign.json"} <= set(archive.namelist())
    audits = [
        e for e in jsonl(base_dir / "logs" / "storage.jsonl") if e["event"] == "gcs_consistency"
    ]
    assert len(audits) == 1  # the notebook's audit is logged as the server's are


def test_sound_notebook_levels_stems_fixes_a_name_and_delivers(
    base_dir: Path, workspace: Workspace
) -> None:
    """05 makes stems at −16 LUFS ±0.5 under −1 dBTP, fixes a name's pronunciation (the
    stem changes) and removes the fix (the old bytes return), and delivers a message in
    three formats, each recorded in its manifest with the sha256 of the file on disk."""
    execute(
        "05_sound.ipynb",
        base_dir=str(base_dir),
        names=["Sarah", "Nguyen"],
        developers=["Hilton"],
        fix_text="Nguyen",
        formats=["mp3", "mulaw"],
    )

    records = workspace.cache.list()
    assert {r.text for r in records} >= {"Sarah", "Nguyen", "Hilton"}
    for record in records:
        assert abs(record.loudness_after - workspace.contract.loudness_lufs) <= 0.5
        assert record.true_peak_after <= workspace.contract.true_peak_dbtp
        assert record.pronunciation == ""  # the fix was removed again
    assert workspace.pronunciations.list() == []
    ids = assert_outputs_verify(workspace.assembler, 2)  # the message, the one made stale
    delivered = [workspace.assembler.load_output(i).get("deliveries", {}) for i in ids]
    (deliveries,) = [d for d in delivered if d]
    assert set(deliveries) == {"mp3", "mulaw"}
    for record in deliveries.values():
        data = (Path(workspace.settings.output_dir) / record["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == record["sha256"]


def test_headless_batch_notebook_writes_verified_messages_and_a_summary(
    base_dir: Path, workspace: Workspace
) -> None:
    """03 makes `count` messages from consecutive rotation pairs, all verified, and reports."""
    execute("03_headless_batch.ipynb", base_dir=str(base_dir), count=3)

    assert_batch(base_dir, workspace, count=3)


def test_headless_script_runs_the_same_batch_without_jupyter(
    base_dir: Path, workspace: Workspace
) -> None:
    """The script (plain python, no kernel) makes the same batch as notebook 03."""
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--base-dir", str(base_dir), "--count", "2"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "batch_summary.csv" in run.stdout
    assert_batch(base_dir, workspace, count=2)


def test_headless_script_help_and_bad_count() -> None:
    """--help documents the options; a count below 1 is a usage error (exit 2), not a run."""
    shown = subprocess.run(
        [sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, check=False
    )
    assert shown.returncode == 0
    for option in ("--base-dir", "--count", "--template"):
        assert option in shown.stdout
    refused = subprocess.run(
        [sys.executable, str(SCRIPT), "--count", "0"], capture_output=True, text=True, check=False
    )
    assert refused.returncode == 2
    assert "--count must be at least 1" in refused.stderr


def assert_batch(base_dir: Path, workspace: Workspace, count: int) -> None:
    """`count` verified outputs, from the rotation's first `count` pair positions, and the
    summary CSV and the plot (self-contained HTML) beside them."""
    ids = assert_outputs_verify(workspace.assembler, count)
    steps = jsonl(base_dir / "logs" / "rotation.jsonl")
    pair_positions = [e["position"] for e in steps if e.get("stream") == "pair"]
    assert pair_positions == list(range(count))
    output = base_dir / "output"
    lines = (output / "batch_summary.csv").read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("output,name,developer,")
    assert sorted(line.split(",")[0] for line in lines[1:]) == sorted(ids)
    html = (output / "batch_durations.html").read_text(encoding="utf-8")
    assert "Duration per message" in html
    assert '<script type="text/javascript" src=' not in html  # BokehJS inline, no CDN
