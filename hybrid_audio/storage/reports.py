"""What the storage service answers: consistency reports, audit pages, sync and status.

Plain pydantic models, so the API returns them as they are, the CLI prints them and the
dashboard binds to them; nothing here talks to a store.
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, computed_field

from hybrid_audio.storage.base import Mode, ObjectInfo, StorageDescription

#: GCS mode: the local index against the bucket.
RemoteStatus = Literal[
    "missing_remote",
    "missing_local",
    "checksum_mismatch",
    "contract_mismatch",
    "orphan_remote",
]
#: Local mode: the files against the index (`StemCache.verify` and the output manifests).
LocalStatus = Literal["missing_file", "orphan_file", "hash_mismatch", "unreadable", "temp_file"]
Status = Literal[RemoteStatus, LocalStatus]
REMOTE_STATUSES: tuple[str, ...] = get_args(RemoteStatus)
LOCAL_STATUSES: tuple[str, ...] = get_args(LocalStatus)


class Difference(BaseModel):
    """One disagreement: an object name (as the bucket or the base dir names it) and why."""

    status: Status
    name: str
    stem_id: str | None = None
    output_id: str | None = None
    detail: str = ""
    local_sha256: str | None = None
    remote_sha256: str | None = None


class ConsistencyReport(BaseModel):
    """Every difference found, with counts per status; `ok` when there is none."""

    mode: Mode
    bucket: str | None = None
    prefix: str = ""
    note: str = ""
    checked_local: int = 0
    checked_remote: int = 0
    summary: dict[str, int] = {}
    rows: list[Difference] = []

    @computed_field  # in the JSON too, so clients need not recompute it
    @property
    def ok(self) -> bool:
        return not self.rows


class AuditPage(BaseModel):
    """One page of a listing by prefix (sizes, checksums, metadata, updated time)."""

    mode: Mode
    bucket: str | None = None
    prefix: str = ""
    objects: list[ObjectInfo] = []
    next_page_token: str | None = None
    note: str = ""  # local mode: that no bucket is configured


class SyncReport(BaseModel):
    """What a push or pull did; the result of a `storage_sync` job."""

    direction: Literal["push", "pull"]
    prefix: str = ""
    considered: int = 0  # objects that were missing on the receiving side (or queued)
    transferred: int = 0
    skipped: int = 0  # already there with the same bytes, or not adoptable (incompatible)
    conflicts: list[str] = []  # "name: why" — other bytes under that name, never overwritten
    failed: list[str] = []  # "name: error"


class InvalidateOutcome(BaseModel):
    """Which copies of a stem `invalidate` removed."""

    stem_id: str
    local: bool
    remote: bool


class StorageStatus(BaseModel):
    """The mode and bucket, and the upload queue's counters (zeros in local mode)."""

    storage: StorageDescription
    pending: int = 0
    failing: int = 0
    conflicts: int = 0  # the bucket holds other bytes under the name: reported, not retried
    uploaded: int = 0
    last_error: str = ""
