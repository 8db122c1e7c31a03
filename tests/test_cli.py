"""`hybrid-audio` (the CLI) against the real API server, both as subprocesses.

Why subprocesses: the CLI's promises are about what a user sees — exit codes, one-line
errors without tracebacks, output that appears while a stream is still running, a log file
in the user's state folder — and about what it does *not* import. Each CLI run gets a clean
environment (no inherited URL, key or log settings), its own working directory and its own
state folder (`XDG_STATE_HOME`), so its `hybrid-audio/cli.jsonl` is the test's to read and the
developer's own state folder is never written.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import wave
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import typer
from typer.testing import CliRunner

from tests.api_server import REPO, ApiServer, free_port, make_base_dir, start_server

CLI = [sys.executable, "-m", "hybrid_audio.cli"]
#: Variables the CLI reads; dropped from the inherited environment so a developer's shell
#: cannot point the tests at another server or leak a key into them.
CLI_VARS = (
    "HYBRID_AUDIO_API_URL",
    "INTERNAL_API_KEY",
    "HYBRID_AUDIO_BASE_DIR",
    "LOGS_DIR",
    "LOG_MAX_BYTES",
    "XDG_STATE_HOME",
    "HYBRID_AUDIO_CLI_LOG_DIR",
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """A keyless server with copies of the repository's templates and datasets."""
    with start_server(make_base_dir(tmp_path_factory.mktemp("cli-server"))) as server:
        yield server


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """A server that requires X-Internal-API-Key."""
    base = make_base_dir(tmp_path_factory.mktemp("cli-keyed"))
    with start_server(base, key=secrets.token_urlsafe(24)) as server:
        yield server


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the CLI runs; its state folder (the call log) is `workdir/state`."""
    return tmp_path_factory.mktemp("cli-work")


def cli_env(workdir: Path, **variables: str) -> dict[str, str]:
    """The inherited environment without the CLI's variables, with `workdir/state` as the
    XDG state folder, plus `variables`."""
    env = {k: v for k, v in os.environ.items() if k not in CLI_VARS}
    env["XDG_STATE_HOME"] = str(workdir / "state")
    return env | variables


def call_log(workdir: Path) -> str:
    """The call log the CLI wrote under `cli_env(workdir)`'s state folder."""
    return (workdir / "state" / "hybrid-audio" / "cli.jsonl").read_text(encoding="utf-8")


def run(
    workdir: Path,
    url: str,
    *args: str,
    key: str | None = None,
    timeout: float = 120,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """`hybrid-audio ARGS` in `workdir`, talking to `url` (env: `cli_env(workdir)`)."""
    env = dict(cli_env(workdir) if env is None else env, HYBRID_AUDIO_API_URL=url)
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


def run_make(
    workdir: Path, server: ApiServer, target: str, args: str
) -> subprocess.CompletedProcess[str]:
    """`make TARGET ARGS="…"` (a CLI shortcut) against `server`, with its key. `-o`: the venv
    counts as set up, so no `pip install` runs in the middle of a test."""
    env = cli_env(workdir, HYBRID_AUDIO_API_URL=server.base_url, INTERNAL_API_KEY=server.key)
    return subprocess.run(
        ["make", "-s", "-o", ".venv/.installed", target, f"ARGS={args}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@contextlib.contextmanager
def silent_url() -> Iterator[str]:
    """The URL of a socket that accepts connections and never answers."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        yield f"http://127.0.0.1:{silent.getsockname()[1]}"


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
    """The CLI, with every command built, loads no module of the core (HTTP only)."""
    code = (
        "import hybrid_audio.cli, sys, typer.main; "
        "typer.main.get_command(hybrid_audio.cli.app); "
        "print(*sorted(m for m in sys.modules if m.startswith('hybrid_audio')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    loaded = result.stdout.split()
    assert "hybrid_audio.cli.client" in loaded
    assert [m for m in loaded if m != "hybrid_audio" and not m.startswith("hybrid_audio.cli.")] == [
        "hybrid_audio.cli"
    ]


def test_no_cli_module_imports_the_core_even_inside_a_function() -> None:
    """Every import statement of hybrid_audio/cli/ names only the CLI itself or non-core code."""
    core_imports = []
    for path in sorted((REPO / "hybrid_audio" / "cli").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):  # relative: resolved from hybrid_audio.cli
                package = ["hybrid_audio", "cli"][: 3 - node.level] if node.level else []
                names = [".".join([*package, *([node.module] if node.module else [])])]
            else:
                continue
            core_imports += [
                f"{path.name}: {name}"
                for name in names
                if name.split(".")[0] == "hybrid_audio"
                and name.split(".")[:2] != ["hybrid_audio", "cli"]
            ]
    assert core_imports == []


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
    script = Path(sys.executable).parent / "hybrid-audio"
    result = subprocess.run(
        [str(script), "--url", server.base_url, "health"],
        cwd=workdir,
        env=cli_env(workdir),
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


def test_rotation_generate_pair_takes_the_join_mode(server: ApiServer, workdir: Path) -> None:
    args = ["--json", "rotation", "generate-pair", "--template", "double_anchor", "--mode"]
    answer = json.loads(ok(run(workdir, server.base_url, *args, "hybrid")))
    output_id = answer["result"]["summary"]["id"]
    manifest = json.loads(
        ok(run(workdir, server.base_url, "--json", "assemble", "show", output_id))
    )
    assert manifest["merge"]["mode"] == "hybrid"


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
    with silent_url() as url:
        line = one_line_error(run(workdir, url, "--timeout", "0.3", "health"), 3)
    assert "no answer within 0.3 s" in line


@pytest.mark.parametrize(
    "args",
    [
        ["generate", "name"],
        ["--timeout", "soon", "health"],
        ["health", "--timeout", "soon"],
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
    text = call_log(workdir)
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


def test_global_options_are_accepted_after_the_sub_command(
    server: ApiServer, workdir: Path
) -> None:
    """`--json`, `--url` and `--timeout` work after the command and between group and command."""
    before = json.loads(ok(run(workdir, server.base_url, "--json", "generate", "name", "José")))
    after = json.loads(ok(run(workdir, server.base_url, "generate", "name", "José", "--json")))
    assert after["stem"]["stem_id"] == before["stem"]["stem_id"] == "stem.name.jose__d994e1d001"
    between = json.loads(ok(run(workdir, server.base_url, "cache", "--json", "list")))
    assert "stem.name.jose__d994e1d001" in {s["stem_id"] for s in between}

    dead = f"http://127.0.0.1:{free_port()}"
    assert "piper" in ok(run(workdir, dead, "health", "--url", server.base_url))
    assert "piper" in ok(run(workdir, dead, "--url", dead, "health", "--url", server.base_url))
    line = one_line_error(run(workdir, server.base_url, "health", "--url", dead), 3)
    assert dead in line  # the option after the command wins over the environment
    with silent_url() as url:
        line = one_line_error(run(workdir, url, "health", "--timeout", "0.3"), 3)
    assert "no answer within 0.3 s" in line

    helped = ok(run(workdir, dead, "generate", "name", "--help"))
    assert "--json" in helped
    assert "--url" in helped
    assert run(workdir, dead, "generate", "name", "José", "--url", "ftp://x").returncode == 2

    log = call_log(workdir)
    commands = {json.loads(line)["command"] for line in log.splitlines()}
    assert {"generate name", "cache list", "health"} <= commands
    assert not [c for c in commands if "José" in c or "http" in c]  # values are not commands


def _log_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("cli.jsonl*")) if folder.exists() else []


def test_the_call_log_goes_to_the_users_state_folder(tmp_path: Path) -> None:
    """The log is the user's (XDG state folder, or the override), never the current folder's."""
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    dead = f"http://127.0.0.1:{free_port()}"
    base = {k: v for k, v in os.environ.items() if k not in CLI_VARS} | {"HOME": str(home)}

    def logged(env: dict[str, str]) -> None:
        one_line_error(run(work, dead, "health", "--json", env=env), 3)

    logged(base | {"XDG_STATE_HOME": str(tmp_path / "xdg")})
    record = json.loads((tmp_path / "xdg" / "hybrid-audio" / "cli.jsonl").read_text())
    assert (record["command"], record["exit_code"]) == ("health", 3)

    logged(base)  # no XDG_STATE_HOME: ~/.local/state
    assert _log_files(home / ".local" / "state" / "hybrid-audio") == ["cli.jsonl"]
    logged(base | {"XDG_STATE_HOME": "relative"})  # not absolute: ignored (XDG rule)
    assert len((home / ".local/state/hybrid-audio/cli.jsonl").read_text().splitlines()) == 2

    logged(base | {"HYBRID_AUDIO_CLI_LOG_DIR": str(tmp_path / "mine")})
    assert _log_files(tmp_path / "mine") == ["cli.jsonl"]

    # the server's variables no longer move the client's log into a project folder
    logged(base | {"HYBRID_AUDIO_BASE_DIR": str(work), "LOGS_DIR": "logs"})
    assert sorted(p.name for p in work.iterdir()) == []


def test_the_call_log_rotates_by_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The log never grows past LOG_MAX_BYTES: whole lines move to .1 … .3, older ones go."""
    from hybrid_audio.cli import calllog

    monkeypatch.setenv("HYBRID_AUDIO_CLI_LOG_DIR", str(tmp_path))
    monkeypatch.setenv("LOG_MAX_BYTES", "700")
    for number in range(40):
        calllog.write(calllog.Invocation(), f"call {number}", 0)
    assert _log_files(tmp_path) == ["cli.jsonl", "cli.jsonl.1", "cli.jsonl.2", "cli.jsonl.3"]
    kept: list[str] = []
    for name in ["cli.jsonl.3", "cli.jsonl.2", "cli.jsonl.1", "cli.jsonl"]:
        data = (tmp_path / name).read_bytes()
        assert len(data) <= 700
        kept += [json.loads(line)["command"] for line in data.decode().splitlines()]
    assert kept[-1] == "call 39"
    assert kept == [f"call {n}" for n in range(40 - len(kept), 40)]  # newest, in order, whole


def test_kinds_and_streams_come_from_the_server(server: ApiServer, workdir: Path) -> None:
    """The CLI knows no kinds of its own: it takes the server's `GET /kinds` and streams."""
    listed = json.loads(ok(run(workdir, server.base_url, "external", "kinds", "--json")))
    assert listed == httpx.get(f"{server.base_url}/kinds").json()
    assert {"name", "developer", "script"} <= {k["name"] for k in listed}
    assert "developers" in ok(run(workdir, server.base_url, "external", "kinds"))

    line = one_line_error(run(workdir, server.base_url, "external", "show", "planets"), 2)
    assert "names" in line
    assert "scripts" in line
    one_line_error(run(workdir, server.base_url, "cache", "list", "--kind", "planets"), 2)
    line = one_line_error(run(workdir, server.base_url, "rotation", "reset", "everything"), 2)
    assert "pair" in line
    line = one_line_error(run(workdir, server.base_url, "rotation", "next", "everything"), 2)
    assert "developer, script" in line
    step = json.loads(ok(run(workdir, server.base_url, "rotation", "next", "developer", "--json")))
    assert step["stream"] == "developer"
    assert step["item"] == step["text"]

    made = json.loads(
        ok(run(workdir, server.base_url, "generate", "stem", "Names", "Ana", "--json"))
    )
    assert made["stem"]["stem_id"] == "stem.name.ana"
    assert "stem.script.hello" in ok(
        run(workdir, server.base_url, "generate", "stem", "scripts", "hello")
    )

    log = call_log(workdir)
    shown = [json.loads(line) for line in log.splitlines() if '"generate stem"' in line][-1]
    assert (shown["path"], shown["requests"]) == ("/generate/stem", 2)  # not the lookup
    stepped = [json.loads(line) for line in log.splitlines() if '"rotation next"' in line][-1]
    assert (stepped["path"], stepped["requests"]) == ("/rotation/next/developer", 2)


class _OldServer(BaseHTTPRequestHandler):
    """A server from before `GET /kinds`: every route it lacks answers the 404 envelope."""

    def do_GET(self) -> None:
        body = json.dumps({"error": {"code": "not_found", "message": "Not Found"}}).encode()
        self.send_response(404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the test reads the CLI's output, not this server's."""


def test_a_server_without_kinds_gets_a_clear_error(workdir: Path) -> None:
    """A kind cannot be checked against an older server: one line says why, exit 1."""
    with ThreadingHTTPServer(("127.0.0.1", 0), _OldServer) as old:
        thread = threading.Thread(target=old.serve_forever, daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{old.server_address[1]}"
        try:
            line = one_line_error(run(workdir, url, "external", "show", "names"), 1)
        finally:
            old.shutdown()
            thread.join()
    assert "GET /kinds: 404" in line
    assert "older than this client" in line
