"""`hybrid-audio pronounce …` against the real server (subprocesses, real Piper).

What a reviewer does after hearing a wrong name: preview, fix, see the stems made again
and the messages that became stale, check them, undo the fix. Refusals are one line.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api_server import TINY_DATASETS, ApiServer, make_base_dir, start_server
from tests.test_cli import ok, one_line_error, run, run_make

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    base = make_base_dir(tmp_path_factory.mktemp("cli-pronounce"), TINY_DATASETS)
    with start_server(base, key=secrets.token_urlsafe(24)) as server:
        yield server


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cli-pronounce-work")


def cli(server: ApiServer, workdir: Path, *args: str):
    return run(workdir, server.base_url, *args, key=server.key)


def test_fix_a_name_see_what_became_stale_and_undo_it(server: ApiServer, workdir: Path) -> None:
    client = server.client()
    message = client.post(
        "/assemble/template",
        json={"template": "double_anchor", "name": "Bob", "developer": "Acme Homes"},
    ).json()["id"]
    assert "stale stems: 0" in ok(cli(server, workdir, "pronounce", "stale"))

    preview = ok(cli(server, workdir, "pronounce", "preview", "Bob"))
    assert "Bob" in preview
    assert "Rob" not in preview

    fixed = ok(cli(server, workdir, "pronounce", "set", "Bob", "--respelling", "Rob"))
    assert "stem.name.bob" in fixed
    assert "Rob" in fixed  # said as
    assert f"message {message} is stale: stem.name.bob (made again since: other audio)" in fixed

    assert "Rob" in ok(cli(server, workdir, "pronounce", "preview", "bob"))
    listed = ok(cli(server, workdir, "pronounce", "list"))
    assert "Bob" in listed
    assert "Rob" in listed
    stale = ok(cli(server, workdir, "pronounce", "stale"))
    assert message in stale
    assert "made again since" in stale
    assert "stem.name.bob" in ok(cli(server, workdir, "pronounce", "stale", message))

    removed = json.loads(ok(cli(server, workdir, "pronounce", "remove", "BOB", "--json")))
    assert removed["removed"] is True
    assert [(r["stem_id"], r["pronunciation"]) for r in removed["regenerated"]] == [
        ("stem.name.bob", "")
    ]
    assert removed["stale_outputs"] == []  # the old bytes are back: the message is current
    assert "stale stems: 0" in ok(cli(server, workdir, "pronounce", "stale"))

    line = one_line_error(cli(server, workdir, "pronounce", "remove", "Bob"), 1)
    assert "not_found" in line


def test_phonemes_and_no_regenerate(server: ApiServer, workdir: Path) -> None:
    args = ["pronounce", "set", "Cid", "--phonemes", "piper=sˈɪd", "--no-regenerate", "--json"]
    report = json.loads(ok(cli(server, workdir, *args)))
    try:
        assert report["entry"]["phonemes"] == {"piper": "sˈɪd"}
        assert report["regenerated"] == []
        assert "[[ sˈɪd ]]" in ok(cli(server, workdir, "pronounce", "preview", "Cid"))
    finally:
        ok(cli(server, workdir, "pronounce", "remove", "Cid", "--no-regenerate"))


def test_refusals_are_one_line(server: ApiServer, workdir: Path) -> None:
    line = one_line_error(cli(server, workdir, "pronounce", "set", "Ann", "--phonemes", "x"), 2)
    assert "ENGINE=PHONEMES" in line
    line = one_line_error(cli(server, workdir, "pronounce", "set", "🎉", "--respelling", "x"), 1)
    assert "nothing to speak" in line
    line = one_line_error(
        cli(server, workdir, "pronounce", "set", "Ann", "--phonemes", "espeak=an"), 1
    )
    assert "validation_error" in line
    line = one_line_error(
        cli(server, workdir, "pronounce", "set", "Ann", "--respelling", "<<a>>"), 1
    )
    assert "<<" in line
    assert ok(cli(server, workdir, "pronounce", "list", "--json")).strip() == "[]"


def test_a_stem_that_cannot_be_made_again_exits_1_and_keeps_its_audio(
    server: ApiServer, workdir: Path
) -> None:
    """The script phrase "Hi" left the dataset: its stem cannot be made again."""
    client = server.client()
    before = client.post("/generate/script", json={"key": "hello"}).json()["stem"]
    scripts = server.base_dir / "data" / "scripts.json"
    scripts.write_text('{"offer": "has a new offer for you"}\n', encoding="utf-8")
    try:
        result = cli(server, workdir, "pronounce", "set", "Hi", "--respelling", "Hey")
        assert result.returncode == 1, result.stdout + result.stderr
        assert "failed: stem.script.hello" in result.stderr
        assert "1 stem(s) could not be made again; they keep their audio" in result.stderr
        after = client.get("/cache/list", params={"extended": True}).json()
        assert [s["sha256"] for s in after if s["stem_id"] == before["stem_id"]] == [
            before["sha256"]
        ]
    finally:
        scripts.write_text(TINY_DATASETS["scripts.json"], encoding="utf-8")
        ok(cli(server, workdir, "pronounce", "remove", "Hi", "--no-regenerate"))


def test_make_cli_pronounce(server: ApiServer, workdir: Path) -> None:
    result = run_make(workdir, server, "cli-pronounce", "list")
    assert result.returncode == 0, result.stderr
    assert "pronunciations: 0" in result.stdout
