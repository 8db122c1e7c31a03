"""GCS mode: a bucket through the real `google-cloud-storage` client.

Credentials come from Application Default Credentials (`google.auth.default`, via the
client) unless `STORAGE_EMULATOR_HOST` is set in the settings: then the client talks to
that URL with anonymous credentials (the environment variable itself is not relied on).
The client is made at first use, so a machine without credentials still starts and the
error shows, as `StorageUnavailableError`, where storage is used.

Every object name gets `GCS_PREFIX` prepended on the way out and stripped on the way in.
Uploads create objects only (`if_generation_match=0`: 412 → `ObjectExistsError`; a retried
upload whose first attempt did land also ends there, so callers compare before they
complain) and send the CRC32C, which GCS checks; the CRC32C the bucket reports back is
compared too. Downloads are CRC32C-checked by the client (`DataCorruption` →
`ChecksumMismatchError`). A download reads the object's metadata first and then its bytes
pinned to that generation, so both describe the same object (two requests).

Transient errors (429, 5xx, timeouts, refused connections) are retried with the library's
`DEFAULT_RETRY`, its total time cut to `GCS_RETRY_DEADLINE`; uploads use it through
`ConditionalRetryPolicy(is_generation_specified)`, the library's rule that only uploads
with a generation precondition are safe to repeat (ours always have one). Each request
also has a timeout: connect within the deadline (1–10 s), read within 60 s. Permanent
refusals and exhausted retries become `StorageUnavailableError` naming the bucket. A 404
on one object is ambiguous (the object or the whole bucket may be missing), so a miss costs
one listing request to tell which.

Listing pages: GCS honours `maxResults`, the emulator does not, so a page is also cut
client-side to `limit`. The page token is ours: `g:<token>` wraps the server's token when
the server's page was returned whole; `n:<name>` means "after this name" when a page had
to be cut, and resumes with `start_offset` (inclusive, so that name is skipped) — and,
because the emulator ignores `start_offset` too, with a client-side filter as well.

Bulk transfers: `download_many` uses `transfer_manager.download_many` (thread workers,
per-call checksum/retry/timeout passed through; one media request per object).
`upload_many` runs `upload` in a thread pool instead of `transfer_manager.upload_many`:
that function carries metadata (on the `Blob`) and the precondition and checksum (its
shared `upload_kwargs`) fine, but it hands each blob a file object without a size, so the
client falls back to a resumable upload — two requests per object (initiate, then send)
where `upload_from_string` of a small object is one multipart request. For 40 kB stems
that doubles the request count (measured in benchmarks/bench_storage.py), so the pool
it is. The client's HTTP session keeps up to 10 connections per host (requests' default);
more workers than that still work, with new connections for the extra ones.
"""

from __future__ import annotations

import io
import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

import requests
from google.api_core import exceptions as api
from google.auth import exceptions as auth
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage
from google.cloud.storage import transfer_manager
from google.cloud.storage.exceptions import DataCorruption
from google.cloud.storage.retry import (
    DEFAULT_RETRY,
    ConditionalRetryPolicy,
    is_generation_specified,
)

from hybrid_audio.config import Settings
from hybrid_audio.storage.base import (
    ChecksumMismatchError,
    Mode,
    ObjectExistsError,
    ObjectInfo,
    ObjectMissingError,
    ObjectPage,
    StorageDescription,
    StorageUnavailableError,
    UploadItem,
    crc32c_of,
)

if TYPE_CHECKING:
    from google.cloud.storage import Blob, Bucket

#: The client's switch for its background bucket-metadata lookup (see `_client`).
DISABLE_BUCKET_METADATA = "DISABLE_GCS_PYTHON_CLIENT_OTEL_BUCKET_METADATA"
#: Read timeout of one request (the library's own default).
READ_TIMEOUT = 60.0
#: Objects per request when a listing is followed to its end.
ITERATE_PAGE_SIZE = 1000
#: Errors that mean "could not reach the bucket" when they escape the retry policy.
_UNREACHABLE = (
    api.RetryError,
    api.ServerError,
    api.TooManyRequests,
    requests.RequestException,
    auth.TransportError,
    ConnectionError,
    TimeoutError,
)
_OURS = (StorageUnavailableError, ObjectExistsError, ObjectMissingError, ChecksumMismatchError)
NO_SUCH_BUCKET = "no such bucket (404): create it or fix GCS_BUCKET"
#: For this long after the bucket answered a request, an object's 404 is taken as the
#: object's: the one-object listing that tells a missing object from a missing bucket is not
#: sent again (it made every read-through miss two requests in turn, ~2× its latency). A
#: bucket deleted within the window reads as missing objects until the window ends.
BUCKET_SEEN_SECONDS = 30.0
CREDENTIALS_HELP = (
    "no Google credentials found: run `gcloud auth application-default login`, set "
    "GOOGLE_APPLICATION_CREDENTIALS to a service-account key file, or run on Google Cloud "
    "with a service account attached (it needs roles/storage.objectAdmin on the bucket)"
)


class GcsStore:
    """Objects in `GCS_BUCKET` under `GCS_PREFIX`."""

    mode: Mode = "gcs"

    def __init__(self, settings: Settings, *, http: requests.Session | None = None) -> None:
        """`http`: a session for the client to send requests through (tests record them)."""
        self.bucket_name = settings.gcs_bucket
        self.prefix = settings.gcs_prefix
        self.workers = settings.gcs_upload_workers
        self.deadline = settings.gcs_retry_deadline
        self.retry = DEFAULT_RETRY.with_timeout(self.deadline)
        self.upload_retry = ConditionalRetryPolicy(
            self.retry, is_generation_specified, ["query_params"]
        )
        self.timeout = (min(max(self.deadline, 1.0), 10.0), READ_TIMEOUT)
        self._settings = settings
        self._http = http
        self._bucket: Bucket | None = None
        self._lock = threading.Lock()
        self._bucket_seen = -BUCKET_SEEN_SECONDS  # `time.monotonic()` of its last answer

    def describe(self) -> StorageDescription:
        return StorageDescription(mode="gcs", bucket=self.bucket_name, prefix=self.prefix)

    # --- client ------------------------------------------------------------------------

    @property
    def bucket(self) -> Bucket:
        """The bucket handle (no request); the client is made on first use."""
        with self._lock:
            if self._bucket is None:
                with self._guard():
                    self._bucket = self._client().bucket(self.bucket_name)
            return self._bucket

    def _client(self) -> storage.Client:
        # The client's OpenTelemetry bucket-metadata lookup (a background `buckets.get` per
        # bucket) needs `storage.buckets.get`, which roles/storage.objectAdmin lacks, and is
        # repeated on every request while the bucket is missing or unreachable; we export
        # no traces, so it is off unless the operator set the variable.
        os.environ.setdefault(DISABLE_BUCKET_METADATA, "true")
        settings = self._settings
        if settings.storage_emulator_host:
            return storage.Client(
                project=settings.gcs_project or "hybrid-audio-emulator",
                credentials=AnonymousCredentials(),
                client_options={"api_endpoint": settings.storage_emulator_host},
                _http=self._http,
            )
        return storage.Client(project=settings.gcs_project or None, _http=self._http)

    def _blob(self, name: str) -> Blob:
        return self.bucket.blob(self.prefix + name)

    def _name(self, blob: Blob) -> str:
        return blob.name[len(self.prefix) :] if blob.name.startswith(self.prefix) else blob.name

    def _object(self, blob: Blob) -> ObjectInfo:
        return ObjectInfo(
            name=self._name(blob),
            size=int(blob.size or 0),
            crc32c=blob.crc32c or "",
            md5=blob.md5_hash or "",
            metadata=dict(blob.metadata or {}),
            updated=blob.updated.isoformat() if blob.updated else None,
            generation=int(blob.generation) if blob.generation else None,
        )

    # --- errors ------------------------------------------------------------------------

    def _unavailable(self, reason: str) -> StorageUnavailableError:
        return StorageUnavailableError(self.bucket_name, reason)

    def _translate(self, error: Exception, name: str | None = None) -> Exception:
        """The error a caller acts on for what the client raised."""
        if isinstance(error, _OURS):
            return error
        if isinstance(error, DataCorruption):
            return ChecksumMismatchError(f"{name}: the bytes received fail the CRC32C: {error}")
        if isinstance(error, api.PreconditionFailed) and name is not None:
            return ObjectExistsError(name)
        if isinstance(error, (api.Forbidden, api.Unauthorized)):
            return self._unavailable(
                f"permission denied ({error.code}): the credentials in use need "
                "roles/storage.objectAdmin on the bucket"
            )
        if isinstance(error, api.NotFound):
            return self._unavailable(NO_SUCH_BUCKET)
        if isinstance(error, auth.DefaultCredentialsError):
            return self._unavailable(CREDENTIALS_HELP)
        if isinstance(error, auth.RefreshError):
            return self._unavailable(f"the credentials were refused: {error}")
        if isinstance(error, _UNREACHABLE):
            cause = getattr(error, "cause", None) or error
            return self._unavailable(
                f"unreachable (retried up to GCS_RETRY_DEADLINE={self.deadline:g} s): "
                f"{type(cause).__name__}: {cause}"
            )
        if isinstance(error, api.GoogleAPICallError):
            return self._unavailable(f"request refused ({error.code}): {error.message}")
        return error

    @contextmanager
    def _guard(self, name: str | None = None) -> Iterator[None]:
        try:
            yield
        except Exception as error:
            translated = self._translate(error, name)
            if translated is error:
                raise
            raise translated from error

    def _bucket_missing(self) -> bool:
        """After a 404 on an object: is it the bucket that is missing? (one list request,
        unless the bucket answered one less than `BUCKET_SEEN_SECONDS` ago)"""
        if time.monotonic() - self._bucket_seen < BUCKET_SEEN_SECONDS:
            return False
        try:
            with self._guard():
                blobs = self.bucket.client.list_blobs(
                    self.bucket_name,
                    prefix=self.prefix,
                    max_results=1,
                    retry=self.retry,
                    timeout=self.timeout,
                )
                next(iter(blobs), None)
        except StorageUnavailableError as error:
            if isinstance(error.__cause__, api.NotFound):
                return True
            raise
        self._saw_bucket()
        return False

    def _saw_bucket(self) -> None:
        """The bucket answered a request: it exists (see `BUCKET_SEEN_SECONDS`)."""
        self._bucket_seen = time.monotonic()

    def _check_bucket(self) -> None:
        """After a 404 on an object: raise `StorageUnavailableError` if the bucket is gone."""
        if self._bucket_missing():
            raise self._unavailable(NO_SUCH_BUCKET)

    # --- one object --------------------------------------------------------------------

    def upload(
        self, name: str, data: bytes, metadata: Mapping[str, str], content_type: str
    ) -> ObjectInfo:
        """Create `name` with `metadata` (412: `ObjectExistsError`); CRC32C sent and checked."""
        blob = self._blob(name)
        blob.metadata = dict(metadata)
        blob.content_type = content_type
        with self._guard(name):
            blob.upload_from_string(
                data,
                content_type=content_type,
                if_generation_match=0,
                checksum="crc32c",
                retry=self.upload_retry,
                timeout=self.timeout,
            )
        self._saw_bucket()
        info = self._object(blob)  # the stored object: its CRC32C must be what was sent
        if info.crc32c and info.crc32c != (sent := crc32c_of(data)):
            raise ChecksumMismatchError(
                f"{info.name}: the bucket stored CRC32C {info.crc32c}, the bytes sent have {sent}"
            )
        return info

    def info(self, name: str) -> ObjectInfo | None:
        blob = self._blob(name)
        try:
            with self._guard(name):
                blob.reload(retry=self.retry, timeout=self.timeout)
        except StorageUnavailableError as error:
            if isinstance(error.__cause__, api.NotFound):
                self._check_bucket()
                return None
            raise
        self._saw_bucket()
        return self._object(blob)

    def exists(self, name: str) -> bool:
        return self.info(name) is not None

    def download(self, name: str) -> tuple[bytes, ObjectInfo]:
        """Metadata, then the bytes of that same generation (CRC32C checked)."""
        for attempt in (1, 2):
            info = self.info(name)
            if info is None:
                raise ObjectMissingError(name)
            try:
                with self._guard(name):
                    data = self._blob(name).download_as_bytes(
                        if_generation_match=info.generation,
                        checksum="crc32c",
                        retry=self.retry,
                        timeout=self.timeout,
                    )
            except ObjectExistsError:  # 412: replaced since `info` was read; read it again
                if attempt == 1:
                    continue
                raise self._unavailable(f"{name} kept changing while it was read") from None
            except StorageUnavailableError as error:
                if isinstance(error.__cause__, api.NotFound):  # deleted since `info`
                    self._check_bucket()
                    raise ObjectMissingError(name) from None
                raise
            return data, info
        raise AssertionError("unreachable")  # pragma: no cover

    def delete(self, name: str) -> bool:
        """True if there was an object to delete."""
        try:
            with self._guard(name):
                self._blob(name).delete(retry=self.retry, timeout=self.timeout)
        except StorageUnavailableError as error:
            if isinstance(error.__cause__, api.NotFound):
                self._check_bucket()
                return False
            raise
        return True

    # --- listing -----------------------------------------------------------------------

    def list_page(self, prefix: str, limit: int, page_token: str | None = None) -> ObjectPage:
        """At most `limit` objects under `prefix` after `page_token` (see the module doc)."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        server_token, after = _parse_token(page_token)
        try:
            with self._guard():
                iterator = self.bucket.client.list_blobs(
                    self.bucket_name,
                    prefix=self.prefix + prefix,
                    max_results=limit if after is None else limit + 1,
                    page_token=server_token,
                    start_offset=self.prefix + after if after is not None else None,
                    retry=self.retry,
                    timeout=self.timeout,
                )
                page = next(iterator.pages, None)
                objects = sorted(map(self._object, page or []), key=lambda info: info.name)
                server_next = iterator.next_page_token
        except StorageUnavailableError as error:
            if server_token is not None and isinstance(error.__cause__, api.BadRequest):
                # the token came from the caller: one the bucket rejects is theirs to fix
                raise ValueError(f"the bucket rejected the page token {page_token!r}") from None
            raise
        if after is not None:
            objects = [info for info in objects if info.name > after]
        if len(objects) > limit:
            objects = objects[:limit]
            token: str | None = f"n:{objects[-1].name}"
        else:
            token = f"g:{server_next}" if server_next else None
        return ObjectPage(objects=objects, next_page_token=token)

    def iterate(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object under `prefix`, following the server's page tokens."""
        with self._guard():
            iterator = self.bucket.client.list_blobs(
                self.bucket_name,
                prefix=self.prefix + prefix,
                page_size=ITERATE_PAGE_SIZE,
                retry=self.retry,
                timeout=self.timeout,
            )
            for page in iterator.pages:
                yield from map(self._object, page)

    # --- bulk --------------------------------------------------------------------------

    def upload_many(
        self, items: Sequence[UploadItem], workers: int | None = None
    ) -> list[ObjectInfo | Exception]:
        """`upload` of every item, `workers` at once (one multipart request each; see the
        module doc for why not `transfer_manager.upload_many`).

        The workers are daemon threads, not a `ThreadPoolExecutor`'s: the interpreter joins
        those at exit, so a process ending with a batch in flight to a bucket that is down
        would hang for every upload left in it, each retried for GCS_RETRY_DEADLINE. The
        upload queue is durable, so uploads cut off by an exit are simply resumed later.
        """
        results: list[ObjectInfo | Exception | None] = [None] * len(items)
        indexes = iter(range(len(items)))
        lock = threading.Lock()

        def work() -> None:
            while True:
                with lock:
                    index = next(indexes, None)
                if index is None:
                    return
                try:
                    results[index] = self.upload(*items[index])
                except Exception as error:
                    results[index] = error

        threads = [
            threading.Thread(target=work, name="gcs-upload", daemon=True)
            for _ in range(min(workers or self.workers, len(items)))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return results  # type: ignore[return-value]  # every slot is filled by now

    def download_many(
        self, names: Sequence[str], workers: int | None = None
    ) -> list[bytes | Exception]:
        """The bytes of every object through `transfer_manager` (one request each)."""
        buffers = [io.BytesIO() for _ in names]
        with self._guard():
            results = transfer_manager.download_many(
                [(self._blob(name), buffer) for name, buffer in zip(names, buffers, strict=True)],
                download_kwargs={
                    "checksum": "crc32c",
                    "retry": self.retry,
                    "timeout": self.timeout,
                },
                worker_type=transfer_manager.THREAD,
                max_workers=workers or self.workers,
                raise_exception=False,
            )
        bucket_missing: bool | None = None
        outcomes: list[bytes | Exception] = []
        for name, buffer, result in zip(names, buffers, results, strict=True):
            if isinstance(result, api.NotFound):
                if bucket_missing is None:
                    bucket_missing = self._bucket_missing()
                outcomes.append(
                    self._translate(result) if bucket_missing else ObjectMissingError(name)
                )
            elif isinstance(result, Exception):
                outcomes.append(self._translate(result, name))
            else:
                outcomes.append(buffer.getvalue())
        return outcomes


def _parse_token(token: str | None) -> tuple[str | None, str | None]:
    """(server page token, name to resume after) of one of our page tokens."""
    if not token:
        return None, None
    kind, _, value = token.partition(":")
    if kind == "g" and value:
        return value, None
    if kind == "n" and value:
        return None, value
    raise ValueError(f"not a page token of this store: {token!r}")
