"""Generator: text → stem, through the engine, into the cache, at most once per stem.

`Generator` is a param object over an engine, a `StemCache` and the active
`VoiceContract`. Every `generate_*` call first asks the cache for a compatible stem; only
on a miss does it take the stem's lock — a `flock` on a per-stem lock file, which
excludes other threads (each call opens its own file description) and other processes
alike — look again, and synthesize. Engine output (a `Wav`) is checked against the
contract before it is stored; a bad answer stores nothing.

In GCS mode (`remote` set) a miss first asks the bucket: a stem another machine made
under the same contract is downloaded, proven and adopted instead of synthesized
(`storage.readthrough.pull_stem`); the returned record then says `cached=True` (no
synthesis happened). A bucket that is down or holds nothing usable only costs that look:
the stem is synthesized as in local mode, never failed; after the bucket failed a look it
is not asked again for `READ_THROUGH_PAUSE` seconds (a look can wait GCS_RETRY_DEADLINE).

Batches (`generate_rotational_stems`) make every distinct stem of the datasets once, skip
compatible cached stems, and are resumable: each stem is committed as soon as it is made,
so a rerun after a crash starts where the last one stopped. Their progress goes to the
batch's `Job` (or `on_progress` without one).

The contract is shared by every process on the state folder (`shared_contract`): a
generator made by `from_settings` adopts the stored one at start, stores each change it
applies, and follows a change another process stored before it makes or looks up a stem
(`follow_contract`); while the stored contract cannot be built here it refuses work.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import param
from pydantic import BaseModel

from hybrid_audio import shared_contract
from hybrid_audio.cache import StemCache, StemRecord
from hybrid_audio.config import Settings
from hybrid_audio.contract import CONTRACT_PARAMETERS, Encoding, VoiceContract
from hybrid_audio.database import Database
from hybrid_audio.datasets import Dataset, Item, dataset_from_texts, load_dataset
from hybrid_audio.engines import (
    Engine,
    EngineConfigError,
    EngineError,
    EngineOutputError,
    EngineQuotaError,
    create_engine,
)
from hybrid_audio.files import stem_lock
from hybrid_audio.jobs import Job
from hybrid_audio.pronunciation import Pronounced, PronunciationDictionary, plain
from hybrid_audio.sound import SoundReport, process
from hybrid_audio.stems import StemId, same_identity, spoken_text
from hybrid_audio.storage.base import (
    ChecksumMismatchError,
    ObjectMissingError,
    ObjectStore,
    StorageUnavailableError,
    stem_object_name,
)
from hybrid_audio.storage.readthrough import pull_stem
from hybrid_audio.wav import Wav, WavError

if TYPE_CHECKING:
    from hybrid_audio.distributed import DaskCluster
    from hybrid_audio.storage.uploads import UploadQueue

log = logging.getLogger(__name__)
ProgressCallback = Callable[[int, int, StemRecord | None], None]
#: Errors that would repeat for every stem: stop the batch instead of failing each one.
_FATAL = (EngineConfigError, EngineQuotaError)
#: Seconds a read-through is not tried after the bucket failed one: each attempt on a bucket
#: that is down costs up to `GCS_RETRY_DEADLINE` (60 s) before the stem is synthesized.
READ_THROUGH_PAUSE = 60.0
#: Cache hits `generate` keeps (see `Generator.hit_state`).
_HIT_MEMORY = 4096


class ContractFollowError(EngineConfigError):
    """The contract another process stored cannot be built here (e.g. its engine's key is
    missing): this process refuses work rather than make stems under the old contract."""


class ClusterParameter(param.Parameter):
    """A `distributed.DaskCluster` or None. Checked without importing dask up front: a
    value can only exist once `hybrid_audio.distributed` (and dask) is imported."""

    def _validate(self, val: object) -> None:
        super()._validate(val)
        if val is None:
            return
        from hybrid_audio.distributed import DaskCluster

        if not isinstance(val, DaskCluster):
            raise ValueError(f"{self.name} must be a DaskCluster or None, not {type(val)}")


class BatchReport(BaseModel):
    """Outcome of a bulk generation."""

    total: int
    created: int
    cached: int
    failed: list[str]  # "stem id: error"
    collisions: list[str]  # "kept / dropped → stem id"
    rejected: list[str]  # texts that make no stem id


@dataclass(frozen=True)
class ContractChange:
    """A checked contract change, ready to apply: the new contract, its engine, its cost."""

    contract: VoiceContract
    engine: Engine
    signature: str
    incompatible: int  # cached stems of the active contract that would stop matching
    compatible: int  # cached stems already made under the new contract

    def describe(self) -> str:
        """One sentence for the operator who must confirm the change."""
        if self.incompatible == 0:
            return (
                "This change keeps every cached stem compatible "
                f"({self.compatible} stems match the new contract)."
            )
        return (
            f"This change makes {self.incompatible} cached stems incompatible; "
            f"{self.compatible} stems match the new contract."
        )


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
        loudness_lufs=settings.loudness_lufs,
        true_peak_dbtp=settings.true_peak_dbtp,
        edge_fade_ms=settings.edge_fade_ms,
    )


def batch_workers(settings: Settings, engine: str) -> int:
    """Parallel syntheses of a batch: Cartesia's plan concurrency; for Piper the cores its
    `PIPER_THREADS` leave (on 2 cores, 2 syntheses of 1 onnxruntime thread each: each on a
    core of its own, the very bytes one after another would make); 1 when Piper's session
    takes every core (`PIPER_THREADS=0`)."""
    if engine == "cartesia":
        return settings.cartesia_max_concurrency
    if not settings.piper_threads:
        return 1
    return max(1, min(32, (os.cpu_count() or 1) // settings.piper_threads))


class Generator(param.Parameterized):
    """Makes stems on demand and in bulk, under the contract every process shares."""

    settings = param.ClassSelector(class_=Settings, doc="Paths and engine configuration.")
    engine = param.ClassSelector(
        class_=Engine,
        allow_None=True,
        doc="The TTS engine: anything with the `engines.Engine` protocol (checked at runtime).",
    )
    contract = param.ClassSelector(class_=VoiceContract, doc="Active voice contract.")
    cache = param.ClassSelector(class_=StemCache, doc="Where stems are kept.")
    pronunciations = param.ClassSelector(
        class_=PronunciationDictionary,
        default=None,
        allow_None=True,
        doc="How words are to be said, applied before synthesis; None → as written.",
    )
    remote = param.ClassSelector(
        class_=ObjectStore,
        default=None,
        allow_None=True,
        doc="The bucket a missing stem is first looked for in (GCS mode); None → local only.",
    )
    workers = param.Integer(default=1, bounds=(1, 32), doc="Parallel syntheses in a batch.")
    cluster = ClusterParameter(
        default=None,
        doc="The `distributed.DaskCluster` batches run on (DASK_SCHEDULER_ADDRESS); None → "
        "in this process's threads. Single stems are always made here.",
    )
    contract_error = param.String(
        default="",
        doc="Why the shared contract cannot be followed here; work is refused while set.",
    )

    @classmethod
    def from_settings(
        cls,
        settings: Settings | None = None,
        engine: Engine | None = None,
        *,
        upload_queue: UploadQueue | None = None,
    ) -> Generator:
        """Everything wired from `Settings` (environment by default); `upload_queue` (GCS
        mode) is given to the cache, which queues every stem it stores."""
        settings = settings or Settings.from_env()
        engine = engine or create_engine(settings)
        contract = contract_for(settings, engine)
        cache = StemCache(
            stems_dir=settings.stems_dir,
            database_path=settings.database_path,
            contract=contract,
            upload_queue=upload_queue,
        )
        workers = batch_workers(settings, engine.name)
        generator = cls(
            settings=settings,
            engine=engine,
            contract=contract,
            cache=cache,
            pronunciations=PronunciationDictionary(database_path=settings.database_path),
            workers=workers,
        )
        generator.share_contract()
        return generator

    def __init__(self, **params) -> None:
        super().__init__(**params)
        self._contract_lock = threading.Lock()
        self._remote_failed_at: float | None = None  # monotonic; see READ_THROUGH_PAUSE
        # (kind, text, slug source) → (`hit_state()` when found, the cached stem): a hit
        # was a fifth of an assembly (slug, text rules, dictionary, index row, each time).
        self._hits: dict[tuple, tuple[tuple, StemRecord]] = {}
        self._shared_words: PronunciationDictionary | None = None
        # The shared contract: the `contract` revision followed (None: not shared, a
        # generator built by hand keeps its contract to itself), the state database.
        self._followed: int | None = None
        self._follow_lock = threading.Lock()
        self._state: Database | None = None
        self._made_from = ""  # signature of the environment contract (shared_contract)

    # --- the contract -------------------------------------------------------------------

    def plan_contract_change(self, **changes: object) -> ContractChange:
        """The contract `changes` would make, with its engine, checked but not applied.

        Naming another engine builds that engine now, so a missing key or voice is an error
        here and nothing changes; the engine's identity (version, model, voice) is stamped
        on the new contract. `incompatible` counts the cached stems that match the active
        contract and would not match the new one. A change another process stored is
        followed first; one that cannot be followed does not stop a new change (that is
        the way out of it).
        """
        with suppress(ContractFollowError):  # planned against this process's contract;
            self.follow_contract()  # applying it stores all of it
        contract, engine = self._checked(changes)
        before, after = self.contract.signature(), contract.signature()
        counts: dict[str, int] = {}
        for record in self.cache.list():
            counts[record.contract_signature] = counts.get(record.contract_signature, 0) + 1
        return ContractChange(
            contract=contract,
            engine=engine,
            signature=after,
            incompatible=0 if before == after else counts.get(before, 0),
            compatible=counts.get(after, 0),
        )

    def _checked(self, changes: dict[str, object]) -> tuple[VoiceContract, Engine]:
        """The active contract with `changes`, validated, and the engine it needs (built
        when it names another engine, stamped with that engine's identity)."""
        unknown = set(changes) - set(CONTRACT_PARAMETERS)
        if unknown:
            raise ValueError(f"not contract parameters: {', '.join(sorted(unknown))}")
        contract = self.contract.copy(**changes)
        engine = self.engine
        if self.engine is None or contract.engine != self.engine.name:
            engine = create_engine(self.settings, contract.engine)  # EngineError: no change
            facts = engine.describe()
            contract.param.update(
                engine_version=engine.version,
                model=facts.get("model", ""),
                voice=changes.get("voice") or facts.get("voice", ""),
            )
        return contract, engine

    def apply_contract_change(self, change: ContractChange) -> None:
        """Make a planned contract (and its engine) the active one, all parameters at once,
        for every process on the state folder.

        The shared row is written first (`shared_contract`; if that fails, nothing changes
        here); then the contract object is updated in place (the cache and the views hold
        it), in one `param.update`. Under a lock so two operators' changes cannot interleave.
        """
        with self._contract_lock:
            revision = None
            if self._followed is not None:
                with self._database().write() as db:
                    revision = shared_contract.write(db, change.contract, self._made_from)
            self._use(change.contract, change.engine, revision)

    def _use(self, contract: VoiceContract, engine: Engine, revision: int | None) -> None:
        """Under the contract lock: `contract` and `engine` become the active ones (unless
        a newer `revision` is active already)."""
        if revision is not None and self._followed is not None:
            if revision <= self._followed:
                return
            self._followed = revision
            self.contract_error = ""
        self.engine = engine
        self.contract.param.update(**contract.values())
        self.workers = batch_workers(self.settings, engine.name)

    def _database(self) -> Database:
        if self._state is None:
            self._state = Database(self.cache.database_path)
        return self._state

    def share_contract(self) -> None:
        """Join the contract every process on the state folder shares (`from_settings`
        does): adopt the stored contract if it was made from this environment's contract,
        else store this one (`shared_contract.adopt`, the startup rule). When the stored
        contract cannot be built here, `contract_error` says why and work is refused."""
        self._made_from = self.contract.signature()
        stored = shared_contract.adopt(self._database(), self.contract)
        self._followed = -1
        try:
            self._adopt(stored)
        except ContractFollowError as error:
            log.error("%s", error)

    def follow_contract(self, revision: int | None = None) -> None:
        """Adopt the shared contract if another process changed it since this one looked.

        `revision` is the `contract` counter just read (`hit_state` reads it with the
        others); None reads it here. Raises `ContractFollowError` while the stored contract
        cannot be built here: no stem is made or looked up under the old one.
        """
        if self._followed is None:
            return
        if revision is None:
            (revision,) = self.cache.counters("contract")
        if revision != self._followed:
            with self._follow_lock:
                stored = shared_contract.read(self._database().connection())
                if stored is not None and stored.revision != self._followed:
                    self._adopt(stored)
        if self.contract_error:
            raise ContractFollowError(self.contract_error)

    def _adopt(self, stored: shared_contract.StoredContract) -> None:
        """Make `stored` the active contract; on failure keep the old one and refuse."""
        if stored.values == self.contract.values():
            with self._contract_lock:
                self._followed = max(self._followed or 0, stored.revision)
                self.contract_error = ""
            return
        try:
            contract, engine = self._checked(stored.values)
        except (EngineError, ValueError) as error:
            with self._contract_lock:
                self._followed = max(self._followed or 0, stored.revision)
                self.contract_error = (
                    f"the contract stored by another process ({stored.values['engine']}) "
                    f"cannot be used here: {error}. Change the contract again from the "
                    "dashboard, or fix this server's environment and restart it"
                )
            raise ContractFollowError(self.contract_error) from None
        with self._contract_lock:
            self._use(contract, engine, stored.revision)

    def change_contract(self, **changes: object) -> ContractChange:
        """Plan and apply `changes` in one call: the whole change, or (on error) none of it."""
        change = self.plan_contract_change(**changes)
        self.apply_contract_change(change)
        return change

    # --- one stem -----------------------------------------------------------------------

    def generate_name(self, name: str) -> StemRecord:
        return self.generate("name", name)

    def generate_developer(self, developer: str) -> StemRecord:
        return self.generate("developer", developer)

    def generate_script(self, key: str) -> StemRecord:
        """The script phrase stored under `key` in the scripts dataset."""
        return self.generate_keyed("script", key)

    def generate_keyed(self, kind: str, key: str) -> StemRecord:
        """The phrase stored under `key` (or its stem id) in a mapping kind's dataset."""
        entries = load_dataset(kind, self.settings)
        for item in entries.items:
            if item.key == key or str(item.stem_id) == key:
                return self.generate(kind, item.text, slug_source=item.key)
        known = ", ".join(i.key or "" for i in entries.items)
        raise KeyError(f"unknown {kind} key {key!r}; known keys: {known}")

    def generate_combined(self, name: str, developer: str) -> tuple[StemRecord, StemRecord]:
        """The name stem and the developer stem (each made at most once)."""
        return self.generate_name(name), self.generate_developer(developer)

    def generate(self, kind: str, text: str, *, slug_source: str | None = None) -> StemRecord:
        """The stem of `text` as a `kind`: from the cache, or synthesized once and stored.

        A cached stem counts only if it speaks the same text (a script key whose phrase was
        edited keeps its id, and its stem is made again: see `stems`) with the same
        pronunciation entries. A new stem is made in the order of shared/DESIGN.md: the
        dictionary applied to the text → synthesis → `sound.process` (trim, loudness,
        true-peak ceiling, fades) → stored.
        """
        key = (kind, text, slug_source)
        state = self.hit_state()  # follows a contract another process stored
        kept = self._hits.get(key)
        if kept is not None and kept[0] == state and self.cache.file_ok(kept[1]):
            return kept[1].model_copy(update={"cached": True})
        stem_id = StemId.for_text(kind, slug_source or text)
        spoken = spoken_text(text)
        said = self.pronounce(spoken)
        hit = self._usable(self.cache.lookup(stem_id), spoken, said)
        if hit is not None:
            if state is not None:
                if len(self._hits) >= _HIT_MEMORY:
                    self._hits.clear()
                self._hits[key] = (state, hit)
            return hit.model_copy(update={"cached": True})
        with stem_lock(self.settings.state_dir, stem_id):
            # another thread or process may have made it meanwhile, or changed the
            # dictionary: a stem stored now must be made with the entries as they are now
            said = self.pronounce(spoken)
            found = self._found(stem_id, spoken, said)
            if found is not None:
                return found
            signature = self.contract.signature()
            audio, report = process(
                self.engine.synthesize(said.engine_text, self.contract), self.contract
            )
            if self.contract.signature() != signature:
                record = None  # another thread followed a new contract meanwhile: not this
            else:
                record = self._store(stem_id, spoken, audio, report, said)
        if record is None:  # made again under the new contract (outside the stem's lock)
            return self.generate(kind, text, slug_source=slug_source)
        return record.model_copy(update={"cached": False})

    def _store(
        self, stem_id: StemId, spoken: str, audio: Wav, report: SoundReport | None, said: Pronounced
    ) -> StemRecord:
        """Under the stem's lock: the made stem into the cache (bad audio → engine error)."""
        try:
            return self.cache.store(
                stem_id,
                spoken,
                audio,
                api_version=getattr(self.engine, "api_version", ""),
                sound=report,
                pronounced=said,
            )
        except WavError as error:
            raise EngineOutputError(
                f"{self.engine.name} returned unusable audio for {stem_id}: {error}"
            ) from None

    def hit_state(self) -> tuple | None:
        """What a kept cache hit depends on: the stems and pronunciations revisions (any
        process's write moves them) and the contract; None when the dictionary lives in
        another database than the index (then nothing is kept). The Assembler keeps a
        message's resolved stems under it too. The same read gives the contract counter:
        a contract another process stored is followed first (`follow_contract`)."""
        stems, words_revision, contract = self.cache.counters("stems", "pronunciations", "contract")
        self.follow_contract(contract)
        words = self.pronunciations
        if words is not None and words is not self._shared_words:
            if Path(words.database_path) != Path(self.cache.database_path):
                return None
            self._shared_words = words
        return (stems, words_revision, self.contract.signature())

    def adopt(self, kind: str, text: str) -> StemRecord | None:
        """The stem `generate` would return without synthesis — cached, or (GCS mode)
        adopted from the bucket, under the stem's lock and rules — or None: it must be made.
        The Dask path asks this before it sends a stem to the cluster."""
        stem_id = StemId.for_text(kind, text)
        spoken = spoken_text(text)
        with stem_lock(self.settings.state_dir, stem_id):
            return self._found(stem_id, spoken, self.pronounce(spoken))

    def _found(self, stem_id: StemId, spoken: str, said: Pronounced) -> StemRecord | None:
        """Under the stem's lock: the usable cached stem, else the bucket's, as cached."""
        hit = self._usable(self.cache.lookup(stem_id), spoken, said)
        if hit is None:
            hit = self._pull(stem_id, spoken, said.entry_hash)
        return None if hit is None else hit.model_copy(update={"cached": True})

    def pronounce(self, spoken: str) -> Pronounced:
        """What the engine is given for `spoken`: the dictionary's entries applied."""
        if self.pronunciations is None:
            return Pronounced(engine_text=plain(spoken), entry_hash="", entries=[])
        return self.pronunciations.resolve(spoken, self.contract.engine)

    def current(self, kind: str, text: str, *, slug_source: str | None = None) -> StemRecord | None:
        """The cached stem `generate` would return without synthesis, or None."""
        stem_id = StemId.for_text(kind, slug_source or text)
        spoken = spoken_text(text)
        return self._usable(self.cache.lookup(stem_id), spoken, self.pronounce(spoken))

    @staticmethod
    def _usable(hit: StemRecord | None, spoken: str, said: Pronounced) -> StemRecord | None:
        """`hit` if it speaks `spoken` made with the entries `said` applies, else None."""
        if hit is None or not same_identity(hit.text, spoken):
            return None
        return hit if hit.pronunciation == said.entry_hash else None

    def _pull(self, stem_id: StemId, spoken: str, pronunciation: str) -> StemRecord | None:
        """The stem adopted from the bucket, or None: synthesize it (nothing usable there,
        or the bucket is down — local work never fails because of the bucket)."""
        if self.remote is None:
            return None
        failed_at = self._remote_failed_at
        if failed_at is not None and time.monotonic() < failed_at + READ_THROUGH_PAUSE:
            return None  # the bucket failed a moment ago: do not wait for it again
        name = stem_object_name(stem_id)
        try:
            outcome = pull_stem(
                self.remote, self.cache, name, text=spoken, pronunciation=pronunciation
            )
        except ObjectMissingError:
            return None
        except StorageUnavailableError as error:
            self._remote_failed_at = time.monotonic()
            log.warning(
                "read-through of %s skipped, synthesizing (the bucket is not asked again "
                "for %g s): %s",
                name,
                READ_THROUGH_PAUSE,
                error,
            )
            return None
        except ChecksumMismatchError as error:
            log.warning("read-through of %s skipped, synthesizing: %s", name, error)
            return None
        if outcome.status in ("adopted", "already"):
            return outcome.record
        log.info("bucket stem %s not used (%s): %s", name, outcome.status, outcome.detail)
        return None

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
        With a `cluster` the pending stems are synthesized by its workers and stored here;
        in GCS mode each is first looked for in the bucket (`adopt`), as `generate` does.
        """
        self.follow_contract()
        self.cache.sweep_temp_files()
        items, name_set, developer_set = self._batch_items(names, developers)
        pending = [item for item in items if self.current(item.stem_id.kind, item.text) is None]
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
        if job is not None:
            job.param.update(total=len(items), done=cached)

        def finished(item: Item, record: StemRecord | None, error: str | None) -> None:
            nonlocal done
            if record is not None:
                report.created += not record.cached
                report.cached += bool(record.cached)
            if error is not None:
                report.failed.append(error)
            done += 1
            if job is not None:
                job.advance(error=error, message=str(item.stem_id))
            if on_progress is not None:
                on_progress(done, len(items), record)

        cluster: DaskCluster | None = self.cluster
        if cluster is not None:
            cancelled = job.raise_if_cancelled if job is not None else lambda: None

            def unadopted() -> Iterator[Item]:
                """The stems the bucket cannot give (GCS mode), as the cluster takes them:
                workers synthesize new stems while the next ones are looked for."""
                for item in pending:
                    cancelled()
                    adopted = self.adopt(item.stem_id.kind, item.text)
                    if adopted is None:
                        yield item
                    else:
                        finished(item, adopted, None)

            to_make = pending if self.remote is None else unadopted()
            cluster.generate(self, to_make, finished, cancelled=cancelled)
            return report

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
                    try:
                        record = future.result()
                    except _FATAL:
                        raise
                    except (EngineError, ValueError) as exc:
                        finished(item, None, f"{item.stem_id}: {exc}")
                        continue
                    if record is not None:  # None: skipped after a fatal error about to surface
                        finished(item, record, None)
            finally:
                for _, future in futures:
                    future.cancel()
        return report
