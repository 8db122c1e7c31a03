"""The Storage page in a real browser (Chromium through Playwright) against a real bucket.

One `hybrid-audio-server` for the module, pointed at a fresh bucket of the suite's
`gcp-storage-emulator` (`GCS_BUCKET`, `STORAGE_EMULATOR_HOST`). Stems are generated through
the API, the server's uploader mirrors them, and the raw `google-cloud-storage` client
plays the other machine (deletes an object). In the browser: the page names the bucket;
Re-audit lists the object deleted remotely as "missing there"; Push runs a job whose bar
reaches 100 % and whose end re-audits to "consistent"; a listed object's metadata shows
the stem id and the spoken text decoded, hostile markup included, as text. Local mode is
covered by `test_storage_page_says_gcs_is_off` in tests/test_dashboard_browser.py.
Helpers and the browser come from that module (and the XSS payloads and checks from
tests/security/test_browser.py); waits are on DOM conditions or the bucket, never sleeps.
"""

# ruff: noqa: F811  (fixtures are imported by name)

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest
from google.cloud import storage

from hybrid_audio.storage.base import stem_object_name
from tests.api_server import ApiServer, make_base_dir, start_server
from tests.gcs_emulator import Emulator, gcs_emulator  # noqa: F401
from tests.security.test_browser import PAYLOADS, assert_inert
from tests.test_dashboard_browser import (  # noqa: F401  (the browser fixture by name)
    CHROMIUM,
    Session,
    _session,
    assert_clean,
    browser,
    click,
    deep_text,
    open_dashboard,
    open_tab,
    rows,
    sync_api,
    visible,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium not installed"),
]

#: Seconds to wait for the server's background uploader to mirror a new stem.
UPLOAD_WAIT = 30.0
#: Texts the engine speaks; the accents come back through percent-encoded metadata.
NAMES = ("José María", "Oskar")


@pytest.fixture(scope="module")
def bucket(gcs_emulator: Emulator) -> storage.Bucket:
    """A fresh bucket, through the raw client (the "other machine")."""
    return gcs_emulator.bucket(gcs_emulator.new_bucket("dashboard"))


@pytest.fixture(scope="module")
def gcs_server(
    tmp_path_factory: pytest.TempPathFactory, gcs_emulator: Emulator, bucket: storage.Bucket
) -> Iterator[ApiServer]:
    env = {"GCS_BUCKET": bucket.name, "STORAGE_EMULATOR_HOST": gcs_emulator.url}
    with start_server(make_base_dir(tmp_path_factory.mktemp("storage")), env=env) as server:
        yield server


@pytest.fixture
def ui(browser: sync_api.Browser, gcs_server: ApiServer) -> Iterator[Session]:
    yield from _session(browser, gcs_server)


def generate(server: ApiServer, bucket: storage.Bucket, *names: str) -> list[str]:
    """Generate name stems through the API; their ids once the uploader mirrored them."""
    client = server.client()
    stem_ids = []
    for name in names:
        response = client.post("/generate/name", json={"name": name})
        assert response.status_code == 200, response.text
        stem_ids.append(response.json()["stem"]["stem_id"])
    wanted = {stem_object_name(stem_id) for stem_id in stem_ids}
    deadline = time.monotonic() + UPLOAD_WAIT
    while not wanted <= {blob.name for blob in bucket.list_blobs(prefix="stems/name/")}:
        assert time.monotonic() < deadline, f"not uploaded in {UPLOAD_WAIT} s: {wanted}"
        time.sleep(0.1)
    return stem_ids


def open_storage(ui: Session) -> None:
    open_dashboard(ui)
    open_tab(ui, "Storage")


def test_page_names_the_bucket_and_audit_push_make_it_consistent(
    ui: Session, bucket: storage.Bucket
) -> None:
    kept, deleted = generate(ui.server, bucket, *NAMES)
    bucket.blob(stem_object_name(deleted)).delete()  # the other machine removes one
    open_storage(ui)
    page = ui.page
    status = visible(page.locator(".storage-status"))
    sync_api.expect(status).to_contain_text("GCS mode")
    sync_api.expect(status).to_contain_text(bucket.name)
    sync_api.expect(status).to_contain_text(re.compile(r"Upload queue: 0 pending · 0 failing"))
    click(ui, "Retry uploads")  # nothing is owed: the queue says so
    toast = visible(page.locator(".notyf__toast"))
    sync_api.expect(toast).to_contain_text("0 upload(s) due again")

    click(ui, "Re-audit")
    summary = visible(page.locator(".storage-summary"))
    sync_api.expect(summary).to_contain_text("not consistent")
    table = rows(ui, "storage-table")
    missing = table.filter(has_text=deleted)
    sync_api.expect(missing).to_have_count(1)
    sync_api.expect(missing).to_contain_text("missing there")
    sync_api.expect(missing).to_contain_text(stem_object_name(deleted))
    sync_api.expect(table.filter(has_text=kept)).to_have_count(0)
    # The filter: nothing "differs", the one row is "missing there".
    filters = visible(page.locator(".storage-filter"))
    filters.get_by_role("button", name="differs", exact=True).click()
    sync_api.expect(missing).to_have_count(0)
    filters.get_by_role("button", name="missing there", exact=True).click()
    sync_api.expect(missing).to_have_count(1)
    ui.screenshot("storage-gcs-audit")

    click(ui, "Push")
    job = visible(page.locator(".storage-job"))
    sync_api.expect(job).to_contain_text(re.compile(r"storage_sync \w+: done — 1/1 \(100 %\)"))
    bar = visible(page.locator(".storage-progress progress"))
    sync_api.expect(bar).to_have_js_property("max", 1)
    sync_api.expect(bar).to_have_js_property("value", 1)
    # The finished job audits again by itself: everything is in the bucket now.
    sync_api.expect(summary).to_contain_text("✓ consistent — 0 differences")
    sync_api.expect(table).to_have_count(0)
    assert bucket.blob(stem_object_name(deleted)).exists()
    ui.screenshot("storage-gcs-pushed")
    assert_clean(ui)


def test_a_listed_objects_metadata_shows_as_text(ui: Session, bucket: storage.Bucket) -> None:
    accented, hostile = generate(ui.server, bucket, NAMES[0], PAYLOADS[0])
    open_storage(ui)
    page = ui.page
    click(ui, "List objects")  # stems/name/ is the first prefix
    sync_api.expect(visible(page.locator(".storage-listing"))).to_contain_text("stems/name/")
    objects = rows(ui, "storage-objects")
    metadata = visible(page.locator(".storage-metadata"))

    objects.filter(has_text=accented).first.click()
    sync_api.expect(metadata).to_contain_text(accented)
    sync_api.expect(metadata).to_contain_text(NAMES[0])  # decoded, not "Jos%C3%A9"
    sync_api.expect(metadata).to_contain_text("contract_signature")

    row = objects.filter(has_text=hostile)
    sync_api.expect(row).to_contain_text(PAYLOADS[0])  # the listing shows the text too
    row.first.click()
    sync_api.expect(metadata).to_contain_text(hostile)
    assert PAYLOADS[0] in deep_text(metadata)
    assert_inert(ui)
    # Another prefix lists other objects (none generated there: an empty page).
    visible(page.locator(".storage-prefix")).get_by_role("button", name="output/").click()
    sync_api.expect(visible(page.locator(".storage-listing"))).to_contain_text(
        re.compile(r"0 objects under output/")
    )
    sync_api.expect(objects).to_have_count(0)
    ui.screenshot("storage-gcs-metadata")
    assert_clean(ui)
