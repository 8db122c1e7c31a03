"""`hybrid-audio` (the CLI) against the real API server, both as subprocesses.

Why subprocesses: the CLI's promises are about what a user sees — exit codes, one-line
errors without tracebacks, output that appears while a stream is still running, a log file
in the working directory — and about what it does *not* import. Each CLI run gets a clean
environment (no inherited URL, key or log settings) and its own working directory, so its
`logs/cli.jsonl` is the test's to read.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import wave
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import typer
from typer.testing import CliRunner

from tests.api_server import REPO, ApiServer, free_port, make_base_dir, start_server

CLI = [sys.executable, "-m", "hybrid_audio.cli"]
#: Variables the CLI reads; dropped from the inherited environment so a developer's shell
#: cannot point the tests at another server or leak a key into them.
CLI_VARS = ("HYBRID_AUDIO_API_URL", "INTERNAL_API_KEY", "HYBRID_AUDIO_BASE_DIR", "LOGS_DIR")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """A keyless server with copies of the repository's templates and datasets."""
    server = start_server(make_base_dir(tmp_path_factory.mktemp("cli-server")))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """A server that requires X-Internal-API-Key."""
    base = make_base_dir(tmp_path_factory.mktemp("cli-keyed"))
    server = start_server(base, key=secrets.token_urlsafe(24))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the CLI runs (and writes logs/cli.jsonl)."""
    return tmp_path_factory.mktemp("cli-work")


def run(
    workdir: Path, url: str, *args: str, key: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`hybrid-audio ARGS` in `workdir`, talking to `url`."""
    env = {k: v for k, v in os.environ.items() if k not in CLI_VARS}
    env["HYBRID_AUDIO_API_URL"] = url
    if key is not None:
        env["INTERNAL_API_KEY"] = key
    return subprocess.run(
        [*CLI, *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=timeout,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    """stdout of a run that must have succeeded (its stderr in the message otherwise)."""
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr
    return result.stdout


def one_line_error(
    result: subprocess.CompletedProcess[str], exit_code: int, *, after_progress: bool = False
) -> str:
    """The single `error: …` line of a failed run (the last, after a progress bar's)."""
    assert result.returncode == exit_code, f"{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    if after_progress:
        lines = lines[-1:]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def test_the_cli_imports_nothing_from_the_package() -> None:
    code = (
        "import hybrid_audio.cli, sys; "
        "print(sorted(m for m in sys.modules if m.startswith('hybrid_audio')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "['hybrid_audio', 'hybrid_audio.cli']"


def test_every_command_says_what_it_does_with_an_example() -> None:
    from hybrid_audio.cli import app

    runner = CliRunner()
    pending: list[tuple[list[str], object]] = [([], typer.main.get_command(app))]
    seen = 0
    while pending:
        path, command = pending.pop()
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, path
        assert "Example: hybrid-audio" in result.output, path
        seen += 1
        for name, sub in getattr(command, "commands", {}).items():
            pending.append(([*path, name], sub))
    assert seen >= 35


def test_health_through_the_console_script(server: ApiServer, workdir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in CLI_VARS}
    script = Path(sys.executable).parent / "hybrid-audio"
    result = subprocess.run(
        [str(script), "--url", server.base_url, "health"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    stdout = ok(result)
    assert "piper" in stdout
    assert "auth_required" in stdout


def test_generate_name_shows_normalization_new_then_cached(
    server: ApiServer, workdir: Path
) -> None:
    jose = "stem.name.jose__d994e1d001"
    httpx.post(f"{server.base_url}/cache/invalidate", json={"stem_id": jose})
    first = ok(run(workdir, server.base_url, "generate", "name", "José"))
    assert "José → stem.name.jose__d994e1d001" in first
    assert "(new" in first
    second = ok(run(workdir, server.base_url, "generate", "name", "José", "--extended"))
    assert "José → stem.name.jose__d994e1d001" in second
    assert "(cached" in second
    assert "contract_signature" in second  # --extended shows the whole record
    data = json.loads(ok(run(workdir, server.base_url, "--json", "generate", "name", "José")))
    assert data["stem"]["stem_id"] == "stem.name.jose__d994e1d001"
    assert data["stem"]["cached"] is True


def test_generate_combined_shows_both_stems(server: ApiServer, workdir: Path) -> None:
    stdout = ok(run(workdir, server.base_url, "generate", "combined", "José", "Hilton"))
    assert "José → stem.name.jose__d994e1d001" in stdout
    assert "Hilton → stem.developer.hilton" in stdout


def test_assemble_downloads_a_verified_wav_and_lists_shows_verifies_it(
    server: ApiServer, workdir: Path
) -> None:
    wav_path = workdir / "f.wav"
    args = ["assemble", "template", "José", "Hilton", "--template", "double_anchor.json"]
    stdout = ok(run(workdir, server.base_url, *args, "--out", str(wav_path)))
    assert "verified" in stdout
    assert "NOT verified" not in stdout
    with wave.open(str(wav_path), "rb") as wav:
        assert wav.getnframes() > 0
        assert wav.getframerate() == 22050

    outputs = json.loads(ok(run(workdir, server.base_url, "--json", "assemble", "outputs")))
    output_id = outputs[0]["id"]
    assert outputs[0]["name"] == "José"
    assert output_id in ok(run(workdir, server.base_url, "assemble", "outputs"))

    shown = ok(run(workdir, server.base_url, "assemble", "show", output_id))
    assert "stem.name.jose__d994e1d001" in shown
    assert "stem.developer.hilton" in shown
    manifest = json.loads(
        ok(run(workdir, server.base_url, "--json", "assemble", "show", output_id))
    )
    assert manifest["id"] == output_id

    assert "verified" in ok(run(workdir, server.base_url, "assemble", "verify", output_id))
    report = json.loads(
        ok(run(workdir, server.base_url, "--json", "assemble", "verify", output_id))
    )
    assert report["ok"] is True

    again = workdir / "again.wav"
    ok(run(workdir, server.base_url, "assemble", "audio", output_id, "--out", str(again)))
    assert again.read_bytes() == wav_path.read_bytes()


def test_a_tampered_output_fails_verification_with_exit_1(server: ApiServer, workdir: Path) -> None:
    args = ["--json", "assemble", "template", "José", "Hilton", "--template", "single_anchor"]
    data = json.loads(ok(run(workdir, server.base_url, *args)))
    wav_file = server.base_dir / "output" / Path(data["summary"]["path"]).name
    audio = bytearray(wav_file.read_bytes())
    audio[-2] ^= 0xFF
    wav_file.write_bytes(bytes(audio))
    line = one_line_error(run(workdir, server.base_url, "assemble", "verify", data["id"]), 1)
    assert "failed verification" in line


def test_rotation_steps_streams_state_and_reset(server: ApiServer, workdir: Path) -> None:
    assert " × " in ok(run(workdir, server.base_url, "rotation", "next-pair"))
    assert "script:" in ok(run(workdir, server.base_url, "rotation", "next-script"))

    lines = ok(run(workdir, server.base_url, "rotation", "pairs-stream", "--count", "5"))
    assert len(lines.strip().splitlines()) == 5
    raw = ok(run(workdir, server.base_url, "--json", "rotation", "scripts-stream", "--count", "3"))
    steps = [json.loads(line) for line in raw.strip().splitlines()]
    assert [s["stream"] for s in steps] == ["script"] * 3

    state = json.loads(ok(run(workdir, server.base_url, "--json", "rotation", "state")))
    assert state["pair"]["position"] >= 6
    assert "pair" in ok(run(workdir, server.base_url, "rotation", "state"))

    reset = json.loads(ok(run(workdir, server.base_url, "--json", "rotation", "reset", "pair")))
    assert (reset["stream"], reset["cycle"], reset["position"]) == ("pair", 0, 0)
    state = json.loads(ok(run(workdir, server.base_url, "--json", "rotation", "state")))
    assert state["pair"]["position"] == 0


def test_rotation_generate_pair_assembles_the_next_pair(server: ApiServer, workdir: Path) -> None:
    wav_path = workdir / "pair.wav"
    args = ["rotation", "generate-pair", "--template", "single_anchor.json", "--out"]
    stdout = ok(run(workdir, server.base_url, *args, str(wav_path)))
    assert " × " in stdout
    with wave.open(str(wav_path), "rb") as wav:
        assert wav.getnframes() > 0


def test_cache_list_invalidate_audio_and_verify(server: ApiServer, workdir: Path) -> None:
    ok(run(workdir, server.base_url, "generate", "name", "Ingrid"))
    stems = json.loads(ok(run(workdir, server.base_url, "--json", "cache", "list")))
    assert {"stem_id", "kind", "text", "duration", "compatible"} <= set(stems[0])
    assert "stem.name.ingrid" in {s["stem_id"] for s in stems}
    extended = json.loads(
        ok(run(workdir, server.base_url, "--json", "cache", "list", "--extended"))
    )
    assert all("sha256" in s and "contract_signature" in s for s in extended)
    table = ok(run(workdir, server.base_url, "cache", "list", "--kind", "names", "--compatible"))
    assert "stem.name.ingrid" in table
    assert "stem.developer" not in table
    assert "stem.name.ingrid" in ok(
        run(workdir, server.base_url, "cache", "list", "--extended", "--kind", "name")
    )

    stem_wav = workdir / "ingrid.wav"
    ok(run(workdir, server.base_url, "cache", "audio", "stem.name.ingrid", "--out", str(stem_wav)))
    with wave.open(str(stem_wav), "rb") as wav:
        assert wav.getnframes() > 0

    stdout = ok(run(workdir, server.base_url, "cache", "invalidate", "stem.name.ingrid"))
    assert "stem.name.ingrid: invalidated" in stdout
    stems = json.loads(ok(run(workdir, server.base_url, "--json", "cache", "list")))
    assert "stem.name.ingrid" not in {s["stem_id"] for s in stems}

    assert "checked" in ok(run(workdir, server.base_url, "cache", "verify"))


def test_bulk_generate_follows_the_job_to_the_end(server: ApiServer, workdir: Path) -> None:
    names = workdir / "names.txt"
    names.write_text("# five names\nAna\nBruno\nCarla\nDiego\nElena\n", encoding="utf-8")
    developers = workdir / "developers.json"
    developers.write_text('["Acme Homes"]', encoding="utf-8")
    args = ["--names-file", str(names), "--developers-file", str(developers)]
    result = run(workdir, server.base_url, "cache", "bulk-generate", *args)
    stdout = ok(result)
    assert "done: 6/6" in stdout
    assert "6/6" in result.stderr  # the progress bar's last frame

    job_id = stdout.split()[1]  # "job <id> done: 6/6 in 0.3 s, 0 error(s)"
    jobs = json.loads(ok(run(workdir, server.base_url, "--json", "jobs", "list")))
    assert {j["id"]: j["state"] for j in jobs}[job_id] == "done"
    assert job_id in ok(run(workdir, server.base_url, "jobs", "list"))
    assert "done" in ok(run(workdir, server.base_url, "jobs", "show", job_id))
    stems = json.loads(ok(run(workdir, server.base_url, "--json", "cache", "list")))
    assert {"stem.name.elena", "stem.developer.acme_homes"} <= {s["stem_id"] for s in stems}


def test_a_cancelled_job_exits_1(server: ApiServer, workdir: Path) -> None:
    names = workdir / "many.txt"
    letters = "abcdefghijklmnopqrst"  # 400 names: far longer than the cancel takes
    names.write_text("\n".join(f"Zed {a}{b}" for a in letters for b in letters))
    developers = workdir / "one.txt"
    developers.write_text("Acme Homes\n")
    args = ["--names-file", str(names), "--developers-file", str(developers), "--no-wait"]
    job = json.loads(ok(run(workdir, server.base_url, "--json", "cache", "bulk-generate", *args)))
    ok(run(workdir, server.base_url, "jobs", "cancel", job["id"]))
    result = run(workdir, server.base_url, "jobs", "show", job["id"], "--wait")
    assert "cancelled" in one_line_error(result, 1, after_progress=True)


def test_external_import_then_show(server: ApiServer, workdir: Path) -> None:
    upload = workdir / "file.csv"
    upload.write_text("name\nZoe\nYann\nÅsa\n", encoding="utf-8")
    stdout = ok(run(workdir, server.base_url, "external", "import", "names", str(upload)))
    assert "3 items" in stdout
    shown = json.loads(ok(run(workdir, server.base_url, "--json", "external", "show", "name")))
    assert [i["text"] for i in shown["items"]] == ["Zoe", "Yann", "Åsa"]
    assert "stem.name.asa" in ok(run(workdir, server.base_url, "external", "show", "names"))
    limited = run(workdir, server.base_url, "external", "show", "names", "--limit", "2")
    assert "stem.name.yann" in ok(limited)
    assert "stem.name.asa" not in limited.stdout
    assert "1 more" in limited.stderr
    assert "developer" in ok(run(workdir, server.base_url, "external", "datasets"))


def test_server_refusals_exit_1_with_one_line(server: ApiServer, workdir: Path) -> None:
    args = ["assemble", "template", "José", "Hilton", "--template", "no_such_template"]
    line = one_line_error(run(workdir, server.base_url, *args), 1)
    assert "unknown template" in line
    assert "not_found" in line
    line = one_line_error(run(workdir, server.base_url, "generate", "name", "😀"), 1)
    assert "validation_error" in line
    one_line_error(run(workdir, server.base_url, "jobs", "show", "no-such-job"), 1)


def test_an_unreachable_server_exits_3(workdir: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    line = one_line_error(run(workdir, url, "health"), 3)
    assert url in line
    assert "make run" in line
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        line = one_line_error(run(workdir, url, "--timeout", "0.3", "health"), 3)
    assert "no answer within 0.3 s" in line


@pytest.mark.parametrize(
    "args",
    [
        ["generate", "name"],
        ["rotation", "reset", "everything"],
        ["--timeout", "soon", "health"],
        ["external", "show", "planets"],
        ["cache", "bulk-generate", "--names-file", "/no/such/file"],
        ["--url", "ftp://example.org", "health"],
    ],
)
def test_bad_usage_exits_2(workdir: Path, args: list[str]) -> None:
    result = run(workdir, "http://127.0.0.1:9", *args)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr


def test_the_key_comes_from_the_environment(keyed_server: ApiServer, workdir: Path) -> None:
    url = keyed_server.base_url
    assert "yes" in ok(run(workdir, url, "health"))  # /health needs no key
    line = one_line_error(run(workdir, url, "jobs", "list"), 1)
    assert "unauthorized" in line
    line = one_line_error(run(workdir, url, "jobs", "list", key="wrong"), 1)
    assert "unauthorized" in line
    ok(run(workdir, url, "jobs", "list", key=keyed_server.key))
    ok(run(workdir, url, "cache", "list", key=keyed_server.key))


def test_every_call_is_logged_without_the_key(keyed_server: ApiServer, workdir: Path) -> None:
    url = keyed_server.base_url
    ok(run(workdir, url, "rotation", "next-name", key=keyed_server.key))
    one_line_error(run(workdir, f"http://127.0.0.1:{free_port()}", "cache", "verify"), 3)
    assert run(workdir, url, "jobs", "show").returncode == 2
    text = (workdir / "logs" / "cli.jsonl").read_text(encoding="utf-8")
    assert keyed_server.key not in text
    records = [json.loads(line) for line in text.splitlines()]
    fields = {"ts", "event", "command", "method", "path", "status", "ms", "exit_code"}
    assert all(fields <= set(r) and r["event"] == "cli_call" for r in records)
    step = [r for r in records if r["command"] == "rotation next-name"][-1]
    assert (step["method"], step["path"], step["status"], step["exit_code"]) == (
        "GET",
        "/rotation/next_name",
        200,
        0,
    )
    down = [r for r in records if r["command"] == "cache verify"][-1]
    assert (down["status"], down["exit_code"]) == (None, 3)
    usage = [r for r in records if r["command"] == "jobs show"][-1]
    assert (usage["method"], usage["exit_code"]) == (None, 2)  # usage errors are logged too
