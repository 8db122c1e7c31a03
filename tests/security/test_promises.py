"""Proofs the README promises, pinned so that a deliberately broken version fails.

An outside audit injected two bugs that the rest of the suite let through, because every
tamper test changed one byte and every key test compared strings whose `==` and
`hmac.compare_digest` results agree:

- `verify` reporting the *last* differing byte of a region instead of the first: here the
  output is tampered in several places and whole ranges, and every offset of the report
  (header, pad byte, each segment, each crossfade) is checked against an oracle.
- `keys_match` that still calls `hmac.compare_digest` but decides with `==`: here the
  comparison function is wrapped (it still answers the real result) and its answers are
  flipped, so the decision is shown to come from the constant-time comparison itself.
  How long a wrong key takes to refuse is measured in benchmarks/bench_auth_timing.py.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hybrid_audio.api import auth
from hybrid_audio.bitmerge import Manifest, MergeResult, VerifyReport, bitmerge_semantic, verify
from hybrid_audio.contract import AudioFormat
from tests.audio_factory import make_wav
from tests.test_bitmerge import part_lists

# --- verify: every region reports its FIRST changed byte -------------------------------------
# One flipped byte cannot tell "first difference" from "last difference" (or from "any
# difference"): these tests change several bytes and whole ranges, and compare every offset
# the report gives with an oracle computed from the manifest alone.


def _regions(manifest: Manifest) -> dict[str, Callable[[int], bool]]:
    """Every region `verify` reports on, named as a reader would: does it own an offset?

    A segment owns its bytes outside the crossfades; each crossfade is a region of its own.
    """
    end = manifest.data_offset + manifest.data_bytes
    fades = [range(c.byte_offset, c.byte_offset + c.byte_length) for c in manifest.crossfades]

    def inside(span: range, *, outside_fades: bool = False) -> Callable[[int], bool]:
        return lambda o: o in span and not (outside_fades and any(o in f for f in fades))

    regions = {
        "header": inside(range(manifest.data_offset)),
        "pad": inside(range(end, end + manifest.data_bytes % 2)),
    }
    for seg in manifest.segments:
        span = range(seg.byte_offset, seg.byte_offset + seg.byte_length)
        regions[f"segment {seg.index} {seg.id}"] = inside(span, outside_fades=True)
    for i, fade in enumerate(fades):
        regions[f"crossfade {i}"] = inside(fade)
    return regions


def _expected_first_diffs(manifest: Manifest, changed: set[int]) -> dict[str, int | None]:
    """Oracle: the lowest changed offset inside each region, None where nothing changed."""
    return {
        name: min(filter(owns, changed), default=None) for name, owns in _regions(manifest).items()
    }


def _reported_first_diffs(manifest: Manifest, report: VerifyReport) -> dict[str, int | None]:
    """The same table read from a report (segments by index and id, so a wrong name shows)."""
    reported: dict[str, int | None] = {
        "header": report.header_first_diff_offset,
        "pad": report.pad_first_diff_offset,
    }
    reported |= {f"segment {s.index} {s.id}": s.first_diff_offset for s in report.segments}
    reported |= {f"crossfade {i}": c.first_diff_offset for i, c in enumerate(report.crossfades)}
    return reported


def _tamper(wav: bytes, changes: dict[int, int]) -> bytes:
    """`wav` with byte `offset` XORed by `mask` (never 0, so every listed byte differs)."""
    tampered = bytearray(wav)
    for offset, mask in changes.items():
        tampered[offset] ^= mask
    return bytes(tampered)


def _assert_first_diffs_reported(result: MergeResult, parts: list, changes: dict[int, int]) -> None:
    report = verify(_tamper(result.wav, changes), result.manifest, parts)
    assert not report.ok
    assert _reported_first_diffs(result.manifest, report) == _expected_first_diffs(
        result.manifest, set(changes)
    )
    assert report.first_diff_offset == min(changes)
    assert [s.exact for s in report.segments] == [
        s.first_diff_offset is None for s in report.segments
    ]
    assert [c.matches for c in report.crossfades] == [
        c.first_diff_offset is None for c in report.crossfades
    ]


def _hybrid_merge() -> tuple[MergeResult, list]:
    """u8 (odd data size, so a pad byte), three stems, two crossfades."""
    fmt = AudioFormat(encoding="pcm_u8", sample_rate=8000)
    parts = [make_wav(fmt, 301, seed=1), make_wav(fmt, 250, seed=2), make_wav(fmt, 200, seed=3)]
    result = bitmerge_semantic(parts, mode="hybrid", crossfade_ms=4)
    assert len(result.manifest.crossfades) == 2
    assert result.manifest.data_bytes % 2 == 1
    return result, parts


def _span(start: int, stop: int) -> dict[int, int]:
    return dict.fromkeys(range(start, stop), 0xFF)


@pytest.mark.parametrize(
    "where",
    ["header", "segment", "crossfade", "pad and segment", "every data byte"],
)
def test_several_tampered_bytes_report_the_first_of_each_region(where: str) -> None:
    """Tampered output (scattered bytes, whole ranges): each region names its first change."""
    result, parts = _hybrid_merge()
    m = result.manifest
    fade, next_fade = m.crossfades
    middle = range(fade.byte_offset + fade.byte_length, next_fade.byte_offset)  # segment 1 only
    pad = m.data_offset + m.data_bytes
    changes = {
        "header": {4: 0x01, 22: 0x02, 40: 0x80, 41: 0x10},
        "segment": {middle.start + 3: 0x01, middle.start + 40: 0x20, middle.stop - 1: 0x04}
        | _span(middle.start + 60, middle.start + 90),
        "crossfade": _span(fade.byte_offset + 2, fade.byte_offset + fade.byte_length),
        "pad and segment": {pad: 0x01, middle.start + 9: 0x08, middle.stop - 2: 0x08},
        "every data byte": _span(m.data_offset, pad),
    }[where]
    _assert_first_diffs_reported(result, parts, changes)


@st.composite
def tamperings(draw: st.DrawFn, size: int) -> dict[int, int]:
    """Changes to a file of `size` bytes: scattered bytes, one range, or both."""
    offsets = draw(st.sets(st.integers(0, size - 1), max_size=12))
    if draw(st.booleans()):
        start = draw(st.integers(0, size - 1))
        offsets |= set(range(start, min(size, start + draw(st.integers(2, 400)))))
    if len(offsets) < 2:
        offsets |= {0, size - 1}
    masks = st.integers(1, 255)
    return {offset: draw(masks) for offset in sorted(offsets)}


@pytest.mark.parametrize(
    "examples",
    [pytest.param(100, id="fast"), pytest.param(2000, id="thorough", marks=pytest.mark.slow)],
)
def test_random_multi_byte_tampering_reports_every_regions_first_difference(
    examples: int,
) -> None:
    """Any merge, any tampering: the proof points at the first changed byte of each region."""

    @settings(max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(spec=part_lists(), mode=st.sampled_from(["exact", "hybrid"]), data=st.data())
    def prop(spec: tuple[AudioFormat, list], mode: str, data: st.DataObject) -> None:
        fmt, parts = spec
        result = bitmerge_semantic(parts, gap_ms=2, mode=mode, format=fmt)
        _assert_first_diffs_reported(result, parts, data.draw(tamperings(len(result.wav))))

    prop()


# --- keys_match: the decision is hmac.compare_digest's -------------------------------------
# `==` and `compare_digest` give the same answers on str and bytes, so no choice of keys can
# tell them apart by result. The stand-in below records each comparison and answers the
# real result, or a forced one: a decision that follows the forced answers comes from
# `compare_digest`; one that ignores them was made some other way (`==`, `in`, a dict).

REAL_COMPARE = hmac.compare_digest


class RecordingCompare:
    """`hmac.compare_digest` that records its calls and may answer a forced result."""

    def __init__(self, answers: Callable[[bool], bool] = lambda real: real) -> None:
        self.answers = answers
        self.calls: list[tuple[bytes, bytes, bool]] = []

    def __call__(self, given: bytes, expected: bytes) -> bool:
        answer = self.answers(REAL_COMPARE(given, expected))
        self.calls.append((given, expected, answer))
        return answer


def decide(given: str | None, expected: str, compare: RecordingCompare) -> bool:
    """`auth.keys_match(given, expected)` with `compare` in place of `hmac.compare_digest`."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(auth.hmac, "compare_digest", compare)
        return auth.keys_match(given, expected)


KEYS = st.one_of(st.none(), st.text(max_size=12), st.sampled_from(["clé", "s3cret", ""]))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(given=KEYS, expected=st.text(min_size=1, max_size=12) | st.just("clé"), data=st.data())
def test_key_decision_is_the_or_of_the_constant_time_comparisons(
    given: str | None, expected: str, data: st.DataObject
) -> None:
    """A key check that compares with `==` (timing leak) on the side is caught."""
    compare = RecordingCompare(lambda real: data.draw(st.booleans(), label="answer"))
    decision = decide(given, expected, compare)
    assert decision is any(answer for _, _, answer in compare.calls)
    text = given or ""
    sent = [text.encode()]
    if all(ord(c) < 256 for c in text):  # what the bytes of an HTTP header decode to
        sent.append(text.encode("latin-1"))
    assert [(g, e) for g, e, _ in compare.calls] == [(s, expected.encode()) for s in sent]


@pytest.mark.parametrize("key", ["s3cret-key", "clé-ü-🔑", "clé"])
def test_right_key_is_refused_when_compare_digest_says_no(key: str) -> None:
    """The right key is let in only because `compare_digest` said so, never by `==`."""
    real = RecordingCompare()
    assert decide(key, key, real) is True
    assert any(answer for _, _, answer in real.calls)
    assert decide(key, key, RecordingCompare(lambda real: False)) is False


@pytest.mark.parametrize("wrong", [None, "", "s3cret-keY", "s3cret-ke", "x" * 64])
def test_wrong_key_is_accepted_when_compare_digest_says_yes(wrong: str | None) -> None:
    """A wrong key is refused only because `compare_digest` said so, never by `==`."""
    assert decide(wrong, "s3cret-key", RecordingCompare()) is False
    assert decide(wrong, "s3cret-key", RecordingCompare(lambda real: True)) is True
