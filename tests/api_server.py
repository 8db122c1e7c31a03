"""The real `hybrid-audio-server` in a subprocess, for the API tests and the load benchmark.

Why a subprocess and not `TestClient`: the issue's claims are about the server a user runs
(uvicorn, its HTTP parser, chunked bodies, streaming to a socket, the refusal to bind
without a key), so the tests talk to `.venv/bin/hybrid-audio-server` over loopback.
Each server gets its own base directory (`HYBRID_AUDIO_BASE_DIR`) holding copies of the
repository's `templates/` and `data/`, so tests never touch the working tree and can
replace datasets or break files at will.

Fixtures (import them into a test module; this file is not a conftest):
- `api_server` / `api`: normal datasets, with an `INTERNAL_API_KEY`; `api` is an
  `httpx.Client` that sends the key.
- `scratch_server` / `scratch`: the same, for tests that replace datasets or damage files.
- `tiny_server`: datasets of 3 names, 2 developers and 3 scripts, so whole-dataset bulk
  routes finish in a second (used by the Schemathesis module).
- `limited_server`: `MAX_BODY_BYTES=1024` and no key (also proves the keyless mode).
- `server_factory`: start servers with any env/arguments; all are stopped at teardown.

`start_server` returns a running `ApiServer`; `with start_server(...) as server:` stops it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx
import pytest

REPO = Path(__file__).resolve().parent.parent
SERVER = REPO / ".venv" / "bin" / "hybrid-audio-server"
HEADER = "X-Internal-API-Key"
#: Environment variables the server reads (config.py); inherited values are dropped so a
#: developer's shell cannot change what the tests see.
SERVER_VARS = (
    "HYBRID_AUDIO_BASE_DIR",
    "STEMS_DIR",
    "OUTPUT_DIR",
    "LOGS_DIR",
    "TEMPLATES_DIR",
    "DATA_DIR",
    "STATE_DIR",
    "HYBRID_AUDIO_DB",
    "COMMON_NAMES_FILE",
    "DEVELOPER_NAMES_FILE",
    "SCRIPTS_FILE",
    "TTS_ENGINE",
    "PIPER_VOICE",
    "AUDIO_SAMPLE_RATE",
    "AUDIO_ENCODING",
    "CARTESIA_API_KEY",
    "CARTESIA_VOICE_ID",
    "CARTESIA_MODEL_ID",
    "CARTESIA_BASE_URL",
    "CARTESIA_MAX_CONCURRENCY",
    "ROTATION_SEED",
    "MAX_BODY_BYTES",
    "GCS_BUCKET",
    "GCS_PREFIX",
    "GCS_PROJECT",
    "GCS_RETRY_DEADLINE",
    "GCS_UPLOAD_WORKERS",
    "STORAGE_EMULATOR_HOST",
    "INTERNAL_API_KEY",
    "LOG_MAX_BYTES",
    "DASHBOARD_SESSION_SECONDS",
    "AUTH_FAILURE_LIMIT",
    "AUTH_FAILURE_WINDOW",
)
#: The shared servers' tests send dozens of wrong keys from one address on purpose;
#: the failure limit has its own tests (tests/security/test_api_access.py).
NO_FAILURE_LIMIT = {"AUTH_FAILURE_LIMIT": "0"}
#: Dataset files small enough that "the whole dataset" is a handful of stems.
TINY_DATASETS = {
    "common_names.txt": "Ann\nBob\nCid\n",
    "developer_names.txt": "Acme Homes\nBeta Builders\n",
    "scripts.json": (
        '{"hello": "Hi", "offer": "has a new offer for you", "from": "this is a message from"}\n'
    ),
}


def free_port() -> int:
    """A loopback port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_base_dir(target: Path, datasets: Mapping[str, str] | None = None) -> Path:
    """`target` with copies of templates/ and data/; `datasets` overrides data files."""
    target.mkdir(parents=True, exist_ok=True)
    shutil.copytree(REPO / "templates", target / "templates", dirs_exist_ok=True)
    shutil.copytree(REPO / "data", target / "data", dirs_exist_ok=True)
    for name, text in (datasets or {}).items():
        (target / "data" / name).write_text(text, encoding="utf-8")
    return target


def server_env(base_dir: Path, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The process environment without inherited server settings, plus `env`."""
    clean = {k: v for k, v in os.environ.items() if k not in SERVER_VARS}
    clean["HYBRID_AUDIO_BASE_DIR"] = str(base_dir)
    clean.update(env or {})
    return clean


@dataclass
class ApiServer:
    """A running server: where it listens, where its files are, how to talk to it."""

    base_url: str
    base_dir: Path
    key: str
    process: subprocess.Popen[bytes]
    log_path: Path
    _log_file: IO[bytes] = field(repr=False)
    _clients: list[httpx.Client] = field(default_factory=list, repr=False)

    def headers(self) -> dict[str, str]:
        return {HEADER: self.key} if self.key else {}

    def client(self, *, key: str | None = None, timeout: float = 30.0) -> httpx.Client:
        """An `httpx.Client` on this server sending `key` (default: the server's own)."""
        key = self.key if key is None else key
        client = httpx.Client(
            base_url=self.base_url, headers={HEADER: key} if key else {}, timeout=timeout
        )
        self._clients.append(client)
        return client

    def log(self) -> str:
        """Everything the process wrote to stdout and stderr so far."""
        if not self._log_file.closed:
            self._log_file.flush()
        return self.log_path.read_text(errors="replace")

    def __enter__(self) -> ApiServer:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Terminate (SIGTERM, then SIGKILL after 10 s) and close the clients."""
        for client in self._clients:
            client.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log_file.close()


def start_server(
    base_dir: Path,
    *,
    key: str = "",
    env: Mapping[str, str] | None = None,
    host: str = "127.0.0.1",
    args: Sequence[str] = (),
    timeout: float = 60.0,
) -> ApiServer:
    """Start `hybrid-audio-server` on a free port and wait until `/health` answers."""
    port = free_port()
    full_env = server_env(base_dir, env)
    if key:
        full_env["INTERNAL_API_KEY"] = key
    log_path = base_dir / f"server-{port}.log"
    log_file = log_path.open("wb")
    process = subprocess.Popen(
        [str(SERVER), "--host", host, "--port", str(port), *args],
        env=full_env,
        cwd=base_dir,
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    server = ApiServer(f"http://127.0.0.1:{port}", base_dir, key, process, log_path, log_file)
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            server.stop()
            raise RuntimeError(
                f"server exited with {process.returncode} before answering:\n{server.log()}"
            )
        try:
            if httpx.get(f"{server.base_url}/health", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"server not healthy after {timeout} s:\n{server.log()}")
        time.sleep(0.05)


def _module_server(
    factory: pytest.TempPathFactory, name: str, **options: object
) -> Iterator[ApiServer]:
    datasets = options.pop("datasets", None)
    base = make_base_dir(factory.mktemp(name), datasets)  # type: ignore[arg-type]
    with start_server(base, **options) as server:  # type: ignore[arg-type]
        yield server


@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """The server with the repository's datasets and a key."""
    yield from _module_server(
        tmp_path_factory, "api", key=secrets.token_urlsafe(24), env=NO_FAILURE_LIMIT
    )


@pytest.fixture(scope="module")
def api(api_server: ApiServer) -> httpx.Client:
    """A client of `api_server` that sends the right key."""
    return api_server.client()


@pytest.fixture(scope="module")
def scratch_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """A server whose files tests may replace or damage."""
    yield from _module_server(
        tmp_path_factory, "scratch", key=secrets.token_urlsafe(24), env=NO_FAILURE_LIMIT
    )


@pytest.fixture(scope="module")
def scratch(scratch_server: ApiServer) -> httpx.Client:
    return scratch_server.client()


@pytest.fixture(scope="module")
def tiny_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """A server whose datasets are 3 names, 2 developers, 3 scripts."""
    yield from _module_server(
        tmp_path_factory,
        "tiny",
        key=secrets.token_urlsafe(24),
        datasets=TINY_DATASETS,
        env=NO_FAILURE_LIMIT,  # Schemathesis sends wrong keys on purpose
    )


@pytest.fixture(scope="module")
def limited_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """A keyless server that refuses bodies over 1024 bytes."""
    yield from _module_server(tmp_path_factory, "limited", env={"MAX_BODY_BYTES": "1024"})


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., ApiServer]]:
    """`start(**options)` → a fresh server (see `start_server`), stopped at teardown."""
    servers: list[ApiServer] = []

    def start(*, datasets: Mapping[str, str] | None = None, **options: object) -> ApiServer:
        base = make_base_dir(tmp_path / f"server{len(servers)}", datasets)
        server = start_server(base, **options)  # type: ignore[arg-type]
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


#: How Debian's chromium must start here (no sandbox as root, no background traffic on a
#: closed network); shared by the browser tests and the dashboard benchmark.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
