"""Different spoken texts never share a stem, and an engine refuses what it cannot speak.

The stem id used to be the slug alone, so "Lucía" and "Lúcia", two names cut at 64
characters, and "李Wei" / "Wei" shared one audio file while the manifest said verified.
These tests act as a user uploading such names, as an attacker sending hostile text, and
as an operator upgrading a wave-1 cache; the rule itself is in `hybrid_audio/stems.py`.
"""

# ruff: noqa: F811  (server fixtures are imported by name)

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import pytest

from hybrid_audio.cache import StemCache
from hybrid_audio.config import Settings
from hybrid_audio.contract import VoiceContract
from hybrid_audio.database import Database
from hybrid_audio.engines import create_engine
from hybrid_audio.generation import Generator
from hybrid_audio.migrations import MIGRATIONS, STEMS_AND_CURSORS
from hybrid_audio.stems import StemId, normalize
from hybrid_audio.wav import read_wav
from tests.api_server import ApiServer, api, api_server  # noqa: F401
from tests.audio_factory import make_wav

REPO = Path(__file__).resolve().parents[2]
#: Two developers whose names differ only after the 64th character.
NORTH = "Brightwater Homes Residential Developments of Greater Southern California North"
SOUTH = NORTH.removesuffix("North") + "South"


def shipped_fold_pairs() -> list[tuple[str, str]]:
    """Different names of the shipped dataset that fold to one slug ("Lucía" / "Lúcia")."""
    by_slug: dict[str, list[str]] = defaultdict(list)
    for line in (REPO / "data" / "common_names.txt").read_text(encoding="utf-8").splitlines():
        name = line.strip()
        if name and not name.startswith("#") and name not in by_slug[normalize(name)]:
            by_slug[normalize(name)].append(name)
    return [(names[0], names[1]) for names in by_slug.values() if len(names) == 2]


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- ids -------------------------------------------------------------------------------------


def test_shipped_names_that_fold_alike_get_distinct_ids() -> None:
    """Accent pairs of the shipped names dataset never share a stem id."""
    pairs = shipped_fold_pairs()
    assert len(pairs) >= 8, pairs  # Lucía/Lúcia, Inés/Inês, Zoë/Zoé, María/Maria…
    for first, second in pairs:
        assert StemId.for_text("name", first) != StemId.for_text("name", second), (first, second)


def test_names_cut_at_64_characters_keep_their_own_ids() -> None:
    """Two names equal in their first 64 characters are two stems."""
    north, south = StemId.for_text("developer", NORTH), StemId.for_text("developer", SOUTH)
    assert north != south
    assert north.slug.partition("__")[0] == south.slug.partition("__")[0]  # same readable part


# --- audio, with the real Piper engine -------------------------------------------------------


@pytest.fixture(scope="module")
def generator(tmp_path_factory: pytest.TempPathFactory) -> Generator:
    settings = Settings(base_dir=tmp_path_factory.mktemp("identity"))
    return Generator.from_settings(settings, engine=create_engine(Settings(tts_engine="piper")))


@pytest.mark.slow
def test_shipped_accent_pairs_get_their_own_audio(generator: Generator) -> None:
    """Each name of an accent pair is spoken from its own text into its own file."""
    stems = Path(generator.settings.stems_dir)
    differ = set()
    for first, second in shipped_fold_pairs():
        one, two = generator.generate_name(first), generator.generate_name(second)
        assert (one.text, two.text) == (first, second)
        assert one.stem_id != two.stem_id
        assert one.path != two.path
        assert generator.generate_name(first).stem_id == one.stem_id  # found again, same id
        if sha256_of(stems / one.path) != sha256_of(stems / two.path):
            differ.add(first)
    # The English voice reads some accents alike (Lucía / Lúcia); these two it does not.
    assert {"Inés", "Zoë"} <= differ, differ


@pytest.mark.slow
def test_names_cut_at_64_characters_get_their_own_audio(generator: Generator) -> None:
    """Two long names that used to share one file now each have their own audio."""
    north, south = generator.generate_developer(NORTH), generator.generate_developer(SOUTH)
    stems = Path(generator.settings.stems_dir)
    assert north.stem_id != south.stem_id
    assert sha256_of(stems / north.path) != sha256_of(stems / south.path)


def test_piper_refuses_han_instead_of_dropping_it(generator: Generator) -> None:
    """ "李Wei" is not spoken as "Wei"; the refusal names the character."""
    with pytest.raises(ValueError, match=r"'李' \(U\+674E CJK UNIFIED IDEOGRAPH-674E\)"):
        generator.generate_name("李Wei")
    assert generator.cache.get(StemId.for_text("name", "李Wei")) is None


@pytest.mark.parametrize(
    "text",
    ["Иван", "محمد", "\u202eevil", "Zo\ufeffe", "Ana\ue000"],
    ids=["cyrillic", "arabic", "rtl-override", "bom", "private-use"],
)
def test_piper_refuses_what_its_voice_cannot_speak(generator: Generator, text: str) -> None:
    """Other scripts and invisible or private characters are refused, not folded away."""
    with pytest.raises(ValueError, match="cannot speak"):
        generator.generate_name(text)


def test_an_edited_script_phrase_is_spoken_again(generator: Generator) -> None:
    """A script key keeps its id, but a stem of its old phrase is never served for a new one."""
    old = generator.generate("script", "Hi", slug_source="greeting")
    new = generator.generate("script", "Hello there", slug_source="greeting")
    assert (new.stem_id, new.text, new.cached) == (old.stem_id, "Hello there", False)
    assert new.sha256 != old.sha256


# --- through the real server -----------------------------------------------------------------


def _error(response: httpx.Response) -> str:
    assert response.status_code == 422, response.text
    return response.json()["error"]["message"]


def test_han_name_is_a_clear_422_from_the_server(api: httpx.Client) -> None:
    """POST /generate/name with "李Wei" is refused by Piper with the character named."""
    message = _error(api.post("/generate/name", json={"name": "李Wei"}))
    assert "cannot speak" in message, message
    assert "'李' (U+674E" in message, message
    listed = {s["stem_id"] for s in api.get("/cache/list", params={"kind": "name"}).json()}
    assert not any(stem_id.startswith("stem.name.wei") for stem_id in listed)


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("😀😀", "nothing to speak"),
        ("\u202eevil", "U+202E"),
        ("a\x00b", "control characters"),
        ("a" * 10_240, "256"),
    ],
    ids=["emoji", "rtl-override", "nul", "10kB"],
)
def test_hostile_names_are_refused(api: httpx.Client, name: str, fragment: str) -> None:
    """Emoji-only, bidi tricks, control characters and 10 kB names are a 422, not a stem."""
    assert fragment in _error(api.post("/generate/name", json={"name": name}))


def test_traversal_text_maps_to_a_stem_inside_stems(
    api: httpx.Client, api_server: ApiServer
) -> None:
    """A name spelled like a path becomes a disambiguated id whose file is inside stems/."""
    response = api.post("/generate/name", json={"name": "../../etc/passwd"})
    assert response.status_code == 200, response.text
    stem = response.json()["stem"]
    assert stem["stem_id"].startswith("stem.name.etc_passwd__")
    stems = (api_server.base_dir / "stems").resolve()
    assert (stems / stem["path"]).resolve().parent == stems / "name"


def _name_source(api: httpx.Client, name: str) -> dict[str, Any]:
    response = api.post(
        "/assemble/template",
        json={"template": "single_anchor", "name": name, "developer": "Hilton Ridge"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["verified"] is True
    manifest = api.get(f"/assemble/outputs/{response.json()['id']}").json()
    stems = [s for s in manifest["sources"] if s["kind"] == "stem"]
    (source,) = [s for s in stems if s["stem_id"].startswith("stem.name.")]
    return source


def test_manifests_of_accent_variants_name_different_stems(api: httpx.Client) -> None:
    """Messages for "Lucía" and "Lúcia" are assembled from two different name stems."""
    lucia, lucia_pt = _name_source(api, "Lucía"), _name_source(api, "Lúcia")
    assert lucia["stem_id"] != lucia_pt["stem_id"]
    assert lucia["path"] != lucia_pt["path"]
    assert lucia["stem_id"] == str(StemId.for_text("name", "Lucía"))


# --- upgrading a wave-1 cache ----------------------------------------------------------------


def _wave1_cache(root: Path, rows: dict[str, str]) -> VoiceContract:
    """A wave-1 state: user_version 0, one row per `{old id: text}`, each with its file."""
    contract = VoiceContract(voice="v1", engine_version="test 1")
    scratch = StemCache(
        stems_dir=root / "scratch", database_path=root / "scratch.sqlite3", contract=contract
    )
    (root / "state").mkdir()
    db = sqlite3.connect(root / "state" / "index.sqlite3")
    db.executescript(STEMS_AND_CURSORS)
    for seed, (stem_id, text) in enumerate(rows.items()):
        audio = read_wav(make_wav(contract.audio_format, 2205, seed=seed))
        record = scratch.store(stem_id, text, audio)
        wave1_columns = [row[1] for row in db.execute("PRAGMA table_info(stems)")]
        values = {column: getattr(record, column) for column in wave1_columns}
        columns = ", ".join(values)
        db.execute(
            f"INSERT INTO stems ({columns}) VALUES ({', '.join('?' * len(values))})",
            [*values.values()],
        )
        target = root / "stems" / record.path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(scratch.stems_dir) / record.path, target)
    db.commit()
    assert db.execute("PRAGMA user_version").fetchone()[0] == 0
    db.close()
    return contract


WAVE1_ROWS = {
    "stem.name.lucia": "Lucía",
    "stem.name.john": "John",
    "stem.developer.cedar_stone_builders": "Cedar & Stone Builders",
}


def _open(root: Path, contract: VoiceContract) -> StemCache:
    return StemCache(
        stems_dir=root / "stems", database_path=root / "state" / "index.sqlite3", contract=contract
    )


def test_wave1_cache_is_rekeyed_and_keeps_its_audio(tmp_path: Path) -> None:
    """After the upgrade "Lucía" is found under its new id with its old audio; nothing lost."""
    contract = _wave1_cache(tmp_path, WAVE1_ROWS)
    old_audio = (tmp_path / "stems" / "name" / "stem.name.lucia.wav").read_bytes()
    cache = _open(tmp_path, contract)
    assert cache._db.schema_version() == len(MIGRATIONS)
    lucia = cache.lookup(StemId.for_text("name", "Lucía"))
    assert lucia is not None
    assert lucia.text == "Lucía"
    assert (Path(cache.stems_dir) / lucia.path).read_bytes() == old_audio
    assert cache.get("stem.name.lucia") is None  # free for "Lucia"
    assert cache.lookup("stem.name.john") is not None  # unchanged ids stay valid
    assert cache.lookup(StemId.for_text("developer", "Cedar & Stone Builders")) is not None
    assert cache.verify().ok, cache.verify()


def test_wave1_upgrade_interrupted_between_row_and_file_is_finished(tmp_path: Path) -> None:
    """A migration that ran (rows re-keyed) but whose file moves did not is completed later."""
    contract = _wave1_cache(tmp_path, WAVE1_ROWS)
    Database(tmp_path / "state" / "index.sqlite3").connection()  # e.g. the rotation first
    old = tmp_path / "stems" / "name" / "stem.name.lucia.wav"
    assert old.exists()  # rows re-keyed, file not moved yet
    new = tmp_path / "stems" / "name" / f"{StemId.for_text('name', 'Lucía')}.wav"
    old.rename(new)  # ...and a crash right after the move, before its record was cleared
    cache = _open(tmp_path, contract)
    assert cache.lookup(StemId.for_text("name", "Lucía")) is not None
    assert cache.verify().ok, cache.verify()
    assert _open(tmp_path, contract).verify().ok  # opening again changes nothing
