"""Caption views and their curated and rejected forms.

One row per (track, view, language). The caption stage writes `views`; curation
splits them into `curated` (with split, tag recall and the descriptor spans TextSwap
edits) and `rejected` (with the rule and reason that removed them). Each file carries
its schema id in the Parquet metadata, so a reader refuses a file of another version.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields

import pyarrow as pa
import pyarrow.parquet as pq

from schemas.catalog import DEFAULT_CATEGORIES, SPLITS
from schemas.problems import (
    Problem,
    SchemaError,
    check_arrow_schema,
    schema_id_of,
    with_schema_id,
)

VIEWS_SCHEMA_ID = "views/1"
CURATED_SCHEMA_ID = "curated/1"
REJECTED_SCHEMA_ID = "rejected/1"

# Flags the caption parser sets; curation decides what to drop.
FLAGS = ("empty", "truncated", "refusal", "too_long", "boilerplate_stripped")
FINISH_REASONS = ("stop", "length", "error")

SPAN = pa.struct([
    pa.field("category", pa.string()),
    pa.field("term", pa.string()),
    pa.field("start", pa.int32()),
    pa.field("end", pa.int32()),
])
DESCRIPTOR = pa.struct([pa.field("category", pa.string()), pa.field("term", pa.string())])


def _tags_type(categories: Iterable[str]) -> pa.DataType:
    return pa.struct([pa.field(c, pa.list_(pa.string())) for c in categories])


def _view_fields(categories: Iterable[str]) -> list[pa.Field]:
    return [
        pa.field("track_id", pa.string(), nullable=False),
        pa.field("view_id", pa.int32(), nullable=False),
        pa.field("language", pa.string(), nullable=False),
        pa.field("tags", _tags_type(categories), nullable=False),  # the subset this view saw
        pa.field("text", pa.string(), nullable=False),       # parsed caption
        pa.field("raw_text", pa.string(), nullable=False),   # the engine's output, untouched
        pa.field("flags", pa.list_(pa.string()), nullable=False),
        pa.field("engine", pa.string(), nullable=False),
        pa.field("model_id", pa.string(), nullable=False),
        pa.field("model_revision", pa.string()),
        pa.field("template_id", pa.string(), nullable=False),
        pa.field("template_hash", pa.string(), nullable=False),
        pa.field("sampling", pa.string(), nullable=False),   # JSON, sorted keys
        pa.field("seed", pa.int64(), nullable=False),
        pa.field("prompt_tokens", pa.int32()),
        pa.field("completion_tokens", pa.int32()),
        pa.field("finish_reason", pa.string(), nullable=False),
        pa.field("content_key", pa.string(), nullable=False),
    ]


def views_schema(categories: Iterable[str] = DEFAULT_CATEGORIES) -> pa.Schema:
    return with_schema_id(pa.schema(_view_fields(categories)), VIEWS_SCHEMA_ID)


def curated_schema(categories: Iterable[str] = DEFAULT_CATEGORIES) -> pa.Schema:
    return with_schema_id(pa.schema(_view_fields(categories) + [
        pa.field("split", pa.string(), nullable=False),
        pa.field("tag_recall", pa.float32(), nullable=False),
        pa.field("hallucinated", pa.list_(DESCRIPTOR), nullable=False),
        pa.field("spans", pa.list_(SPAN), nullable=False),
    ]), CURATED_SCHEMA_ID)


def rejected_schema(categories: Iterable[str] = DEFAULT_CATEGORIES) -> pa.Schema:
    return with_schema_id(pa.schema(_view_fields(categories) + [
        pa.field("rule", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
    ]), REJECTED_SCHEMA_ID)


@dataclass(frozen=True)
class View:
    track_id: str
    view_id: int
    language: str
    tags: Mapping[str, list[str]]
    text: str
    raw_text: str
    flags: list[str]
    engine: str
    model_id: str
    model_revision: str | None
    template_id: str
    template_hash: str
    sampling: str
    seed: int
    prompt_tokens: int | None
    completion_tokens: int | None
    finish_reason: str
    content_key: str


@dataclass(frozen=True)
class Span:
    category: str
    term: str
    start: int
    end: int


@dataclass(frozen=True)
class CuratedView(View):
    split: str = "train"
    tag_recall: float = 0.0
    hallucinated: list[dict] = field(default_factory=list)
    spans: list[Span] = field(default_factory=list)


@dataclass(frozen=True)
class RejectedView(View):
    rule: str = ""
    reason: str = ""


def records_to_table(records: Iterable[View], schema: pa.Schema) -> pa.Table:
    # Column by column with getattr: dataclasses.asdict deep-copies every row, which
    # dominated the caption stage's own cost.
    records = list(records)
    columns = {name: [getattr(r, name) for r in records] for name in schema.names}
    if "spans" in columns:
        columns["spans"] = [[asdict(s) for s in spans] for spans in columns["spans"]]
    return pa.Table.from_pydict(columns, schema=schema)


def table_to_records(table: pa.Table, cls: type[View]) -> list[View]:
    names = [f.name for f in fields(cls)]
    out = []
    for row in table.select(names).to_pylist():
        if "spans" in row:
            row["spans"] = [Span(**s) for s in row["spans"]]
        out.append(cls(**row))
    return out


def validate_table(table: pa.Table, schema: pa.Schema, file: str) -> list[Problem]:
    """Every problem with a views-family table: version, columns, types, then rows."""
    problems = check_arrow_schema(table.schema, schema, file)
    if problems:
        return problems
    for name in (f.name for f in schema if not f.nullable):
        column = table.column(name)
        if column.null_count:
            for row, value in enumerate(column.to_pylist(), start=1):
                if value is None:
                    problems.append(Problem(file, row, name, "is null"))
    for row, (flags, reason) in enumerate(
        zip(table.column("flags").to_pylist(), table.column("finish_reason").to_pylist(),
            strict=True),
        start=1,
    ):
        unknown = sorted(set(flags or ()) - set(FLAGS))
        if unknown:
            problems.append(Problem(file, row, "flags", f"unknown flags {unknown}"))
        if reason is not None and reason not in FINISH_REASONS:
            problems.append(Problem(file, row, "finish_reason",
                                    f"'{reason}' is not one of {', '.join(FINISH_REASONS)}"))
    if "split" in schema.names:
        for row, split in enumerate(table.column("split").to_pylist(), start=1):
            if split is not None and split not in SPLITS:
                problems.append(Problem(file, row, "split", f"'{split}' is not one of {SPLITS}"))
    return problems


def read_table(path: str, schema: pa.Schema) -> pa.Table:
    """Read a views-family Parquet file, raising SchemaError with every problem found."""
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as err:
        raise SchemaError(f"{path} is not a readable Parquet file: {err}", []) from err
    problems = validate_table(table, schema, path)
    if problems:
        raise SchemaError(f"{path} does not match the {schema_id_of(schema)}"
                          " schema", problems)
    return table.select(schema.names)
