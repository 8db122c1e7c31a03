"""Both object stores against their real backends: the filesystem and a real
`gcp-storage-emulator` (started by the fixtures) spoken to by the real GCS client.

Where the emulator differs from GCS — it ignores `if_generation_match`, `maxResults` and
`startOffset` — the logic is covered by tests/test_storage_gcs_requests.py, which checks
the requests themselves. Here the emulator proves the client-side paging, the prefix, the
checksums and the error translation end to end.
"""

# The emulator fixtures are imported by name; their use as parameters is what ruff's F811
# would call a redefinition.
# ruff: noqa: F811

from __future__ import annotations

import base64
import io
import os
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import google_crc32c
import pytest
import requests
import urllib3
from requests.adapters import HTTPAdapter

from hybrid_audio.cache import StemRecord
from hybrid_audio.config import Settings
from hybrid_audio.contract import AudioFormat
from hybrid_audio.files import UnsafeFileError
from hybrid_audio.storage.base import (
    ChecksumMismatchError,
    ObjectExistsError,
    ObjectMissingError,
    ObjectStore,
    StorageUnavailableError,
    metadata_text,
    stem_metadata,
    stem_object_name,
)
from hybrid_audio.storage.gcs import GcsStore
from hybrid_audio.storage.local import LocalStore
from tests.api_server import free_port
from tests.audio_factory import make_wav
from tests.gcs_emulator import Emulator, gcs_bucket, gcs_emulator  # noqa: F401

FORMAT = AudioFormat(encoding="pcm_s16le", sample_rate=22050)
TEXT = "José Ñúñez 東京 — 100%"
STEM = "stem.name.jose_nunez"
WAV_TYPE = "audio/wav"


def wav(seed: int = 0) -> bytes:
    return make_wav(FORMAT, 2000, seed=seed)


def gcs_crc32c(data: bytes) -> str:
    """CRC32C as GCS reports it, computed here independently of the code under test."""
    return base64.b64encode(struct.pack(">I", google_crc32c.value(data))).decode()


def record(data: bytes) -> StemRecord:
    return StemRecord(
        stem_id=STEM,
        kind="name",
        text=TEXT,
        path=f"name/{STEM}.wav",
        contract_signature="c" * 64,
        engine="piper",
        engine_version="1.2",
        model="en_US-test",
        voice="0",
        encoding="pcm_s16le",
        sample_rate=22050,
        channels=1,
        bits_per_sample=16,
        frames=2000,
        duration=2000 / 22050,
        sha256="a" * 64,
        size=len(data),
        created_at="2026-01-01T00:00:00+00:00",
        updated_at="2026-01-01T00:00:00+00:00",
    )


def gcs_settings(tmp_path: Path, emulator_url: str, bucket: str, **values: object) -> Settings:
    values = {"gcs_retry_deadline": 1.0, **values}
    return Settings(
        base_dir=tmp_path,
        gcs_bucket=bucket,
        storage_emulator_host=emulator_url,
        **values,  # type: ignore[arg-type]
    )


@pytest.fixture(params=["local", "gcs"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    """Each backend in turn; the GCS one on a fresh emulator bucket under a prefix."""
    if request.param == "local":
        return LocalStore(Settings(base_dir=tmp_path))
    emulator: Emulator = request.getfixturevalue("gcs_emulator")
    bucket = request.getfixturevalue("gcs_bucket")
    return GcsStore(gcs_settings(tmp_path, emulator.url, bucket, gcs_prefix="team/a"))


# --- the contract, on both backends --------------------------------------------------


def test_round_trip_keeps_bytes_and_crc32c_and_stem_metadata(store: ObjectStore) -> None:
    data = wav()
    name = stem_object_name(STEM)
    uploaded = store.upload(name, data, stem_metadata(record(data)), WAV_TYPE)
    assert (uploaded.name, uploaded.size, uploaded.crc32c) == (name, len(data), gcs_crc32c(data))

    body, info = store.download(name)
    assert body == data
    assert info.crc32c == gcs_crc32c(data)
    assert info.updated is not None
    if store.mode == "gcs":  # a bucket keeps metadata; locally the index is the metadata
        assert info.metadata["stem_id"] == STEM
        assert info.metadata["contract_signature"] == "c" * 64
        assert all(value.isascii() for value in info.metadata.values())
        assert metadata_text(info.metadata) == TEXT
    else:
        assert info.metadata == {}


def test_exists_info_delete(store: ObjectStore) -> None:
    name = "output/20260101T000000Z_demo_jose.json"
    assert not store.exists(name)
    assert store.info(name) is None
    assert store.delete(name) is False

    store.upload(name, b'{"ok": true}', {}, "application/json")
    assert store.exists(name)
    info = store.info(name)
    assert info is not None
    assert info.size == len(b'{"ok": true}')
    assert store.delete(name) is True
    assert not store.exists(name)
    with pytest.raises(ObjectMissingError):
        store.download(name)


def test_download_of_a_missing_object_is_object_missing(store: ObjectStore) -> None:
    with pytest.raises(ObjectMissingError) as caught:
        store.download(stem_object_name("stem.name.nobody"))
    assert caught.value.name == "stems/name/stem.name.nobody.wav"


def test_pages_cover_every_object_once_in_name_order(store: ObjectStore) -> None:
    names = [stem_object_name(f"stem.name.n{i:02d}") for i in range(23)]
    others = ["output/20260101T000000Z_demo_x.wav", stem_object_name("stem.developer.hilton")]
    for name in names + others:
        store.upload(name, name.encode(), {}, WAV_TYPE)

    seen, token, pages = [], None, 0
    while True:
        page = store.list_page("stems/name/", limit=10, page_token=token)
        assert len(page.objects) <= 10
        seen += [info.name for info in page.objects]
        pages += 1
        token = page.next_page_token
        if token is None:
            break
    assert pages == 3
    assert seen == sorted(names)
    assert [info.name for info in store.iterate("stems/name/")] == sorted(names)
    assert sorted(info.name for info in store.iterate("")) == sorted(names + others)
    assert [info.name for info in store.list_page("output/", 10).objects] == others[:1]


def test_bulk_transfers_report_each_item(store: ObjectStore) -> None:
    taken = stem_object_name("stem.name.taken")
    store.upload(taken, wav(9), {}, WAV_TYPE)
    items = [
        (stem_object_name(f"stem.name.b{i}"), wav(i), {"i": str(i)}, WAV_TYPE) for i in range(5)
    ]
    results = store.upload_many(items, workers=3)
    assert [r.name for r in results] == [name for name, *_ in items]  # type: ignore[union-attr]
    assert [r.crc32c for r in results] == [gcs_crc32c(d) for _, d, *_ in items]  # type: ignore[union-attr]

    names = [name for name, *_ in items] + [stem_object_name("stem.name.absent")]
    pulled = store.download_many(names, workers=3)
    assert pulled[:5] == [data for _, data, *_ in items]
    assert isinstance(pulled[5], ObjectMissingError)


# --- GCS ---------------------------------------------------------------------------------


def test_gcs_prefix_isolates_projects_sharing_a_bucket(
    tmp_path: Path, gcs_emulator: Emulator, gcs_bucket: str
) -> None:
    a = GcsStore(gcs_settings(tmp_path, gcs_emulator.url, gcs_bucket, gcs_prefix="team-a"))
    b = GcsStore(gcs_settings(tmp_path, gcs_emulator.url, gcs_bucket, gcs_prefix="team-b/x"))
    name = stem_object_name(STEM)
    a.upload(name, b"from a", {}, WAV_TYPE)
    b.upload(name, b"from b!", {}, WAV_TYPE)
    b.upload("output/20260101T000000Z_only_b.json", b"{}", {}, "application/json")

    assert [info.name for info in a.iterate("")] == [name]
    assert [info.name for info in b.list_page("", 10).objects] == [
        "output/20260101T000000Z_only_b.json",
        name,
    ]
    assert a.download(name)[0] == b"from a"
    assert b.download(name)[0] == b"from b!"
    raw = sorted(blob.name for blob in a.bucket.client.list_blobs(gcs_bucket))
    assert raw == [
        f"team-a/{name}",
        "team-b/x/output/20260101T000000Z_only_b.json",
        f"team-b/x/{name}",
    ]
    assert a.describe().model_dump() == {"mode": "gcs", "bucket": gcs_bucket, "prefix": "team-a/"}


def test_gcs_missing_bucket_is_unavailable_naming_it(
    tmp_path: Path, gcs_emulator: Emulator
) -> None:
    store = GcsStore(gcs_settings(tmp_path, gcs_emulator.url, "no-such-bucket-h1"))
    calls = {
        "upload": lambda: store.upload(stem_object_name(STEM), b"x", {}, WAV_TYPE),
        "list": lambda: store.list_page("", 5),
        "iterate": lambda: list(store.iterate("stems/")),
        "info": lambda: store.info(stem_object_name(STEM)),
        "download": lambda: store.download(stem_object_name(STEM)),
        "delete": lambda: store.delete(stem_object_name(STEM)),
        "upload_many": lambda: _raise(store.upload_many([("output/a.json", b"{}", {}, "x/y")])),
        "download_many": lambda: _raise(store.download_many([stem_object_name(STEM)])),
    }
    for call, run in calls.items():
        with pytest.raises(StorageUnavailableError) as caught:
            run()
        assert caught.value.bucket == "no-such-bucket-h1", call
        assert "no such bucket" in caught.value.reason, call
        assert "'no-such-bucket-h1'" in str(caught.value), call


def _raise(results: list) -> None:
    """A bulk call's one result, raised if it is an error."""
    (result,) = results
    if isinstance(result, Exception):
        raise result


def test_gcs_unreachable_endpoint_is_unavailable_within_the_deadline(tmp_path: Path) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    store = GcsStore(gcs_settings(tmp_path, nobody, "far-away", gcs_retry_deadline=0.5))
    started = time.monotonic()
    with pytest.raises(StorageUnavailableError) as caught:
        store.upload(stem_object_name(STEM), b"x", {}, WAV_TYPE)
    assert time.monotonic() - started < 5
    assert caught.value.bucket == "far-away"
    assert "unreachable" in caught.value.reason
    with pytest.raises(StorageUnavailableError):
        store.list_page("", 5)


class _Corrupting(HTTPAdapter):
    """Flips one bit of every media download on its way from the emulator to the client."""

    def send(self, request: requests.PreparedRequest, **kwargs: object) -> requests.Response:  # type: ignore[override]
        response = super().send(request, **kwargs)  # type: ignore[arg-type]
        if "alt=media" in (request.url or ""):
            body = bytearray(response.raw.read())
            body[len(body) // 2] ^= 0x01
            response.raw = urllib3.HTTPResponse(
                body=io.BytesIO(bytes(body)),
                headers=response.raw.headers,
                status=response.status_code,
                preload_content=False,
            )
        return response


@pytest.fixture
def corrupting_session() -> Iterator[requests.Session]:
    session = requests.Session()
    session.mount("http://", _Corrupting())
    yield session
    session.close()


def test_gcs_bytes_corrupted_in_transit_fail_the_crc32c(
    tmp_path: Path, gcs_emulator: Emulator, gcs_bucket: str, corrupting_session: requests.Session
) -> None:
    settings = gcs_settings(tmp_path, gcs_emulator.url, gcs_bucket)
    name = stem_object_name(STEM)
    GcsStore(settings).upload(name, wav(), {}, WAV_TYPE)

    store = GcsStore(settings, http=corrupting_session)
    with pytest.raises(ChecksumMismatchError, match=name):
        store.download(name)
    assert isinstance(store.download_many([name])[0], ChecksumMismatchError)
    assert GcsStore(settings).download(name)[0] == wav()  # the stored object is intact


# --- local -------------------------------------------------------------------------------


@pytest.fixture
def local(tmp_path: Path) -> LocalStore:
    return LocalStore(Settings(base_dir=tmp_path))


def test_local_upload_never_overwrites(local: LocalStore) -> None:
    """(The emulator ignores the GCS precondition; its request is checked in
    test_storage_gcs_requests.py.)"""
    name = stem_object_name(STEM)
    local.upload(name, b"first", {}, WAV_TYPE)
    with pytest.raises(ObjectExistsError):
        local.upload(name, b"second", {}, WAV_TYPE)
    assert local.download(name)[0] == b"first"
    assert [p.name for p in (local.stems_dir / "name").iterdir()] == [f"{STEM}.wav"]


def test_local_objects_are_the_files_settings_point_at(tmp_path: Path) -> None:
    settings = Settings(
        base_dir=tmp_path, stems_dir=tmp_path / "elsewhere", output_dir=tmp_path / "out"
    )
    local = LocalStore(settings)
    local.upload(stem_object_name(STEM), b"stem", {}, WAV_TYPE)
    local.upload("output/20260101T000000Z_demo_x.json", b"{}", {}, "application/json")
    assert (tmp_path / "elsewhere" / "name" / f"{STEM}.wav").read_bytes() == b"stem"
    assert (tmp_path / "out" / "20260101T000000Z_demo_x.json").read_bytes() == b"{}"
    assert local.describe().model_dump() == {"mode": "local", "bucket": None, "prefix": ""}


@pytest.mark.parametrize(
    "name",
    [
        "stems/name/../../x.wav",
        "output/../state/x.json",
        "/etc/passwd",
        "stems/name/stem.developer.hilton.wav",  # the kind folder must match the id
        "state/hybrid_audio.sqlite",
        "",
    ],
)
def test_local_refuses_names_that_are_not_stem_or_output_files(
    local: LocalStore, name: str
) -> None:
    for call in (
        lambda: local.upload(name, b"x", {}, WAV_TYPE),
        lambda: local.download(name),
        lambda: local.info(name),
        lambda: local.exists(name),
        lambda: local.delete(name),
    ):
        with pytest.raises(ValueError, match="not a stem or output object name"):
            call()
    assert not any(local.stems_dir.parent.rglob("x.*"))


def test_local_refuses_symbolic_links(local: LocalStore, tmp_path: Path) -> None:
    secret = tmp_path / "secret.wav"
    secret.write_bytes(b"secret")
    (local.stems_dir / "name").mkdir(parents=True)
    (local.stems_dir / "name" / f"{STEM}.wav").symlink_to(secret)
    (local.stems_dir / "developer").symlink_to(tmp_path, target_is_directory=True)
    (tmp_path / "stem.developer.hilton.wav").write_bytes(b"outside")

    with pytest.raises(UnsafeFileError):
        local.download(stem_object_name(STEM))
    with pytest.raises(UnsafeFileError):
        local.download(stem_object_name("stem.developer.hilton"))
    with pytest.raises(UnsafeFileError):
        local.upload(stem_object_name("stem.developer.new"), b"x", {}, WAV_TYPE)
    with pytest.raises(UnsafeFileError):
        local.delete(stem_object_name(STEM))
    assert not local.exists(stem_object_name(STEM))
    assert list(local.iterate("")) == []
    assert secret.read_bytes() == b"secret"
    assert not (tmp_path / "stem.developer.new.wav").exists()


def test_local_listing_skips_temp_dot_and_foreign_files(local: LocalStore) -> None:
    name = stem_object_name(STEM)
    local.upload(name, b"stem", {}, WAV_TYPE)
    folder = local.stems_dir / "name"
    (folder / f".{STEM}.wav.{os.getpid()}.abc.tmp").write_bytes(b"half")
    (folder / ".DS_Store").write_bytes(b"")
    (folder / "notes.txt").write_bytes(b"")
    (folder / "stem.developer.hilton.wav").write_bytes(b"wrong folder")
    local.output_dir.mkdir()
    (local.output_dir / "readme.md").write_bytes(b"")
    (local.output_dir / "sub").mkdir()

    assert [info.name for info in local.iterate("")] == [name]
    assert local.list_page("", 5).model_dump()["next_page_token"] is None
