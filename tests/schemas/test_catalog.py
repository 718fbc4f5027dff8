import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from adswap.cli import app
from schemas.catalog import (
    CatalogConfig,
    Track,
    iter_catalog,
    read_catalog,
    resolve_audio,
    write_catalog,
)
from schemas.problems import SchemaError

ROWS = [
    {"track_id": "t1", "audio": "audio/t1.flac", "duration_s": 12.0, "artist": "A",
     "license": "CC0-1.0", "split": "train",
     "tags": {"genre": ["Rock"], "mood": ["happy", " Calm "], "instrument": ["drums"]}},
    {"track_id": "t2", "audio": "audio/t2.flac", "duration_s": None, "artist": None,
     "license": None, "split": None,
     "tags": {"genre": ["hip  hop"], "mood": [], "instrument": ["bass", "piano"]}},
]
EXPECTED = {
    "t1": {"genre": ("rock",), "mood": ("happy", "calm"), "instrument": ("drums",)},
    "t2": {"genre": ("hip hop",), "mood": (), "instrument": ("bass", "piano")},
}


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_csv(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def as_csv(rows):
    header = "track_id,audio,duration_s,artist,license,split,tags.genre,tags.mood,tags.instrument"
    lines = [header]
    for r in rows:
        cells = [r["track_id"], r["audio"], "" if r["duration_s"] is None else str(r["duration_s"]),
                 r["artist"] or "", r["license"] or "", r["split"] or ""]
        cells += [";".join(r["tags"][c]) for c in ("genre", "mood", "instrument")]
        lines.append(",".join(cells))
    return lines


def check_good(catalog):
    assert catalog.rejects == []
    assert {t.track_id: dict(t.tags) for t in catalog.tracks} == EXPECTED
    first = catalog.tracks[0]
    assert (first.duration_s, first.artist, first.split) == (12.0, "A", "train")


def test_reads_jsonl(tmp_path):
    check_good(read_catalog(write_jsonl(tmp_path / "c.jsonl", ROWS)))


def test_reads_csv_with_tag_columns(tmp_path):
    check_good(read_catalog(write_csv(tmp_path / "c.csv", as_csv(ROWS))))


def test_reads_parquet_nested(tmp_path):
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "c.parquet")
    check_good(read_catalog(tmp_path / "c.parquet"))


def test_reads_datasets_directory_and_fills_split_from_dict(tmp_path):
    import datasets

    rows = [{**r, "split": None} for r in ROWS]
    dd = datasets.DatasetDict({
        "train": datasets.Dataset.from_list(rows[:1]),
        "validation": datasets.Dataset.from_list(rows[1:]),
    })
    dd.save_to_disk(str(tmp_path / "ds"))
    catalog = read_catalog(tmp_path / "ds")
    assert catalog.rejects == []
    assert {t.track_id: t.split for t in catalog.tracks} == {"t1": "train", "t2": "valid"}


def test_write_then_read_round_trip(tmp_path):
    tracks = [Track("a1", "x.flac", {"genre": ("pop",), "mood": (), "instrument": ("piano",)},
                    duration_s=3.5, artist="Z", split="test")]
    path = write_catalog(tracks, tmp_path / "cat.parquet")
    assert read_catalog(path).tracks == tracks


def test_missing_columns_are_all_named(tmp_path):
    path = write_csv(tmp_path / "c.csv", ["id,file", "t1,a.flac"])
    with pytest.raises(SchemaError) as err:
        read_catalog(path)
    fields = {p.field for p in err.value.problems}
    assert fields == {"track_id", "audio", "tags"}
    assert "c.csv" in str(err.value)


CSV_WITH_TEMPO = ["track_id,audio,tags.genre,tags.tempo", "t1,a.flac,rock,fast"]


def test_unknown_category_column_is_an_error(tmp_path):
    path = write_csv(tmp_path / "c.csv", CSV_WITH_TEMPO)
    with pytest.raises(SchemaError, match="tags.tempo: unknown tag category"):
        read_catalog(path)


def test_configured_categories_accept_new_ones(tmp_path):
    path = write_csv(tmp_path / "c.csv", CSV_WITH_TEMPO)
    catalog = read_catalog(path, CatalogConfig(categories=("genre", "tempo")))
    assert dict(catalog.tracks[0].tags) == {"genre": ("rock",), "tempo": ("fast",)}


def test_every_bad_row_is_rejected_with_row_and_field(tmp_path):
    rows = [
        ROWS[0],
        {**ROWS[1], "track_id": "t1"},                                       # duplicate
        {**ROWS[1], "track_id": ""},                                         # empty
        {**ROWS[1], "track_id": "x3", "tags": {"tempo": ["fast"], "genre": ["pop"]}},
        {**ROWS[1], "track_id": "x4", "tags": {"genre": ["g"] * 10_000}},   # huge tag list
        {**ROWS[1], "track_id": "x5", "audio": "../../etc/passwd"},          # escapes root
        {**ROWS[1], "track_id": "x6", "split": "dev"},
        {**ROWS[1], "track_id": 7},                                          # wrong type
        {**ROWS[1], "track_id": "x8", "tags": {"genre": [], "mood": []}},    # no tags
        {**ROWS[1], "track_id": "bad.id"},
        {**ROWS[1], "track_id": "x10", "duration_s": -3},
    ]
    catalog = read_catalog(write_jsonl(tmp_path / "c.jsonl", rows))
    assert [t.track_id for t in catalog.tracks] == ["t1"]
    found = {(p.row, p.field) for p in catalog.rejects}
    assert found == {
        (2, "track_id"), (3, "track_id"), (4, "tags.tempo"), (5, "tags.genre"), (6, "audio"),
        (7, "split"), (8, "track_id"), (9, "tags"), (10, "track_id"), (11, "duration_s"),
    }
    messages = {(p.row): p.message for p in catalog.rejects}
    assert "duplicate of row 1" in messages[2]
    assert "10000 tags; the limit is 64" in messages[5]
    assert "outside the audio root" in messages[6]
    assert all(str(p).startswith(str(tmp_path / "c.jsonl")) for p in catalog.rejects)


def test_non_utf8_bytes_reject_only_their_row(tmp_path):
    path = tmp_path / "c.csv"
    lines = as_csv(ROWS)
    data = ("\n".join(lines) + "\n").encode()
    data = data.replace(b"artist", b"artist", 1).replace(b",A,", b",Caf\xe9,")
    path.write_bytes(data)
    catalog = read_catalog(path)
    assert [t.track_id for t in catalog.tracks] == ["t2"]
    (problem,) = catalog.rejects
    assert (problem.row, problem.field) == (1, "artist")
    assert "not valid UTF-8" in problem.message


def test_non_utf8_inside_jsonl_tags(tmp_path):
    path = tmp_path / "c.jsonl"
    good = json.dumps(ROWS[1]).encode()
    bad = json.dumps(ROWS[0]).encode().replace(b"Rock", b"R\xffck")
    path.write_bytes(bad + b"\n" + good + b"\n")
    catalog = read_catalog(path)
    assert [(p.row, p.field) for p in catalog.rejects] == [(1, "tags")]


def test_csv_row_with_surplus_cells_is_rejected(tmp_path):
    lines = as_csv(ROWS)
    lines[1] += ",extra,cells"
    catalog = read_catalog(write_csv(tmp_path / "c.csv", lines))
    assert [(p.row, p.message) for p in catalog.rejects] == \
        [(1, "has 2 more cells than the header")]


def test_invalid_json_line_is_rejected(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n{not json\n[1, 2]\n", encoding="utf-8")
    catalog = read_catalog(path)
    assert [p.row for p in catalog.rejects] == [2, 3]
    assert "not valid JSON" in catalog.rejects[0].message


def test_no_valid_track_is_an_error_listing_problems(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [{**ROWS[0], "track_id": ""}])
    with pytest.raises(SchemaError, match="no valid track") as err:
        read_catalog(path)
    assert "row 1: track_id: is missing or empty" in str(err.value)


def test_unknown_format_and_missing_file(tmp_path):
    (tmp_path / "c.xlsx").write_text("x")
    with pytest.raises(SchemaError, match="unknown format"):
        read_catalog(tmp_path / "c.xlsx")
    with pytest.raises(SchemaError, match="does not exist"):
        read_catalog(tmp_path / "nope.parquet")


def test_resolve_audio_stays_inside_root(tmp_path):
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    assert resolve_audio("a/x.flac", root) == (root / "a" / "x.flac").resolve()
    assert resolve_audio("file://a/x.flac", root) == (root / "a" / "x.flac").resolve()
    for bad in ("../../etc/passwd", "/etc/passwd", "a/../../x.flac"):
        with pytest.raises(ValueError, match="outside the audio root"):
            resolve_audio(bad, root)
    os.symlink("/etc", root / "link")
    with pytest.raises(ValueError, match="outside the audio root"):
        resolve_audio("link/passwd", root)
    with pytest.raises(ValueError, match="unsupported URI scheme 's3'"):
        resolve_audio("s3://bucket/x.flac", root)


def test_config_validation_reports_all_problems():
    with pytest.raises(ValueError) as err:
        CatalogConfig(categories=("Genre", "mood", "mood"), max_tags_per_category=0)
    text = str(err.value)
    assert "lowercase" in text and "repeat" in text and "max_tags_per_category" in text


def test_cli_validate_lists_problems_without_traceback(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [ROWS[0], {**ROWS[1], "audio": "../../etc/passwd"}])
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 1
    assert "row 2: audio" in result.output and "1 valid tracks" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)

    broken = write_csv(tmp_path / "b.csv", ["id", "1"])
    result = CliRunner().invoke(app, ["validate", str(broken)])
    assert result.exit_code == 1 and "column is missing" in result.output
    assert "Traceback" not in result.output
    good = write_jsonl(tmp_path / "g.jsonl", ROWS)
    assert CliRunner().invoke(app, ["validate", str(good)]).exit_code == 0


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_csv_and_jsonl_catalogs_are_streamed(tmp_path, suffix):
    """Reading holds a row at a time, not the file: the peak stays far below its size."""
    import tracemalloc

    rows = [{**ROWS[0], "track_id": f"t{i}", "license": "x" * 4000} for i in range(3000)]
    path = tmp_path / f"big{suffix}"
    if suffix == ".csv":
        write_csv(path, as_csv(rows))
    else:
        write_jsonl(path, rows)
    size = path.stat().st_size
    tracemalloc.start()
    count = sum(track is not None for track, _ in iter_catalog(path))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert count == 3000
    assert peak < size / 4, f"peak {peak / 1e6:.1f} MB for a {size / 1e6:.1f} MB file"
