"""The read-through shared cache, against a real `gcp-storage-emulator` and real Piper.

A stem missing here but in the bucket under the active contract is downloaded, proven
and adopted instead of synthesized; anything unproven (other contract, samples that do
not match the metadata's sha256, a text that is not the id's) is never adopted. The
engine is wrapped in a counting proxy to count syntheses; storage is never mocked.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from hybrid_audio import generation
from hybrid_audio.cache import StemCache
from hybrid_audio.config import Settings
from hybrid_audio.contract import VoiceContract
from hybrid_audio.engines import Engine
from hybrid_audio.storage.base import ObjectStore, stem_metadata, stem_object_name
from hybrid_audio.storage.gcs import GcsStore
from hybrid_audio.storage.readthrough import pull_stem
from hybrid_audio.wav import Wav, read_wav, write_wav
from hybrid_audio.workspace import Workspace
from tests.api_server import free_port, make_base_dir
from tests.gcs_emulator import gcs_bucket, gcs_emulator  # noqa: F401


class CountingEngine:
    """The real engine, counting its syntheses (what a read-through must avoid)."""

    def __init__(self, inner: Engine) -> None:
        self.inner = inner
        self.name = inner.name
        self.calls: list[str] = []

    @property
    def version(self) -> str:
        return self.inner.version

    def synthesize(self, text: str, contract: VoiceContract) -> Wav:
        self.calls.append(text)
        return self.inner.synthesize(text, contract)

    def describe(self) -> dict[str, str]:
        return self.inner.describe()


@dataclass(frozen=True)
class Bucket:
    """A fresh bucket on the session's emulator."""

    url: str
    name: str


@pytest.fixture
def bucket(request: pytest.FixtureRequest) -> Bucket:
    return Bucket(
        request.getfixturevalue("gcs_emulator").url, request.getfixturevalue("gcs_bucket")
    )


def gcs_settings(base_dir: Path, bucket: str, url: str, deadline: float = 1.0) -> Settings:
    return Settings(
        base_dir=base_dir, gcs_bucket=bucket, storage_emulator_host=url, gcs_retry_deadline=deadline
    )


def dead_url() -> str:
    """An emulator URL nobody answers at."""
    return f"http://127.0.0.1:{free_port()}"


@contextmanager
def workspace(settings: Settings, engine: Engine) -> Iterator[Workspace]:
    ws = Workspace.build(settings, engine=CountingEngine(engine))
    try:
        yield ws
    finally:
        ws.close()


def calls(ws: Workspace) -> list[str]:
    return ws.generator.engine.calls


def file_bytes(ws: Workspace, stem_id: str) -> bytes:
    return ws.cache.path_of(stem_id).read_bytes()


def test_a_stem_deleted_locally_is_downloaded_not_synthesized(
    tmp_path: Path, bucket: Bucket, piper: Engine
) -> None:
    settings = gcs_settings(make_base_dir(tmp_path), bucket.name, bucket.url)
    with workspace(settings, piper) as ws:
        made = ws.generator.generate_name("Ana")
        assert made.cached is False
        assert calls(ws) == ["Ana"]
        assert ws.uploads.wait_idle(30)
        name = stem_object_name(made.stem_id)
        assert ws.store.info(name).metadata["sha256"] == made.sha256
        before = file_bytes(ws, made.stem_id)

        assert ws.cache.invalidate(made.stem_id)
        again = ws.generator.generate_name("Ana")

        assert calls(ws) == ["Ana"]  # no second synthesis
        assert again.cached is True
        assert again.sha256 == made.sha256
        assert file_bytes(ws, made.stem_id) == before == ws.store.download(name)[0]
        assert ws.uploads.queue.counts().pending == 0  # an adopted stem is not queued back


def test_a_second_machine_synthesizes_nothing_the_first_made(
    tmp_path: Path, bucket: Bucket, piper: Engine
) -> None:
    first = gcs_settings(make_base_dir(tmp_path / "a"), bucket.name, bucket.url)
    second = gcs_settings(make_base_dir(tmp_path / "b"), bucket.name, bucket.url)
    with workspace(first, piper) as one:
        made = one.assembler.assemble("double_anchor", name="José", developer="Hilton")
        assert len(calls(one)) == 4  # two script stems, a name, a developer
        assert one.uploads.wait_idle(30)
        stems = {r.stem_id: file_bytes(one, r.stem_id) for r in one.cache.list()}

    with workspace(second, piper) as two:
        result = two.assembler.assemble("double_anchor", name="José", developer="Hilton")
        assert calls(two) == []
        assert {r.stem_id: file_bytes(two, r.stem_id) for r in two.cache.list()} == stems
        assert result.summary.sha256 == made.summary.sha256  # the same message, bit for bit
        assert result.report.ok


def _upload_stem(store: ObjectStore, record_source: StemCache, stem_id: str, **changes) -> None:
    """Upload `stem_id`'s local file under its own name, its metadata changed by `changes`
    (`data=` replaces the bytes)."""
    record = record_source.get(stem_id)
    data = changes.pop("data", record_source.path_of(stem_id).read_bytes())
    metadata = {**stem_metadata(record), **changes}
    store.upload(stem_object_name(stem_id), data, metadata, "audio/wav")


@pytest.mark.parametrize(
    ("tamper", "status"),
    [
        ({"contract_signature": "0" * 16}, "incompatible"),
        ({"sha256": "0" * 64}, "invalid"),  # the metadata does not describe the bytes
        ({"data": "louder"}, "invalid"),  # other samples under the recorded sha256
        ({"text": "Bob"}, "invalid"),  # a text that is not the id's
    ],
)
def test_a_tampered_object_is_never_adopted(
    tmp_path: Path,
    bucket: Bucket,
    piper: Engine,
    tamper: dict[str, str],
    status: str,
) -> None:
    maker = gcs_settings(make_base_dir(tmp_path / "maker"), bucket.name, dead_url(), 0.5)
    with workspace(maker, piper) as source:  # a machine whose uploads never arrive
        made = source.generator.generate_name("Ana")
        if tamper.get("data") == "louder":
            wav = source.cache.load(made.stem_id)
            pcm = bytes((b + 1) % 256 for b in wav.pcm)
            tamper = {"data": write_wav(wav.format, pcm)}
        store = GcsStore(gcs_settings(tmp_path, bucket.name, bucket.url))
        _upload_stem(store, source.cache, made.stem_id, **tamper)

    reader = gcs_settings(make_base_dir(tmp_path / "reader"), bucket.name, bucket.url)
    with workspace(reader, piper) as ws:
        name = stem_object_name(made.stem_id)
        outcome = pull_stem(ws.store, ws.cache, name)
        assert (outcome.status, outcome.record) == (status, None)
        assert ws.cache.get(made.stem_id) is None  # nothing stored

        record = ws.generator.generate_name("Ana")  # the read-through refuses it too
        assert calls(ws) == ["Ana"]
        assert record.cached is False


def test_a_local_stem_is_never_overwritten_by_a_pull(
    tmp_path: Path, bucket: Bucket, piper: Engine
) -> None:
    settings = gcs_settings(make_base_dir(tmp_path / "a"), bucket.name, bucket.url)
    with workspace(settings, piper) as one:
        made = one.generator.generate_name("Ana")
        assert one.uploads.wait_idle(30)
        name = stem_object_name(made.stem_id)
        assert pull_stem(one.store, one.cache, name).status == "already"

    other = gcs_settings(make_base_dir(tmp_path / "b"), bucket.name, dead_url(), 0.5)
    with workspace(other, piper) as two:  # its own "Ana", never uploaded: other samples
        wav = piper.synthesize("Ana", two.contract)
        louder = read_wav(write_wav(wav.format, bytes((b + 1) % 256 for b in wav.pcm)))
        mine = two.cache.store(made.stem_id, "Ana", louder)
        before = file_bytes(two, made.stem_id)

        outcome = pull_stem(GcsStore(settings), two.cache, name)

        assert outcome.status == "conflict"
        assert outcome.record.sha256 == mine.sha256
        assert file_bytes(two, made.stem_id) == before


def test_with_the_bucket_down_a_stem_is_synthesized(
    tmp_path: Path, piper: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    settings = gcs_settings(make_base_dir(tmp_path), "down-bucket", dead_url(), 0.5)
    with workspace(settings, piper) as ws:
        record = ws.generator.generate_name("Ana")
        assert record.cached is False
        assert calls(ws) == ["Ana"]
        assert ws.cache.lookup(record.stem_id) is not None
    assert "down-bucket" in caplog.text  # the skipped read-through is logged, bucket named


class CountingStore(GcsStore):
    """A GcsStore that counts the downloads asked of it (each is a read-through attempt)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.downloads: list[str] = []

    def download(self, name: str):  # type: ignore[no-untyped-def]
        self.downloads.append(name)
        return super().download(name)


def test_a_bucket_that_is_down_is_not_asked_again_for_every_missing_stem(
    tmp_path: Path, piper: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each read-through of an unreachable bucket costs GCS_RETRY_DEADLINE (60 s by
    default) before the stem is synthesized; asked for every miss, a batch of 1,000 new
    stems with the bucket down would take 1,000 minutes. After one failure the bucket is
    left alone for `READ_THROUGH_PAUSE`, then asked again."""
    settings = gcs_settings(make_base_dir(tmp_path), "down-bucket", dead_url(), 1.0)
    with workspace(settings, piper) as ws:
        ws.uploads.close()
        store = CountingStore(settings)
        ws.generator.remote = store
        started = time.monotonic()
        for name in ("Ana", "Bob", "Carla", "Dora"):
            assert ws.generator.generate_name(name).cached is False
        assert calls(ws) == ["Ana", "Bob", "Carla", "Dora"]
        assert store.downloads == [stem_object_name("stem.name.ana")]
        assert time.monotonic() - started < 4 * 1.0  # not one deadline per stem

        monkeypatch.setattr(generation, "READ_THROUGH_PAUSE", 0.0)  # the pause is over
        ws.generator.generate_name("Eva")
        assert store.downloads[-1] == stem_object_name("stem.name.eva")
