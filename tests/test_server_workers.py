"""`hybrid-audio-server --workers 2`: two processes, one base directory, one truth.

Every request goes over a new connection, so the kernel hands it to either worker; which
one answered is read from /proc (the worker holding the server end of that connection),
so the tests need no marker in the responses. Real server, real Piper, real SQLite.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import secrets
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from hybrid_audio.config import Settings
from hybrid_audio.workspace import Workspace
from tests.api_server import NO_FAILURE_LIMIT, REPO, ApiServer, make_base_dir, start_server

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="Linux /proc"),
]

#: 40 first names from the dataset: a bulk job of several seconds with Piper.
NAMES = [
    line.strip()
    for line in (REPO / "data" / "common_names.txt").read_text().splitlines()
    if line.strip() and not line.startswith("#")
][:40]
#: Generous bound for anything a loaded 2-core machine must finish.
DEADLINE = 180.0


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes
    pid: int | None  # the worker that answered (None if it could not be told)

    def json(self) -> Any:
        return json.loads(self.body)


def workers(server: ApiServer) -> set[int]:
    """The pids of the server's worker processes (uvicorn spawns them)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        parent = int(stat[stat.rindex(")") + 2 :].split()[1])
        if parent == server.process.pid and b"spawn_main" in cmdline:
            found.add(int(entry.name))
    return found


def _server_end_inode(server_port: int, client_port: int) -> str | None:
    """The inode of the accepted socket whose peer is our `client_port`."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, inode = fields[1], fields[2], fields[9]
        if int(local.split(":")[1], 16) == server_port and int(remote.split(":")[1], 16) == (
            client_port
        ):
            return inode if inode != "0" else None
    return None


def _holder(inode: str, pids: set[int]) -> int | None:
    target = f"socket:[{inode}]"
    for pid in pids:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd) == target:
                    return pid
            except OSError:
                continue
    return None


def ask(
    server: ApiServer,
    method: str,
    path: str,
    *,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    key: bool = True,
) -> Answer:
    """One request on a fresh connection, and the worker that answered it."""
    port = urlsplit(server.base_url).port
    assert port is not None
    sent = {**(server.headers() if key else {}), **(headers or {})}
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request(method, path, body=body, headers=sent)
        response = connection.getresponse()
        data = response.read()
        client_port = connection.sock.getsockname()[1]
        inode = _server_end_inode(port, client_port)  # the connection is kept alive
        pid = _holder(inode, workers(server)) if inode else None
        return Answer(response.status, response.headers, data, pid)
    finally:
        connection.close()


def post_json(server: ApiServer, path: str, document: Any) -> Answer:
    return ask(
        server,
        "POST",
        path,
        body=json.dumps(document).encode(),
        headers={"Content-Type": "application/json"},
    )


def start_workers(base: Path, **options: Any) -> tuple[ApiServer, set[int]]:
    """A server of 2 workers, once both have started (the info log says so per worker),
    and their pids; each answered /health at least once."""
    server = start_server(base, args=["--workers", "2", "--log-level", "info"], **options)
    try:
        deadline = time.monotonic() + DEADLINE
        while server.log().count("Application startup complete.") < 2:
            assert server.process.poll() is None, f"server exited:\n{server.log()}"
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.1)
        seen: set[int | None] = set()
        while len(pids := workers(server)) != 2 or not pids <= seen:
            assert time.monotonic() < deadline, f"answered: {seen} of {pids}"
            seen.add(ask(server, "GET", "/health", key=False).pid)
        return server, pids
    except BaseException:
        stop(server)
        raise


def stop(server: ApiServer) -> None:
    """Stop the server; kill any worker its supervisor left (or replaced after a kill)."""
    left = workers(server)
    server.stop()
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[ApiServer]:
    """A keyed server of 2 workers on one base directory."""
    base = make_base_dir(tmp_path / "base")
    server, _ = start_workers(base, key=secrets.token_urlsafe(24), env=NO_FAILURE_LIMIT)
    try:
        yield server
    finally:
        stop(server)


def follow(server: ApiServer, job_id: str, until: set[str]) -> list[tuple[int | None, dict]]:
    """Poll the job over new connections until its state is in `until`; every answer."""
    seen: list[tuple[int | None, dict]] = []
    deadline = time.monotonic() + DEADLINE
    while True:
        assert time.monotonic() < deadline, f"job still {seen[-1:]} after {DEADLINE} s"
        answer = ask(server, "GET", f"/jobs/{job_id}")
        assert answer.status == 200, answer.body
        seen.append((answer.pid, answer.json()))
        if answer.json()["state"] in until:
            return seen
        time.sleep(0.02)


def test_a_job_started_through_one_worker_is_followed_to_the_end_through_the_other(
    two_workers: ApiServer,
) -> None:
    pids = workers(two_workers)
    started = post_json(two_workers, "/generate/rotational", {"names": NAMES})
    assert started.status == 202, started.body
    job = started.json()
    assert job["owner_pid"] == started.pid  # the worker that took the request runs it
    (other,) = pids - {job["owner_pid"]}

    seen = follow(two_workers, job["id"], {"done", "failed", "cancelled", "interrupted"})
    while not any(pid == other and info["state"] == "done" for pid, info in seen):
        seen += follow(two_workers, job["id"], {"done"})  # until the other tells the end

    final = seen[-1][1]
    assert final["state"] == "done", final
    assert (final["done"], final["total"], final["error_count"]) == (40, 40, 0)
    assert final["result"]["created"] == 40
    by_other = [info for pid, info in seen if pid == other]
    assert any(info["state"] == "running" for info in by_other), "the other never saw it run"
    for worker in pids:  # the owner reads its live job, the other the row (≤ 0.25 s behind)
        counts = [info["done"] for pid, info in seen if pid == worker]
        assert counts == sorted(counts), f"progress went back on worker {worker}"
    assert {pid for pid, _ in seen} == pids


def test_a_killed_workers_job_is_interrupted_and_a_resume_completes(
    two_workers: ApiServer,
) -> None:
    started = post_json(two_workers, "/generate/rotational", {"names": NAMES})
    assert started.status == 202, started.body
    job_id, owner = started.json()["id"], started.json()["owner_pid"]

    def midway(info: dict) -> bool:
        return info["state"] == "running" and 3 <= info["done"] < info["total"]

    deadline = time.monotonic() + DEADLINE
    while not midway(info := ask(two_workers, "GET", f"/jobs/{job_id}").json()):
        assert info["state"] in ("queued", "running"), f"job ended before the kill: {info}"
        assert time.monotonic() < deadline, info
        time.sleep(0.02)
    os.kill(owner, signal.SIGKILL)
    made_before_kill = info["done"]  # stems committed (the owner's live count, ≥ its row's)

    seen = follow(two_workers, job_id, {"done", "failed", "cancelled", "interrupted"})
    pid, interrupted = seen[-1]
    assert pid != owner
    assert interrupted["state"] == "interrupted", interrupted
    assert f"pid {owner}" in interrupted["message"]
    assert interrupted["done"] < 40

    resumed = post_json(two_workers, "/generate/rotational", {"names": NAMES})
    assert resumed.status == 202, resumed.body
    assert resumed.json()["owner_pid"] != owner
    final = follow(two_workers, resumed.json()["id"], {"done", "failed", "cancelled"})[-1][1]
    assert final["state"] == "done", final
    assert (final["done"], final["total"], final["error_count"]) == (40, 40, 0)
    created, cached = final["result"]["created"], final["result"]["cached"]
    assert created + cached == 40
    assert cached >= made_before_kill  # stems made before the kill are not made again
    assert created >= 1

    listed = ask(two_workers, "GET", "/cache/list?kind=name")
    assert listed.status == 200, listed.body
    assert len({stem["stem_id"] for stem in listed.json()}) == len(listed.json()) == 40


def test_logins_and_the_failure_limit_hold_whichever_worker_answers(tmp_path: Path) -> None:
    """Sessions and failure counts live in the state database, not in a worker."""
    key = secrets.token_urlsafe(24)
    limit = 4
    server, pids = start_workers(
        make_base_dir(tmp_path / "base"),
        key=key,
        env={"AUTH_FAILURE_LIMIT": str(limit), "AUTH_FAILURE_WINDOW": "600"},
    )
    try:
        form = {"Origin": server.base_url, "Content-Type": "application/x-www-form-urlencoded"}
        login = ask(server, "POST", "/dashboard/login", body=f"key={key}".encode(), headers=form)
        assert login.status == 303, login.body
        cookie = login.headers["set-cookie"].split(";")[0]
        docs_by: set[int | None] = set()
        while docs_by != pids:  # the session made by one worker opens the docs on both
            docs = ask(server, "GET", "/docs", headers={"Cookie": cookie}, key=False)
            assert docs.status == 200, docs.body
            docs_by.add(docs.pid)

        wrong = f"key=not-{key}".encode()
        refused: list[int] = []
        limited_by: set[int | None] = set()
        for _ in range(500):
            answer = ask(server, "POST", "/dashboard/login", body=wrong, headers=form)
            refused.append(answer.status)
            if answer.status == 429:
                limited_by.add(answer.pid)
            if limited_by == pids:
                break
        # One count for the address: the `limit`-th wrong key in all is refused with 429
        # (per-worker counts would let up to 2 × limit through), then every worker refuses.
        assert refused[: limit - 1] == [401] * (limit - 1)
        assert set(refused[limit - 1 :]) == {429}
        assert limited_by == pids
    finally:
        stop(server)


def test_every_log_line_names_the_worker_that_wrote_it(tmp_path: Path) -> None:
    """With several workers a request is tied to the process that served it by its log line."""
    server, pids = start_workers(make_base_dir(tmp_path / "base"))
    try:
        log = server.log()  # start_workers saw each worker answer /health
        for pid in pids:
            assert f"[{pid}] Application startup complete." in log
        health = [line for line in log.splitlines() if '"GET /health HTTP/1.1" 200' in line]
        named = [re.search(r"\[(\d+)\] 127\.0\.0\.1:\d+ - ", line) for line in health]
        assert health
        assert all(named), health
        assert {int(match.group(1)) for match in named if match} == pids
    finally:
        stop(server)


def test_a_contract_change_reaches_every_worker(tmp_path: Path) -> None:
    """The dashboard's "Confirm change" runs `apply_contract_change` in one process; here a
    process of its own (a workspace on the same base dir) does, and both workers follow."""
    base = make_base_dir(tmp_path / "base")
    server, pids = start_workers(base)
    operator = Workspace.build(Settings(base_dir=base))
    try:
        old = operator.contract.signature()
        before = {ask(server, "GET", "/health").json()["contract_signature"] for _ in range(4)}
        assert before == {old}  # the premise: one contract, the operator's too
        new = operator.generator.change_contract(speed=1.25).signature
        assert new != old

        health_by: dict[int | None, set[str]] = {}
        while set(health_by) != pids:  # until both workers answered
            answer = ask(server, "GET", "/health")
            health_by.setdefault(answer.pid, set()).add(answer.json()["contract_signature"])
        assert health_by == {pid: {new} for pid in pids}

        stems_by: dict[int | None, str] = {}
        messages_by: dict[int | None, str] = {}
        for name in NAMES:  # a stem and a message made afterwards, through each worker
            if set(stems_by) == pids and set(messages_by) == pids:
                break
            made = post_json(server, "/generate/name", {"name": name})
            assert made.status == 200, made.body
            stems_by[made.pid] = made.json()["stem"]["contract_signature"]
            message = post_json(
                server,
                "/assemble/template",
                {"template": "double_anchor", "name": name, "developer": "Hilton"},
            )
            assert message.status == 200, message.body
            manifest = ask(server, "GET", f"/assemble/outputs/{message.json()['id']}")
            messages_by[message.pid] = manifest.json()["contract_signature"]
        assert stems_by == {pid: new for pid in pids}
        assert messages_by == {pid: new for pid in pids}
    finally:
        operator.close()
        stop(server)
