"""Pronunciation fixes over real Piper and SQLite: the stem changes, removal restores it,
messages made before a fix are reported stale (and say why), other processes see the fix."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from hybrid_audio import staleness
from hybrid_audio.config import Settings
from hybrid_audio.engines import EngineConfigError
from hybrid_audio.workspace import Workspace
from tests.api_server import TINY_DATASETS, make_base_dir


@pytest.fixture
def base(tmp_path: Path) -> Path:
    return make_base_dir(tmp_path / "base", TINY_DATASETS)


@pytest.fixture
def workspace(base: Path, piper) -> Workspace:
    workspace = Workspace.build(Settings(base_dir=base), engine=piper)
    yield workspace
    workspace.close()


def test_an_entry_changes_the_stem_and_its_removal_restores_the_bytes(
    workspace: Workspace,
) -> None:
    before = workspace.generator.generate("developer", "Acme Homes")
    file = Path(workspace.settings.stems_dir) / before.path
    original = file.read_bytes()
    untouched = workspace.generator.generate("developer", "Beta Builders")

    fix = staleness.apply_fix(workspace, "acme", respelling="Akmee")

    assert [r.stem_id for r in fix.regenerated] == [before.stem_id]
    after = workspace.cache.get(before.stem_id)
    assert after.sha256 != before.sha256
    assert file.read_bytes() != original
    assert after.spoken_as == "Akmee Homes"
    assert after.pronunciation == workspace.generator.pronounce("Acme Homes").entry_hash != ""
    assert after.text == "Acme Homes"  # the stem still stands for the written text
    # the audio is what the respelling says: the same bytes as a stem of "Akmee Homes"
    assert after.sha256 == workspace.generator.generate("developer", "Akmee Homes").sha256
    assert workspace.cache.get(untouched.stem_id).sha256 == untouched.sha256

    removal = staleness.remove_fix(workspace, "ACME")

    assert removal.removed
    assert removal.entry.text == "acme"
    assert [r.stem_id for r in removal.regenerated] == [before.stem_id]
    restored = workspace.cache.get(before.stem_id)
    assert restored.sha256 == before.sha256
    assert restored.pronunciation == ""
    assert file.read_bytes() == original
    assert staleness.remove_fix(workspace, "acme").removed is False


def test_piper_phonemes_go_through_its_raw_phoneme_syntax(workspace: Workspace) -> None:
    """Bob said with the espeak phonemes of Cid sounds exactly like Cid."""
    cid = workspace.generator.generate("name", "Cid")
    workspace.generator.generate("name", "Bob")

    fix = staleness.apply_fix(workspace, "Bob", phonemes={"piper": "sˈɪd"})

    (bob,) = fix.regenerated
    assert bob.spoken_as == "[[ sˈɪd ]]"
    assert bob.sha256 == cid.sha256
    assert fix.failed == []


def test_an_entry_for_another_engine_leaves_the_stem_alone(workspace: Workspace) -> None:
    ann = workspace.generator.generate("name", "Ann")
    fix = staleness.apply_fix(workspace, "Ann", phonemes={"cartesia": "æ|n"})
    assert fix.regenerated == []
    assert fix.failed == []
    assert workspace.cache.get(ann.stem_id).updated_at == ann.updated_at


def test_a_message_made_before_a_fix_is_stale_and_says_why(workspace: Workspace) -> None:
    assembler = workspace.assembler
    old = assembler.assemble("double_anchor", name="Ann", developer="Acme Homes").summary.id
    assert staleness.stale_stems_of(workspace, assembler.load_output(old)) == []
    assert staleness.stale_outputs(workspace) == []

    staleness.apply_fix(workspace, "Acme", respelling="Akmee", regenerate=False)
    stale = staleness.stale_stems_of(workspace, assembler.load_output(old))
    assert [(s.stem_id, s.text, s.reason) for s in stale] == [
        ("stem.developer.acme_homes", "Acme Homes", staleness.ENTRY_CHANGED)
    ]

    fix = staleness.apply_fix(workspace, "Acme", respelling="Ackmee")
    assert [(o.output_id, [s.reason for s in o.stems]) for o in fix.stale_outputs] == [
        (old, [staleness.REMADE])
    ]

    new = assembler.assemble("double_anchor", name="Ann", developer="Acme Homes").summary.id
    assert staleness.stale_stems_of(workspace, assembler.load_output(new)) == []
    assert [o.output_id for o in staleness.stale_outputs(workspace)] == [old]

    workspace.cache.invalidate("stem.name.ann")
    reasons = {
        o.output_id: [(s.stem_id, s.reason) for s in o.stems]
        for o in staleness.stale_outputs(workspace)
    }
    assert reasons == {  # Ann is heard twice in the template: reported once
        new: [("stem.name.ann", staleness.GONE)],
        old: [("stem.name.ann", staleness.GONE), ("stem.developer.acme_homes", staleness.REMADE)],
    }
    assert [o.output_id for o in staleness.stale_outputs(workspace, offset=1, limit=1)] == [old]


def test_stale_outputs_using_given_stems_parse_only_the_manifests_naming_them(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fix's report lists the messages stale in its stems, with those stems only; the
    manifests that do not name one are read but not parsed."""
    assembler = workspace.assembler
    ann = assembler.assemble("double_anchor", name="Ann", developer="Acme Homes").summary.id
    bob = assembler.assemble("double_anchor", name="Bob", developer="Beta Builders").summary.id
    workspace.cache.invalidate("stem.name.ann")
    workspace.cache.invalidate("stem.developer.beta_builders")
    everything = {
        o.output_id: [s.stem_id for s in o.stems] for o in staleness.stale_outputs(workspace)
    }
    assert everything == {ann: ["stem.name.ann"], bob: ["stem.developer.beta_builders"]}
    parsed: list[str] = []
    real = staleness.json.loads

    def loads(data: bytes) -> object:
        document = real(data)
        parsed.append(document["id"])
        return document

    monkeypatch.setattr(staleness.json, "loads", loads)
    for using, expected in (
        ({"stem.name.ann"}, {ann: ["stem.name.ann"]}),
        ({"stem.name.an"}, {}),  # a prefix of an id names nothing
        ({"stem.developer.acme_homes"}, {}),  # used by Ann's message, and current
        ({"stem.name.ann", "stem.developer.beta_builders"}, everything),
    ):
        parsed.clear()
        listed = staleness.stale_outputs(workspace, limit=None, using=using)
        assert {o.output_id: [s.stem_id for s in o.stems] for o in listed} == expected
        named = {ann} if using & {"stem.name.ann", "stem.developer.acme_homes"} else set()
        named |= {bob} if "stem.developer.beta_builders" in using else set()
        assert set(parsed) == named


def test_a_script_stem_is_made_again_under_its_key(workspace: Workspace) -> None:
    """Script stems are named by their key, not their phrase: the fix keeps the id."""
    hello = workspace.generator.generate_script("hello")

    fix = staleness.apply_fix(workspace, "Hi", respelling="Hey")

    assert [(r.stem_id, r.spoken_as) for r in fix.regenerated] == [(hello.stem_id, "Hey")]
    assert workspace.cache.get(hello.stem_id).sha256 != hello.sha256


def test_stems_using_matches_whole_words_any_case(workspace: Workspace) -> None:
    for kind, text in (("developer", "Acme Homes"), ("developer", "Beta Builders")):
        workspace.generator.generate(kind, text)
    workspace.generator.generate("name", "Ann")
    assert [r.text for r in staleness.stems_using(workspace, "ACME")] == ["Acme Homes"]
    assert [r.text for r in staleness.stems_using(workspace, "acme homes")] == ["Acme Homes"]
    assert staleness.stems_using(workspace, "Acm") == []  # a part of a word is not the word
    assert staleness.stems_using(workspace, "An") == []
    # a stem whose entry went away without regeneration is listed whatever the text asked
    staleness.apply_fix(workspace, "Ann", respelling="Anne")
    staleness.remove_fix(workspace, "Ann", regenerate=False)
    assert {r.text for r in staleness.stems_using(workspace, "Beta")} == {"Ann", "Beta Builders"}


def test_a_stem_that_fails_is_reported_and_keeps_its_audio(workspace: Workspace) -> None:
    """A script whose phrase left the dataset cannot be made again; the others go on."""
    hello = workspace.generator.generate_script("hello")
    ann = workspace.generator.generate("name", "Ann")
    scripts = Path(workspace.settings.scripts_file)
    scripts.write_text('{"offer": "has a new offer for you"}\n', encoding="utf-8")

    fix = staleness.apply_fix(workspace, "Hi", respelling="Hey")
    assert fix.regenerated == []
    assert len(fix.failed) == 1
    assert fix.failed[0].startswith(f"{hello.stem_id}: ")
    assert workspace.cache.get(hello.stem_id).sha256 == hello.sha256

    fix = staleness.apply_fix(workspace, "Ann", respelling="Anne")
    assert [r.stem_id for r in fix.regenerated] == [ann.stem_id]


def test_bad_entries_are_refused_and_store_nothing(workspace: Workspace) -> None:
    hostile = [  # (text, phonemes, what the error names)
        ("", {}, "nothing to speak"),
        ("x" * 10_000, {}, "at most 256"),
        ("Ann", {"piper": "[[ a ]] b"}, "the engines' own syntax"),
        ("Ann<<x>>", {}, "the engines' own syntax"),
        ("Ann", {"espeak": "a"}, "unknown engines"),
        ("Ann\x00", {}, "control characters"),
        ("Ann", {"piper": "a\x1bn"}, "piper phonemes contains control characters"),
        ("🎉🎉", {}, "nothing to speak"),
    ]
    for text, phonemes, problem in hostile:
        respelling = "" if phonemes else "Anne"
        with pytest.raises(ValueError, match=problem):
            staleness.apply_fix(workspace, text, respelling=respelling, phonemes=phonemes)
    with pytest.raises(ValueError, match="needs a respelling or phonemes"):
        staleness.apply_fix(workspace, "Ann")
    assert workspace.pronunciations.list() == []


def test_another_workspace_on_the_same_folder_sees_the_fix(base: Path, piper) -> None:
    first = Workspace.build(Settings(base_dir=base), engine=piper)
    second = Workspace.build(Settings(base_dir=base), engine=piper)
    try:
        made = first.generator.generate("developer", "Acme Homes")
        seen = second.pronunciations.revision
        staleness.apply_fix(first, "Acme", respelling="Akmee")
        second.refresh()
        assert second.pronunciations.revision > seen
        assert second.generator.pronounce("Acme Homes").entries == ["Acme"]
        # the other workspace uses the stem made with the fix, without synthesizing it again
        again = second.generator.generate("developer", "Acme Homes")
        assert again.cached
        assert again.sha256 != made.sha256
        assert again.spoken_as == "Akmee Homes"
    finally:
        first.close()
        second.close()


def test_two_fixes_at_once_leave_the_stem_as_the_last_entry_says(workspace: Workspace) -> None:
    workspace.generator.generate("developer", "Acme Homes")
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def fix(respelling: str) -> None:
        barrier.wait()
        try:
            staleness.apply_fix(workspace, "Acme", respelling=respelling)
        except BaseException as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=fix, args=(r,)) for r in ("Akmee", "Ackmee")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    row = workspace.cache.get("stem.developer.acme_homes")
    entry = workspace.pronunciations.get("acme")
    assert row.spoken_as == f"{entry.respelling} Homes"
    assert row.pronunciation == workspace.generator.pronounce("Acme Homes").entry_hash


def test_entries_match_their_text_under_full_case_folding(workspace: Workspace) -> None:
    """An entry for "Straße" (casefolded: "strasse") applies to "Straße"; an entry for
    "Istanbul" meets the dotted "İstanbul" (two characters once casefolded) without error."""
    dictionary = workspace.pronunciations
    dictionary.set("Straße", respelling="Strahsseh")
    dictionary.set("Istanbul", respelling="Iss tan bool")
    dictionary.set("Nguyen", respelling="Win")

    assert dictionary.resolve("Straße Homes", "piper").engine_text == "Strahsseh Homes"
    assert dictionary.resolve("STRASSE", "piper").engine_text == "Strahsseh"
    assert dictionary.resolve("İstanbul Nguyen", "piper").engine_text == "Iss tan bool Win"
    assert [r.text for r in staleness.stems_using(workspace, "Straße")] == []
    made = workspace.generator.generate("developer", "Straße Homes")
    assert made.spoken_as == "Strahsseh Homes"
    assert [r.text for r in staleness.stems_using(workspace, "Straße")] == ["Straße Homes"]


def test_a_name_cannot_carry_the_engines_own_syntax(workspace: Workspace) -> None:
    """Only an entry's phonemes reach the engine as phonemes: `[[ ]]` or `<< >>` written in
    a name, or made by two respellings side by side, is given to the engine as plain text."""
    dictionary = workspace.pronunciations
    assert workspace.generator.pronounce("Bob [[ sˈɪd ]]").engine_text == "Bob [ [ sˈɪd ] ]"
    assert dictionary.resolve("Ann <<s|ɪ|d>>", "cartesia").engine_text == "Ann < <s|ɪ|d> >"
    dictionary.set("Foo.", respelling="Fu [")
    dictionary.set(".Bar", respelling="[ Ba")
    said = dictionary.resolve("Foo..Bar", "piper").engine_text
    assert said == "Fu [ [ Ba"
    dictionary.set("Bob", phonemes={"piper": "sˈɪd"})
    assert dictionary.resolve("[Bob]", "piper").engine_text == "[ [[ sˈɪd ]] ]"
    # Piper reads a name's `[[ bˈɑːb ]]` as phonemes: "Cid Bob"; it is said as written
    named = workspace.generator.generate("name", "Cid [[ bˈɑːb ]]")
    assert named.spoken_as == "Cid [ [ bˈɑːb ] ]"  # recorded: not the text as written
    assert named.sha256 != workspace.generator.generate("name", "Cid Bob").sha256
    assert named.sha256 == workspace.generator.generate("name", "Cid [ bˈɑːb ]").sha256


def test_a_generation_waiting_through_a_fix_makes_the_stem_with_the_fix(
    workspace: Workspace,
) -> None:
    """A stem asked for before a fix and made after it (it waited for the stem's lock, held
    by the fix's own regeneration or another process) is made with the entry, never stored
    with the dictionary as it was when it was asked for."""
    from hybrid_audio.files import stem_lock

    generator = workspace.generator
    made: list = []
    with stem_lock(workspace.settings.state_dir, "stem.name.bob"):
        asker = threading.Thread(target=lambda: made.append(generator.generate("name", "Bob")))
        asker.start()
        asker.join(timeout=1.0)  # it looked, missed, and now waits for the lock
        assert asker.is_alive()
        workspace.pronunciations.set("Bob", respelling="Cid")
    asker.join()

    (bob,) = made
    assert bob.spoken_as == "Cid"
    assert bob.pronunciation == generator.pronounce("Bob").entry_hash
    assert generator.current("name", "Bob") is not None


def test_an_apostrophe_inside_a_word_keeps_it_one_word(workspace: Workspace) -> None:
    """An entry for the name "Can" fixes "Can" and the possessive "Can's", not the "can't"
    of a script, nor "Brien" inside "O'Brien"; a hyphen joins two words, each fixable."""
    dictionary = workspace.pronunciations
    dictionary.set("Can", respelling="Jahn")
    dictionary.set("Brien", respelling="Bryan")
    dictionary.set("Nguyen", respelling="Win")

    def said(text: str) -> str:
        return dictionary.resolve(text, "piper").engine_text

    assert said("Can and Can's offer") == "Jahn and Jahn's offer"
    assert said("You can't miss it, you can’t") == "You can't miss it, you can’t"
    assert said("O'Brien and Brien") == "O'Brien and Bryan"
    assert said("Smith-Nguyen 'Nguyen'") == "Smith-Win 'Win'"


class _Unconfigured:
    """An engine whose configuration is broken: every synthesis fails the same way."""

    def __init__(self, engine) -> None:
        self.name = engine.name
        self.version = engine.version
        self._engine = engine

    def describe(self) -> dict[str, str]:
        return self._engine.describe()

    def synthesize(self, text, contract):
        raise EngineConfigError("the voice file is gone")


def test_a_fix_job_advances_per_stem_and_stops_trying_after_a_configuration_error(
    workspace: Workspace,
) -> None:
    """Run as a job, a fix shows one step per stem it makes again; when the engine's
    configuration fails (every stem would fail alike), the first stem carries the error and
    the rest are reported as not tried — the stored audio is kept, the job still ends."""
    ann = workspace.generator.generate("name", "Ann")
    homes = workspace.generator.generate("developer", "Ann Homes")
    workspace.generator.engine = _Unconfigured(workspace.generator.engine)

    job = workspace.jobs.submit(
        "pronunciation",
        lambda job: staleness.apply_fix(workspace, "Ann", "Anne", job=job).model_dump(),
    )
    job = workspace.jobs.wait(job.id, timeout=60)

    assert job.state == "done", job.message
    assert (job.done, job.total, job.error_count) == (2, 2, 2)
    first, second = sorted(job.result["failed"])
    assert "the voice file is gone" in first
    assert "not tried after the voice file is gone" in second
    assert workspace.cache.get(ann.stem_id).sha256 == ann.sha256
    assert workspace.cache.get(homes.stem_id).sha256 == homes.sha256
