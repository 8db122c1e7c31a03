"""Where stems and outputs live besides this machine: local mode or a GCS bucket.

`open_store(settings)` picks the backend: `GCS_BUCKET` set → `GcsStore` (the real
`google-cloud-storage` client), else `LocalStore` (the base dir's files, no credentials).
Both speak `ObjectStore` (base.py); everything above them — read-through, the upload
queue, consistency, audit, sync — is written once against that protocol.
"""

from __future__ import annotations

from hybrid_audio.config import Settings
from hybrid_audio.storage.base import ObjectStore


def open_store(settings: Settings) -> ObjectStore:
    """The store `settings` configure (no network call: a bad bucket shows at first use)."""
    if settings.gcs_bucket:
        from hybrid_audio.storage.gcs import GcsStore  # the GCS client only when asked for

        return GcsStore(settings)
    from hybrid_audio.storage.local import LocalStore

    return LocalStore(settings)
