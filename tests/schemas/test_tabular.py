"""The one reader of a user's tabular files: CSV, TSV, JSONL and Parquet give the same
rows, numbered from 1; a row that cannot be read names its file, row and field."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from schemas.problems import SchemaError
from schemas.tabular import iter_rows

ROWS = [{"track_id": "a", "caption": "a calm piano piece"},
        {"track_id": "b", "caption": "loud, fast \"punk\"\nwith two lines"}]


def test_every_format_gives_the_same_rows(tmp_path):
    (tmp_path / "s.csv").write_text('track_id,caption\na,a calm piano piece\n'
                                    'b,"loud, fast ""punk""\nwith two lines"\n')
    (tmp_path / "s.tsv").write_text('track_id\tcaption\na\ta calm piano piece\n'
                                    'b\t"loud, fast ""punk""\nwith two lines"\n')
    (tmp_path / "s.jsonl").write_text("\n".join(json.dumps(r) for r in ROWS) + "\n\n")
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "s.parquet")
    for name in ("s.csv", "s.tsv", "s.jsonl", "s.parquet"):
        rows = list(iter_rows(tmp_path / name))
        assert [(r.number, r.values, r.problem) for r in rows] == \
            [(1, ROWS[0], None), (2, ROWS[1], None)], name


def test_bad_rows_name_file_row_and_field_and_the_rest_are_read(tmp_path):
    jsonl = tmp_path / "s.jsonl"
    jsonl.write_bytes(b'{"caption": "ok"}\n\n{broken\n[1, 2]\n{"caption": "caf\xe9"}\n'
                      b'{"caption": "fine"}\n')
    rows = list(iter_rows(jsonl))
    assert [r.values.get("caption") for r in rows] == ["ok", None, None, None, "fine"]
    assert [str(r.problem) for r in rows if r.problem] == [
        f"{jsonl}: row 2: not valid JSON (Expecting property name enclosed in double quotes "
        "at column 2)",
        f"{jsonl}: row 3: expected a JSON object, got list",
        f"{jsonl}: row 4: caption: is not valid UTF-8"]
    csv = tmp_path / "s.csv"
    csv.write_text("track_id,caption\na,fine\nb,too,many\n")
    (good, extra) = iter_rows(csv)
    assert good.values == {"track_id": "a", "caption": "fine"} and good.problem is None
    assert str(extra.problem) == f"{csv}: row 2: has 1 more cells than the header"
    assert extra.text("caption") == (None, None)
    assert good.text("missing", "caption") == ("fine", None)
    nested = next(iter_rows(_jsonl(tmp_path, {"caption": {"en": "x"}})))
    _, problem = nested.text("caption")
    assert str(problem) == f"{tmp_path / 'n.jsonl'}: row 1: caption: must be text, got dict"


def _jsonl(tmp_path, row):
    path = tmp_path / "n.jsonl"
    path.write_text(json.dumps(row) + "\n")
    return path


def test_file_problems_are_errors(tmp_path):
    with pytest.raises(SchemaError, match="does not exist"):
        list(iter_rows(tmp_path / "none.csv"))
    (tmp_path / "s.xlsx").write_bytes(b"x")
    with pytest.raises(SchemaError, match="unknown file type '.xlsx'"):
        list(iter_rows(tmp_path / "s.xlsx"))
    (tmp_path / "s.parquet").write_bytes(b"not parquet")
    with pytest.raises(SchemaError, match="not a readable Parquet file"):
        list(iter_rows(tmp_path / "s.parquet"))
