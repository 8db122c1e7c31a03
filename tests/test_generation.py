"""Generator with real Piper synthesis: cache-first, once per stem, resumable batches."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hybrid_audio.config import Settings
from hybrid_audio.contract import AudioFormat
from hybrid_audio.engines import EngineConfigError, EngineOutputError
from hybrid_audio.generation import Generator, batch_workers
from hybrid_audio.jobs import JobRunner, JobState
from hybrid_audio.wav import Wav, read_wav

REPO = Path(__file__).resolve().parent.parent


class CountingEngine:
    """The real engine, with a count of how often it was asked to synthesize."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.name = inner.name
        self.calls: list[str] = []
        self._lock = threading.Lock()

    @property
    def version(self) -> str:
        return self.inner.version

    def describe(self) -> dict[str, str]:
        return self.inner.describe()

    def synthesize(self, text, contract) -> Wav:
        with self._lock:
            self.calls.append(text)
        return self.inner.synthesize(text, contract)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(base_dir=tmp_path)


@pytest.fixture
def engine(piper) -> CountingEngine:
    return CountingEngine(piper)


@pytest.fixture
def generator(settings: Settings, engine: CountingEngine) -> Generator:
    return Generator.from_settings(settings, engine=engine)


def _worker(base: Path, code: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "HYBRID_AUDIO_BASE_DIR": str(base), "PYTHONPATH": str(REPO)}
    script = (
        "import sys\nfrom hybrid_audio.generation import Generator\ng = Generator.from_settings()\n"
    )
    return subprocess.Popen(
        [sys.executable, "-c", script + code, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_new_then_cached(generator: Generator, engine: CountingEngine) -> None:
    first = generator.generate_name("José María")
    assert first.stem_id == "stem.name.jose_maria__27151c8967"
    assert first.text == "José María"
    assert first.cached is False
    assert first.duration > 0.2
    path = Path(generator.settings.stems_dir) / first.path
    assert read_wav(path).sha256 == first.sha256
    again = generator.generate_name(" josé  María")  # same text: spacing, capital initial
    assert again.cached is True
    assert again.sha256 == first.sha256
    assert engine.calls == ["José María"]


def test_same_text_same_bytes_in_another_process(generator: Generator, tmp_path: Path) -> None:
    ours = generator.generate_developer("Brightwater Homes")
    other = tmp_path / "other"
    proc = _worker(other, "print(g.generate_developer('Brightwater Homes').sha256)")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert out.strip() == ours.sha256
    ours_file = Path(generator.settings.stems_dir) / ours.path
    theirs_file = other / "stems" / ours.path
    assert (
        hashlib.sha256(ours_file.read_bytes()).digest()
        == hashlib.sha256(theirs_file.read_bytes()).digest()
    )


def test_contract_change_makes_old_stems_incompatible(
    generator: Generator, engine: CountingEngine
) -> None:
    generator.generate_name("Ana")
    generator.contract.sample_rate = 16000
    assert generator.cache.list(compatible=False)[0].stem_id == "stem.name.ana"
    assert generator.cache.list(compatible=True) == []
    remade = generator.generate_name("Ana")
    assert remade.cached is False
    assert remade.sample_rate == 16000
    assert read_wav(Path(generator.settings.stems_dir) / remade.path).format == AudioFormat(
        encoding="pcm_s16le", sample_rate=16000
    )
    assert len(engine.calls) == 2


def test_eight_threads_one_synthesis(generator: Generator, engine: CountingEngine) -> None:
    barrier = threading.Barrier(8)
    results = []

    def ask() -> None:
        barrier.wait()
        results.append(generator.generate_name("Valentina"))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 8
    assert engine.calls == ["Valentina"]
    assert sorted(r.cached for r in results) == [False] + [True] * 7
    assert len({r.sha256 for r in results}) == 1


def test_two_processes_one_synthesis(tmp_path: Path) -> None:
    go = tmp_path / "go"
    code = (
        "import time, pathlib\n"
        "while not pathlib.Path(sys.argv[1]).exists(): time.sleep(0.001)\n"
        "print(g.generate_name('Guadalupe').cached)\n"
    )
    procs = [_worker(tmp_path, code, str(go)) for _ in range(2)]
    time.sleep(3)  # let both load Piper and wait at the line
    go.touch()
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        outputs.append(out.strip())
    assert sorted(outputs) == ["False", "True"]


def test_batch_killed_half_way_then_rerun_completes(tmp_path: Path, piper) -> None:
    names = [f"Name{chr(97 + i)}{chr(97 + j)}" for i in range(4) for j in range(10)]  # 40
    code = (
        "names = sys.argv[1].split(',')\n"
        "g.generate_rotational_stems(names=names, developers=['Hilton'],\n"
        "    on_progress=lambda d, t, r: print(d, flush=True))\n"
    )
    proc = _worker(tmp_path, code, ",".join(names))
    assert proc.stdout is not None
    for _ in range(15):
        assert proc.stdout.readline(), proc.stderr.read() if proc.stderr else ""
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    settings = Settings(base_dir=tmp_path)
    engine = CountingEngine(piper)
    generator = Generator.from_settings(settings, engine=engine)
    made_before = len(generator.cache.list())
    assert 15 <= made_before < 41
    report = generator.generate_rotational_stems(names=names, developers=["Hilton"])
    assert report.total == 41
    assert report.failed == []
    assert report.created == len(engine.calls) == 41 - report.cached
    assert report.cached >= made_before - 1  # at most one stem was being replaced
    assert generator.cache.verify().ok, generator.cache.verify()
    assert len(generator.cache.list(compatible=True)) == 41
    for record in generator.cache.list():
        assert read_wav(Path(settings.stems_dir) / record.path).sha256 == record.sha256


def test_batch_reports_progress_and_skips_cached(generator: Generator) -> None:
    """A job-less batch reports through `on_progress` (a job's batch through the Job)."""
    generator.generate_name("Ana")
    seen: list[tuple[int, int]] = []
    report = generator.generate_rotational_stems(
        names=["Ana", "Bea", "Zoë", "zoë", "😀"],
        developers=["Hilton"],
        on_progress=lambda d, t, r: seen.append((d, t)),
    )
    assert (report.total, report.created, report.cached) == (4, 3, 1)
    assert report.collisions == ["Zoë / zoë → stem.name.zoe__2752b88686"]
    assert report.rejected == ["😀"]
    assert seen == [(2, 4), (3, 4), (4, 4)]


def test_batch_as_a_job(generator: Generator) -> None:
    runner = JobRunner()
    job = runner.submit(
        "bulk_generate",
        lambda j: generator.generate_rotational_stems(names=["Ana", "Bea"], developers=[], job=j),
    )
    runner.wait(job.id, timeout=60)
    runner.shutdown()
    assert job.state == JobState.DONE
    assert (job.done, job.total) == (2, 2)


class BrokenEngine(CountingEngine):
    """Real engine for some texts, a bad answer for others."""

    def synthesize(self, text, contract) -> Wav:
        if text == "Bad":  # a cut frame: 3 bytes of 2-byte samples
            return Wav(format=contract.audio_format, pcm=b"\1\2\3")
        if text == "Wrong":
            return Wav(format=AudioFormat(encoding="pcm_s16le", sample_rate=8000), pcm=b"\0\0" * 80)
        if text == "Silent":
            return Wav(format=contract.audio_format, pcm=b"")
        return super().synthesize(text, contract)


def test_bad_engine_output_stores_nothing(settings: Settings, piper) -> None:
    generator = Generator.from_settings(settings, engine=BrokenEngine(piper))
    with pytest.raises(EngineOutputError, match=r"stem\.name\.bad"):
        generator.generate_name("Bad")
    with pytest.raises(EngineOutputError, match="contract wants pcm_s16le 22050"):
        generator.generate_name("Wrong")
    with pytest.raises(EngineOutputError, match="no samples"):
        generator.generate_name("Silent")
    assert generator.cache.list() == []
    report = generator.generate_rotational_stems(
        names=["Ana", "Bad", "Jo\x00hn", "Bea"], developers=[]
    )
    assert report.created == 2
    assert [f.split(":")[0] for f in report.failed] == ["stem.name.bad"]
    assert report.rejected == ["Jo\x00hn"]  # control characters make no stem id
    assert generator.cache.verify().ok


class UnconfiguredEngine(CountingEngine):
    def synthesize(self, text, contract) -> Wav:
        self.calls.append(text)
        raise EngineConfigError("CARTESIA_API_KEY is not set")


def test_config_errors_stop_a_batch(settings: Settings, piper) -> None:
    engine = UnconfiguredEngine(piper)
    generator = Generator.from_settings(settings, engine=engine)
    with pytest.raises(EngineConfigError, match="CARTESIA_API_KEY"):
        generator.generate_rotational_stems(names=list("ABCDEFGHIJ"), developers=[])
    assert len(engine.calls) <= 2  # the first error stops it (one more may be under way)
    assert generator.cache.list() == []


@pytest.mark.parametrize("hostile", ["", "   ", "😀", "محمد", "a" * 10_240])
def test_hostile_names_are_value_errors(generator: Generator, hostile: str) -> None:
    with pytest.raises(ValueError, match=r"no letters or digits|at most 256|cannot speak"):
        generator.generate_name(hostile)
    assert generator.cache.list() == []


def test_path_tricks_become_a_safe_stem(generator: Generator) -> None:
    record = generator.generate_name("../../etc/passwd")
    assert record.stem_id == "stem.name.etc_passwd__3754d6cb3a"
    stems = Path(generator.settings.stems_dir).resolve()
    assert (stems / record.path).resolve().is_relative_to(stems)


def test_scripts_come_from_the_scripts_file(generator: Generator) -> None:
    settings = generator.settings
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    settings.scripts_file.write_text('{"hello": "Hi there"}', encoding="utf-8")
    record = generator.generate_script("hello")
    assert (record.stem_id, record.text) == ("stem.script.hello", "Hi there")
    with pytest.raises(KeyError, match="unknown script key 'bye'; known keys: hello"):
        generator.generate_script("bye")


def test_combined_makes_both(generator: Generator, engine: CountingEngine) -> None:
    name, developer = generator.generate_combined("José", "Hilton")
    assert (name.stem_id, developer.stem_id) == (
        "stem.name.jose__d994e1d001",
        "stem.developer.hilton",
    )
    generator.generate_combined("josé", "Hilton")
    assert engine.calls == ["José", "Hilton"]


def test_switching_the_contract_engine_switches_the_engine(settings: Settings, piper) -> None:
    generator = Generator.from_settings(settings, engine=piper)
    with pytest.raises(EngineConfigError, match="CARTESIA_API_KEY"):
        generator.change_contract(engine="cartesia")  # no key configured
    assert generator.contract.engine == "piper"
    assert generator.engine is piper


def test_switching_to_a_configured_cartesia(tmp_path: Path, piper) -> None:
    settings = Settings(
        base_dir=tmp_path,
        cartesia_api_key="sk-test",
        cartesia_voice_id="voice-1",
        cartesia_base_url="http://127.0.0.1:9",
    )
    generator = Generator.from_settings(settings, engine=piper)
    before = generator.contract.signature()
    generator.change_contract(engine="cartesia")
    assert generator.engine.name == "cartesia"
    assert generator.contract.model == settings.cartesia_model_id
    assert generator.contract.voice == "voice-1"
    assert generator.contract.signature() != before
    assert generator.workers == settings.cartesia_max_concurrency


def test_piper_batches_run_one_synthesis_per_free_core_with_the_serial_bytes(
    tmp_path: Path, piper
) -> None:
    """With PIPER_THREADS=1 a batch runs cores ÷ 1 syntheses at once (each onnxruntime
    session on one core) and makes exactly the stems a one-at-a-time batch makes; with
    PIPER_THREADS=0 (every core in one session) it runs one at a time."""
    cores = os.cpu_count() or 1
    assert batch_workers(Settings(), "piper") == cores
    assert batch_workers(Settings(piper_threads=2), "piper") == max(1, cores // 2)
    assert batch_workers(Settings(piper_threads=0), "piper") == 1
    names = ["Ana", "Bea", "Chloé", "Dmitri", "Inês", "José María"]
    stems = {}
    for workers in (max(2, cores), 1):
        settings = Settings(base_dir=tmp_path / str(workers))
        generator = Generator.from_settings(settings, engine=piper)
        generator.workers = workers
        report = generator.generate_rotational_stems(names, [])
        assert (report.created, report.failed) == (len(names), [])
        stems[workers] = {r.stem_id: r.sha256 for r in generator.cache.list()}
    assert stems[max(2, cores)] == stems[1]


def test_the_cluster_parameter_takes_a_dask_cluster_or_none(generator: Generator) -> None:
    with pytest.raises(ValueError, match="DaskCluster or None"):
        generator.cluster = "tcp://127.0.0.1:8786"  # an address is not a cluster
    assert generator.cluster is None
