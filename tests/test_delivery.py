"""Delivery formats from a real Piper message: each decodes by another decoder than the one
that encoded it (PyAV/ffmpeg for FLAC, MP3, Opus; soundfile for our own G.711) to the master's
duration, is recorded in the manifest, encoded once, re-encoded when tampered, and never
loses a record to a concurrent delivery.

Duration tolerances, in samples at the delivery's rate: FLAC 0 (lossless, same rate); MP3
one frame (1152) + LAME's encoder delay (576) + the decoder's delay (529), which a decoder
that reads the LAME tag removes, the others do not; Opus one 20 ms frame (960 at 48 kHz) +
the pre-skip (312); G.711 1 (soxr's rounding of the 8 kHz length).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
import soxr

from hybrid_audio import delivery
from hybrid_audio.assembly import CorruptOutputError
from hybrid_audio.config import Settings
from hybrid_audio.engines import create_engine
from hybrid_audio.recipients import parse_recipients
from hybrid_audio.wav import read_wav
from hybrid_audio.workspace import Workspace
from tests.api_server import REPO, make_base_dir

ENCODED = [f for f in delivery.FORMAT_NAMES if f != "wav"]
#: Formats whose encoder gives the same bytes for the same master (not Ogg: see delivery).
DETERMINISTIC = ["flac", "mp3", "mulaw", "alaw"]
MP3_SLACK = 1152 + 576 + 529
OPUS_SLACK = 960 + 312


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory):
    base = make_base_dir(tmp_path_factory.mktemp("delivery"))
    workspace = Workspace.build(
        Settings(base_dir=base), engine=create_engine(Settings(tts_engine="piper"))
    )
    yield workspace
    workspace.close()


def _message(workspace: Workspace) -> str:
    """A fresh output (the stems are cached after the first)."""
    result = workspace.assembler.assemble("double_anchor", name="Ann", developer="Acme Homes")
    return result.summary.id


def _master(workspace: Workspace, output_id: str) -> tuple[np.ndarray, int]:
    wav = read_wav(workspace.assembler.read_output(output_id)[0])
    return np.frombuffer(wav.pcm, "<i2").astype(np.float64) / 32768, wav.format.sample_rate


def _av_decode(data: bytes) -> tuple[np.ndarray, int, av.audio.stream.AudioStream]:
    """Mono samples (float, ±1) by ffmpeg's decoders (PyAV), the rate, the stream."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono")
        chunks = [
            out.to_ndarray().reshape(-1)
            for frame in container.decode(stream)
            for out in resampler.resample(frame)
        ]
        chunks += [out.to_ndarray().reshape(-1) for out in resampler.resample(None)]
        return np.concatenate(chunks).astype(np.float64), stream.rate, stream


def _rms_db(x: np.ndarray) -> float:
    return 20 * np.log10(np.sqrt(np.mean(x**2)))


@pytest.mark.parametrize("fmt", ENCODED)
def test_each_format_decodes_by_another_decoder_to_the_masters_duration(
    workspace: Workspace, fmt: str
) -> None:
    output_id = _message(workspace)
    master, rate = _master(workspace, output_id)
    record, data, _ = delivery.read_delivery(workspace.assembler, output_id, fmt)
    if fmt in ("mulaw", "alaw"):
        decoded, got_rate = sf.read(io.BytesIO(data), dtype="float64")
        info = sf.info(io.BytesIO(data))
        subtype = {"mulaw": "ULAW", "alaw": "ALAW"}[fmt]
        assert (info.format, info.subtype, info.channels) == ("WAV", subtype, 1)
        assert got_rate == 8000
        reference = soxr.resample(master, rate, 8000)
        assert abs(len(decoded) - len(reference)) <= 1
        n = min(len(decoded), len(reference))
        noise = decoded[:n] - reference[:n]
        assert _rms_db(reference[:n]) - _rms_db(noise) > 30  # G.711 gives ~38 dB
        return
    decoded, got_rate, stream = _av_decode(data)
    expected = len(master) * got_rate / rate
    if fmt == "flac":
        assert (stream.codec_context.name, got_rate) == ("flac", rate)
        assert np.array_equal(np.rint(decoded * 32768), np.rint(master * 32768))  # lossless
        return
    if fmt == "mp3":
        assert (stream.codec_context.name, got_rate) == ("mp3float", rate)
        assert stream.codec_context.bit_rate == 64000  # the preset, CBR
        assert abs(len(decoded) - expected) <= MP3_SLACK
    else:
        assert (stream.codec_context.name, got_rate) == ("opus", 48000)
        assert abs(len(decoded) - expected) <= OPUS_SLACK
    assert abs(_rms_db(decoded) - _rms_db(master)) < 1.5  # the message, not silence
    assert record.parameters["sample_rate"] == got_rate


def test_the_manifest_records_every_delivery_and_the_master_never_changes(
    workspace: Workspace,
) -> None:
    output_id = _message(workspace)
    folder = workspace.assembler.output_dir
    master_before = (folder / f"{output_id}.wav").read_bytes()
    master_sha = workspace.assembler.load_output(output_id)["output"]["sha256"]
    for fmt in ENCODED:
        delivery.deliver(workspace.assembler, output_id, fmt)
    document = json.loads((folder / f"{output_id}.json").read_text())
    assert sorted(document["deliveries"]) == sorted(ENCODED)  # wav is the master: no record
    for fmt, record in document["deliveries"].items():
        data = (folder / record["path"]).read_bytes()
        assert record["path"] == f"deliveries/{output_id}{delivery.FORMATS[fmt].suffix}"
        assert record["size"] == len(data)
        assert record["sha256"] == hashlib.sha256(data).hexdigest()
        assert record["master_sha256"] == master_sha
        assert record["format"] == fmt
        assert record["created_at"]
        assert sf.__libsndfile_version__ in record["encoder"] or "G.711" in record["encoder"]
    assert (folder / f"{output_id}.wav").read_bytes() == master_before
    assert workspace.assembler.verify_output(output_id).ok
    wav = delivery.deliver(workspace.assembler, output_id, "wav")
    assert (wav.sha256, wav.path) == (master_sha, f"{output_id}.wav")


def test_a_second_delivery_is_the_stored_file_not_a_new_encoding(workspace: Workspace) -> None:
    output_id = _message(workspace)
    for fmt in ENCODED:
        first = delivery.deliver(workspace.assembler, output_id, fmt)
        path = workspace.assembler.output_dir / first.path
        before = path.stat()
        again, data, _ = delivery.read_delivery(workspace.assembler, output_id, fmt)
        after = path.stat()
        assert again == first  # same record: same created_at, same sha256 (Ogg too)
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
        assert hashlib.sha256(data).hexdigest() == first.sha256


@pytest.mark.parametrize("fmt", ["mp3", "ogg"])
def test_a_tampered_or_missing_delivery_is_encoded_again_never_served(
    workspace: Workspace, fmt: str
) -> None:
    output_id = _message(workspace)
    first = delivery.deliver(workspace.assembler, output_id, fmt)
    path = workspace.assembler.output_dir / first.path
    tampered = bytearray(path.read_bytes())
    tampered[len(tampered) // 2] ^= 0xFF
    path.write_bytes(bytes(tampered))
    record, data, _ = delivery.read_delivery(workspace.assembler, output_id, fmt)
    assert data != bytes(tampered)
    assert hashlib.sha256(data).hexdigest() == record.sha256 == _recorded(workspace, output_id, fmt)
    assert path.read_bytes() == data
    path.unlink()
    record, data, _ = delivery.read_delivery(workspace.assembler, output_id, fmt)
    assert path.read_bytes() == data
    assert hashlib.sha256(data).hexdigest() == record.sha256


def _recorded(workspace: Workspace, output_id: str, fmt: str) -> str:
    return workspace.assembler.load_output(output_id)["deliveries"][fmt]["sha256"]


def test_deterministic_formats_encode_the_same_bytes_and_opus_the_same_audio(
    workspace: Workspace,
) -> None:
    output_id = _message(workspace)
    first = {f: delivery.read_delivery(workspace.assembler, output_id, f)[1] for f in ENCODED}
    for fmt in ENCODED:
        (
            workspace.assembler.output_dir
            / delivery.deliver(workspace.assembler, output_id, fmt).path
        ).unlink()
    again = {f: delivery.read_delivery(workspace.assembler, output_id, f)[1] for f in ENCODED}
    for fmt in DETERMINISTIC:
        assert again[fmt] == first[fmt], fmt
    # libsndfile gives each Ogg stream a random serial number: other bytes, the same audio.
    assert again["ogg"] != first["ogg"]
    assert np.array_equal(_av_decode(again["ogg"])[0], _av_decode(first["ogg"])[0])


def test_concurrent_deliveries_from_threads_keep_every_record(workspace: Workspace) -> None:
    output_id = _message(workspace)
    results: dict[str, set[str]] = {f: set() for f in ENCODED}
    errors: list[BaseException] = []

    def work(fmt: str) -> None:
        try:
            results[fmt].add(delivery.deliver(workspace.assembler, output_id, fmt).sha256)
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(f,)) for f in ENCODED * 4]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    deliveries = workspace.assembler.load_output(output_id)["deliveries"]
    assert sorted(deliveries) == sorted(ENCODED)
    for fmt in ENCODED:  # one encoding each: Ogg's random serial would show a second one
        assert results[fmt] == {deliveries[fmt]["sha256"]}, fmt


_PROCESS = """
import sys, time
from pathlib import Path
from hybrid_audio import delivery
from hybrid_audio.config import Settings
from hybrid_audio.workspace import Workspace
base, go, output_ids, formats = sys.argv[1], Path(sys.argv[2]), sys.argv[3].split(","), sys.argv[4:]
workspace = Workspace.build(Settings(base_dir=base))
Path(f"{go}.{formats[0]}").touch()  # ready (named by the first format: one per process)
while not go.exists():
    time.sleep(0.005)
for output_id in output_ids:
    for fmt in formats:
        print(output_id, fmt, delivery.deliver(workspace.assembler, output_id, fmt).sha256)
workspace.close()
"""


def test_two_processes_delivering_at_once_keep_every_record(
    workspace: Workspace, tmp_path: Path
) -> None:
    output_ids = [_message(workspace) for _ in range(3)]
    base = str(workspace.settings.base_dir)
    go = tmp_path / "go"
    halves = (ENCODED, ENCODED[::-1])  # both make every format: each is made once
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _PROCESS, base, str(go), ",".join(output_ids), *formats],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        for formats in halves
    ]
    while not all(Path(f"{go}.{formats[0]}").exists() for formats in halves):
        assert all(p.poll() is None for p in processes)
        time.sleep(0.01)
    go.touch()  # both start delivering at once
    answers = [p.communicate(timeout=120)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0]
    got = [dict(((o, f), sha) for o, f, sha in map(str.split, a.splitlines())) for a in answers]
    assert got[0] == got[1]  # made once: an Ogg file encoded twice would differ
    for output_id in output_ids:
        deliveries = workspace.assembler.load_output(output_id)["deliveries"]
        assert sorted(deliveries) == sorted(ENCODED)
        for fmt, record in deliveries.items():
            stored = (workspace.assembler.output_dir / record["path"]).read_bytes()
            assert hashlib.sha256(stored).hexdigest() == record["sha256"], fmt


def test_unknown_format_is_a_value_error_listing_the_formats(workspace: Workspace) -> None:
    output_id = _message(workspace)
    with pytest.raises(ValueError, match="wav, flac, mp3, ogg, mulaw, alaw"):
        delivery.deliver(workspace.assembler, output_id, "aac")
    assert "deliveries" not in workspace.assembler.load_output(output_id)


def test_missing_or_changed_masters_give_the_existing_errors(workspace: Workspace) -> None:
    with pytest.raises(KeyError):
        delivery.deliver(workspace.assembler, "20990101T000000000000Z_none", "mp3")
    output_id = _message(workspace)
    _flip_a_master_byte(workspace, output_id)
    with pytest.raises(CorruptOutputError):
        delivery.deliver(workspace.assembler, output_id, "mp3")
    assert "deliveries" not in workspace.assembler.load_output(output_id)
    assert not (workspace.assembler.output_dir / delivery.file_name(output_id, "mp3")).exists()


@pytest.mark.parametrize("fmt", ENCODED)
def test_encode_time_per_minute_is_measured(fmt: str) -> None:
    assert 0 < delivery.encode_seconds_per_minute(fmt, seconds=2.0) < 60


def test_a_delivery_made_before_its_master_changed_on_disk_is_refused(
    workspace: Workspace,
) -> None:
    """A message whose WAV changed on disk is refused in every format, also when its MP3
    was delivered before the change (the master is proven on every delivery)."""
    output_id = _message(workspace)
    delivery.deliver(workspace.assembler, output_id, "mp3")
    _flip_a_master_byte(workspace, output_id)
    with pytest.raises(CorruptOutputError):
        delivery.deliver(workspace.assembler, output_id, "mp3")


def _flip_a_master_byte(workspace: Workspace, output_id: str) -> None:
    """Change one sample byte of the message's WAV on disk (its manifest says otherwise)."""
    path = workspace.assembler.output_dir / f"{output_id}.wav"
    data = bytearray(path.read_bytes())
    data[-2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "section",
    [
        ["not", "a", "mapping"],
        {"mp3": "junk"},
        {"mp3": {"format": "mp3", "parameters": "junk"}},
    ],
)
def test_a_malformed_delivery_record_is_encoded_again_not_an_error(
    workspace: Workspace, section: object
) -> None:
    """A `deliveries` section that does not read (hand-edited, or written by another tool)
    is a cache entry to make again, never a 500 (AttributeError, TypeError) or a 422 blaming
    the client's request."""
    output_id = _message(workspace)
    path = workspace.assembler.output_dir / f"{output_id}.json"
    document = json.loads(path.read_text())
    path.write_text(json.dumps({**document, "deliveries": section}))
    record = delivery.deliver(workspace.assembler, output_id, "mp3")
    data = (workspace.assembler.output_dir / record.path).read_bytes()
    assert (
        hashlib.sha256(data).hexdigest() == record.sha256 == _recorded(workspace, output_id, "mp3")
    )


def test_a_record_naming_another_file_is_never_served(workspace: Workspace) -> None:
    """The record's path is where this output's delivery lives, whatever a manifest (one
    pulled from a bucket, say) says: a record pointing at another file — here the master
    WAV, with its true sha256 — must not make that file the "mp3"."""
    output_id = _message(workspace)
    document = workspace.assembler.load_output(output_id)
    record = delivery.deliver(workspace.assembler, output_id, "mp3").model_dump()
    record.update(path=document["output"]["path"], sha256=document["output"]["sha256"])
    with workspace.assembler.manifest_lock(output_id):
        workspace.assembler.record_in_manifest(output_id, "deliveries", "mp3", record)
    got, data, _ = delivery.read_delivery(workspace.assembler, output_id, "mp3")
    assert got.path == f"deliveries/{output_id}.mp3"
    assert data[:4] != b"RIFF"
    with av.open(io.BytesIO(data)) as container:
        assert container.streams.audio[0].codec_context.name == "mp3float"


def test_deleting_a_campaign_while_a_message_is_delivered_leaves_none_of_its_audio(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Erasing a campaign erases its deliveries (personal data: a recipient's name spoken),
    also one being encoded at that moment: the delivery must not write its file (or its
    manifest again) after the erasure."""
    campaigns = workspace.campaigns
    data = "id,name,developer\nr1,Ann,Acme Homes\nr2,Bob,Acme Homes\n"
    info = campaigns.create("double_anchor", parse_recipients(data))
    campaigns.run(info.id)
    first, second = (m.output_id for m in campaigns.iter_messages(info.id, "done"))
    delivery.deliver(workspace.assembler, second, "flac")  # an earlier delivery
    mp3 = delivery.FORMATS["mp3"]
    deleting = threading.Thread(target=campaigns.delete, args=(info.id,))

    def encode_while_deleted(*args: object) -> bytes:
        deleting.start()
        deleting.join(timeout=2)  # the erasure runs now, or waits for this delivery
        return mp3.encode(*args)

    monkeypatch.setitem(delivery.FORMATS, "mp3", replace(mp3, encode=encode_while_deleted))
    with contextlib.suppress(KeyError):  # erased under it: an error for this request is fine
        delivery.deliver(workspace.assembler, first, "mp3")
    deleting.join()
    folder = workspace.assembler.output_dir
    left = [p.name for p in (*folder.glob(f"{info.id}_*"), *folder.glob(f"*/{info.id}_*"))]
    left += [p.name for p in folder.glob(f"*/.{info.id}_*")]
    assert left == []
