"""Generator: text → stem, through the engine, into the cache, at most once per stem.

`Generator` is a param object over an engine, a `StemCache` and the active
`VoiceContract`. Every `generate_*` call first asks the cache for a compatible stem; only
on a miss does it take the stem's lock — a `flock` on a per-stem lock file, which
excludes other threads (each call opens its own file description) and other processes
alike — look again, and synthesize. Engine output is validated with `read_wav` against
the contract before it is stored; a bad answer stores nothing.

Batches (`generate_rotational_stems`) make every distinct stem of the datasets once, skip
compatible cached stems, and are resumable: each stem is committed as soon as it is made,
so a rerun after a crash starts where the last one stopped.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import param
from pydantic import BaseModel

from hybrid_audio.cache import StemCache, StemRecord
from hybrid_audio.config import Settings
from hybrid_audio.contract import Encoding, VoiceContract
from hybrid_audio.datasets import Dataset, Item, dataset_from_texts, load_dataset
from hybrid_audio.engines import (
    Engine,
    EngineConfigError,
    EngineError,
    EngineOutputError,
    EngineQuotaError,
    create_engine,
)
from hybrid_audio.jobs import Job
from hybrid_audio.stems import StemId
from hybrid_audio.wav import WavError

ProgressCallback = Callable[[int, int, StemRecord | None], None]
#: Errors that would repeat for every stem: stop the batch instead of failing each one.
_FATAL = (EngineConfigError, EngineQuotaError)


class BatchReport(BaseModel):
    """Outcome of a bulk generation."""

    total: int
    created: int
    cached: int
    failed: list[str]  # "stem id: error"
    collisions: list[str]  # "kept / dropped → stem id"
    rejected: list[str]  # texts that make no stem id


def contract_for(settings: Settings, engine: Engine) -> VoiceContract:
    """The contract the settings ask for, stamped with the engine's identity."""
    facts = engine.describe()
    return VoiceContract(
        engine=engine.name,
        engine_version=engine.version,
        model=facts.get("model", ""),
        voice=facts.get("voice", ""),
        encoding=Encoding(settings.encoding),
        sample_rate=settings.sample_rate,
    )


class Generator(param.Parameterized):
    """Makes stems on demand and in bulk; progress is observable through parameters."""

    settings = param.ClassSelector(class_=Settings, doc="Paths and engine configuration.")
    engine = param.Parameter(doc="The TTS engine (see hybrid_audio.engines).")
    contract = param.ClassSelector(class_=VoiceContract, doc="Active voice contract.")
    cache = param.ClassSelector(class_=StemCache, doc="Where stems are kept.")
    workers = param.Integer(default=1, bounds=(1, 32), doc="Parallel syntheses in a batch.")
    done = param.Integer(
        default=0, constant=True, doc="Stems finished in the latest batch to report."
    )
    total = param.Integer(default=0, constant=True, doc="Stems in the current batch.")
    progress = param.Number(default=0.0, bounds=(0, 1), constant=True, doc="done / total.")
    status = param.String(default="", constant=True, doc="Latest status line.")

    @classmethod
    def from_settings(
        cls, settings: Settings | None = None, engine: Engine | None = None
    ) -> Generator:
        """Everything wired from `Settings` (environment by default)."""
        settings = settings or Settings.from_env()
        engine = engine or create_engine(settings)
        contract = contract_for(settings, engine)
        cache = StemCache(
            stems_dir=settings.stems_dir, database_path=settings.database_path, contract=contract
        )
        workers = settings.cartesia_max_concurrency if engine.name == "cartesia" else 1
        return cls(
            settings=settings, engine=engine, contract=contract, cache=cache, workers=workers
        )

    def __init__(self, **params) -> None:
        super().__init__(**params)
        if self.contract is not None:
            self.contract.param.watch(self._switch_engine, "engine")

    def _switch_engine(self, event: param.parameterized.Event) -> None:
        """The contract names another engine: build it, or put the contract back and say why.

        A side effect (the engine object and the contract's engine identity change), hence a
        watcher rather than a dependency.
        """
        if self.engine is not None and event.new == self.engine.name:
            return
        try:
            engine = create_engine(self.settings, event.new)
        except EngineError:
            with param.parameterized.discard_events(self.contract):
                self.contract.engine = event.old
            raise
        facts = engine.describe()
        self.engine = engine
        self.contract.param.update(
            engine_version=engine.version,
            model=facts.get("model", ""),
            voice=facts.get("voice", ""),
        )
        self.workers = self.settings.cartesia_max_concurrency if engine.name == "cartesia" else 1

    # --- one stem -----------------------------------------------------------------------

    def generate_name(self, name: str) -> StemRecord:
        return self.generate("name", name)

    def generate_developer(self, developer: str) -> StemRecord:
        return self.generate("developer", developer)

    def generate_script(self, key: str) -> StemRecord:
        """The script phrase stored under `key` in the scripts dataset."""
        scripts = load_dataset("script", self.settings)
        for item in scripts.items:
            if item.key == key or str(item.stem_id) == key:
                return self.generate("script", item.text, slug_source=item.key)
        known = ", ".join(i.key or "" for i in scripts.items)
        raise KeyError(f"unknown script key {key!r}; known keys: {known}")

    def generate_combined(self, name: str, developer: str) -> tuple[StemRecord, StemRecord]:
        """The name stem and the developer stem (each made at most once)."""
        return self.generate_name(name), self.generate_developer(developer)

    def generate(self, kind: str, text: str, *, slug_source: str | None = None) -> StemRecord:
        """The stem of `text` as a `kind`: from the cache, or synthesized once and stored."""
        stem_id = StemId.for_text(kind, slug_source or text)
        spoken = text.strip()
        hit = self.cache.lookup(stem_id)
        if hit is not None:
            return hit.model_copy(update={"cached": True})
        with self._stem_lock(stem_id):
            hit = self.cache.lookup(stem_id)  # another thread or process may have made it
            if hit is not None:
                return hit.model_copy(update={"cached": True})
            audio = self.engine.synthesize(spoken, self.contract)
            try:
                record = self.cache.store(
                    stem_id, spoken, audio, api_version=getattr(self.engine, "api_version", "")
                )
            except WavError as error:
                raise EngineOutputError(
                    f"{self.engine.name} returned unusable audio for {stem_id}: {error}"
                ) from None
        return record.model_copy(update={"cached": False})

    @contextmanager
    def _stem_lock(self, stem_id: StemId) -> Iterator[None]:
        folder = Path(self.settings.state_dir) / "locks"
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / f"{stem_id}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    # --- many stems ---------------------------------------------------------------------

    def _batch_items(
        self, names: Sequence[str] | None, developers: Sequence[str] | None
    ) -> tuple[list[Item], Dataset, Dataset]:
        def dataset(kind: str, texts: Sequence[str] | None) -> Dataset:
            if texts is None:
                return load_dataset(kind, self.settings)
            return dataset_from_texts(kind, texts)

        name_set, developer_set = dataset("name", names), dataset("developer", developers)
        return [*name_set.items, *developer_set.items], name_set, developer_set

    def generate_rotational_stems(
        self,
        names: Sequence[str] | None = None,
        developers: Sequence[str] | None = None,
        *,
        on_progress: ProgressCallback | None = None,
        job: Job | None = None,
    ) -> BatchReport:
        """Every distinct name and developer stem (datasets by default), each made once.

        Compatible cached stems are skipped; failures of single stems are collected and
        the batch goes on; configuration and quota errors stop it (they would repeat).
        """
        self.cache.sweep_temp_files()
        items, name_set, developer_set = self._batch_items(names, developers)
        pending = [item for item in items if self.cache.lookup(item.stem_id) is None]
        cached = len(items) - len(pending)
        report = BatchReport(
            total=len(items),
            created=0,
            cached=cached,
            failed=[],
            collisions=[
                f"{kept} / {dropped} → {sid}"
                for kept, dropped, sid in (*name_set.collisions, *developer_set.collisions)
            ],
            rejected=[text for _, text, _ in (*name_set.rejected, *developer_set.rejected)],
        )
        done = cached  # this batch's own count: concurrent batches must not add up
        self._set_progress(done, len(items), f"{len(pending)} stems to make")
        if job is not None:
            job.param.update(total=len(items), done=cached)

        stop = threading.Event()  # set by the first fatal error: queued stems are not tried

        def make(item: Item) -> StemRecord | None:
            if job is not None:
                job.raise_if_cancelled()
            if stop.is_set():
                return None
            try:
                return self.generate(item.stem_id.kind, item.text)
            except _FATAL:
                stop.set()
                raise

        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            futures = [(item, pool.submit(make, item)) for item in pending]
            try:
                for item, future in futures:
                    record, error = None, None
                    try:
                        record = future.result()
                        if record is None:
                            continue  # skipped after a fatal error that is about to surface
                        report.created += not record.cached
                        report.cached += bool(record.cached)
                    except _FATAL:
                        raise
                    except (EngineError, ValueError) as exc:
                        error = f"{item.stem_id}: {exc}"
                        report.failed.append(error)
                    done += 1
                    self._set_progress(done, len(items), f"{item.stem_id}")
                    if job is not None:
                        job.advance(error=error, message=str(item.stem_id))
                    if on_progress is not None:
                        on_progress(done, len(items), record)
            finally:
                for _, future in futures:
                    future.cancel()
        self._set_progress(len(items), len(items), "done")
        return report

    def _set_progress(self, done: int, total: int, status: str) -> None:
        with param.edit_constant(self):
            self.param.update(
                done=done, total=total, progress=done / total if total else 1.0, status=status
            )
