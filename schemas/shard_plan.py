"""The shard plan: for each track of a shard, what a worker needs to write its samples.

`adswap shards` (pipeline/shards/plan.py, with DuckDB) and `adswap import-eval`
(pipeline/eval_sets.py) write it, one small Parquet file per shard under
`_work/plan*/unit=<shard>/`, so a worker reads only its own tracks; the shard builder
reads it back, checking this schema first. `tags` is the track's tags as JSON (category
-> list), `tags_text` the tags as one text (the pair's text when no caption is drawn),
`views` the curated views (for an eval set, its captions) in (view, language) order.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from schemas.problems import SchemaError, check_arrow_schema, schema_id_of, with_schema_id
from schemas.views import SPAN

SHARD_PLAN_SCHEMA_ID = "shard_plan/1"

PLAN_VIEW = pa.struct([
    pa.field("view_id", pa.int32()),
    pa.field("language", pa.string()),
    pa.field("text", pa.string()),
    pa.field("spans", pa.list_(SPAN)),
])


def shard_plan_schema() -> pa.Schema:
    return with_schema_id(pa.schema([
        pa.field("position", pa.int64(), nullable=False),  # the track's place in its shard
        pa.field("track_id", pa.string(), nullable=False),
        pa.field("audio", pa.string(), nullable=False),
        pa.field("tags", pa.string(), nullable=False),
        pa.field("tags_text", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("views", pa.list_(PLAN_VIEW), nullable=False),
        # where the views came from, for the samples' provenance
        pa.field("engine", pa.string(), nullable=False),
        pa.field("model_id", pa.string(), nullable=False),
        pa.field("template_id", pa.string(), nullable=False),
        pa.field("template_hash", pa.string(), nullable=False),
    ]), SHARD_PLAN_SCHEMA_ID)


def read_plan_unit(path: Path) -> list[dict]:
    """One shard's plan rows in shard order; SchemaError if it is not this schema."""
    schema = shard_plan_schema()
    table = pq.read_table(path)
    problems = check_arrow_schema(table.schema, schema, str(path))
    if problems:
        raise SchemaError(f"{path} is not a {schema_id_of(schema)} shard plan; rerun the "
                          "command that made it (`adswap shards --overwrite`, or "
                          "`adswap import-eval`)", problems)
    return table.select(schema.names).sort_by("position").to_pylist()
