import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from schemas.problems import SchemaError
from schemas.views import (
    CuratedView,
    RejectedView,
    Span,
    View,
    curated_schema,
    read_table,
    records_to_table,
    rejected_schema,
    table_to_records,
    views_schema,
)

BASE = dict(
    track_id="t1", view_id=0, language="en",
    tags={"genre": ["rock"], "mood": ["happy"], "instrument": ["drums"]},
    text="A happy rock song with drums.", raw_text="Sure! A happy rock song with drums.",
    flags=["boilerplate_stripped"], engine="template", model_id="rules", model_revision=None,
    template_id="caption-en", template_hash="abc123", sampling=json.dumps({"temperature": 0.7}),
    seed=1, prompt_tokens=120, completion_tokens=12, finish_reason="stop", content_key="k1",
)


def test_views_round_trip(tmp_path):
    table = records_to_table([View(**BASE)], views_schema())
    pq.write_table(table, tmp_path / "v.parquet")
    back = read_table(str(tmp_path / "v.parquet"), views_schema())
    assert table_to_records(back, View) == [View(**BASE)]


def test_curated_and_rejected_round_trip(tmp_path):
    curated = CuratedView(**BASE, split="test", tag_recall=1.0,
                          hallucinated=[{"category": "instrument", "term": "piano"}],
                          spans=[Span("genre", "rock", 8, 12)])
    table = records_to_table([curated], curated_schema())
    pq.write_table(table, tmp_path / "c.parquet")
    assert table_to_records(read_table(str(tmp_path / "c.parquet"), curated_schema()),
                            CuratedView) == [curated]
    rejected = RejectedView(**BASE, rule="tag_recall", reason="mentions 0 of 3 tags")
    assert table_to_records(records_to_table([rejected], rejected_schema()),
                            RejectedView) == [rejected]


def test_other_schema_version_is_refused(tmp_path):
    table = records_to_table([View(**BASE)], views_schema())
    old = table.replace_schema_metadata({b"adswap.schema": b"views/0"})
    pq.write_table(old, tmp_path / "v.parquet")
    with pytest.raises(SchemaError, match="has 'views/0'; this version reads 'views/1'"):
        read_table(str(tmp_path / "v.parquet"), views_schema())


def test_missing_columns_and_wrong_types_reported_together(tmp_path):
    table = records_to_table([View(**BASE)], views_schema())
    table = table.drop_columns(["text", "engine"])
    index = table.schema.get_field_index("view_id")
    table = table.set_column(index, "view_id", pa.array(["zero"]))
    pq.write_table(table, tmp_path / "v.parquet")
    with pytest.raises(SchemaError) as err:
        read_table(str(tmp_path / "v.parquet"), views_schema())
    found = {(p.field, p.message.split(";")[0]) for p in err.value.problems}
    assert ("text", "column is missing") in found and ("engine", "column is missing") in found
    assert ("view_id", "has type string") in found


def test_row_problems_name_row_and_field(tmp_path):
    rows = [View(**BASE), View(**{**BASE, "view_id": 1, "flags": ["sparkly"],
                                  "finish_reason": "tired"})]
    table = records_to_table(rows, views_schema())
    # A writer that ignored nullability: text is null in row 1.
    loose = pa.schema([f.with_nullable(True) for f in table.schema], metadata=table.schema.metadata)
    table = table.cast(loose)
    table = table.set_column(table.schema.get_field_index("text"),
                             loose.field("text"), pa.array([None, "ok"], pa.string()))
    pq.write_table(table, tmp_path / "v.parquet")
    with pytest.raises(SchemaError) as err:
        read_table(str(tmp_path / "v.parquet"), views_schema())
    assert {(p.row, p.field) for p in err.value.problems} == {
        (1, "text"), (2, "flags"), (2, "finish_reason")}


def test_unreadable_file(tmp_path):
    (tmp_path / "v.parquet").write_text("not parquet")
    with pytest.raises(SchemaError, match="not a readable Parquet file"):
        read_table(str(tmp_path / "v.parquet"), views_schema())
