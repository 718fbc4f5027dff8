"""Tabular files a user brings (eval sets, decontamination lists, caption files): CSV,
TSV, JSONL or Parquet, read by one reader so every command accepts the same formats and
reports problems the same way.

Rows are streamed with their number (from 1; a CSV header and blank JSONL lines are not
counted, as in the catalog). A row that cannot be read (a JSONL line that is not a JSON
object, a CSV row with more cells than its header, bytes that are not UTF-8) comes back
with a `Problem` naming file, row and field instead of values; each caller decides
whether that rejects the row or the whole file. A problem with the file itself (missing,
unknown type, not Parquet, not CSV) raises `SchemaError`.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from schemas.problems import Problem, SchemaError

# suffix -> format; `.json` is read as JSON Lines, as the eval-set importer always did
FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl",
           ".json": "jsonl", ".parquet": "parquet"}
SUFFIXES = "CSV (.csv), TSV (.tsv), JSON Lines (.jsonl, .ndjson, .json) or Parquet (.parquet)"


@dataclass(frozen=True)
class Row:
    file: str
    number: int
    values: dict = field(default_factory=dict)
    problem: Problem | None = None

    def text(self, *names: str) -> tuple[str | None, Problem | None]:
        """The first of `names` this row has a value for, as text; a Problem naming the
        field when that value is neither text nor a number; (None, None) without one."""
        for name in names:
            value = self.values.get(name)
            if value is None or value == "":
                continue
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                return None, Problem(self.file, self.number, name,
                                     f"must be text, got {type(value).__name__}")
            return str(value), None
        return None, None


def iter_rows(path: str | Path) -> Iterator[Row]:
    """Every row of a tabular file, streamed."""
    path = Path(path)
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise SchemaError(f"{path}: unknown file type {path.suffix!r}; use {SUFFIXES}", [])
    if not path.is_file():
        raise SchemaError(f"{path} does not exist", [])
    rows = {"csv": _delimited, "tsv": _delimited, "jsonl": _jsonl, "parquet": _parquet}[kind]
    for row in rows(path):
        if row.problem is None:
            bad = next((name for name, value in row.values.items() if _has_bad_bytes(value)),
                       None)
            if bad is not None:
                row = _unreadable(path, row.number, "is not valid UTF-8", str(bad))
        yield row


def header(path: str | Path) -> list[str] | None:
    """The column names of a CSV, TSV or Parquet file (None for JSON Lines, whose rows
    may each name other keys), for files whose columns must be checked before rows."""
    path = Path(path)
    kind = FORMATS.get(path.suffix.lower())
    if kind == "parquet":
        try:
            return pq.ParquetFile(path).schema_arrow.names
        except (pa.ArrowException, OSError) as err:
            raise SchemaError(f"{path} is not a readable Parquet file: {err}", []) from err
    if kind in ("csv", "tsv"):
        with _open_text(path) as handle:
            return next(csv.reader(handle, delimiter="\t" if kind == "tsv" else ","), [])
    return None


def _unreadable(path: Path, number: int, message: str, name: str | None = None) -> Row:
    return Row(str(path), number, problem=Problem(str(path), number, name, message))


def _open_text(path: Path):
    # utf-8-sig: a spreadsheet's byte-order mark must not become part of the first
    # column's name; surrogateescape keeps bad bytes so the row can be named
    return open(path, encoding="utf-8-sig", errors="surrogateescape", newline="")


def _delimited(path: Path) -> Iterator[Row]:
    with _open_text(path) as handle:
        reader = csv.DictReader(handle, delimiter="\t" if path.suffix.lower() == ".tsv"
                                else ",")
        number = 0
        try:
            for values in reader:
                number += 1
                if None in values:  # DictReader files surplus cells under the key None
                    yield _unreadable(path, number,
                                      f"has {len(values[None])} more cells than the header")
                    continue
                yield Row(str(path), number, values)
        except csv.Error as err:
            raise SchemaError(f"{path} is not valid {path.suffix[1:].upper()} at row "
                              f"{number + 1}: {err}", []) from err


def _jsonl(path: Path) -> Iterator[Row]:
    number = 0
    with _open_text(path) as handle:
        for line in handle:
            if not line.strip():
                continue
            number += 1
            try:
                values = json.loads(line)
            except json.JSONDecodeError as err:
                yield _unreadable(path, number, f"not valid JSON ({err.msg} at column "
                                  f"{err.colno})")
                continue
            if not isinstance(values, dict):
                yield _unreadable(path, number,
                                  f"expected a JSON object, got {type(values).__name__}")
                continue
            yield Row(str(path), number, values)


def _parquet(path: Path) -> Iterator[Row]:
    try:
        reader = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as err:
        raise SchemaError(f"{path} is not a readable Parquet file: {err}", []) from err
    number = 0
    for batch in reader.iter_batches(batch_size=8192):
        for values in batch.to_pylist():
            number += 1
            yield Row(str(path), number, values)


def _has_bad_bytes(value: object) -> bool:
    if isinstance(value, str):
        return not value.isascii() and any("\udc80" <= ch <= "\udcff" for ch in value)
    return False

