"""A real `gcp-storage-emulator` server on a free loopback port, started by the tests.

The session fixture `gcs_emulator` starts one server (in memory) for the whole run and
stops it at the end; `gcs_settings` gives each test its own fresh bucket on it, so tests
never see each other's objects. Nothing needs to run by hand: `make test` installs the
emulator (the `test` extra) and this module starts it.

Where the emulator differs from GCS: it ignores generation preconditions
(`if_generation_match`) and page sizes (`max_results`, `page_size`). Tests of that logic
inspect the requests the client sends instead (tests/test_storage_gcs_requests.py).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from tests.api_server import free_port

#: The emulator's console script, with a listen backlog of 128 instead of socketserver's 5:
#: it serves one request at a time, and with the default backlog the kernel drops the
#: connections of a bulk transfer's 8 parallel requests (each then waits ~1 s to retry).
#: A real bucket has no such limit; the emulator's request handling is unchanged.
_LAUNCH = (
    "import socketserver, sys; socketserver.TCPServer.request_queue_size = 128; "
    "from gcp_storage_emulator.__main__ import main; sys.exit(main())"
)


@dataclass
class Emulator:
    """A running emulator: its URL (scheme included, as STORAGE_EMULATOR_HOST wants it)."""

    url: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    def client(self) -> storage.Client:
        """The real client on this emulator, as the tests use it to plant and break objects."""
        return storage.Client(
            project="hybrid-audio-tests",
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": self.url},
        )

    def bucket(self, name: str) -> storage.Bucket:
        """`name` through the raw client (not through the code under test)."""
        return self.client().bucket(name)

    def new_bucket(self, prefix: str = "test") -> str:
        """Create an empty bucket with a unique name; returns the name."""
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(name)
        return name

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_emulator(log_dir: Path, port: int | None = None) -> Emulator:
    """Start `gcp-storage-emulator` and wait until it accepts connections."""
    port = port or free_port()
    log_path = log_dir / f"gcs-emulator-{port}.log"
    log = log_path.open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _LAUNCH,
            "start",
            "--host=127.0.0.1",
            f"--port={port}",
            "--in-memory",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gcp-storage-emulator exited; see {log_path}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            time.sleep(0.1)
    else:
        process.kill()
        raise RuntimeError(f"gcp-storage-emulator did not listen on {port}; see {log_path}")
    return Emulator(url=f"http://127.0.0.1:{port}", port=port, process=process, log_path=log_path)


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    """One emulator server for the whole test session."""
    emulator = start_emulator(tmp_path_factory.mktemp("gcs-emulator"))
    yield emulator
    emulator.stop()


@pytest.fixture
def gcs_bucket(gcs_emulator: Emulator) -> str:
    """A fresh, empty bucket on the session's emulator."""
    return gcs_emulator.new_bucket()


@dataclass
class FlakyProxy:
    """A real HTTP server in front of the emulator that answers the next `failures` uploads
    (POSTs) with 503 and forwards everything else: a bucket failing transiently, with the
    client, its retry policy and the emulator all real. `uploads` records each upload's
    query string as it arrived."""

    upstream: str
    failures: int = 0
    uploads: list[str] = field(default_factory=list)
    url: str = ""


@contextmanager
def flaky_proxy(upstream: str, failures: int) -> Iterator[FlakyProxy]:
    """Serve a `FlakyProxy` on a free loopback port for the block."""
    proxy = FlakyProxy(upstream=upstream, failures=failures)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def _forward(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.command == "POST":
                with lock:
                    proxy.uploads.append(self.path.partition("?")[2])
                    fail, proxy.failures = proxy.failures > 0, max(proxy.failures - 1, 0)
                if fail:
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
            headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
            answer = requests.request(
                self.command, upstream + self.path, headers=headers, data=body, timeout=30
            )
            self.send_response(answer.status_code)
            for key, value in answer.headers.items():
                if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(answer.content)))
            self.end_headers()
            self.wfile.write(answer.content)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _forward  # noqa: N815  (http.server names)

        def log_message(self, format: str, *args: object) -> None:
            pass  # quiet: the test reads `proxy.uploads`

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    proxy.url = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        server.shutdown()
        server.server_close()
