"""Nothing stored is lost or lied about: deleted state, corrupt stems, disk faults, symlinks.

Each test acts as a careless operator or an attacker with write access to the server's
folders would, against the real `hybrid-audio-server` (tests/api_server.py). Disk faults
use real mounts (a read-only bind mount, a small tmpfs); where the sandbox forbids mounts
those tests skip and say so.
"""

# ruff: noqa: F811  (server fixtures are imported by name)

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hybrid_audio.assembly import SETTLED_NS
from tests.api_server import (  # noqa: F401  (fixtures are used by name)
    ApiServer,
    make_base_dir,
    server_factory,
    start_server,
)
from tests.processes import dead_pid

pytestmark = pytest.mark.slow

#: What a client may get from the rotation while `state/` disappears: a step or this.
GONE_CODE = "state_unavailable"


def _error(response: httpx.Response, status: int, code: str) -> str:
    """The envelope's message, after checking status, media type and code."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.headers
    error = response.json()["error"]
    assert error["code"] == code, error
    return error["message"]


# --- 4. the state folder deleted or replaced under a running server ------------------------


class RotationClients:
    """Clients hammering `/rotation/next_pair` and `/rotation/pairs_stream` in threads.

    Every step received is kept, every refusal too; anything else (a 500, a torn stream
    without an error line, a step that does not parse) is recorded as a failure.
    """

    def __init__(self, server: ApiServer, pollers: int = 6, streamers: int = 2) -> None:
        self.server = server
        self.steps: list[dict[str, Any]] = []
        self.refusals: list[str] = []
        self.failures: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._poll, daemon=True) for _ in range(pollers)
        ] + [threading.Thread(target=self._stream, daemon=True) for _ in range(streamers)]

    def __enter__(self) -> RotationClients:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def wait_for(self, condition: Callable[[], bool]) -> None:
        """Block until `condition()` holds (the clients keep running meanwhile)."""
        while not condition():
            if self._stop.wait(0.01):
                return

    def _keep(self, step: dict[str, Any]) -> None:
        with self._lock:
            self.steps.append(step)

    def _refused(self, response: httpx.Response | None, line: dict | None = None) -> None:
        error = line["error"] if line else response.json()["error"]  # type: ignore[union-attr]
        with self._lock:
            if error["code"] == GONE_CODE:
                self.refusals.append(error["message"])
            else:
                self.failures.append(repr(error))

    def _poll(self) -> None:
        with self.server.client() as client:
            while not self._stop.is_set():
                response = client.get("/rotation/next_pair")
                if response.status_code == 200:
                    self._keep(response.json())
                elif response.status_code == 503:
                    self._refused(response)
                else:
                    with self._lock:
                        self.failures.append(f"{response.status_code} {response.text}")

    def _stream(self) -> None:
        with self.server.client() as client:
            while not self._stop.is_set():
                try:
                    self._read_stream(client)
                except httpx.HTTPError as error:
                    with self._lock:
                        self.failures.append(f"torn stream: {error!r}")

    def _read_stream(self, client: httpx.Client) -> None:
        with client.stream("GET", "/rotation/pairs_stream", params={"count": 50}) as response:
            if response.status_code != 200:
                response.read()
                if response.status_code == 503:
                    self._refused(response)
                else:
                    with self._lock:
                        self.failures.append(f"{response.status_code} {response.text}")
                return
            for text in response.iter_lines():
                line = json.loads(text)
                if "error" in line:
                    self._refused(None, line)
                    return
                self._keep(line)


def _assert_no_position_twice(steps: list[dict[str, Any]]) -> None:
    positions = [(s["cycle"], s["position"]) for s in steps]
    assert len(positions) == len(set(positions)), "a rotation position was handed out twice"


def _assert_gone_message(message: str) -> None:
    assert "deleted or replaced" in message, message
    assert "Restart the server" in message, message
    assert "state" in message, message


@pytest.mark.parametrize("how", ["rm -rf state", "mv state state.bak && mkdir state"])
def test_state_folder_removed_under_load_never_hands_out_a_position_twice(
    server_factory: Callable[..., ApiServer], how: str
) -> None:
    """Deleting or replacing state/ mid-run gives 503s, never a duplicate position."""
    server = server_factory(key="k" * 32)
    state = server.base_dir / "state"
    with RotationClients(server) as clients:
        clients.wait_for(lambda: len(clients.steps) >= 300)
        if how.startswith("rm"):
            shutil.rmtree(state)
        else:
            state.rename(server.base_dir / "state.bak")
            state.mkdir()
        clients.wait_for(lambda: len(clients.refusals) >= 40)
    assert clients.failures == []
    _assert_no_position_twice(clients.steps)
    for message in clients.refusals:
        _assert_gone_message(message)
    with server.client() as client:  # still refused, for every route that needs the state
        _assert_gone_message(_error(client.get("/rotation/next_pair"), 503, GONE_CODE))
        _assert_gone_message(_error(client.get("/cache/list"), 503, GONE_CODE))
        streamed = client.get("/rotation/pairs_stream", params={"count": 3})
        _assert_gone_message(_error(streamed, 503, GONE_CODE))
        made = client.post("/generate/name", json={"name": "Nobody Yet"})
        _assert_gone_message(_error(made, 503, GONE_CODE))
    # The server made no fresh database behind the operator's back.
    assert not state.exists() or list(state.iterdir()) == []


def test_replaced_state_restored_after_restart_continues_without_repeats(
    server_factory: Callable[..., ApiServer],
) -> None:
    """Every position handed out before a `mv state` is in the moved file: restoring it resumes."""
    server = server_factory(key="k" * 32)
    state = server.base_dir / "state"
    with RotationClients(server) as clients:
        clients.wait_for(lambda: len(clients.steps) >= 300)
        state.rename(server.base_dir / "state.bak")
        clients.wait_for(lambda: len(clients.refusals) >= 20)
    assert clients.failures == []
    server.stop()
    (server.base_dir / "state.bak").rename(state)  # the operator puts it back
    again = start_server(server.base_dir, key=server.key)
    try:
        with again.client() as client:
            more = [client.get("/rotation/next_pair").json() for _ in range(50)]
    finally:
        again.stop()
    _assert_no_position_twice(clients.steps + more)


# --- 5. stems changed on disk -----------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """One server for the file tests: its stems and outputs get damaged on purpose."""
    base = make_base_dir(tmp_path_factory.mktemp("integrity"))
    running = start_server(base, key="i" * 32)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def client(server: ApiServer) -> httpx.Client:
    return server.client()


def _message(client: httpx.Client, name: str) -> dict[str, Any]:
    """Assemble `name` × Acme; return the manifest (which names each stem and its file)."""
    body = {"template": "single_anchor", "name": name, "developer": "Acme"}
    response = client.post("/assemble/template", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["verified"] is True
    return client.get(f"/assemble/outputs/{response.json()['id']}").json()


def _name_stem(manifest: dict[str, Any]) -> tuple[str, str]:
    """(stem id, path under stems/) of the message's name stem."""
    stem = next(s for s in manifest["sources"] if s.get("stem_id", "").startswith("stem.name."))
    return stem["stem_id"], stem["path"]


def _outputs(server: ApiServer) -> list[str]:
    return sorted(p.name for p in (server.base_dir / "output").iterdir())


def _flip_samples(data: bytes) -> bytes:
    """The same WAV, same size, with the last 64 sample bytes inverted."""
    return data[:-64] + bytes(b ^ 0xFF for b in data[-64:])


def _rewrite_in_place(path: Path) -> None:
    """Overwrite the samples through the same inode, and put the old mtime back."""
    before = path.stat()
    with path.open("r+b") as handle:
        changed = _flip_samples(handle.read())
        handle.seek(0)
        handle.write(changed)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def _replace(path: Path) -> None:
    """Swap in a same-size file with other samples (a new inode), with the old mtime."""
    before = path.stat()
    other = path.with_name("replacement.wav")
    other.write_bytes(_flip_samples(path.read_bytes()))
    os.utime(other, ns=(before.st_atime_ns, before.st_mtime_ns))
    os.replace(other, path)


@pytest.mark.parametrize(
    ("tamper", "name"), [(_rewrite_in_place, "Warm Inplace"), (_replace, "Warm Replaced")]
)
def test_a_stem_changed_on_disk_is_refused_by_a_warm_server(
    server: ApiServer, client: httpx.Client, tamper: Callable[[Path], None], name: str
) -> None:
    """A stem whose samples changed on disk is 409 everywhere, never a verified message."""
    stem_id, rel = _name_stem(_message(client, name))
    time.sleep(SETTLED_NS / 1e9 + 0.2)  # old enough that the server keeps it in memory
    _message(client, name)  # warm: the parsed stem is now held by the server
    tamper(server.base_dir / "stems" / rel)
    before = _outputs(server)
    body = {"template": "single_anchor", "name": name, "developer": "Acme"}
    message = _error(client.post("/assemble/template", json=body), 409, "corrupt_audio")
    assert stem_id in message
    assert "changed on disk" in message
    assert _outputs(server) == before  # no output, so no manifest that could say verified
    audio = client.get(f"/cache/stems/{stem_id}/audio")
    assert stem_id in _error(audio, 409, "corrupt_audio")
    assert stem_id in client.get("/cache/verify").json()["hash_mismatches"]
    # The remedy the message names works: invalidate, and the next message is proven again.
    assert client.post("/cache/invalidate", json={"stem_id": stem_id}).json()["invalidated"]
    _message(client, name)


def test_an_output_changed_on_disk_is_not_served(server: ApiServer, client: httpx.Client) -> None:
    """An output WAV rewritten after its manifest was written is 409, not served."""
    manifest = _message(client, "Tampered Output")
    _rewrite_in_place(server.base_dir / "output" / manifest["output"]["path"])
    audio = client.get(f"/assemble/outputs/{manifest['id']}/audio")
    assert "changed on disk" in _error(audio, 409, "corrupt_audio")
    ranged = client.get(f"/assemble/outputs/{manifest['id']}/audio", headers={"Range": "bytes=0-9"})
    _error(ranged, 409, "corrupt_audio")
    assert client.get(f"/assemble/outputs/{manifest['id']}/verify").json()["ok"] is False


# --- 9. files replaced by symbolic links ---------------------------------------------------

SECRET = Path("/etc/passwd")


def _assert_refused(response: httpx.Response, leaked: bytes) -> None:
    assert response.status_code in (404, 409), response.text
    assert response.headers["content-type"].startswith("application/json")
    assert leaked[:32] not in response.content


@pytest.mark.parametrize("target", ["secret", "other stem"])
def test_a_stem_replaced_by_a_symlink_is_never_served(
    server: ApiServer, client: httpx.Client, target: str
) -> None:
    """A stem file swapped for a link (to /etc/passwd or to another stem) is refused."""
    stem_id, rel = _name_stem(_message(client, f"Linked {target.title()}"))
    _, other_rel = _name_stem(_message(client, "Link Target"))
    stems = server.base_dir / "stems"
    pointed = SECRET if target == "secret" else stems / other_rel
    path = stems / rel
    path.unlink()
    path.symlink_to(pointed)
    leaked = pointed.read_bytes()
    for headers in ({}, {"Range": "bytes=0-99"}):
        _assert_refused(client.get(f"/cache/stems/{stem_id}/audio", headers=headers), leaked)
    report = client.get("/cache/verify").json()
    assert any(stem_id in line and "symbolic link" in line for line in report["unreadable"])


def test_a_stem_folder_replaced_by_a_symlink_is_never_served(
    server: ApiServer, client: httpx.Client, tmp_path: Path
) -> None:
    """A link anywhere below stems/ (here the kind folder) is refused, not followed."""
    stem_id, rel = _name_stem(_message(client, "Folder Link"))
    stems = server.base_dir / "stems"
    kind_folder = stems / Path(rel).parent
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(kind_folder, elsewhere)
    shutil.rmtree(kind_folder)
    kind_folder.symlink_to(elsewhere)
    try:
        leaked = (elsewhere / Path(rel).name).read_bytes()
        _assert_refused(client.get(f"/cache/stems/{stem_id}/audio"), leaked)
    finally:
        kind_folder.unlink()
        shutil.copytree(elsewhere, kind_folder)


@pytest.mark.parametrize("target", ["secret", "other output"])
def test_an_output_replaced_by_a_symlink_is_never_served(
    server: ApiServer, client: httpx.Client, target: str
) -> None:
    """An output WAV or manifest swapped for a link is refused on every output route."""
    manifest = _message(client, f"Output Link {target.title()}")
    other = _message(client, "Output Link Target")
    output = server.base_dir / "output"
    for suffix, routes in ((".wav", ("/audio", "/verify")), (".json", ("", "/audio", "/verify"))):
        pointed = SECRET if target == "secret" else output / f"{other['id']}{suffix}"
        path = output / f"{manifest['id']}{suffix}"
        path.unlink()
        path.symlink_to(pointed)
        leaked = pointed.read_bytes()
        for route in routes:
            _assert_refused(client.get(f"/assemble/outputs/{manifest['id']}{route}"), leaked)
        listed = client.get("/assemble/outputs")
        assert listed.status_code == 200
        assert leaked[:32] not in listed.content


# --- 6. disk faults: read-only folders, full disks, crashes ----------------------------------


@contextlib.contextmanager
def _mount(folder: Path, *args: str) -> Iterator[None]:
    """`mount <args> … folder` for the block.

    Fails, never skips, where mounts are refused: a skipped disk-fault test looks green.
    Such a machine leaves these tests out on purpose with `pytest -m "not mounts"`.
    """
    done = subprocess.run(["mount", *args, str(folder)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(
            f"mount refused ({done.stderr.strip()}): run as root with mounts allowed, or "
            'leave the disk-fault tests out on purpose with -m "not mounts"'
        )
    try:
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=True)


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """`folder` on a read-only bind mount of itself (chmod means nothing to root)."""
    with _mount(folder, "--bind", str(folder)):
        subprocess.run(["mount", "-o", "remount,ro,bind", str(folder)], check=True)
        yield


@contextlib.contextmanager
def full_disk(folder: Path) -> Iterator[None]:
    """`folder` on a small tmpfs filled to the last byte."""
    with _mount(folder, "-t", "tmpfs", "-o", "size=256k", "tmpfs"):
        with (folder / "filler").open("wb", buffering=0) as filler, contextlib.suppress(OSError):
            while True:
                filler.write(b"\0" * 4096)
        yield


def _stem_ids(client: httpx.Client) -> set[str]:
    return {s["stem_id"] for s in client.get("/cache/list").json()}


def _storage_refusal(response: httpx.Response, folder: str, full: bool) -> None:
    status, code = (507, "insufficient_storage") if full else (503, "storage_read_only")
    message = _error(response, status, code)
    assert f"folder {folder}/" in message, message
    assert ("full" if full else "read-only") in message, message


@pytest.mark.mounts
@pytest.mark.parametrize("full", [False, True], ids=["read-only", "full"])
def test_a_stems_folder_that_refuses_writes_stores_nothing(
    server: ApiServer, client: httpx.Client, full: bool
) -> None:
    """A read-only or full stems/ answers 503/507 naming it; no row without its file."""
    name = f"Refused {'Full' if full else 'Readonly'}"
    stems = server.base_dir / "stems"
    with full_disk(stems) if full else read_only(stems):
        made = client.post("/generate/name", json={"name": name})
        _storage_refusal(made, "stems/name", full)
        assert not any(name.lower().replace(" ", "_") in s for s in _stem_ids(client))
    assert not [p for p in stems.rglob(".*") if p.is_file()]  # no temp file left
    assert client.post("/generate/name", json={"name": name}).status_code == 200  # disk back


@pytest.mark.mounts
def test_invalidate_on_a_read_only_stems_folder_keeps_row_and_file(
    server: ApiServer, client: httpx.Client
) -> None:
    """Invalidation removes the file and the index row together, or neither."""
    stem_id, rel = _name_stem(_message(client, "Keep Me"))
    path = server.base_dir / "stems" / rel
    with read_only(server.base_dir / "stems"):
        refused = client.post("/cache/invalidate", json={"stem_id": stem_id})
        _storage_refusal(refused, "stems/name", full=False)
        assert stem_id in _stem_ids(client)
        assert path.is_file()
        assert client.get(f"/cache/stems/{stem_id}/audio").status_code == 200
    assert client.post("/cache/invalidate", json={"stem_id": stem_id}).json()["invalidated"]
    assert stem_id not in _stem_ids(client)
    assert not path.exists()


@pytest.mark.mounts
@pytest.mark.parametrize("full", [False, True], ids=["read-only", "full"])
def test_an_output_folder_that_refuses_writes_leaves_no_half_message(
    server: ApiServer, client: httpx.Client, full: bool
) -> None:
    """A read-only or full output/ answers 503/507 naming it; no WAV without manifest."""
    _message(client, "Before The Fault")  # every stem exists: only output/ is written
    output = server.base_dir / "output"
    before = _outputs(server)
    with full_disk(output) if full else read_only(output):
        inside = sorted(p.name for p in output.iterdir())
        body = {"template": "single_anchor", "name": "Before The Fault", "developer": "Acme"}
        _storage_refusal(client.post("/assemble/template", json=body), "output", full)
        assert sorted(p.name for p in output.iterdir()) == inside
    assert _outputs(server) == before
    assert client.get("/assemble/outputs").status_code == 200


def test_a_restart_clears_what_a_crash_left_and_keeps_live_work(
    server_factory: Callable[..., ApiServer],
) -> None:
    """Crash leftovers are swept at start: temp files, WAVs without manifest, moved-aside stems."""
    server = server_factory(key="c" * 32)
    with server.client() as client:
        good = _message(client, "Survivor")
        stem_id, rel = _name_stem(good)
    server.stop()
    output, stems = server.base_dir / "output", server.base_dir / "stems"
    audio = (output / good["output"]["path"]).read_bytes()
    dead = dead_pid()  # names a writer that is gone
    stamp = good["id"].split("_")[0]

    def leftover(folder: Path, name: str, pid: int, suffix: str = ".tmp") -> Path:
        path = folder / f".{name}.{pid}.{'0' * 32}{suffix}"
        path.write_bytes(audio)
        return path

    gone = [
        leftover(output, f"{stamp}_x_killed_mid_write.wav", dead),
        output / f"{stamp}_x_orphan_without_manifest.wav",
        output / f"{stamp}_x_killed_before_manifest.wav",
        leftover(stems / "name", "stem.name.half_written.wav", dead),
    ]
    gone[1].write_bytes(audio)
    os.link(leftover(output, gone[2].name, dead), gone[2])
    gone.append(next(output.glob(f".{gone[2].name}.*")))
    live = output / f"{stamp}_x_still_being_written.wav"
    os.link(leftover(output, live.name, os.getpid()), live)  # this test is the live writer
    # A crash inside invalidate: the file was moved aside, the row's delete never committed.
    aside = stems / rel
    aside.rename(stems / Path(rel).parent / f".{aside.name}.{dead}.{'0' * 32}.aside")

    with start_server(server.base_dir, key=server.key) as again, again.client() as client:
        assert [o["id"] for o in client.get("/assemble/outputs").json()] == [good["id"]]
        assert client.get(f"/cache/stems/{stem_id}/audio").status_code == 200
        assert client.get("/cache/verify").json()["ok"] is True
    assert [p.name for p in gone if p.exists()] == []
    assert live.exists()
    assert aside.is_file()


@pytest.mark.mounts
def test_a_full_disk_under_the_whole_server_is_507_and_recovers(tmp_path: Path) -> None:
    """One full disk under state/, stems/ and output/: 507 naming each, no lost position."""
    base = tmp_path / "disk"
    base.mkdir()
    with (
        _mount(base, "-t", "tmpfs", "-o", "size=32m", "tmpfs"),
        start_server(make_base_dir(base), key="d" * 32) as server,
        server.client() as client,
    ):
        _message(client, "Disk Filler")
        steps = [client.get("/rotation/next_pair").json() for _ in range(5)]
        with (base / "filler").open("wb", buffering=0) as filler:
            with contextlib.suppress(OSError):
                while True:
                    filler.write(b"\0" * 65536)
            _storage_refusal(client.get("/rotation/next_pair"), "state", full=True)
            made = client.post("/generate/name", json={"name": "No Room"})
            _storage_refusal(made, "stems/name", full=True)
            body = {"template": "single_anchor", "name": "Disk Filler", "developer": "Acme"}
            _storage_refusal(client.post("/assemble/template", json=body), "output", True)
        (base / "filler").unlink()
        steps += [client.get("/rotation/next_pair").json() for _ in range(5)]
        _message(client, "No Room")
    positions = [s["cycle"] * s["size"] + s["position"] for s in steps]
    assert positions == list(range(positions[0], positions[0] + 10))  # none lost, none twice
