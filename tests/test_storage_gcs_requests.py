"""The requests GcsStore sends, checked where the emulator cannot check them.

`gcp-storage-emulator` ignores generation preconditions, page sizes and start offsets,
and never fails a request transiently. Here the real client sends its requests through a
`requests.Session` whose transport adapter records each one and answers from a script of
canned JSON responses, so the tests see exactly what would go to GCS: the
`ifGenerationMatch=0` and CRC32C of an upload, `maxResults`/`pageToken` of a page, the
page tokens `iterate` follows, and what a 412, 403 or 503 turns into.
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import io
import json
import struct
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import google_crc32c
import pytest
import requests
import urllib3
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict

from hybrid_audio.config import Settings
from hybrid_audio.storage import gcs as gcs_module
from hybrid_audio.storage.base import (
    ChecksumMismatchError,
    ObjectExistsError,
    ObjectMissingError,
    StorageUnavailableError,
)
from hybrid_audio.storage.gcs import CREDENTIALS_HELP, GcsStore

HOST = "http://gcs.test:9"
BUCKET = "canned"
NAME = "stems/name/stem.name.jose.wav"


def crc32c(data: bytes) -> str:
    return base64.b64encode(struct.pack(">I", google_crc32c.value(data))).decode()


class Canned(BaseAdapter):
    """Records every request and answers with the next scripted (status, body, headers)."""

    def __init__(self) -> None:
        super().__init__()
        self.script: list[tuple[int, bytes | dict, dict[str, str]]] = []
        self.requests: list[requests.PreparedRequest] = []

    def reply(self, status: int, body: bytes | dict, **headers: str) -> None:
        self.script.append((status, body, headers))

    def send(self, request: requests.PreparedRequest, **kwargs: object) -> requests.Response:  # type: ignore[override]
        self.requests.append(request)
        status, body, headers = self.script.pop(0)
        if isinstance(body, dict):
            body = json.dumps(body).encode()
            headers = {"Content-Type": "application/json", **headers}
        response = requests.Response()
        response.status_code = status
        response.reason = "canned"
        response.headers = CaseInsensitiveDict(headers)
        response.raw = urllib3.HTTPResponse(
            body=io.BytesIO(body), headers=headers, status=status, preload_content=False
        )
        response.url = request.url or ""
        response.request = request
        return response

    def close(self) -> None:
        pass

    def query(self, index: int) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.requests[index].url or "").query)

    def path(self, index: int) -> str:
        return unquote(urlsplit(self.requests[index].url or "").path)


@pytest.fixture
def canned() -> Canned:
    return Canned()


def make_store(tmp_path: Path, canned: Canned, **values: object) -> GcsStore:
    session = requests.Session()
    session.mount("http://", canned)
    settings = Settings(
        base_dir=tmp_path,
        gcs_bucket=BUCKET,
        gcs_prefix="team",
        storage_emulator_host=HOST,
        **{"gcs_retry_deadline": 1.0, **values},  # type: ignore[arg-type]
    )
    return GcsStore(settings, http=session)


def resource(name: str, data: bytes = b"x", **extra: object) -> dict:
    """An object resource as GCS returns it."""
    return {
        "kind": "storage#object",
        "name": name,
        "bucket": BUCKET,
        "size": str(len(data)),
        "crc32c": crc32c(data),
        "md5Hash": "",
        "generation": "17",
        "updated": "2026-01-02T03:04:05.000Z",
        **extra,
    }


def multipart_parts(request: requests.PreparedRequest) -> tuple[dict, bytes]:
    """(JSON metadata, media bytes) of a multipart upload."""
    content_type = request.headers["Content-Type"]
    if isinstance(content_type, bytes):
        content_type = content_type.decode()
    head = f"Content-Type: {content_type}\r\n\r\n".encode()
    body = request.body if isinstance(request.body, bytes) else str(request.body).encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    meta, media = message.iter_parts()
    return json.loads(meta.get_payload(decode=True)), media.get_payload(decode=True)


# --- uploads -----------------------------------------------------------------------------


def test_upload_creates_only_and_sends_the_crc32c(tmp_path: Path, canned: Canned) -> None:
    data = b"RIFF....WAVE stem bytes"
    canned.reply(200, resource(f"team/{NAME}", data, metadata={"stem_id": "stem.name.jose"}))
    store = make_store(tmp_path, canned)

    info = store.upload(NAME, data, {"stem_id": "stem.name.jose"}, "audio/wav")

    (request,) = canned.requests
    assert request.method == "POST"
    assert canned.path(0) == f"/upload/storage/v1/b/{BUCKET}/o"
    assert canned.query(0)["uploadType"] == ["multipart"]
    assert canned.query(0)["ifGenerationMatch"] == ["0"]
    meta, media = multipart_parts(request)
    assert media == data
    assert meta["name"] == f"team/{NAME}"
    assert meta["crc32c"] == crc32c(data)
    assert meta["metadata"] == {"stem_id": "stem.name.jose"}
    assert meta["contentType"] == "audio/wav"
    assert info.name == NAME
    assert info.generation == 17


def test_upload_onto_an_existing_object_is_object_exists(tmp_path: Path, canned: Canned) -> None:
    """GCS answers 412 to `ifGenerationMatch=0` when the name is taken (the emulator never)."""
    canned.reply(412, {"error": {"code": 412, "message": "At least one of the pre-conditions"}})
    with pytest.raises(ObjectExistsError) as caught:
        make_store(tmp_path, canned).upload(NAME, b"x", {}, "audio/wav")
    assert caught.value.name == NAME
    assert len(canned.requests) == 1  # a precondition failure is never retried


def test_bulk_upload_sends_the_same_precondition_and_checksum(
    tmp_path: Path, canned: Canned
) -> None:
    canned.reply(200, resource(f"team/{NAME}", b"one"))
    canned.reply(412, {"error": {"code": 412, "message": "taken"}})
    items = [(NAME, b"one", {"k": "v"}, "audio/wav"), ("output/x.json", b"{}", {}, "a/b")]

    results = make_store(tmp_path, canned).upload_many(items, workers=1)

    assert results[0].crc32c == crc32c(b"one")  # type: ignore[union-attr]
    assert isinstance(results[1], ObjectExistsError)
    assert len(canned.requests) == len(items)  # one request per object, no bucket lookup
    for index, (_, data, metadata, _) in enumerate(items):
        assert canned.query(index)["uploadType"] == ["multipart"]
        assert canned.query(index)["ifGenerationMatch"] == ["0"]
        meta, _ = multipart_parts(canned.requests[index])
        assert meta["crc32c"] == crc32c(data)
        assert meta.get("metadata", {}) == metadata


def test_an_upload_the_bucket_stored_differently_is_a_checksum_mismatch(
    tmp_path: Path, canned: Canned
) -> None:
    canned.reply(200, resource(f"team/{NAME}", b"something else"))
    with pytest.raises(ChecksumMismatchError):
        make_store(tmp_path, canned).upload(NAME, b"what was sent", {}, "audio/wav")


# --- downloads ---------------------------------------------------------------------------


def test_download_pins_the_generation_and_checks_the_crc32c(tmp_path: Path, canned: Canned) -> None:
    data = b"stem bytes"
    canned.reply(200, resource(f"team/{NAME}", data, metadata={"sha256": "ab"}))
    canned.reply(200, data, **{"X-Goog-Hash": f"crc32c={crc32c(data)}", "X-Goog-Generation": "17"})
    body, info = make_store(tmp_path, canned).download(NAME)
    assert (body, info.metadata) == (data, {"sha256": "ab"})
    assert canned.query(1)["ifGenerationMatch"] == ["17"]
    assert canned.query(1)["alt"] == ["media"]

    canned.reply(200, resource(f"team/{NAME}", data))
    canned.reply(200, b"stem bytez", **{"X-Goog-Hash": f"crc32c={crc32c(data)}"})
    with pytest.raises(ChecksumMismatchError, match=NAME):
        make_store(tmp_path, canned).download(NAME)


def _not_found(what: str) -> dict:
    return {"error": {"code": 404, "message": f"No such {what}"}}


def test_a_miss_asks_whether_the_bucket_exists_only_when_it_was_not_seen_lately(
    tmp_path: Path, canned: Canned, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read-through miss was two requests in turn (the object's 404, then a one-object
    listing telling a missing object from a missing bucket); while the bucket answered a
    request less than `BUCKET_SEEN_SECONDS` ago, the 404 alone says it."""
    store = make_store(tmp_path, canned)
    canned.reply(404, _not_found("object"))
    canned.reply(200, {"kind": "storage#objects", "items": []})  # the bucket is there
    assert store.info(NAME) is None
    assert [canned.path(i).rsplit("/", 1)[-1] for i in range(2)] == [NAME.rsplit("/", 1)[-1], "o"]
    canned.reply(404, _not_found("object"))  # seen a moment ago: no listing
    assert store.info("stems/name/stem.name.ann.wav") is None
    assert len(canned.requests) == 3
    canned.reply(200, resource(f"team/{NAME}"))
    assert store.info(NAME) is not None  # an answer from the bucket keeps it seen
    canned.reply(404, _not_found("object"))
    with pytest.raises(ObjectMissingError):
        store.download("stems/name/stem.name.bob.wav")
    assert len(canned.requests) == 5

    monkeypatch.setattr(gcs_module, "BUCKET_SEEN_SECONDS", 0.0)  # the window has passed
    canned.reply(404, _not_found("object"))
    canned.reply(404, _not_found("bucket"))  # and the bucket was deleted since
    with pytest.raises(StorageUnavailableError, match="no such bucket"):
        store.info(NAME)
    assert len(canned.requests) == 7
    assert canned.script == []


# --- listing -----------------------------------------------------------------------------


def test_list_page_sends_max_results_and_wraps_the_server_token(
    tmp_path: Path, canned: Canned
) -> None:
    names = [f"team/stems/name/stem.name.n{i}.wav" for i in range(3)]
    canned.reply(200, {"items": [resource(n) for n in names], "nextPageToken": "server-2"})
    canned.reply(200, {"items": [resource("team/stems/name/stem.name.n3.wav")]})
    store = make_store(tmp_path, canned)

    page = store.list_page("stems/name/", limit=3)
    assert canned.query(0)["maxResults"] == ["3"]
    assert canned.query(0)["prefix"] == ["team/stems/name/"]
    assert "pageToken" not in canned.query(0)
    assert [o.name for o in page.objects] == [n.removeprefix("team/") for n in names]
    assert page.next_page_token == "g:server-2"

    last = store.list_page("stems/name/", limit=3, page_token=page.next_page_token)
    assert canned.query(1)["pageToken"] == ["server-2"]
    assert [o.name for o in last.objects] == ["stems/name/stem.name.n3.wav"]
    assert last.next_page_token is None


def test_a_page_the_server_did_not_cut_is_cut_here_and_resumes_by_name(
    tmp_path: Path, canned: Canned
) -> None:
    """As the emulator does: every object in one page, whatever maxResults said."""
    everything = {"items": [resource(f"team/output/o{i}.json") for i in range(5)]}
    canned.reply(200, everything)
    canned.reply(200, everything)  # startOffset ignored too
    store = make_store(tmp_path, canned)

    first = store.list_page("output/", limit=2)
    assert [o.name for o in first.objects] == ["output/o0.json", "output/o1.json"]
    assert first.next_page_token == "n:output/o1.json"

    second = store.list_page("output/", limit=2, page_token=first.next_page_token)
    assert canned.query(1)["startOffset"] == ["team/output/o1.json"]
    assert canned.query(1)["maxResults"] == ["3"]  # the offset is inclusive: one more
    assert "pageToken" not in canned.query(1)
    assert [o.name for o in second.objects] == ["output/o2.json", "output/o3.json"]
    assert second.next_page_token == "n:output/o3.json"


def test_a_foreign_page_token_is_refused(tmp_path: Path, canned: Canned) -> None:
    with pytest.raises(ValueError, match="page token"):
        make_store(tmp_path, canned).list_page("", 5, page_token="abc")
    assert canned.requests == []


def test_a_server_token_the_bucket_rejects_is_a_bad_token_not_an_outage(
    tmp_path: Path, canned: Canned
) -> None:
    """A page token comes from the client: one GCS refuses (400, a token edited, cut or
    from another listing) is the caller's error (422), not the bucket down (503)."""
    canned.reply(400, {"error": {"code": 400, "message": "Invalid page token"}})
    with pytest.raises(ValueError, match="page token") as caught:
        make_store(tmp_path, canned).list_page("stems/", 5, page_token="g:tampered")
    assert not isinstance(caught.value, StorageUnavailableError)
    assert canned.query(0)["pageToken"] == ["tampered"]
    assert len(canned.requests) == 1


def test_iterate_follows_next_page_token_across_pages(tmp_path: Path, canned: Canned) -> None:
    pages = [[f"team/stems/name/stem.name.p{p}_{i}.wav" for i in range(2)] for p in range(3)]
    canned.reply(200, {"items": [resource(n) for n in pages[0]], "nextPageToken": "t1"})
    canned.reply(200, {"items": [resource(n) for n in pages[1]], "nextPageToken": "t2"})
    canned.reply(200, {"items": [resource(n) for n in pages[2]]})

    names = [o.name for o in make_store(tmp_path, canned).iterate("stems/")]

    assert names == [n.removeprefix("team/") for page in pages for n in page]
    assert [canned.query(i).get("pageToken") for i in range(3)] == [None, ["t1"], ["t2"]]
    assert all(canned.query(i)["prefix"] == ["team/stems/"] for i in range(3))


# --- errors and retries ------------------------------------------------------------------


def test_a_transient_error_is_retried_by_the_library_policy(tmp_path: Path, canned: Canned) -> None:
    canned.reply(503, {"error": {"code": 503, "message": "try again"}})
    canned.reply(200, resource(f"team/{NAME}"))
    info = make_store(tmp_path, canned, gcs_retry_deadline=30).info(NAME)
    assert info is not None
    assert len(canned.requests) == 2


def test_transient_errors_past_the_deadline_are_unavailable(tmp_path: Path, canned: Canned) -> None:
    for _ in range(20):
        canned.reply(503, {"error": {"code": 503, "message": "down"}})
    with pytest.raises(StorageUnavailableError) as caught:
        make_store(tmp_path, canned, gcs_retry_deadline=0).list_page("", 5)
    assert caught.value.bucket == BUCKET
    assert "unreachable" in caught.value.reason
    assert "GCS_RETRY_DEADLINE=0" in caught.value.reason


def test_forbidden_names_the_role_needed(tmp_path: Path, canned: Canned) -> None:
    canned.reply(403, {"error": {"code": 403, "message": "no storage.objects.create"}})
    with pytest.raises(StorageUnavailableError) as caught:
        make_store(tmp_path, canned).upload(NAME, b"x", {}, "audio/wav")
    assert caught.value.bucket == BUCKET
    assert "roles/storage.objectAdmin" in caught.value.reason
    assert len(canned.requests) == 1  # permanent: not retried


def test_the_settings_endpoint_wins_over_the_environment(
    tmp_path: Path, canned: Canned, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://elsewhere.test:1")
    canned.reply(200, resource(f"team/{NAME}"))
    make_store(tmp_path, canned).info(NAME)
    assert (canned.requests[0].url or "").startswith(f"{HOST}/storage/v1/b/{BUCKET}/o/")


def test_missing_credentials_are_unavailable_with_directions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "no-such-key.json"))
    store = GcsStore(Settings(base_dir=tmp_path, gcs_bucket=BUCKET, gcs_project="p"))
    with pytest.raises(StorageUnavailableError) as caught:
        store.info(NAME)
    assert caught.value.reason == CREDENTIALS_HELP
