"""Bulk generation on a Dask cluster (`DASK_SCHEDULER_ADDRESS`): workers synthesize, the
driver stores.

`DaskCluster.open(settings)` gives None when the setting is unset (the in-process path),
starts a `LocalCluster` of worker processes for `local`, or connects to `tcp://…` /
`tls://…` (with Dask's `Security` from DASK_TLS_CA_FILE / DASK_TLS_CERT / DASK_TLS_KEY).
Every worker process loads the engine once, in a worker plugin (`EnginePlugin`); a task
(`synthesize_stem`) gets the engine text (pronunciation already resolved by the driver)
and the contract's values, synthesizes, runs `sound.process` and returns the processed
`Wav` — it writes nothing. The driver records each stem (`StemCache.store` under the
stem's lock), so the index and the stems folder have one writer: a task Dask retries
after its worker died cannot store anything twice, and a worker killed mid-task leaves no
file behind. A stem is ~100 KB, so its bytes travel through Dask as a task result; that
also works when the workers see no filesystem of the driver's. In GCS mode the driver
first adopts what the bucket holds (`Generator.adopt`, as a single stem would); only the
stems it lacks are sent to the workers, as they are found missing.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distributed import (
    Client,
    Future,
    KilledWorker,
    LocalCluster,
    WorkerPlugin,
    as_completed,
    get_worker,
)
from distributed.security import Security

from hybrid_audio import kinds
from hybrid_audio.assembly import Assembler
from hybrid_audio.cache import StemCache
from hybrid_audio.campaign_rows import CampaignRows, RowInputs, RowUpdate, make_row, row_inputs
from hybrid_audio.config import Settings
from hybrid_audio.contract import VoiceContract
from hybrid_audio.datasets import Item
from hybrid_audio.engines import (
    Engine,
    EngineConfigError,
    EngineError,
    EngineOutputError,
    EngineQuotaError,
    create_engine,
)
from hybrid_audio.files import TEMP_SUFFIX, SyncBatch, discard, leftovers, stem_lock
from hybrid_audio.pronunciation import Pronounced
from hybrid_audio.sound import SoundReport, process
from hybrid_audio.stems import spoken_text
from hybrid_audio.wav import Wav, WavError

if TYPE_CHECKING:
    from hybrid_audio.cache import StemRecord
    from hybrid_audio.generation import Generator

log = logging.getLogger(__name__)
#: The name the engine plugin is registered under on every worker.
PLUGIN_NAME = "hybrid-audio-engine"
#: What the batch does with a finished stem: (item, record or None, error or None).
Finished = Callable[[Item, "StemRecord | None", "str | None"], None]
#: Campaign rows per task: big enough that Dask's per-task cost (~ms) is small beside
#: the assemblies (~2–5 ms each), small enough that progress flows and a retry is cheap.
CHUNK_ROWS = 50
_FATAL = (EngineConfigError, EngineQuotaError)
_TLS_FILES = {
    "DASK_TLS_CA_FILE": "dask_tls_ca_file",
    "DASK_TLS_CERT": "dask_tls_cert",
    "DASK_TLS_KEY": "dask_tls_key",
}


class DaskConfigError(ValueError):
    """DASK_SCHEDULER_ADDRESS and its TLS settings cannot be used as given."""


def security_for(settings: Settings) -> Security | None:
    """Dask's TLS config for a `tls://` address (all three files required), else None."""
    if not settings.dask_scheduler_address.startswith("tls://"):
        return None
    files = {variable: getattr(settings, field) for variable, field in _TLS_FILES.items()}
    missing = [variable for variable, path in files.items() if not path]
    if missing:
        raise DaskConfigError(
            f"DASK_SCHEDULER_ADDRESS is {settings.dask_scheduler_address}: a tls:// cluster "
            f"needs {', '.join(_TLS_FILES)}; not set: {', '.join(missing)}"
        )
    absent = [f"{variable}={path}" for variable, path in files.items() if not Path(path).is_file()]
    if absent:
        raise DaskConfigError(f"TLS files not found: {', '.join(absent)}")
    return Security(
        tls_ca_file=files["DASK_TLS_CA_FILE"],
        tls_client_cert=files["DASK_TLS_CERT"],
        tls_client_key=files["DASK_TLS_KEY"],
        require_encryption=True,
    )


class EnginePlugin(WorkerPlugin):
    """Loads the engine once per worker process (Piper's voice takes a while) from the
    driver's settings — `PIPER_THREADS` included, so a worker makes the driver's bytes;
    counts the syntheses that worker ran, so tests and operators can see each stem was made
    once."""

    def __init__(self, settings: Settings, engine: str) -> None:
        self.settings = settings
        self.default = engine
        self.engines: dict[str, Engine] = {}
        self.assemblers: dict[tuple[str, str], Assembler] = {}
        self.syntheses = 0

    def setup(self, worker: Any) -> None:
        self.engine(self.default)

    def assembler(self, settings: Settings, contract: VoiceContract) -> Assembler:
        """The worker's Assembler over `settings`' base dir (a shared filesystem) with the
        driver's `contract`, built once: it reads stems and the index, never makes stems
        (no generator), so the driver stays the only writer of the state database."""
        key = (settings.model_dump_json(), contract.signature())
        if key not in self.assemblers:
            kinds.load(settings)
            cache = StemCache(
                stems_dir=settings.stems_dir,
                database_path=settings.database_path,
                contract=contract,
            )
            self.assemblers[key] = Assembler(settings=settings, cache=cache, contract=contract)
        return self.assemblers[key]

    def engine(self, name: str) -> Engine:
        """The worker's engine `name`, built on first use (a contract may switch engines)."""
        if name not in self.engines:
            self.engines[name] = create_engine(self.settings, name)
        return self.engines[name]


@dataclass(frozen=True)
class Made:
    """A task's answer: the processed stem, what processing measured, the engine's API."""

    wav: Wav
    sound: SoundReport | None
    api_version: str


def synthesize_stem(engine_text: str, contract_values: dict[str, Any]) -> Made:
    """The Dask task: one stem synthesized and processed on a worker, nothing written."""
    plugin: EnginePlugin = get_worker().plugins[PLUGIN_NAME]
    contract = VoiceContract(**contract_values)
    engine = plugin.engine(contract.engine)
    facts = engine.describe()
    made_by = (engine.version, facts.get("model", ""), facts.get("voice", ""))
    if made_by != (contract.engine_version, contract.model, contract.voice):
        raise EngineConfigError(
            f"the worker's {contract.engine} engine is {made_by}, the contract wants "
            f"{(contract.engine_version, contract.model, contract.voice)}"
        )
    plugin.syntheses += 1
    audio, report = process(engine.synthesize(engine_text, contract), contract)
    return Made(wav=audio, sound=report, api_version=getattr(engine, "api_version", ""))


def assemble_rows(campaign: CampaignRows, rows: list[RowInputs]) -> list[RowUpdate]:
    """The Dask task: assemble and prove a chunk of a campaign's rows on a worker.

    Outputs are written (never overwritten) and made durable together before the chunk
    returns (one group commit per chunk); nothing is recorded — the driver commits the
    returned updates. Run again after its worker died, each row first clears what the dead
    writer left and adopts what it finished (`campaign_rows.make_row`)."""
    plugin: EnginePlugin = get_worker().plugins[PLUGIN_NAME]
    assembler = plugin.assembler(campaign.settings, VoiceContract(**campaign.contract))
    files = SyncBatch()
    # the driver made every stem before the rows
    updates = [
        make_row(assembler, campaign, row, generate_missing=False, files=files) for row in rows
    ]
    files.sync()
    return updates


class DaskCluster:
    """The client of the cluster bulk generation runs on (and the LocalCluster it owns)."""

    def __init__(self, client: Client, cluster: LocalCluster | None = None) -> None:
        self.client = client
        self.cluster = cluster

    @classmethod
    def open(cls, settings: Settings, engine: str | None = None) -> DaskCluster | None:
        """The cluster `settings.dask_scheduler_address` names, with the engine plugin
        registered (every worker, also one started later, loads `engine` once); None when
        unset."""
        address = settings.dask_scheduler_address
        if not address:
            return None
        cluster = None
        if address == "local":
            cluster = LocalCluster(
                n_workers=settings.dask_local_workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=":0",  # a free port: never collide with another cluster
            )
            client = Client(cluster)
        else:
            client = Client(address, security=security_for(settings))
        try:
            plugin = EnginePlugin(settings, engine or settings.tts_engine)
            client.register_plugin(plugin, name=PLUGIN_NAME)
        except BaseException:
            client.close()
            if cluster is not None:
                cluster.close()
            raise
        return cls(client, cluster)

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()

    def syntheses(self) -> int:
        """Syntheses run by the workers alive now (a dead worker's count is lost)."""
        counts = self.client.run(lambda dask_worker: dask_worker.plugins[PLUGIN_NAME].syntheses)
        return sum(counts.values())

    def generate(
        self,
        generator: Generator,
        pending: Iterable[Item],
        finished: Finished,
        *,
        cancelled: Callable[[], None] = lambda: None,
    ) -> None:
        """One task per pending stem; each result is stored by this process as it comes.

        `finished` is called once per stem (progress, report); `cancelled` raises when the
        job was cancelled — then the remaining tasks are cancelled. Configuration and
        quota errors stop the batch (they would repeat), single stems' errors do not.
        """
        contract = generator.contract
        values, signature = contract.values(), contract.signature()
        submitted: dict[Future, tuple[Item, Pronounced]] = {}
        try:
            for item in pending:  # may be lazy: stems submitted as they are found missing
                said = generator.pronounce(spoken_text(item.text))
                future = self.client.submit(synthesize_stem, said.engine_text, values, pure=False)
                submitted[future] = (item, said)
            for future in as_completed(submitted):
                cancelled()
                item, said = submitted[future]
                try:
                    made = future.result()
                    record = _store(generator, item, made, said, signature)
                except _FATAL:
                    raise
                except (EngineError, ValueError, KilledWorker) as error:
                    finished(item, None, f"{item.stem_id}: {error}")
                    continue
                finished(item, record, None)
        finally:
            self.client.cancel(list(submitted))

    def assemble_campaign(
        self,
        campaign: CampaignRows,
        rows: Iterable[Any],
        finished: Callable[[RowUpdate], None],
        *,
        cancelled: Callable[[], None] = lambda: None,
        chunk_rows: int = CHUNK_ROWS,
    ) -> None:
        """Assemble `rows` (`MessageRow`s: `campaign_rows.row_inputs`) on the workers,
        `chunk_rows` per task; `finished(update)` is called here for every
        row, chunk by chunk as they complete (the caller commits them and advances the job).

        Rows are read lazily, with two chunks per worker thread in flight, so memory does
        not grow with the campaign. `cancelled` is called before each chunk is taken in and
        raises to stop (cancel, or the contract changed): nothing more is submitted and the
        chunks in flight are cancelled; outputs they finished stay on disk unrecorded, for
        the next run to adopt. At the end, what killed workers left is swept (one listing
        of the output folder per run, not per row). A chunk whose workers kept dying fails
        its rows; any other error of a chunk (storage, a stopping engine error) is raised.
        """
        chunks = _chunks(rows, chunk_rows)
        in_flight: dict[Future, list[RowInputs]] = {}
        pending = as_completed()

        def submit(count: int) -> None:
            for chunk in itertools.islice(chunks, count):
                future = self.client.submit(assemble_rows, campaign, chunk, pure=False)
                in_flight[future] = chunk
                pending.add(future)

        try:
            submit(2 * max(1, sum(self.client.nthreads().values())))
            for future in pending:
                chunk = in_flight.pop(future)
                cancelled()
                try:
                    updates = future.result()
                except KilledWorker as error:
                    updates = [
                        ("failed", None, None, None, 0, f"worker lost: {error}", row[0])
                        for row in chunk
                    ]
                for update in updates:
                    finished(update)
                submit(1)
        finally:
            self.client.cancel(list(in_flight))
        # Every chunk is back: a temp file of this campaign whose writer is gone is what a
        # killed worker left of a row it never linked (the rerun made the row anew).
        folder = Path(campaign.settings.output_dir)
        for leftover in leftovers(folder, f".{campaign.campaign_id}_*{TEMP_SUFFIX}"):
            discard(leftover)


def _chunks(rows: Iterable[Any], size: int) -> Iterator[list[RowInputs]]:
    """`rows` as task inputs, `size` at a time."""
    inputs = map(row_inputs, rows)
    while chunk := list(itertools.islice(inputs, size)):
        yield chunk


def _store(
    generator: Generator, item: Item, made: Made, said: Pronounced, signature: str
) -> StemRecord:
    """Record a worker's stem, under the stem's lock, unless it is no longer what would be
    made: another process stored it meanwhile (→ cached), or the dictionary or the contract
    changed since the task was sent (→ made again here, as `generate` would)."""
    kind, spoken = item.stem_id.kind, spoken_text(item.text)
    with stem_lock(generator.settings.state_dir, item.stem_id):
        hit = generator.current(kind, item.text)
        if hit is not None:
            return hit.model_copy(update={"cached": True})
        if generator.pronounce(spoken) == said and generator.contract.signature() == signature:
            try:
                record = generator.cache.store(
                    item.stem_id,
                    spoken,
                    made.wav,
                    api_version=made.api_version,
                    sound=made.sound,
                    pronounced=said,
                )
            except WavError as error:
                raise EngineOutputError(f"unusable audio for {item.stem_id}: {error}") from None
            return record.model_copy(update={"cached": False})
    log.info("%s: dictionary or contract changed while it was made; making it again", item)
    return generator.generate(kind, item.text)
