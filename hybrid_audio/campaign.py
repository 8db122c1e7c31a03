"""Campaigns: a recipient list (or the next N rotation pairs) + a template → proven messages.

Issue #12 asked for a `Campaign` Parameterized object; here one `Campaigns` Parameterized
store (its `revision` drives the views) holds every campaign as rows in SQLite, and a
campaign is read as a `CampaignInfo` record. A campaign outlives the process that made it:
any server worker, CLI or notebook reads, runs, resumes or deletes it, and a crash leaves
it resumable, so its state lives in the database, not in one process's object.

A campaign is created from a `RecipientList` (hybrid_audio.recipients) or from
`rotation_count` pairs of a rotation seed, materialised at creation so a resume gets the same
pairs. Every row is stored in `campaign_messages` before anything is made: accepted rows as
`pending`, refused rows as `failed` with their error, so problems keep their row numbers.
The voice contract's signature is pinned at creation.

`run()` (what the "campaign" job calls) makes every distinct stem the pending rows need
once, through the Generator (cached, single-flight), then assembles each pending row with a
deterministic output id `<campaign id>_<row:06d>` and the Assembler's proof (`verified` is the
proof's verdict). One bad row fails alone. Rows are committed in batches (`BATCH_ROWS` or
`BATCH_SECONDS`); resume stays exact because a pending row whose output already exists with
its manifest (made just before a crash) is adopted — its manifest checked against the row
and its bytes re-verified — instead of assembled again, and a WAV left without manifest is
removed first. If the live contract's signature differs from the pinned one, the run stops
with the campaign `paused` and the reason; `resume()` refuses until the contracts match.
At the end it writes `output/campaigns/<id>/campaign.json` and `messages.csv`.
Memory stays flat in campaign size: rows are read from SQLite in chunks of `CHUNK_ROWS`.

What is kept where (recipients' names are personal data; `delete()` erases all of it):
- the state database: the campaign row and one row per recipient (name, developer, script,
  caller id, error); the campaign's jobs (parameters: campaign id and source only);
- `output/<campaign id>_<row>.wav` + `.json`: each message and its manifest (inputs, and the
  `campaign` block: campaign id, row, recipient id);
- `output/deliveries/<campaign id>_<row>.<ext>`: delivery formats made from a message;
- `output/campaigns/<campaign id>/`: campaign.json and messages.csv;
- GCS mode: upload-queue rows of those outputs, and the bucket copies already uploaded
  (`output/<campaign id>_<row>.wav|json`): `delete()` removes the queue rows and, when the
  bucket answers, the objects (a bucket that does not answer is logged to jobs.jsonl, and
  those objects stay until deleted with the storage tools).
Not erased by `delete()`: the name stems (text in the `stems` table, audio under `stems/`,
bucket copies), shared by every message of that name; `/cache/invalidate` removes one.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import secrets
import shutil
import time
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import param
from pydantic import BaseModel

from hybrid_audio.assembly import CAMPAIGN_OUTPUT_ID, Assembler
from hybrid_audio.campaign_rows import (
    STOPPING_ERRORS,
    CampaignRows,
    RowUpdate,
    make_row,
    output_id_of,
    row_inputs,
)
from hybrid_audio.config import Settings
from hybrid_audio.database import Database
from hybrid_audio.datasets import load_dataset
from hybrid_audio.files import SyncBatch, atomic_write, discard
from hybrid_audio.group_commit import GroupCommit
from hybrid_audio.jobs import Job, JobCancelledError, JobRunner, JobState
from hybrid_audio.live import RevisionPublisher, read_revision
from hybrid_audio.logs import JsonlLog
from hybrid_audio.recipients import (
    MAX_RECIPIENTS,
    Recipient,
    RecipientList,
    RowProblem,
    recipients_from_dicts,
)
from hybrid_audio.rotation import RotationEngine
from hybrid_audio.stems import StemId, same_identity, spoken_text
from hybrid_audio.storage.base import OUTPUT_PREFIX, ObjectStore
from hybrid_audio.templates import Template

if TYPE_CHECKING:
    from hybrid_audio.distributed import DaskCluster

#: Message rows committed together (or after `BATCH_SECONDS`, whichever comes first).
BATCH_ROWS = 50
BATCH_SECONDS = 0.5
#: A run's progress (the job's `done`) is published at most this often (and when it stops).
PROGRESS_SECONDS = 0.1
#: Rows read from SQLite at a time, so memory does not grow with the campaign.
CHUNK_ROWS = 500
#: Rows `plan()` shows as a preview.
PREVIEW_ROWS = 20
#: Problems written into campaign.json (all of them are in messages.csv).
MAX_MANIFEST_PROBLEMS = 1_000
#: The slots a campaign fills from a row.
ROW_SLOTS = ("name", "developer", "script")


class CampaignError(ValueError):
    """The campaign cannot do what was asked (unknown template, already running…)."""


class CampaignState(StrEnum):
    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"


class CampaignInfo(BaseModel):
    """A campaign's state and counts (`pending` = total − done − failed)."""

    id: str
    template: str
    join: str | None
    source: Literal["recipients", "rotation"]
    contract_signature: str
    state: CampaignState
    pause_reason: str = ""
    total: int
    done: int
    failed: int
    pending: int
    distinct_stems: int
    created_at: str
    updated_at: str
    finished_at: str | None = None
    job_id: str | None = None
    eta_seconds: float | None = None
    params: dict[str, Any] = {}


class MessageRow(BaseModel):
    """One recipient's message: pending, done (with its output and proof) or failed."""

    row: int
    recipient_id: str | None
    name: str
    developer: str
    script: str | None
    state: Literal["pending", "done", "failed"]
    output_id: str | None
    duration: float | None
    sha256: str | None
    verified: bool
    error: str


class CampaignPlan(BaseModel):
    """What creating the campaign would do: rows accepted (the first `PREVIEW_ROWS` shown),
    rows refused, and how many distinct stems it needs, are cached, are to be made."""

    recipients: int
    preview: list[Recipient]
    problems: list[RowProblem]
    distinct_stems: int
    cached_stems: int
    to_make: int


class _PausedError(Exception):
    """The run stops: the contract changed (the reason is the message)."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


_MESSAGE_COLUMNS = (
    "row, recipient_id, name, developer, script, state, output_id, duration, sha256, "
    "verified, error"
)


def _outcome(info: CampaignInfo) -> dict[str, Any]:
    """A campaign job's result."""
    return {
        "campaign_id": info.id,
        "state": info.state.value,
        "done": info.done,
        "failed": info.failed,
        "pending": info.pending,
    }


def _message(values: Sequence[Any]) -> MessageRow:
    row, recipient_id, name, developer, script, state, output_id, duration, sha, ok, error = values
    return MessageRow(
        row=row,
        recipient_id=recipient_id,
        name=name,
        developer=developer,
        script=script,
        state=state,
        output_id=output_id,
        duration=duration,
        sha256=sha,
        verified=bool(ok),
        error=error,
    )


def _contract_changed(info: CampaignInfo, live: str) -> str:
    """Why a campaign pinned to another contract than `live` (its signature) is paused."""
    return (
        f"the voice contract changed from {info.contract_signature[:12]} to {live[:12]}; "
        "messages made now would not sound like the ones made before. Restore the "
        "campaign's contract to resume it, or start a new campaign"
    )


def _slot_values(rows: Iterable[Recipient]) -> dict[str, set[str]]:
    """The distinct texts (and script keys) the rows put in each slot kind."""
    values: dict[str, set[str]] = {kind: set() for kind in ROW_SLOTS}
    for row in rows:
        values["name"].add(row.name)
        values["developer"].add(row.developer)
        if row.script:
            values["script"].add(row.script)
    return values


class Campaigns(param.Parameterized):
    """Every campaign of the state database: create, run as jobs, read, export, delete."""

    settings = param.ClassSelector(class_=Settings, doc="Where outputs and datasets live.")
    database = param.ClassSelector(class_=Database, doc="The state database.")
    assembler = param.ClassSelector(
        class_=Assembler, doc="Makes each message (its generator makes the stems)."
    )
    rotation = param.ClassSelector(class_=RotationEngine, doc="Pairs for rotation campaigns.")
    jobs = param.ClassSelector(class_=JobRunner, doc="Runs campaigns as 'campaign' jobs.")
    log = param.ClassSelector(
        class_=JsonlLog, default=None, allow_None=True, doc="jobs.jsonl (ids and counts only)."
    )
    store = param.ClassSelector(
        class_=ObjectStore,
        default=None,
        allow_None=True,
        doc="The bucket of GCS mode (messages.csv names objects; delete() erases them).",
    )
    revision = param.Integer(
        default=0,
        doc="The database's campaigns revision as last seen: bumps whenever a campaign or "
        "one of its messages changes (here at once, other processes' through refresh()).",
    )

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._revision = RevisionPublisher(self, "revision")
        self.revision = read_revision(self.database.connection(), "campaigns")

    # --- paths and ids ------------------------------------------------------------------

    @property
    def output_dir(self) -> Path:
        return Path(self.settings.output_dir)

    def folder(self, campaign_id: str) -> Path:
        """`output/campaigns/<id>/`: campaign.json and messages.csv."""
        return self.output_dir / "campaigns" / campaign_id

    @property
    def gcs(self) -> bool:
        return self.store is not None and self.store.mode == "gcs"

    @staticmethod
    def message_output_id(campaign_id: str, row: int) -> str:
        """The deterministic output id of a campaign's row."""
        return output_id_of(campaign_id, row)

    # --- planning and creating ----------------------------------------------------------

    def _template(self, template: str, join: str | None) -> Template:
        tpl = self.assembler.load_template(template)
        other = sorted(set(tpl.slots) - set(ROW_SLOTS))
        if other:
            raise CampaignError(
                f"template {tpl.name!r} has slots a recipient row cannot fill: "
                f"{', '.join(other)} (campaigns fill name, developer and script)"
            )
        if join not in (None, "exact", "hybrid"):
            raise CampaignError(f"join must be 'exact' or 'hybrid', not {join!r}")
        return tpl

    def _script_texts(self) -> dict[str, tuple[StemId, str]]:
        """Script key → (stem id, phrase), from the live scripts dataset."""
        return {
            item.key or "": (item.stem_id, item.text)
            for item in load_dataset("script", self.settings).items
        }

    @staticmethod
    def _check_rows(
        tpl: Template, recipients: RecipientList, scripts: dict[str, tuple[StemId, str]]
    ) -> tuple[list[Recipient], list[RowProblem]]:
        """Rows this template and the live `scripts` accept; the others as problems."""
        needs_script = "script" in tpl.slots
        rows, problems = [], list(recipients.problems)
        for row in recipients.rows:
            message = None
            if row.script and row.script not in scripts:
                message = f"unknown script key {row.script!r}"
            elif needs_script and not row.script:
                message = f"template {tpl.name!r} needs a script key; this row has none"
            if message is None:
                rows.append(row)
            else:
                problems.append(RowProblem(row=row.row, recipient_id=row.id, message=message))
        return rows, sorted(problems, key=lambda p: p.row)

    @staticmethod
    def _needed_stems(
        tpl: Template, values: dict[str, set[str]], scripts: dict[str, tuple[StemId, str]]
    ) -> dict[StemId, str | None]:
        """Stem id → the text it speaks (None if unknown) of every distinct stem needed."""
        needed: dict[StemId, str | None] = {}
        for kind in ("name", "developer"):
            if kind in tpl.slots:
                for text in values[kind]:
                    needed[StemId.for_text(kind, text)] = text
        if "script" in tpl.slots:
            for key in values["script"]:
                stem_id, text = scripts[key]
                needed[stem_id] = text
        by_id = {stem_id: text for stem_id, text in scripts.values()}
        for stem_id in tpl.fixed_stems:
            needed[stem_id] = by_id.get(stem_id)
        return needed

    def _cached(self, stem_id: StemId, text: str | None) -> bool:
        hit = self.assembler.cache.lookup(stem_id)
        return hit is not None and text is not None and same_identity(hit.text, spoken_text(text))

    def plan(
        self, template: str, recipients: RecipientList, join: str | None = None
    ) -> CampaignPlan:
        """What `create()` would accept and how many stems it would make (nothing is written)."""
        tpl = self._template(template, join)
        scripts = self._script_texts()
        rows, problems = self._check_rows(tpl, recipients, scripts)
        needed = self._needed_stems(tpl, _slot_values(rows), scripts)
        cached = sum(self._cached(stem_id, text) for stem_id, text in needed.items())
        return CampaignPlan(
            recipients=len(rows),
            preview=rows[:PREVIEW_ROWS],
            problems=problems,
            distinct_stems=len(needed),
            cached_stems=cached,
            to_make=len(needed) - cached,
        )

    def create(
        self,
        template: str,
        recipients: RecipientList | None = None,
        *,
        rotation_count: int | None = None,
        seed: int | None = None,
        join: str | None = None,
        store: str = "wav",
    ) -> CampaignInfo:
        """A new campaign (state `created`) from a recipient list or `rotation_count` pairs.

        `store="manifest"` keeps each message as its manifest only, rendered on request
        (`hybrid_audio.render`); `"wav"` keeps the WAV too.

        Rotation pairs (and script keys, if the template has a script slot) are taken from
        the rotation's persisted cursors of `seed` (default: the workspace's seed) now, so
        they are consumed once and a resume gets the same pairs.
        """
        if (recipients is None) == (rotation_count is None):
            raise CampaignError("give either recipients or rotation_count, not both or neither")
        tpl = self._template(template, join)
        params: dict[str, Any] = {}
        if recipients is not None:
            source = "recipients"
            scripts = self._script_texts()
            rows, problems = self._check_rows(tpl, recipients, scripts)
            if recipients.ignored_columns:
                params["ignored_columns"] = recipients.ignored_columns[:20]
        else:
            assert rotation_count is not None
            if not 1 <= rotation_count <= MAX_RECIPIENTS:
                raise CampaignError(f"rotation count must be 1 to {MAX_RECIPIENTS:,}")
            source, problems = "rotation", []
            with self._rotation_for(seed) as engine:
                params = {"rotation_count": rotation_count, "seed": engine.seed}
                rows = self._rotation_rows(engine, rotation_count, "script" in tpl.slots)
            scripts = self._script_texts()
        params.update(self._store_params(store))
        distinct = len(self._needed_stems(tpl, _slot_values(rows), scripts))
        campaign_id = "c" + secrets.token_hex(6)
        now = _now()
        if self.assembler.generator is not None:  # pin the contract every process now uses
            self.assembler.generator.follow_contract()
        with self.database.write() as db:
            db.execute(
                "INSERT INTO campaigns (id, template, join_mode, source, contract_signature,"
                " state, total, failed, distinct_stems, params, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    campaign_id,
                    tpl.name,
                    join,
                    source,
                    self.assembler.contract.signature(),
                    CampaignState.CREATED.value,
                    len(rows) + len(problems),
                    len(problems),
                    distinct,
                    json.dumps(params, ensure_ascii=False),
                    now,
                    now,
                ),
            )
            db.executemany(
                "INSERT INTO campaign_messages (campaign_id, row, recipient_id, name, developer,"
                " script, state) VALUES (?, ?, ?, ?, ?, ?, 'pending')",
                ((campaign_id, r.row, r.id, r.name, r.developer, r.script) for r in rows),
            )
            db.executemany(
                "INSERT INTO campaign_messages (campaign_id, row, recipient_id, name, developer,"
                " state, error) VALUES (?, ?, ?, '', '', 'failed', ?)",
                ((campaign_id, p.row, p.recipient_id, p.message) for p in problems),
            )
            revision = read_revision(db, "campaigns")
        self._revision.publish(revision)
        self._log("campaign_created", campaign=campaign_id, source=source, rows=len(rows))
        return self.get(campaign_id)

    @contextlib.contextmanager
    def _rotation_for(self, seed: int | None) -> Iterator[RotationEngine]:
        """The workspace's rotation, or for another `seed` an engine of its own (closed after)."""
        if seed is None or seed == self.rotation.seed:
            yield self.rotation
            return
        engine = RotationEngine(settings=self.settings, seed=seed)
        try:
            yield engine
        finally:
            engine.close()

    def rotation_preview(self, template: str, count: int, seed: int | None = None) -> RecipientList:
        """The `count` pairs (and script keys, if the template has a script slot) a rotation
        campaign would take now, as a recipient list for `plan()`: no cursor moves."""
        with self._rotation_for(seed) as engine:
            pairs = engine.preview("pair", count)
            slots = self.assembler.load_template(template).slots
            scripts = engine.preview("script", count) if "script" in slots else []
        rows: list[dict[str, str | None]] = [
            {"name": p.name, "developer": p.developer} for p in pairs
        ]
        for row, step in zip(rows, scripts, strict=False):
            row["script"] = step.item
        return recipients_from_dicts(rows)

    @staticmethod
    def _rotation_rows(engine: RotationEngine, count: int, scripts: bool) -> list[Recipient]:
        rows: list[Recipient] = []
        for chunk in engine.chunks("pair", count, size=CHUNK_ROWS):
            keys = [s.item for s in engine.take("script", len(chunk))] if scripts else None
            for index, step in enumerate(chunk):
                rows.append(
                    Recipient(
                        row=len(rows) + 1,
                        name=step.name or "",
                        developer=step.developer or "",
                        script=keys[index] if keys else None,
                    )
                )
        return rows

    # --- reading ------------------------------------------------------------------------

    def get(self, campaign_id: str) -> CampaignInfo:
        """The campaign's state (KeyError if unknown); a campaign whose job died shows
        `interrupted` (and is stored so)."""
        row = self._select("WHERE id = ?", (campaign_id,))
        if not row:
            raise KeyError(f"no campaign {campaign_id!r}")
        return self._info(row[0])

    def list(self, offset: int = 0, limit: int = 100) -> list[CampaignInfo]:
        """Campaigns newest first."""
        rows = self._select("ORDER BY created_at DESC, id LIMIT ? OFFSET ?", (limit, offset))
        return [self._info(row) for row in rows]

    def count(self) -> int:
        db = self.database.connection()
        return db.execute("SELECT count(*) FROM campaigns").fetchone()[0]

    def _select(self, clause: str, args: tuple[Any, ...]) -> list[dict[str, Any]]:
        cursor = self.database.connection().execute(f"SELECT * FROM campaigns {clause}", args)
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def _info(self, row: dict[str, Any]) -> CampaignInfo:
        state, eta = CampaignState(row["state"]), None
        if state == CampaignState.RUNNING and row["job_id"]:
            job = self._job(row["job_id"])
            ended = {
                JobState.INTERRUPTED: CampaignState.INTERRUPTED,
                JobState.CANCELLED: CampaignState.CANCELLED,
                JobState.FAILED: CampaignState.FAILED,
                JobState.DONE: CampaignState.INTERRUPTED,  # ended without saying how
            }
            if job is None or job.finished:
                state = ended[job.state] if job is not None else CampaignState.INTERRUPTED
                self._set_state(row["id"], state, only_if_job=row["job_id"])
                row = self._select("WHERE id = ?", (row["id"],))[0]
                state = CampaignState(row["state"])
            else:
                eta = job.eta_seconds
        return CampaignInfo(
            id=row["id"],
            template=row["template"],
            join=row["join_mode"],
            source=row["source"],
            contract_signature=row["contract_signature"],
            state=state,
            pause_reason=row["pause_reason"],
            total=row["total"],
            done=row["done"],
            failed=row["failed"],
            pending=row["total"] - row["done"] - row["failed"],
            distinct_stems=row["distinct_stems"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            finished_at=row["finished_at"],
            job_id=row["job_id"],
            eta_seconds=eta,
            params=json.loads(row["params"]),
        )

    def _job(self, job_id: str) -> Job | None:
        try:
            return self.jobs.get(job_id)
        except KeyError:
            return None  # pruned

    def messages(
        self,
        campaign_id: str,
        offset: int = 0,
        limit: int = 100,
        state: str | None = None,
        search: str | None = None,
    ) -> list[MessageRow]:
        """A page of message rows by row number; `state` filters, `search` matches name,
        developer, script or recipient id (case-insensitive, a substring)."""
        self.get(campaign_id)
        clauses, args = ["campaign_id = ?"], [campaign_id]
        if state:
            clauses.append("state = ?")
            args.append(state)
        if search:
            pattern = "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            pattern += "%"
            clauses.append(
                "(name LIKE ? ESCAPE '\\' OR developer LIKE ? ESCAPE '\\' "
                "OR script LIKE ? ESCAPE '\\' OR recipient_id LIKE ? ESCAPE '\\')"
            )
            args += [pattern] * 4
        rows = self.database.connection().execute(
            f"SELECT {_MESSAGE_COLUMNS} FROM campaign_messages WHERE {' AND '.join(clauses)}"
            " ORDER BY row LIMIT ? OFFSET ?",
            (*args, limit, offset),
        )
        return [_message(values) for values in rows.fetchall()]

    def iter_messages(self, campaign_id: str, state: str | None = None) -> Iterator[MessageRow]:
        """Every message row in row order, read `CHUNK_ROWS` at a time.

        Each chunk is read with the connection of the thread asking for it: a streamed
        export is advanced by whichever threadpool thread is free, and a connection is
        usable only on the thread that made it."""
        after = 0
        clause = "" if state is None else " AND state = ?"
        extra = () if state is None else (state,)
        while True:
            db = self.database.connection()  # this thread's, for this chunk
            rows = db.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM campaign_messages WHERE campaign_id = ?"
                f" AND row > ?{clause} ORDER BY row LIMIT ?",
                (campaign_id, after, *extra, CHUNK_ROWS),
            ).fetchall()
            if not rows:
                return
            for values in rows:
                yield _message(values)
            after = rows[-1][0]

    def problems(self, campaign_id: str, limit: int | None = None) -> list[RowProblem]:
        """Rows refused at creation and rows that failed while running, by row number (the
        first `limit` of them: only those are read)."""
        self.get(campaign_id)
        failed = itertools.islice(self.iter_messages(campaign_id, "failed"), limit)
        return [RowProblem(row=m.row, recipient_id=m.recipient_id, message=m.error) for m in failed]

    def refresh(self) -> bool:
        """Show the campaigns revision the database holds (other processes' changes)."""
        return self._revision.publish(read_revision(self.database.connection(), "campaigns"))

    # --- state --------------------------------------------------------------------------

    def _set_state(
        self,
        campaign_id: str,
        state: CampaignState,
        reason: str = "",
        *,
        job_id: str | None = None,
        only_if_job: str | None = None,
    ) -> None:
        """Store a state (and its reason), with fresh counts; `only_if_job` changes it only
        if the campaign still says running under that job."""
        now = _now()
        finished = now if state in (CampaignState.DONE, CampaignState.FAILED) else None
        guard, args = "", ()
        if only_if_job is not None:
            guard, args = " AND state = 'running' AND job_id = ?", (only_if_job,)
        with self.database.write() as db:
            db.execute(
                "UPDATE campaigns SET state = ?, pause_reason = ?, updated_at = ?,"
                " finished_at = coalesce(?, finished_at), job_id = coalesce(?, job_id)"
                f" WHERE id = ?{guard}",
                (state.value, reason, now, finished, job_id, campaign_id, *args),
            )
            self._recount(db, campaign_id)
            revision = read_revision(db, "campaigns")
        self._revision.publish(revision)

    @staticmethod
    def _recount(db: Any, campaign_id: str) -> None:
        db.execute(
            "UPDATE campaigns SET"
            " done = (SELECT count(*) FROM campaign_messages WHERE campaign_id = :id"
            "  AND state = 'done'),"
            " failed = (SELECT count(*) FROM campaign_messages WHERE campaign_id = :id"
            "  AND state = 'failed')"
            " WHERE id = :id",
            {"id": campaign_id},
        )

    def _contract_problem(self, info: CampaignInfo) -> str | None:
        if self.assembler.generator is not None:  # a change another process stored counts
            self.assembler.generator.follow_contract()
        live = self.assembler.contract.signature()
        return None if live == info.contract_signature else _contract_changed(info, live)

    def start(self, campaign_id: str, source: str = "api") -> Job:
        """Run a created campaign as a "campaign" job (params: campaign id and source)."""
        info = self.get(campaign_id)
        if info.state != CampaignState.CREATED:
            raise CampaignError(
                f"campaign {campaign_id} is {info.state.value}; only a created campaign "
                "starts (resume continues the others)"
            )
        return self._submit(info, source)

    def resume(self, campaign_id: str, source: str = "api") -> Job:
        """Continue a campaign (cancelled, paused, interrupted, failed or created): finished
        messages are skipped; the same rows give the same outputs."""
        info = self.get(campaign_id)
        if info.state == CampaignState.DONE:
            raise CampaignError(f"campaign {campaign_id} is done; nothing to resume")
        return self._submit(info, source)

    def _submit(self, info: CampaignInfo, source: str) -> Job:
        problem = self._contract_problem(info)
        if problem is not None:
            raise CampaignError(f"campaign {info.id} cannot run: {problem}")
        if not self._claim(info.id, None):  # two resumes at once start one job
            raise CampaignError(f"campaign {info.id} is already running")
        params = {"campaign_id": info.id, "source": source}
        try:
            job = self.jobs.submit("campaign", self._work, info.pending, params=params)
        except BaseException:
            self._set_state(info.id, CampaignState.INTERRUPTED, "the job could not be started")
            raise
        with self.database.write() as db:
            db.execute(
                "UPDATE campaigns SET job_id = ? WHERE id = ? AND job_id IS NULL",
                (job.id, info.id),
            )
            revision = read_revision(db, "campaigns")
        self._revision.publish(revision)
        return job

    def _claim(self, campaign_id: str, job_id: str | None) -> bool:
        """Mark the campaign running under `job_id`, in one transaction, unless it is running
        already (or gone): False then, so two runners at once never both start."""
        with self.database.write() as db:
            row = db.execute("SELECT state FROM campaigns WHERE id = ?", (campaign_id,)).fetchone()
            if row is None or row[0] == CampaignState.RUNNING:
                return False
            db.execute(
                "UPDATE campaigns SET state = 'running', pause_reason = '', job_id = ?,"
                " updated_at = ? WHERE id = ?",
                (job_id, _now(), campaign_id),
            )
        return True

    def _work(self, job: Job) -> dict[str, Any]:
        return _outcome(self.run(job.params["campaign_id"], job))

    def _run_recorded(self, campaign_id: str) -> CampaignInfo:
        """`run()` without a job: claimed and recorded as a `campaign` job of this process
        (source "python"), so a process that dies mid-run leaves the campaign `interrupted`
        — resumable, deletable — rather than `running` under no job for ever."""
        info = self.get(campaign_id)
        if info.state == CampaignState.DONE:
            return info
        store = self.jobs.store
        params = {"campaign_id": campaign_id, "source": "python"}
        now = time.time()
        job = Job(store, kind="campaign", params=params, owner_pid=store.pid, created_at=now)
        store.insert(job)
        if not self._claim(campaign_id, job.id):  # one runner at a time
            job.param.update(state=JobState.CANCELLED, finished_at=time.time())
            raise CampaignError(f"campaign {campaign_id} is already running")
        job.param.update(state=JobState.RUNNING, started_at=time.time())
        try:
            info = self.run(campaign_id, job)
        except JobCancelledError:
            job.param.update(state=JobState.CANCELLED, message="cancelled", finished_at=time.time())
            raise
        except BaseException as error:
            job.param.update(state=JobState.FAILED, message=str(error), finished_at=time.time())
            raise
        job.param.update(state=JobState.DONE, result=_outcome(info), finished_at=time.time())
        return info

    def cancel(self, campaign_id: str) -> CampaignInfo:
        """Stop a running campaign between two messages (its job is cancelled); a campaign
        that is not running becomes cancelled at once; a done one is left as it is."""
        info = self.get(campaign_id)
        if info.state == CampaignState.RUNNING and info.job_id:
            self.jobs.cancel(info.job_id)
        elif info.state not in (CampaignState.DONE, CampaignState.RUNNING):
            self._set_state(campaign_id, CampaignState.CANCELLED)
        return self.get(campaign_id)

    # --- running ------------------------------------------------------------------------

    def run(self, campaign_id: str, job: Job | None = None) -> CampaignInfo:
        """Make every pending message (synchronously; the job calls this, notebooks may).

        Raises `JobCancelledError` when the job is cancelled (the campaign is then
        `cancelled`); returns with the campaign `paused` when the contract changed. Without
        `job`, the run is recorded as a job of this process (see `_run_recorded`).
        """
        if job is None:
            return self._run_recorded(campaign_id)
        info = self.get(campaign_id)
        if info.state == CampaignState.DONE:
            return info
        problem = self._contract_problem(info)
        if problem is not None:
            self._set_state(campaign_id, CampaignState.PAUSED, problem)
            return self.get(campaign_id)
        self._set_state(campaign_id, CampaignState.RUNNING, job_id=job.id)
        self._log("campaign_started", campaign=campaign_id, job=job.id)
        job.param.update(total=info.pending, done=0)
        tpl = self.assembler.load_template(info.template)
        try:
            failures = self._make_stems(info, tpl, job)
            self._make_messages(info, tpl, job, failures)
        except _PausedError as paused:
            self._set_state(campaign_id, CampaignState.PAUSED, str(paused))
            self._log("campaign_paused", campaign=campaign_id)
            job.message = f"paused: {paused}"
            return self.get(campaign_id)
        except JobCancelledError:
            self._set_state(campaign_id, CampaignState.CANCELLED)
            self._log("campaign_cancelled", campaign=campaign_id)
            raise
        except BaseException as error:
            self._set_state(campaign_id, CampaignState.FAILED, f"failed: {error}")
            self._log("campaign_failed", campaign=campaign_id, error=type(error).__name__)
            raise
        final = self.get(campaign_id)
        state = CampaignState.FAILED if final.failed and not final.done else CampaignState.DONE
        self._set_state(campaign_id, state)
        final = self.get(campaign_id)
        self._write_manifests(final)
        self._log("campaign_done", campaign=campaign_id, done=final.done, failed=final.failed)
        return final

    def _check_contract(self, info: CampaignInfo) -> None:
        problem = self._contract_problem(info)
        if problem is not None:
            raise _PausedError(problem)

    def _check_contract_held(self, info: CampaignInfo) -> None:
        """Pause if this process's contract is not the pinned one any more, without reading
        the state database: the check before and after each row. A contract another
        process stores is followed by each assembly (`Generator.hit_state`), and else by
        the check after each batch is committed (`_check_contract`)."""
        live = self.assembler.contract.signature()
        if live != info.contract_signature:
            raise _PausedError(_contract_changed(info, live))

    def _distinct(self, campaign_id: str, column: str) -> Iterator[str]:
        cursor = self.database.connection().execute(
            f"SELECT DISTINCT {column} FROM campaign_messages WHERE campaign_id = ?"
            f" AND state = 'pending' AND {column} IS NOT NULL",
            (campaign_id,),
        )
        while batch := cursor.fetchmany(CHUNK_ROWS):
            yield from (value for (value,) in batch)

    def _make_stems(
        self, info: CampaignInfo, tpl: Template, job: Job
    ) -> dict[tuple[str, str], str]:
        """Every distinct stem the pending rows need, made once; (kind, text or key) →
        error for those that could not be made (their rows fail without trying again)."""
        generator = self.assembler.generator
        failures: dict[tuple[str, str], str] = {}
        wanted: list[tuple[str, str]] = [
            (kind, value)
            for kind in ROW_SLOTS
            if kind in tpl.slots
            for value in self._distinct(info.id, kind)
        ]
        wanted += [(s.kind, str(s)) for s in tpl.fixed_stems]
        if self._cluster() is not None:  # the names and developers, on the workers at once
            job.message = "making stems on the Dask cluster"

            def made(done: int, total: int, _: object) -> None:
                """Each stem back from the cluster: the job says how far, and a cancel
                stops the batch (its tasks not yet run are cancelled)."""
                job.raise_if_cancelled()
                job.message = f"making stems on the Dask cluster: {done}/{total}"

            generator.generate_rotational_stems(
                names=[value for kind, value in wanted if kind == "name"],
                developers=[value for kind, value in wanted if kind == "developer"],
                on_progress=made,
            )  # (no job=: it would take over the job's counts; the loop below finds them)
        for index, (kind, value) in enumerate(wanted, start=1):
            job.raise_if_cancelled()
            job.message = f"making stems: {index}/{len(wanted)}"
            self._check_contract(info)
            try:
                if kind in ("name", "developer"):
                    generator.generate(kind, value)
                else:
                    generator.generate_keyed(kind, value)
            except STOPPING_ERRORS:
                raise
            except (ValueError, KeyError, RuntimeError) as error:
                failures[(kind, value)] = f"{kind} stem: {error}"
        return failures

    def _make_messages(
        self,
        info: CampaignInfo,
        tpl: Template,
        job: Job,
        failures: dict[tuple[str, str], str],
    ) -> None:
        """Make every pending row: here, or as chunk tasks on the Dask cluster when there is
        one (`DASK_SCHEDULER_ADDRESS`; not in GCS mode, where each output is queued for
        upload in its own assembly). Either way this process alone commits the rows."""
        group: GroupCommit[RowUpdate] = GroupCommit(
            functools.partial(self._commit_rows, info.id), self._sync_batch
        )
        flushed = time.monotonic()
        rows = CampaignRows.of(self.assembler, info)

        def record(update: RowUpdate) -> None:
            nonlocal flushed
            group.add(update)
            error = f"row {update[6]}: {update[5]}" if update[0] == "failed" else None
            job.advance(error=error, message=f"messages: row {update[6]}", hold=PROGRESS_SECONDS)
            if len(group.rows) >= BATCH_ROWS or time.monotonic() - flushed > BATCH_SECONDS:
                group.flush()
                flushed = time.monotonic()
                self._check_contract(info)  # (a change another process stored)

        def stop_if_asked() -> None:
            job.raise_if_cancelled()
            self._check_contract_held(info)

        def assemblable() -> Iterator[MessageRow]:
            """The pending rows whose stems exist (the others fail at once, here)."""
            for row in self.iter_messages(info.id, "pending"):
                failed = self._stem_failure(tpl, row, failures) if failures else None
                if failed is None:
                    yield row
                else:
                    record(failed)

        cluster = self._cluster()
        try:
            if cluster is not None:
                cluster.assemble_campaign(rows, assemblable(), record, cancelled=stop_if_asked)
            else:
                for row in assemblable():
                    stop_if_asked()
                    record(self._one(info, rows, row, group.files))
        finally:
            job.publish()
            group.close()

    def _cluster(self) -> DaskCluster | None:
        """The Dask cluster campaign rows go to, if any (in GCS mode: none)."""
        generator = self.assembler.generator
        return None if generator is None or self.gcs else generator.cluster

    def _sync_batch(self) -> SyncBatch | None:
        """The group commit of a batch of messages: their files are made durable together
        before their rows are committed (`GroupCommit`), instead of each on its own. None in
        GCS mode, where an output is queued for upload in the assembly's own transaction."""
        return SyncBatch() if self.assembler.upload_queue is None else None

    @staticmethod
    def _stem_failure(
        tpl: Template, row: MessageRow, failures: dict[tuple[str, str], str]
    ) -> RowUpdate | None:
        """The failed update of a row one of whose stems could not be made, else None."""
        for kind, value in (
            ("name", row.name),
            ("developer", row.developer),
            ("script", row.script),
        ):
            if kind in tpl.slots and (kind, value or "") in failures:
                return ("failed", None, None, None, 0, failures[(kind, value or "")], row.row)
        return None

    def _one(
        self, info: CampaignInfo, rows: CampaignRows, row: MessageRow, files: SyncBatch | None
    ) -> RowUpdate:
        """One pending row, made here (`campaign_rows.make_row`); the run pauses if the
        contract changed while it was made (the row's output is then removed)."""
        update = make_row(self.assembler, rows, row_inputs(row), files=files)
        try:
            self._check_contract_held(info)
        except _PausedError:  # changed while this one was made
            self._discard_output(output_id_of(info.id, row.row))
            raise
        return update

    def _store_params(self, store: str) -> dict[str, Any]:
        """The campaign params of a store mode (`hybrid_audio.render`); none for "wav"."""
        from hybrid_audio.render import STORE_MODES

        if store not in STORE_MODES:
            raise CampaignError(f"store must be one of {', '.join(STORE_MODES)}, not {store!r}")
        if store == "wav":
            return {}
        if self.gcs:  # the bucket mirrors each message's WAV; there would be none
            raise CampaignError("store 'manifest' is not available in GCS storage mode")
        return {"store": store}

    def _discard_output(self, output_id: str) -> None:
        wav = self.output_dir / f"{output_id}.wav"
        discard(wav)
        discard(wav.with_suffix(".json"))

    def _commit_rows(self, campaign_id: str, batch: list[RowUpdate]) -> None:
        """Commit a batch of message rows and the campaign's counts, in one transaction;
        `GroupCommit` calls it once their files are durable: no row is `done` before its
        output is.

        The counts grow by the pending rows the batch changed (counting the campaign's rows
        again per batch made a run quadratic in its size); every state change recounts."""
        if not batch:
            return
        with self.database.write() as db:
            changed = {"done": 0, "failed": 0}
            for state in changed:
                rows = [(*u[:6], campaign_id, u[6]) for u in batch if u[0] == state]
                if rows:
                    changed[state] = db.executemany(
                        "UPDATE campaign_messages SET state = ?, output_id = ?, duration = ?,"
                        " sha256 = ?, verified = ?, error = ? WHERE campaign_id = ? AND row = ?"
                        " AND state = 'pending'",
                        rows,
                    ).rowcount
            db.execute(
                "UPDATE campaigns SET done = done + ?, failed = failed + ?, updated_at = ?"
                " WHERE id = ?",
                (changed["done"], changed["failed"], _now(), campaign_id),
            )
            revision = read_revision(db, "campaigns")
        self._revision.publish(revision)

    def _write_manifests(self, info: CampaignInfo) -> None:
        """campaign.json and messages.csv in the campaign folder, each written atomically;
        messages.csv chunk by chunk as its rows are read (10⁶ rows are ~150 MB of CSV)."""
        from hybrid_audio.campaign_export import campaign_document, messages_csv

        folder = self.folder(info.id)
        folder.mkdir(parents=True, exist_ok=True)
        document = campaign_document(self, info)
        atomic_write(
            folder / "campaign.json", json.dumps(document, ensure_ascii=False, indent=1).encode()
        )
        atomic_write(folder / "messages.csv", messages_csv(self, info.id))

    # --- export and deletion ------------------------------------------------------------

    def export_zip(self, campaign_id: str, fmt: str = "wav") -> Iterator[bytes]:
        """The campaign as a zip, streamed in small chunks, each message in delivery format
        `fmt` (see `campaign_export`)."""
        from hybrid_audio.campaign_export import export_zip

        self.get(campaign_id)
        return export_zip(self, campaign_id, fmt)

    def delete(self, campaign_id: str) -> None:
        """Erase the campaign: its rows, its folder, every message output (WAV and
        manifest), its jobs, and in GCS mode its upload-queue rows (see the module
        docstring for what is kept where). A running campaign is refused: cancel it first."""
        info = self.get(campaign_id)
        if info.state == CampaignState.RUNNING:
            raise CampaignError(f"campaign {campaign_id} is running; cancel it first")
        folders = (self.output_dir, self.output_dir / "deliveries")
        names = {p.name.split(".")[0] for f in folders for p in f.glob(f"{campaign_id}_*")}
        for output_id in sorted(filter(CAMPAIGN_OUTPUT_ID.fullmatch, names)):
            # Under the output's manifest lock: a delivery being encoded finishes first and
            # is erased with the rest; one that starts later finds no output.
            with self.assembler.manifest_lock(output_id):
                for folder in folders:
                    for path in folder.glob(f"{output_id}.*"):
                        discard(path)
        for folder in folders:  # anything else of it, and temp files a killed writer left
            for pattern in (f"{campaign_id}_*", f".{campaign_id}_*"):
                for path in folder.glob(pattern):
                    discard(path)
        shutil.rmtree(self.folder(campaign_id), ignore_errors=True)
        if self.gcs:
            self._delete_remote(campaign_id)
        like = f"{OUTPUT_PREFIX}{campaign_id}\\_%"
        with self.database.write() as db:
            db.execute("DELETE FROM campaign_messages WHERE campaign_id = ?", (campaign_id,))
            db.execute("DELETE FROM campaigns WHERE id = ?", (campaign_id,))
            db.execute("DELETE FROM storage_uploads WHERE object_name LIKE ? ESCAPE '\\'", (like,))
            db.execute(
                "DELETE FROM jobs WHERE kind = 'campaign'"
                " AND json_extract(params, '$.campaign_id') = ?",
                (campaign_id,),
            )
            revision = read_revision(db, "campaigns")
        self._revision.publish(revision)
        self._log("campaign_deleted", campaign=campaign_id)

    def _delete_remote(self, campaign_id: str) -> None:
        """Delete the bucket copies of the campaign's outputs; what the bucket refuses (it
        is down) is logged by name count, to be removed later with `storage` tools."""
        assert self.store is not None
        try:
            names = [o.name for o in self.store.iterate(f"{OUTPUT_PREFIX}{campaign_id}_")]
            for name in names:
                self.store.delete(name)
        except Exception as error:  # the bucket is down: the local erasure goes on
            self._log("campaign_remote_delete_failed", campaign=campaign_id, error=str(error))

    def _log(self, event: str, **fields: Any) -> None:
        if self.log is not None:
            self.log.write(event, **fields)
