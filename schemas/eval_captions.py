"""Reference captions for evaluation: one row per (track, caption, language).

Written independently of any caption engine (the demo's grammar, or a user's human
captions such as Song Describer); a track may have several.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from schemas.problems import with_schema_id

EVAL_CAPTIONS_SCHEMA_ID = "eval_captions/1"


def eval_captions_schema() -> pa.Schema:
    return with_schema_id(pa.schema([
        pa.field("track_id", pa.string(), nullable=False),
        pa.field("caption_id", pa.int32(), nullable=False),
        pa.field("language", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
    ]), EVAL_CAPTIONS_SCHEMA_ID)


def read_rows(path: Path) -> list[dict]:
    """Rows of a caption file (CSV, TSV, JSONL or Parquet); a JSONL line that does not
    parse becomes {"__error__": reason}, so callers report it with its row."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return pq.read_table(path).to_pylist()
    if suffix in (".jsonl", ".json"):
        rows = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                rows.append({"__error__": f"row {number}: invalid JSON ({err.msg})"})
        return rows
    if suffix in (".csv", ".tsv"):
        import csv

        with open(path, newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle, delimiter="\t" if suffix == ".tsv" else ","))
    raise ValueError(f"{path}: unsupported eval file type {suffix!r}; use .csv, .tsv, "
                     ".jsonl or .parquet")
