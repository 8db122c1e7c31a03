"""Datasets: the shipped files, dedup by stem id, and imports that refuse bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hybrid_audio.config import Settings
from hybrid_audio.datasets import (
    DatasetError,
    dataset_from_texts,
    import_dataset,
    load_dataset,
    parse_dataset,
)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(base_dir=tmp_path)


def test_shipped_datasets_load() -> None:
    settings = Settings(base_dir=REPO)
    names = load_dataset("name", settings)
    assert len(names) >= 300
    assert "José" in names.texts()
    assert "José María" in names.texts()
    assert any(t in names.texts() for t in ("João", "Gonçalo"))
    assert not names.rejected
    assert len(load_dataset("developer", settings)) >= 20
    scripts = load_dataset("script", settings)
    assert {i.key for i in scripts.items} >= {"hello", "offer"}


def test_collisions_keep_the_first_and_are_reported() -> None:
    dataset = parse_dataset("José\nJose\nZoë\nZoé\nJohn\njohn\nAna\n", "name", ".txt")
    assert dataset.texts() == ["José", "Jose", "Zoë", "Zoé", "John", "Ana"]
    assert dataset.collisions == [("John", "john", "stem.name.john")]


def test_unusable_entries_are_rejected_with_their_line() -> None:
    dataset = parse_dataset("Ana\n😀\n\n# comment\nمحمد\nBob", "name", ".txt")
    assert dataset.texts() == ["Ana", "محمد", "Bob"]  # the engine decides if it can speak it
    assert [(line, text) for line, text, _ in dataset.rejected] == [(2, "😀")]


def test_csv_and_json_forms() -> None:
    assert parse_dataset('name\nAna\n"Mary, Jr"\n', "name", ".csv").texts() == ["Ana", "Mary, Jr"]
    assert parse_dataset('["Ana", "Bob"]', "developer", ".json").texts() == ["Ana", "Bob"]
    scripts = parse_dataset("key,phrase\nhello,Hi there\n", "script", ".csv")
    assert [(i.key, i.text, str(i.stem_id)) for i in scripts.items] == [
        ("hello", "Hi there", "stem.script.hello")
    ]


@pytest.mark.parametrize(
    ("raw", "kind", "suffix", "message"),
    [
        ("Ana\nBob,Smith\n", "name", ".csv", r"<upload>:2: expected one name per row"),
        ('["Ana", 3]', "name", ".json", "item 2 is 3"),
        ('{"a": 1}', "name", ".json", "expected a JSON list"),
        ('[\n"Ana",\n', "name", ".json", r"<upload>:3: invalid JSON"),
        ("hello,Hi,extra\n", "script", ".csv", r"<upload>:1: expected 'key,phrase'"),
        ('["Hi"]', "script", ".json", "scripts must be a JSON object"),
        ("hello", "script", ".txt", "scripts need key and phrase"),
        ("Ana", "name", ".xlsx", "unsupported file type"),
        ("Ana", "voice", ".txt", "unknown dataset kind"),
    ],
)
def test_malformed_files_are_refused_with_where(raw, kind, suffix, message) -> None:
    with pytest.raises(DatasetError, match=message):
        parse_dataset(raw, kind, suffix)


def test_import_replaces_the_dataset_atomically(settings: Settings, tmp_path: Path) -> None:
    upload = tmp_path / "names.csv"
    upload.write_text("name\nÁlvaro\nAlvaro\nInês\n", encoding="utf-8")
    dataset = import_dataset("name", upload, settings)
    assert dataset.texts() == ["Álvaro", "Alvaro", "Inês"]  # two names, two stems
    assert load_dataset("name", settings).texts() == ["Álvaro", "Alvaro", "Inês"]


def test_import_scripts_from_json(settings: Settings, tmp_path: Path) -> None:
    upload = tmp_path / "s.json"
    upload.write_text(json.dumps({"hello": "Hola", "bye": "Adiós"}), encoding="utf-8")
    import_dataset("script", upload, settings)
    assert json.loads(settings.scripts_file.read_text()) == {"hello": "Hola", "bye": "Adiós"}


def test_a_bad_import_leaves_the_old_dataset(settings: Settings, tmp_path: Path) -> None:
    good = tmp_path / "good.txt"
    good.write_text("Ana\n")
    import_dataset("name", good, settings)
    for body, name in (
        (b"\xff\xfe\x00bad", "bad.txt"),
        (b"Ana\nBo,b\n", "bad.csv"),
        (b"\n", "e.txt"),
    ):
        bad = tmp_path / name
        bad.write_bytes(body)
        with pytest.raises(DatasetError):
            import_dataset("name", bad, settings)
    assert load_dataset("name", settings).texts() == ["Ana"]
    assert [p.name for p in settings.data_dir.iterdir()] == ["common_names.txt"]


def test_missing_dataset_file_is_a_clear_error(settings: Settings) -> None:
    with pytest.raises(DatasetError, match="dataset file not found"):
        load_dataset("developer", settings)


def test_texts_given_directly_have_no_file_syntax() -> None:
    dataset = dataset_from_texts("developer", ["#1 Homes", "Smith, Jones & Co", " ", "#1 homes"])
    assert dataset.texts() == ["#1 Homes", "Smith, Jones & Co"]
    assert dataset.collisions == [("#1 Homes", "#1 homes", "stem.developer.1_homes__4d797f32c8")]
