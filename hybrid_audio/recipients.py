"""Recipient lists: a campaign's input, parsed from CSV or JSON, checked row by row.

A list has one row per message: `name`, `developer`, optional `script` (a key of the
scripts dataset) and optional `id` (the caller's own recipient id, kept in every output).
Whole-file errors — no `name`/`developer` column, not UTF-8, neither CSV nor JSON, more
than `MAX_RECIPIENTS` rows — raise `RecipientsError`. A bad row never stops the others: it
becomes a `RowProblem` with its row number (the first data row of a CSV is row 1, the first
object of a JSON list too), and the rest go on. Columns other than the four are ignored
and listed in `RecipientList.ignored_columns`, so the caller can say so.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from pydantic import BaseModel

from hybrid_audio.stems import StemId

#: Most rows one list (one campaign) may hold.
MAX_RECIPIENTS = 100_000
#: The columns a list may carry; `name` and `developer` are required.
COLUMNS = ("name", "developer", "script", "id")
REQUIRED = ("name", "developer")


class RecipientsError(ValueError):
    """The file as a whole cannot be read as a recipient list."""


class Recipient(BaseModel):
    """One accepted row: who the message is for."""

    row: int
    id: str | None = None
    name: str
    developer: str
    script: str | None = None


class RowProblem(BaseModel):
    """A refused (or failed) row, by the row number the user sees."""

    row: int
    recipient_id: str | None = None
    message: str


class RecipientList(BaseModel):
    """The accepted rows, the refused ones, and the columns the file had."""

    rows: list[Recipient] = []
    problems: list[RowProblem] = []
    columns: list[str] = []
    ignored_columns: list[str] = []


def parse_recipients(
    data: bytes | str,
    filename: str | None = None,
    *,
    script_keys: Collection[str] | None = None,
) -> RecipientList:
    """A CSV (header required) or JSON (a list of objects) recipient list.

    JSON is recognised by a `.json` file name or a first character `[`; anything else named
    `.csv`/`.txt` or unnamed is read as CSV (comma, semicolon or tab separated). With
    `script_keys`, a row naming another script key is refused (campaigns check again
    against the live scripts dataset either way).
    """
    suffix = (filename or "").rsplit(".", 1)[-1].lower() if filename and "." in filename else ""
    if suffix not in ("", "csv", "txt", "json"):
        raise RecipientsError(f"{filename}: a recipient list must be a .csv or .json file")
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as error:
            raise RecipientsError(
                f"{filename or 'the recipient list'} is not UTF-8 text "
                f"(byte {error.start} cannot be decoded); save it as UTF-8"
            ) from None
    else:
        text = data.removeprefix("\ufeff")
    if suffix == "json" or (not suffix and text.lstrip().startswith("[")):
        return _from_json(text, filename, script_keys)
    return _from_csv(text, filename, script_keys)


def recipients_from_dicts(
    items: Iterable[Mapping[str, Any]], *, script_keys: Collection[str] | None = None
) -> RecipientList:
    """A list of mappings (JSON objects, API bodies) as a recipient list; row = index + 1."""
    checker = _Checker(script_keys)
    columns: dict[str, None] = {}
    for row, item in enumerate(items, start=1):
        _check_size(row)
        if not isinstance(item, Mapping):
            checker.refuse(row, None, "not an object with name and developer")
            continue
        fields = {str(k).strip().lower(): v for k, v in item.items()}
        columns.update(dict.fromkeys(fields))
        checker.add(row, {k: _text(v) for k, v in fields.items()})
    return checker.result(list(columns))


def _from_json(text: str, filename: str | None, keys: Collection[str] | None) -> RecipientList:
    where = filename or "the recipient list"
    try:
        items = json.loads(text)
    except json.JSONDecodeError as error:
        raise RecipientsError(f"{where} is not valid JSON: {error}") from None
    if not isinstance(items, list):
        raise RecipientsError(f"{where}: JSON recipients must be a list of objects")
    _check_size(len(items))
    result = recipients_from_dicts(items, script_keys=keys)
    if items:
        _check_columns(result.columns, where)
    return result


def _from_csv(text: str, filename: str | None, keys: Collection[str] | None) -> RecipientList:
    where = filename or "the recipient list"
    if "\x00" in text:
        raise RecipientsError(f"{where} is not a CSV file (it holds NUL bytes)")
    first = text.split("\n", 1)[0]
    try:  # only the separator is sniffed (from the header line); quoting is RFC 4180's
        delimiter = csv.Sniffer().sniff(first, delimiters=",;\t").delimiter
    except csv.Error:
        delimiter = ","
    reader = csv.reader(io.StringIO(text, newline=""), csv.excel, delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise RecipientsError(
            f"{where} is empty: a header line (name,developer) is needed"
        ) from None
    columns = [column.strip().lower() for column in header]
    _check_columns(columns, where)
    checker = _Checker(keys)
    try:
        # Rows are records, as a spreadsheet shows them (a blank line is a row too; a
        # quoted cell spanning lines is not several): the first data row is 1.
        for row, record in enumerate(reader, start=1):
            if not any(cell.strip() for cell in record):
                continue  # a blank line is no recipient
            _check_size(row)
            fields = dict(zip(columns, record, strict=False))
            checker.add(row, {k: fields.get(k, "").strip() or None for k in COLUMNS})
    except csv.Error as error:
        raise RecipientsError(f"{where} line {reader.line_num}: {error}") from None
    return checker.result(columns)


def _check_columns(columns: list[str], where: str) -> None:
    repeated = sorted({c for c in columns if c in COLUMNS and columns.count(c) > 1})
    if repeated:  # which `name` is meant? Refused rather than silently taking the last
        raise RecipientsError(
            f"{where} has the column {' and '.join(repeated)} more than once; keep one"
        )
    missing = [column for column in REQUIRED if column not in columns]
    if missing:
        raise RecipientsError(
            f"{where} has no {' and no '.join(missing)} column (its columns: "
            f"{', '.join(columns) or 'none'}); the header needs name and developer, "
            "optionally script and id"
        )


def _check_size(rows: int) -> None:
    if rows > MAX_RECIPIENTS:
        raise RecipientsError(f"a recipient list holds at most {MAX_RECIPIENTS:,} rows")


def _text(value: Any) -> str | None:
    """A JSON value as a cell: numbers become text, empty and null become None."""
    if value is None or isinstance(value, bool | dict | list):
        return None if value is None else json.dumps(value)
    text = str(value).strip()
    return text or None


class _Checker:
    """Row-by-row checks, remembering ids seen so a duplicate is refused with its first row."""

    def __init__(self, script_keys: Collection[str] | None) -> None:
        self.script_keys = None if script_keys is None else set(script_keys)
        self.rows: list[Recipient] = []
        self.problems: list[RowProblem] = []
        self.ids: dict[str, int] = {}

    def refuse(self, row: int, recipient_id: str | None, message: str) -> None:
        self.problems.append(RowProblem(row=row, recipient_id=recipient_id, message=message))

    def add(self, row: int, fields: Mapping[str, str | None]) -> None:
        recipient_id = fields.get("id")
        problem = row_problem(fields.get("name"), fields.get("developer"))
        script = fields.get("script")
        known = self.script_keys
        if problem is None and script and known is not None and script not in known:
            problem = f"unknown script key {script!r}"
        if problem is None and recipient_id is not None:
            first = self.ids.get(recipient_id)
            if first is not None:
                problem = f"duplicated recipient id {recipient_id!r} (first on row {first})"
            else:
                self.ids[recipient_id] = row
        if problem is not None:
            self.refuse(row, recipient_id, problem)
            return
        self.rows.append(
            Recipient(
                row=row,
                id=recipient_id,
                name=fields["name"] or "",
                developer=fields["developer"] or "",
                script=script,
            )
        )

    def result(self, columns: list[str]) -> RecipientList:
        return RecipientList(
            rows=self.rows,
            problems=self.problems,
            columns=columns,
            ignored_columns=[c for c in columns if c not in COLUMNS],
        )


def row_problem(name: str | None, developer: str | None) -> str | None:
    """Why a name/developer pair cannot make a message, or None."""
    for kind, value in (("name", name), ("developer", developer)):
        if not (value or "").strip():
            return f"the {kind} is empty"
        try:
            StemId.for_text(kind, value or "")
        except ValueError as error:
            return f"the {kind} {value!r} cannot be spoken: {error}"
    return None
