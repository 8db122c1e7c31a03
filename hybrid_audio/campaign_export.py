"""A campaign's documents and its zip: campaign.json, messages.csv, the streamed archive.

The zip is produced as a generator of small byte chunks: `zipfile` writes into a sink that
cannot seek (so it writes data descriptors after each member) and the sink is drained after
every piece, so no more than one piece (`PIECE_BYTES`) and one manifest are ever held,
whatever the campaign's size. WAVs are stored (they do not compress), the text files
deflated. Each WAV is read through `Assembler.read_output`, so only bytes that still match
their manifest's sha256 are exported; a message whose file changed stops the export with
`CorruptOutputError` rather than shipping it.

Files in the zip: `<stem>.wav` per made message and `manifests/<stem>.json` (its manifest),
then `messages.csv` and `campaign.json`. `<stem>` is the recipient id made safe as a file
name, else `<row:06d>_<slug of the name>`; a stem already used gets `_2`, `_3`… The
`file` column of messages.csv names each message's WAV in the zip.

Exported in another delivery format (`fmt`, see `hybrid_audio.delivery`), each message is
its delivery (`<stem>.mp3`, `<stem>.mulaw.wav`…), encoded from the proven master once and
recorded in its manifest (so `manifests/<stem>.json` holds the record), and messages.csv
gains a `file_sha256` column: the sha256 of the delivered file (`sha256` stays the
master's).

messages.csv is opened in spreadsheets, and its texts come from whoever wrote the recipient
list: a cell that starts with `=`, `+`, `-`, `@`, a tab or a carriage return would run as a
formula there (CSV injection), so such a text is written with a leading `'` (OWASP's
advice); a program reading the file strips it.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import re
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from hybrid_audio.delivery import MASTER, get_format, read_delivery
from hybrid_audio.files import read_inside
from hybrid_audio.stems import normalize
from hybrid_audio.storage.base import output_object_names

if TYPE_CHECKING:
    from hybrid_audio.campaign import CampaignInfo, Campaigns, MessageRow

_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
#: Largest piece of a WAV written to the zip (and so the largest chunk, near enough).
PIECE_BYTES = 64 * 1024
#: messages.csv columns (GCS mode adds `object_name` and `manifest_object_name`).
CSV_COLUMNS = (
    "recipient_id",
    "row",
    "name",
    "developer",
    "script",
    "output_id",
    "duration",
    "sha256",
    "verified",
    "error",
    "file",
)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
#: Rows of messages.csv per chunk yielded.
_CSV_ROWS = 200


def file_stem(row: int, recipient_id: str | None, name: str, used: set[str]) -> str:
    """The file name (without suffix) of a message in the zip; never one in `used`."""
    stem = _UNSAFE.sub("_", recipient_id or "").strip("._-")[:80]
    if not stem:
        try:
            slug = normalize(name)[:40]
        except ValueError:
            slug = "message"
        stem = f"{row:06d}_{slug}"
    candidate, attempt = stem, 1
    while candidate.casefold() in used:
        attempt += 1
        candidate = f"{stem}_{attempt}"
    used.add(candidate.casefold())
    return candidate


def named(
    messages: Iterable[MessageRow], through: int | None = None
) -> Iterator[tuple[MessageRow, str]]:
    """Each message with its zip file stem ("" for messages without an output, and for
    rows after `through`: made after the zip's WAVs were written, so not in it)."""
    used: set[str] = set()
    for message in messages:
        done = message.state == "done" and message.output_id
        done = done and (through is None or message.row <= through)
        yield (
            message,
            file_stem(message.row, message.recipient_id, message.name, used) if done else "",
        )


def inert(text: str) -> str:
    """`text` as a spreadsheet shows it and never runs (see the module docstring)."""
    return f"'{text}" if text.startswith(_FORMULA_STARTS) else text


def messages_csv(
    campaigns: Campaigns,
    campaign_id: str,
    through: int | None = None,
    delivered: Mapping[int, str] | None = None,
    suffix: str = ".wav",
) -> Iterator[bytes]:
    """messages.csv in chunks (UTF-8, header first), rows in row order; a zip's copy gives
    a `file` only to rows up to `through`, the last message it holds (see `named`).
    `delivered` (row → sha256 of its delivered file) adds the `file_sha256` column of an
    export in a delivery format whose files end in `suffix`."""
    prefix = campaigns.settings.gcs_prefix if campaigns.gcs else ""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    extra = ("object_name", "manifest_object_name") if campaigns.gcs else ()
    extra += ("file_sha256",) if delivered is not None else ()
    writer.writerow((*CSV_COLUMNS, *extra))
    rows = named(campaigns.iter_messages(campaign_id), through)
    for count, (m, stem) in enumerate(rows, start=1):
        cells: list[Any] = [
            inert(m.recipient_id or ""),
            m.row,
            inert(m.name),
            inert(m.developer),
            inert(m.script or ""),
            m.output_id or "",
            "" if m.duration is None else f"{m.duration:.6f}",
            m.sha256 or "",
            "true" if m.verified else "false",
            inert(m.error),
            f"{stem}{suffix}" if stem else "",
        ]
        if campaigns.gcs:
            names = output_object_names(m.output_id) if m.output_id else ("", "")
            cells += [f"{prefix}{n}" if n else "" for n in names]
        if delivered is not None:
            cells.append(delivered.get(m.row, "") if stem else "")
        writer.writerow(cells)
        if count % _CSV_ROWS == 0:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()


def campaign_document(campaigns: Campaigns, info: CampaignInfo) -> dict[str, Any]:
    """campaign.json: template, contract, counts, times, source and problems."""
    from hybrid_audio.campaign import MAX_MANIFEST_PROBLEMS

    contract = campaigns.assembler.contract
    failed = itertools.islice(campaigns.iter_messages(info.id, "failed"), MAX_MANIFEST_PROBLEMS)
    problems = [
        {"row": message.row, "recipient_id": message.recipient_id, "message": message.error}
        for message in failed
    ]
    verified, count = (
        campaigns.database.connection()
        .execute(
            "SELECT coalesce(sum(verified = 1), 0), coalesce(sum(state = 'failed'), 0)"
            " FROM campaign_messages WHERE campaign_id = ?",
            (info.id,),
        )
        .fetchone()
    )
    return {
        "id": info.id,
        "template": info.template,
        "join": info.join,
        "source": info.source,
        "params": info.params,
        "contract_signature": info.contract_signature,
        "contract": contract.canonical()
        if contract.signature() == info.contract_signature
        else None,
        "state": info.state.value,
        "counts": {
            "total": info.total,
            "done": info.done,
            "failed": info.failed,
            "pending": info.pending,
            "verified": verified,
            "distinct_stems": info.distinct_stems,
        },
        "created_at": info.created_at,
        "finished_at": info.finished_at,
        "problems": problems,
        "problem_count": count,
    }


class _Sink:
    """A write-only, unseekable file for zipfile: what was written is taken with drain()."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._chunks.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        return None

    def drain(self) -> bytes:
        data = b"".join(self._chunks)
        self._chunks.clear()
        return data


def _stamp(iso: str) -> tuple[int, int, int, int, int, int]:
    """A zip entry time from an ISO timestamp (zip times start in 1980)."""
    when = datetime.fromisoformat(iso)
    return (max(when.year, 1980), when.month, when.day, when.hour, when.minute, when.second)


def export_zip(campaigns: Campaigns, campaign_id: str, fmt: str = MASTER) -> Iterator[bytes]:
    """The campaign's zip as a stream of chunks, each message in delivery format `fmt`
    (see the module docstring); an unknown format is a ValueError before any chunk."""
    suffix = get_format(fmt).suffix
    info = campaigns.get(campaign_id)
    when = _stamp(info.finished_at or info.updated_at)
    sink = _Sink()
    archive = zipfile.ZipFile(sink, "w", allowZip64=True)  # type: ignore[arg-type]

    def member(name: str, method: int) -> zipfile.ZipInfo:
        entry = zipfile.ZipInfo(name, date_time=when)
        entry.compress_type = method
        entry.external_attr = 0o644 << 16
        return entry

    done = campaigns.iter_messages(campaign_id, "done")
    through = 0  # the last row written: rows made later (the campaign runs) are not in it
    delivered: dict[int, str] | None = None if fmt == MASTER else {}
    for message, stem in named(done):
        assert message.output_id is not None
        through = message.row
        record, data, _ = read_delivery(campaigns.assembler, message.output_id, fmt)
        if delivered is not None:
            delivered[message.row] = record.sha256
        entry = member(f"{stem}{suffix}", zipfile.ZIP_STORED)
        entry.file_size = len(data)
        with archive.open(entry, "w") as target:
            for start in range(0, len(data), PIECE_BYTES):
                target.write(data[start : start + PIECE_BYTES])
                yield sink.drain()
        del data
        manifest, _ = read_inside(campaigns.output_dir, f"{message.output_id}.json")
        archive.writestr(member(f"manifests/{stem}.json", zipfile.ZIP_DEFLATED), manifest)
        yield sink.drain()
    with archive.open(member("messages.csv", zipfile.ZIP_DEFLATED), "w", force_zip64=True) as f:
        for chunk in messages_csv(campaigns, campaign_id, through, delivered, suffix):
            f.write(chunk)
            yield sink.drain()
    document = json.dumps(campaign_document(campaigns, info), ensure_ascii=False, indent=1)
    archive.writestr(member("campaign.json", zipfile.ZIP_DEFLATED), document.encode())
    archive.close()
    yield sink.drain()
