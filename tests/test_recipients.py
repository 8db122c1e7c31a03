"""Recipient lists: CSV and JSON parsing, per-row problems by row number, whole-file errors."""

from __future__ import annotations

import pytest

from hybrid_audio import recipients
from hybrid_audio.recipients import (
    RecipientsError,
    parse_recipients,
    recipients_from_dicts,
)

BAD_ROWS_CSV = (
    "id,name,developer,script,email\n"
    "r1,Ann,Acme Homes,hello,a@example.com\n"  # row 1: fine
    "r2,,Acme Homes,,\n"  # row 2: empty name
    "r3,😀🎉,Acme Homes,,\n"  # row 3: emoji only
    "r4,Bob,,,\n"  # row 4: developer missing
    "r1,Cid,Beta Builders,,\n"  # row 5: duplicated id
    "r6,Cid,Beta Builders,nope,\n"  # row 6: unknown script key
    "\n"  # a blank line: no recipient, but the next row keeps its line's number
    "r8,José María,Beta Builders,,\n"  # row 8: fine
)


def test_bad_rows_are_reported_by_row_number_and_the_rest_accepted() -> None:
    parsed = parse_recipients(BAD_ROWS_CSV.encode(), "list.csv", script_keys={"hello"})
    assert [(r.row, r.id, r.name) for r in parsed.rows] == [
        (1, "r1", "Ann"),
        (8, "r8", "José María"),
    ]
    assert parsed.rows[0].script == "hello"
    problems = {p.row: (p.recipient_id, p.message) for p in parsed.problems}
    assert sorted(problems) == [2, 3, 4, 5, 6]
    assert problems[2] == ("r2", "the name is empty")
    assert "cannot be spoken" in problems[3][1]
    assert problems[4] == ("r4", "the developer is empty")
    assert problems[5][1] == "duplicated recipient id 'r1' (first on row 1)"
    assert problems[6][1] == "unknown script key 'nope'"
    assert parsed.ignored_columns == ["email"]
    assert parsed.columns == ["id", "name", "developer", "script", "email"]


def test_script_keys_are_not_checked_without_a_list() -> None:
    parsed = parse_recipients("name,developer,script\nAnn,Acme,anything\n")
    assert [r.script for r in parsed.rows] == ["anything"]


def test_header_case_bom_semicolons_and_quotes() -> None:
    data = '\ufeffName ; DEVELOPER\n"Smith; Ann";"Acme, Inc."\n'.encode()
    parsed = parse_recipients(data, "x.csv")
    assert [(r.row, r.name, r.developer, r.id) for r in parsed.rows] == [
        (1, "Smith; Ann", "Acme, Inc.", None)
    ]


def test_doubled_quotes_inside_a_field_are_one_quote() -> None:
    """RFC 4180: `"Ann ""Nan"" Lee"` is `Ann "Nan" Lee`, whichever separator the file uses
    (the separator was sniffed from the header, which turned doubled quotes off)."""
    for separator in (",", ";"):
        data = f'name{separator}developer\n"Ann ""Nan"" Lee"{separator}"Acme ""A"""\n'
        (row,) = parse_recipients(data.encode(), "x.csv").rows
        assert (row.name, row.developer) == ('Ann "Nan" Lee', 'Acme "A"')


def test_a_cell_spanning_lines_does_not_shift_the_row_numbers() -> None:
    """A quoted cell with line breaks (a CRM "notes" column) is one row, as a spreadsheet
    shows it: the rows after it keep their numbers (they were numbered by the last line of
    each record, so the first row was 2 and every later refused row was off)."""
    data = (
        'name,developer,notes\nAnn,Acme Homes,"called twice\nprefers email"\n'
        ",Acme Homes,\n"  # row 2: empty name
        "Bob,Beta Builders,\n"
    )
    parsed = parse_recipients(data.encode(), "crm.csv")
    assert [(r.row, r.name) for r in parsed.rows] == [(1, "Ann"), (3, "Bob")]
    assert [(p.row, p.message) for p in parsed.problems] == [(2, "the name is empty")]


def test_a_repeated_column_is_refused_not_guessed() -> None:
    with pytest.raises(RecipientsError, match="the column name more than once"):
        parse_recipients(b"name,developer,Name\nAnn,Acme,Bob\n", "x.csv")


def test_json_list_of_objects() -> None:
    data = '[{"name": "Ann", "developer": "Acme", "id": 7}, "junk", {"name": "Bob"}]'
    parsed = parse_recipients(data)
    assert [(r.row, r.id) for r in parsed.rows] == [(1, "7")]
    assert [(p.row, p.message) for p in parsed.problems] == [
        (2, "not an object with name and developer"),
        (3, "the developer is empty"),
    ]
    same = recipients_from_dicts([{"NAME": " Ann ", "Developer": "Acme"}])
    assert same.rows[0].name == "Ann"


@pytest.mark.parametrize(
    ("data", "filename", "message"),
    [
        (b"name,company\nAnn,Acme\n", "a.csv", "no developer column"),
        (b"first,last\n", "a.csv", "no name and no developer column"),
        (b"name,developer\n\xff\xfeAnn,Acme\n", "a.csv", "not UTF-8"),
        (b"PK\x03\x04", "list.xlsx", "must be a .csv or .json"),
        (b"", "a.csv", "is empty"),
        (b'{"name": "Ann"}', "a.json", "list of objects"),
        (b"[{", "a.json", "not valid JSON"),
        (b'[{"name": "Ann"}]', "a.json", "no developer column"),
    ],
)
def test_whole_file_errors(data: bytes, filename: str, message: str) -> None:
    with pytest.raises(RecipientsError, match=message):
        parse_recipients(data, filename)


def test_too_many_rows_is_a_whole_file_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recipients, "MAX_RECIPIENTS", 3)
    assert len(parse_recipients("name,developer\n" + "Ann,Acme\n" * 3).rows) == 3
    with pytest.raises(RecipientsError, match="at most 3 rows"):
        parse_recipients("name,developer\n" + "Ann,Acme\n" * 4)
    with pytest.raises(RecipientsError, match="at most 3 rows"):
        recipients_from_dicts([{"name": "Ann", "developer": "Acme"}] * 4)


def test_a_row_missing_its_developer_cell_is_refused_alone() -> None:
    """A short row (`id,name` with the developer cell left off) is one refused row, like an
    empty cell; a list without a developer column is refused whole (test_whole_file_errors)."""
    parsed = parse_recipients("id,name,developer\nr1,Ann,Acme\nr2,Bob\nr3,Cid,Acme\n", "l.csv")
    assert [r.id for r in parsed.rows] == ["r1", "r3"]
    assert [(p.row, p.recipient_id, p.message) for p in parsed.problems] == [
        (2, "r2", "the developer is empty")
    ]
