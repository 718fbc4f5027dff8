"""Per-view facts the SQL rules filter on, computed from the view alone: descriptors
found (for tag recall, hallucinations and TextSwap spans), length, language, script and
normalised text. Catalog facts are joined later, in SQL, so this pass needs only the
dictionary: it runs file by file in worker processes and its output is cached by
(views file, dictionary), so a rerun with new thresholds only re-runs the SQL."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.curate.language import foreign_language, normalise_text, script_problem
from schemas.descriptors import DescriptorMatcher, tag_recall
from schemas.swap_dictionary import SwapDictionary
from schemas.views import DESCRIPTOR, SPAN, read_table, views_schema

ANALYSIS_VERSION = 2  # bump when the analysis changes, to invalidate cached files
ROWS_PER_FILE = 1 << 32  # row ids are file index * this + row: unique and stable

ANALYSIS_FIELDS = [
    pa.field("row_id", pa.int64()),
    pa.field("n_words", pa.int32()),
    pa.field("n_chars", pa.int32()),
    pa.field("tag_recall", pa.float32()),
    pa.field("found", pa.list_(DESCRIPTOR)),
    pa.field("spans", pa.list_(SPAN)),
    pa.field("detected_language", pa.string()),
    pa.field("script_problem", pa.string()),
    pa.field("norm_text", pa.string()),
]


def analysed_name(views_file: Path, dictionary_hash: str) -> str:
    stat = views_file.stat()
    key = f"{views_file.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}\0{dictionary_hash}" \
          f"\0{ANALYSIS_VERSION}"
    return f"analysed-{hashlib.sha256(key.encode()).hexdigest()[:20]}.parquet"


def analyse_table(table: pa.Table, matcher: DescriptorMatcher, file_index: int) -> pa.Table:
    """The views table with the analysis columns appended."""
    columns: dict[str, list] = {f.name: [] for f in ANALYSIS_FIELDS}
    for row, (language, text, view_tags) in enumerate(zip(
            table.column("language").to_pylist(), table.column("text").to_pylist(),
            table.column("tags").to_pylist(), strict=True)):
        spans = matcher.find(text)
        found = {(m.category, m.term) for m in spans}
        columns["row_id"].append(file_index * ROWS_PER_FILE + row)
        columns["n_words"].append(len(text.split()))
        columns["n_chars"].append(len(text))
        columns["tag_recall"].append(tag_recall(spans, view_tags))
        columns["found"].append([{"category": c, "term": t} for c, t in sorted(found)])
        columns["spans"].append([{"category": s.category, "term": s.term, "start": s.start,
                                  "end": s.end} for s in spans])
        columns["detected_language"].append(foreign_language(text, language))
        columns["script_problem"].append(script_problem(text, language))
        columns["norm_text"].append(normalise_text(text))
    extra = pa.table(columns, schema=pa.schema(ANALYSIS_FIELDS))
    for field, column in zip(extra.schema, extra.columns, strict=True):
        table = table.append_column(field, column)
    return table


def analyse_file(job: tuple[str, int, str, str, tuple[str, ...]]) -> int:
    """Worker entry: analyse one views file into the cache folder; returns its rows."""
    views_file, file_index, dictionary_path, target, categories = job
    if os.path.exists(target):
        return pq.ParquetFile(target).metadata.num_rows
    matcher = _matcher(dictionary_path)
    table = analyse_table(read_table(views_file, views_schema(categories)), matcher, file_index)
    tmp = f"{target}.tmp-{os.getpid()}"
    pq.write_table(table, tmp)
    os.replace(tmp, target)
    return table.num_rows


_MATCHERS: dict[str, DescriptorMatcher] = {}


def _matcher(dictionary_path: str) -> DescriptorMatcher:
    if dictionary_path not in _MATCHERS:
        _MATCHERS[dictionary_path] = DescriptorMatcher(SwapDictionary.load(dictionary_path))
    return _MATCHERS[dictionary_path]
