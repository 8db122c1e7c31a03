"""WAVs written by sox — to files and to pipes — read back exactly (or refused cleanly).

sox is a real, independent writer: to a pipe it cannot seek back, so it leaves its
"unknown length" sizes in the header, which `read_wav` must recognise and repair. The
expected sample bytes come from sox itself (`-t raw`), not from our reader.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from hybrid_audio.wav import WavError, read_wav

SOX = shutil.which("sox")
pytestmark = pytest.mark.sox


@pytest.fixture(autouse=True, scope="module")
def sox_is_installed() -> None:
    """Fail, never skip: a skipped module looks green on a machine that lacks sox."""
    if SOX is None:
        pytest.fail("sox is missing: `make test-fast` or `make system-deps` installs it")


# (sox output options, expected encoding)
SUPPORTED = [
    (["-b", "8", "-e", "unsigned-integer"], "pcm_u8"),
    (["-b", "16", "-e", "signed-integer"], "pcm_s16le"),
    (["-b", "24", "-e", "signed-integer"], "pcm_s24le"),
    (["-b", "32", "-e", "signed-integer"], "pcm_s32le"),
    (["-b", "32", "-e", "floating-point"], "pcm_f32le"),
    (["-b", "64", "-e", "floating-point"], "pcm_f64le"),
    (["-e", "u-law"], "pcm_mulaw"),
    (["-e", "a-law"], "pcm_alaw"),
]
UNSUPPORTED = [["-e", "ima-adpcm"], ["-e", "ms-adpcm"], ["-e", "gsm-full-rate"]]


def _sox_wav(options: list[str], channels: int, rate: int, to_pipe: bool, path: Path) -> bytes:
    args = [SOX, "-n", "-r", str(rate), "-c", str(channels), *options, "-t", "wav"]
    synth = ["synth", "0.13", "sine", "300-900", "sine", "500"]
    if to_pipe:  # stdout is a pipe: sox cannot seek, so sizes stay "unknown"
        done = subprocess.run([*args, "-", *synth], capture_output=True, check=True)
        path.write_bytes(done.stdout)
    else:
        subprocess.run([*args, str(path), *synth], capture_output=True, check=True)
    return path.read_bytes()


def _sox_raw(path: Path) -> bytes:
    """The sample bytes as sox decodes them, in the file's own encoding."""
    done = subprocess.run([SOX, str(path), "-t", "raw", "-"], capture_output=True, check=True)
    return done.stdout


@pytest.mark.parametrize(("options", "encoding"), SUPPORTED, ids=[e for _, e in SUPPORTED])
@pytest.mark.parametrize("channels", [1, 2, 6])
@pytest.mark.parametrize("to_pipe", [False, True], ids=["file", "pipe"])
def test_sox_wavs_read_exactly(
    tmp_path: Path, options: list[str], encoding: str, channels: int, to_pipe: bool
) -> None:
    path = tmp_path / "sox.wav"
    data = _sox_wav(options, channels, 8000, to_pipe, path)
    wav = read_wav(data)
    assert wav.format.encoding == encoding
    assert (wav.format.channels, wav.format.sample_rate) == (channels, 8000)
    assert wav.frames == 1040
    assert wav.repaired == to_pipe
    assert wav.pcm == _sox_raw(path)


@pytest.mark.parametrize("options", UNSUPPORTED, ids=lambda o: o[1])
def test_sox_compressed_wavs_are_refused(tmp_path: Path, options: list[str]) -> None:
    data = _sox_wav(options, 1, 8000, False, tmp_path / "c.wav")
    with pytest.raises(WavError, match="not supported") as caught:
        read_wav(data)
    assert caught.value.rule == "unsupported codec"


def test_cut_short_sox_pipe_output_still_repairs(tmp_path: Path) -> None:
    """A stream that stopped early keeps the whole frames that arrived."""
    data = _sox_wav(["-b", "16"], 1, 8000, True, tmp_path / "p.wav")
    full = read_wav(data)
    cut = read_wav(data[: len(data) - 200])
    assert cut.pcm == full.pcm[:-200]


def test_cut_short_sox_pipe_output_mid_frame_is_refused(tmp_path: Path) -> None:
    data = _sox_wav(["-b", "16"], 1, 8000, True, tmp_path / "p.wav")
    with pytest.raises(WavError) as caught:
        read_wav(data[:-1])
    assert caught.value.rule == "whole frames"
