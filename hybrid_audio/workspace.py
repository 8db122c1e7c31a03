"""Workspace: the core objects one process shares, built once from `Settings`.

The root of the live model: a `param.Parameterized` whose collaborators are typed
parameters, each built with its real dependencies by `Workspace.build` (the cache and the
contract are shared by the generator and the assembler; the rotation knows nothing of
assembly). What changes is published as parameters on those objects (`cache.revision`,
`rotation.cursors`, `assembler.last_result`, a `Job`'s `done`/`state`…); `refresh()`
brings in what other processes changed, through the state database's revision counters.

The API and the dashboard use the same workspace when they run in one process (so a job
started in the dashboard shows in `/jobs`); scripts and notebooks build their own. Nothing
here knows about HTTP or Panel.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import param
from pydantic import BaseModel

from hybrid_audio import kinds
from hybrid_audio.assembly import Assembler, AssemblyResult
from hybrid_audio.cache import CacheReport, StemCache
from hybrid_audio.campaign import Campaigns
from hybrid_audio.config import Settings
from hybrid_audio.contract import VoiceContract
from hybrid_audio.database import Database
from hybrid_audio.engines import Engine
from hybrid_audio.generation import ContractFollowError, Generator
from hybrid_audio.jobs import Job, JobRunner, logged
from hybrid_audio.live import read_revisions
from hybrid_audio.logs import JsonlLog
from hybrid_audio.pronunciation import PronunciationDictionary
from hybrid_audio.rotation import RotationEngine, RotationStep
from hybrid_audio.storage import open_store
from hybrid_audio.storage.base import ObjectStore
from hybrid_audio.storage.service import StorageService
from hybrid_audio.storage.uploads import UploadQueue, Uploads

log = logging.getLogger(__name__)
_current: Workspace | None = None
_current_lock = threading.Lock()


class PairMessage(BaseModel):
    """A rotation step turned into an assembled message."""

    step: RotationStep
    script: str | None
    result: AssemblyResult


class Workspace(param.Parameterized):
    """Settings, stem cache, contract, generator, assembler, rotation and jobs of a process."""

    settings = param.ClassSelector(class_=Settings, doc="Paths and engine configuration.")
    database = param.ClassSelector(
        class_=Database, doc="The state database (stems index, cursors, jobs, revisions)."
    )
    contract = param.ClassSelector(
        class_=VoiceContract, doc="The active voice contract (one object, shared)."
    )
    cache = param.ClassSelector(class_=StemCache, doc="Stem files and their index.")
    generator = param.ClassSelector(class_=Generator, doc="Text → stem, through the engine.")
    assembler = param.ClassSelector(class_=Assembler, doc="Template + stems → proven message.")
    rotation = param.ClassSelector(class_=RotationEngine, doc="The persisted rotation streams.")
    jobs = param.ClassSelector(class_=JobRunner, doc="Background jobs, stored in the database.")
    jobs_log = param.ClassSelector(class_=JsonlLog, doc="<logs_dir>/jobs.jsonl.")
    store = param.ClassSelector(
        class_=ObjectStore, doc="Where stems and outputs are mirrored: local files or a bucket."
    )
    uploads = param.ClassSelector(
        class_=Uploads,
        default=None,
        allow_None=True,
        doc="The background uploader of GCS mode (None in local mode).",
    )
    storage = param.ClassSelector(
        class_=StorageService, doc="Consistency, audit, sync and invalidate (storage.jsonl)."
    )
    campaigns = param.ClassSelector(
        class_=Campaigns, doc="Recipient lists → proven messages, run as 'campaign' jobs."
    )
    pronunciations = param.ClassSelector(
        class_=PronunciationDictionary,
        doc="How words are to be said; the generator applies it before synthesis.",
    )

    @classmethod
    def build(cls, settings: Settings, engine: Engine | None = None) -> Workspace:
        """Every core object wired from `settings` (and `engine`, else the settings' one).

        GCS mode (`GCS_BUCKET` set) adds the upload queue, given to the cache and the
        assembler (each queues what it commits), the generator's read-through from the
        bucket, and the started background uploader; local mode has none of them.
        """
        kinds.load(settings)  # the data folder's kinds.json, before anything lists kinds
        store = open_store(settings)
        database = Database(Path(settings.database_path))
        queue = UploadQueue(database) if store.mode == "gcs" else None
        generator = Generator.from_settings(settings, engine=engine, upload_queue=queue)
        cache, contract = generator.cache, generator.contract
        uploads = None
        if queue is not None:
            generator.remote = store
            uploads = Uploads(settings=settings, store=store, queue=queue, cache=cache)
        workspace = cls(
            settings=settings,
            database=database,
            contract=contract,
            cache=cache,
            generator=generator,
            assembler=Assembler(
                settings=settings,
                cache=cache,
                contract=contract,
                generator=generator,
                upload_queue=queue,
            ),
            rotation=RotationEngine(settings=settings, seed=settings.rotation_seed),
            jobs=JobRunner(database, max_workers=2),
            jobs_log=JsonlLog(Path(settings.logs_dir) / "jobs.jsonl", settings.log_max_bytes),
            store=store,
            uploads=uploads,
            pronunciations=generator.pronunciations,
        )
        workspace.storage = StorageService(
            settings=settings,
            store=store,
            cache=cache,
            assembler=workspace.assembler,
            jobs=workspace.jobs,
            uploads=uploads,
            log=JsonlLog(Path(settings.logs_dir) / "storage.jsonl", settings.log_max_bytes),
        )
        workspace.campaigns = Campaigns(
            settings=settings,
            database=database,
            assembler=workspace.assembler,
            rotation=workspace.rotation,
            jobs=workspace.jobs,
            log=workspace.jobs_log,
            store=store,
        )
        if settings.dask_scheduler_address:  # bulk generation on Dask; `local` is ours to close
            from hybrid_audio.distributed import DaskCluster  # dask's import is not free

            generator.cluster = DaskCluster.open(settings, engine=contract.engine)
        if uploads is not None:
            uploads.start()
        return workspace

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._seen: dict[str, int] = {}  # revision counters at the last refresh()
        self._refresh_lock = threading.Lock()

    # --- live state ---------------------------------------------------------------------

    def refresh(self) -> None:
        """Bring the published parameters up to date with what other processes changed.

        One read of the revision counters; only what changed is read again: the cache's
        `revision`, the rotation's `cursors` (also when a dataset file changed), the
        progress of jobs other processes run, the upload queue's counters (GCS mode), the
        contract another process changed (followed, so open pages show it; one that cannot
        be built here sets `generator.contract_error`). Cheap enough to call a few times a
        second; the dashboard's adapter does (`app.views.live`).
        """
        with self._refresh_lock:
            counters = read_revisions(self.database.connection())
            changed = {name for name, value in counters.items() if self._seen.get(name) != value}
            self._seen = counters
        if "contract" in changed:
            try:
                self.generator.follow_contract(counters["contract"])
            except ContractFollowError as error:
                log.warning("%s", error)  # published as generator.contract_error
        if "stems" in changed:
            self.cache.refresh()
        self.rotation.refresh()  # checks its own counter and the dataset files
        if "jobs" in changed:
            self.jobs.refresh()
        if "uploads" in changed and self.uploads is not None:
            self.uploads.refresh()
        if "campaigns" in changed and self.campaigns is not None:
            self.campaigns.refresh()
        if "pronunciations" in changed:
            self.pronunciations.refresh()

    # --- orchestration ------------------------------------------------------------------

    def generate_pair(
        self, template: str = "double_anchor", join: str | None = None
    ) -> PairMessage:
        """The next pair (and script, if the template has a script slot) as a message.

        The template is checked before a step is taken, so a bad name costs no position.
        `join` overrides the template's join mode (exact or hybrid).
        """
        tpl = self.assembler.load_template(template)
        step = self.rotation.next_pair_step()
        script = self.rotation.next_script() if "script" in tpl.slots else None
        result = self.assembler.assemble(
            template, name=step.name, developer=step.developer, script=script, mode=join
        )
        return PairMessage(step=step, script=script, result=result)

    def start_bulk_generation(
        self,
        names: Sequence[str] | None = None,
        developers: Sequence[str] | None = None,
        *,
        source: str = "api",
    ) -> Job:
        """`generate_rotational_stems` as a background job, logged to jobs.jsonl.

        Both lists omitted → the datasets; one given → only that one (the omitted list is
        empty), so "these five names" never silently becomes "these names and every
        developer". Used by the API and the dashboard alike. The lists go to the job
        function only; the job's row records how many texts each held.
        """
        if (names is None) != (developers is None):
            names, developers = names or [], developers or []
        params = {
            "source": source,
            "names": "dataset" if names is None else len(names),
            "developers": "dataset" if developers is None else len(developers),
        }
        estimate = len(names or ()) + len(developers or ())  # the job corrects it once deduped
        return self.jobs.submit(
            "bulk_generate", self._bulk_work, estimate, params=params, args=(names, developers)
        )

    def _bulk_work(
        self, job: Job, names: Sequence[str] | None, developers: Sequence[str] | None
    ) -> dict:
        """The body of a bulk generation job, logged to jobs.jsonl."""
        with logged(self.jobs_log, "job", job, kind=job.kind, **job.params) as outcome:
            report = self.generator.generate_rotational_stems(names, developers, job=job)
            outcome.update(created=report.created, cached=report.cached, failed=len(report.failed))
        return report.model_dump()

    def verify_cache(self) -> CacheReport:
        """`StemCache.verify()`, logged to jobs.jsonl as `cache_audit` whoever asks (the API,
        the dashboard, a notebook or a script)."""
        report = self.cache.verify()
        self.jobs_log.write("cache_audit", **report.model_dump())
        return report

    def close(self) -> None:
        if self.uploads is not None:
            self.uploads.close()  # rows not yet uploaded stay queued for the next start
        self.jobs.shutdown()
        if self.generator.cluster is not None:
            self.generator.cluster.close()  # after the jobs: none still waits on it
            self.generator.cluster = None


def set_current(workspace: Workspace | None) -> None:
    """Make `workspace` the one `current()` returns (the API server does, at start)."""
    global _current
    with _current_lock:
        _current = workspace


def installed() -> Workspace | None:
    """The workspace a server installed with `set_current`, if any (never builds one)."""
    return _current


def current(settings: Settings | None = None) -> Workspace:
    """The process's workspace: the server's, or one built from `settings` (environment)."""
    global _current
    with _current_lock:
        if _current is None:
            _current = Workspace.build(settings or Settings.from_env())
        return _current
