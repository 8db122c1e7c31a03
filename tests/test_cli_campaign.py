"""`hybrid-audio campaign …` (the installed console script) against a real server.

The server has tiny datasets and real Piper; lists reuse its 3 names and 2 developers. What
is proved: `run --wait --out` follows the job, prints the summary with the failed rows by
number, exits 1 for them, and writes a zip that opens and holds the outputs' bytes; a clean
run exits 0; `rotation`, `list`, `show`, `messages`, `export`, `cancel`/`resume`, `delete`,
`--json`, one-line errors, and `make cli-campaign`.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api_server import NO_FAILURE_LIMIT, TINY_DATASETS, ApiServer, make_base_dir
from tests.api_server import start_server as start_api
from tests.test_cli import ok, one_line_error, run, run_make

LIST = (
    "id,name,developer\n"
    "a1,Ann,Acme Homes\n"
    "a2,,Acme Homes\n"  # row 2: empty name
    "a3,Bob,Beta Builders\n"
    "a4,🎉,Beta Builders\n"  # row 4: nothing to speak
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    base = make_base_dir(tmp_path_factory.mktemp("cli-campaign"), TINY_DATASETS)
    with start_api(base, key=secrets.token_urlsafe(24), env=NO_FAILURE_LIMIT) as server:
        yield server


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cli-campaign-work")
    (folder / "list.csv").write_text(LIST, encoding="utf-8")
    clean = [{"name": "Cid", "developer": "Acme Homes", "id": "c1"}]
    (folder / "clean.json").write_text(json.dumps(clean), encoding="utf-8")
    return folder


def cli(workdir: Path, server: ApiServer, *args: str) -> subprocess.CompletedProcess[str]:
    return run(workdir, server.base_url, *args, key=server.key)


def test_run_wait_out_summarises_failed_rows_exits_1_and_writes_the_zip(
    server: ApiServer, workdir: Path
) -> None:
    result = cli(
        workdir, server, "campaign", "run", "list.csv", "--template", "double_anchor",
        "--wait", "--out", "campaign.zip",
    )  # fmt: skip
    line = one_line_error(result, 1, after_progress=True)
    assert "2 failed row(s)" in line
    summary = result.stdout
    for field, value in (("total", 4), ("done", 2), ("failed", 2), ("pending", 0)):
        assert re.search(rf"│ {field} +│ {value} +│", summary), (field, summary)
    assert "failed rows: 2" in summary
    assert "the name is empty" in summary
    assert "cannot be spoken" in summary
    campaign_id = summary.split("campaign ", 1)[1].split()[0]

    archive = zipfile.ZipFile(workdir / "campaign.zip")
    assert archive.testzip() is None
    assert sorted(n for n in archive.namelist() if n.endswith(".wav")) == ["a1.wav", "a3.wav"]
    api = server.client()
    for row, name in ((1, "a1.wav"), (3, "a3.wav")):
        audio = api.get(f"/assemble/outputs/{campaign_id}_{row:06d}/audio").content
        assert archive.read(name) == audio

    shown = cli(workdir, server, "campaign", "show", campaign_id)
    assert shown.returncode == 0
    assert "the name is empty" in shown.stdout
    assert "a2" in shown.stdout  # the refused row's recipient id

    exported = workdir / "again.zip"
    ok(cli(workdir, server, "campaign", "export", campaign_id, "--out", str(exported)))
    assert exported.read_bytes() == (workdir / "campaign.zip").read_bytes()

    listed = ok(cli(workdir, server, "campaign", "list"))
    assert campaign_id in listed
    as_json = json.loads(ok(cli(workdir, server, "--json", "campaign", "list")))
    assert campaign_id in [c["id"] for c in as_json]
    failed = json.loads(
        ok(cli(workdir, server, "campaign", "messages", campaign_id, "--state", "failed", "--json"))
    )
    assert [m["row"] for m in failed] == [2, 4]


def test_a_clean_run_exits_0_and_json_prints_the_campaign(server: ApiServer, workdir: Path) -> None:
    args = ("campaign", "run", "clean.json", "--template", "double_anchor", "--wait", "--json")
    campaign = json.loads(ok(cli(workdir, server, *args)))
    assert (campaign["state"], campaign["done"], campaign["failed"]) == ("done", 1, 0)
    assert campaign["problems"] == []


def test_rotation_wait_exits_0(server: ApiServer, workdir: Path) -> None:
    args = ("campaign", "rotation", "--count", "3", "--seed", "5", "--template", "double_anchor")
    result = cli(workdir, server, *args, "--wait")
    summary = ok(result)
    assert "rotation" in summary
    campaign_id = summary.split("campaign ", 1)[1].split()[0]
    shown = json.loads(ok(cli(workdir, server, "--json", "campaign", "show", campaign_id)))
    assert (shown["source"], shown["state"], shown["done"]) == ("rotation", "done", 3)


def test_resume_wait_cancel_refused_when_done_and_delete(server: ApiServer, workdir: Path) -> None:
    api = server.client()
    fresh = [{"name": f"Yves {word}", "developer": "Acme Homes"} for word in "abcdef"]
    answer = api.post("/campaigns", json={"template": "double_anchor", "recipients": fresh})
    campaign_id = answer.json()["campaign"]["id"]
    api.post(f"/campaigns/{campaign_id}/cancel")  # at once: still making its stems
    while api.get(f"/campaigns/{campaign_id}").json()["state"] == "running":
        time.sleep(0.05)
    assert api.get(f"/campaigns/{campaign_id}").json()["state"] == "cancelled"

    summary = ok(cli(workdir, server, "campaign", "resume", campaign_id, "--wait"))
    assert f"campaign {campaign_id}" in summary
    assert api.get(f"/campaigns/{campaign_id}").json()["done"] == 6
    refused = one_line_error(cli(workdir, server, "campaign", "cancel", campaign_id), 1)
    assert "nothing to cancel" in refused
    assert "HTTP 409" in refused

    assert f"deleted {campaign_id}" in ok(cli(workdir, server, "campaign", "delete", campaign_id))
    missing = one_line_error(cli(workdir, server, "campaign", "show", campaign_id), 1)
    assert "not found" in missing
    assert "HTTP 404" in missing


def test_bad_files_and_usage(server: ApiServer, workdir: Path) -> None:
    (workdir / "bad.csv").write_text("first,second\nAnn,Acme\n", encoding="utf-8")
    line = one_line_error(
        cli(workdir, server, "campaign", "run", "bad.csv", "--template", "double_anchor"), 1
    )
    assert "no name and no developer column" in line
    assert "HTTP 422" in line
    missing = cli(workdir, server, "campaign", "run", "nowhere.csv", "--template", "x")
    assert missing.returncode == 2
    assert cli(workdir, server, "campaign", "run", "list.csv").returncode == 2  # no --template


def test_preview_and_make_cli_campaign(server: ApiServer, workdir: Path) -> None:
    preview = ok(
        cli(workdir, server, "campaign", "preview", "list.csv", "--template", "double_anchor")
    )
    assert "refused rows: 2" in preview
    assert "distinct_stems" in preview
    make = run_make(workdir, server, "cli-campaign", "list --json")  # the Makefile shortcut
    assert make.returncode == 0, make.stdout + make.stderr
    listed = json.loads(make.stdout)
    expected = httpx.get(f"{server.base_url}/campaigns", headers=server.headers()).json()
    assert [c["id"] for c in listed] == [c["id"] for c in expected]
