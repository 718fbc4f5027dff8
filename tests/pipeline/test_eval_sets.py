"""`adswap import-eval`: resume after a kill, caption ids, reject kinds, the shard plan
it writes, and one reader for CSV, TSV, JSONL and Parquet eval files."""

import csv
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.eval_sets import ImportConfig, run
from pipeline.rejects import KINDS
from pipeline.shards.audio import ClipConfig
from schemas.problems import SCHEMA_KEY
from schemas.shard_plan import SHARD_PLAN_SCHEMA_ID, read_plan_unit

CLIPS = ClipConfig(sample_rate=16_000, clip_seconds=2, position="all")


def write_rows(path, rows):
    columns = list(dict.fromkeys(k for r in rows for k in r))
    if path.suffix in (".csv", ".tsv"):
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, columns, delimiter="\t" if path.suffix == ".tsv"
                                    else ",")
            writer.writeheader()
            writer.writerows(rows)
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        pq.write_table(pa.Table.from_pylist([{c: r.get(c) for c in columns} for r in rows]),
                       path)
    return path


def eval_rows(demo_catalog, n):
    demo, catalog = demo_catalog
    return [{"track_id": t.track_id, "audio": str(demo / t.audio), "caption": f"caption of "
             f"{t.track_id}"} for t in catalog.tracks[:n]]


def test_a_rerun_keeps_finished_shards_and_builds_the_rest(demo_catalog, tmp_path):
    source = write_rows(tmp_path / "set.csv", eval_rows(demo_catalog, 6))
    config = ImportConfig(file=source, out=tmp_path / "set", audio_root=tmp_path.anchor,
                          clips=CLIPS, max_samples=2, workers=1)
    first = run(config)
    out = tmp_path / "set"
    shards = sorted(out.glob("test-*.tar"))
    assert first.built == len(shards) == 3 and first.skipped == 0
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in shards}
    outputs = {name: (out / name).read_bytes() for name in ("sizes.json", "manifest.json",
                                                            "captions.parquet")}
    # a kill part-way: the last shard was never finished, a temporary file was left
    (out / "_work" / "done" / "test-000002.json").unlink()
    (out / "test-000002.tar").unlink()
    (out / ".test-000002.tar.tmp-999999").write_bytes(b"half a shard")
    (out / "sizes.json").unlink()
    again = run(config)
    assert (again.built, again.skipped) == (1, 2)
    for path in sorted(out.glob("test-*.tar")):
        data, stamp = before[path.name]
        assert path.read_bytes() == data
        if path.name != "test-000002.tar":
            assert path.stat().st_mtime_ns == stamp, f"{path.name} was rebuilt"
    assert not list(out.glob(".*tmp*"))
    assert {name: (out / name).read_bytes() for name in outputs} == outputs
    # other settings start the set over
    changed = run(ImportConfig(file=source, out=out, audio_root=tmp_path.anchor,
                               clips=CLIPS, max_samples=3, workers=1))
    assert changed.built == 2 and changed.skipped == 0
    assert sorted(p.name for p in out.glob("test-*.tar")) == ["test-000000.tar",
                                                              "test-000001.tar"]


def test_caption_id_zero_is_an_id_and_a_bad_one_is_a_reject(demo_catalog, tmp_path):
    (first, second, third) = eval_rows(demo_catalog, 3)
    rows = [{**first, "caption_id": 1, "caption": "the second caption"},
            {**first, "caption_id": 0, "caption": "the first caption"},
            {**second, "caption_id": "0"},
            {**third, "caption_id": "one"}]
    for suffix in (".parquet", ".jsonl", ".tsv"):
        source = write_rows(tmp_path / f"ids{suffix}", rows if suffix != ".parquet" else
                            [{**r, "caption_id": str(r["caption_id"])} for r in rows])
        stats = run(ImportConfig(file=source, out=tmp_path / f"out{suffix}",
                                 audio_root=tmp_path.anchor, clips=CLIPS, workers=1))
        captions = pq.read_table(tmp_path / f"out{suffix}" / "captions.parquet").to_pylist()
        assert sorted((c["track_id"], c["caption_id"], c["text"]) for c in captions) == [
            (first["track_id"], 0, "the first caption"),
            (first["track_id"], 1, "the second caption"),
            (second["track_id"], 0, second["caption"])], suffix
        rejects = [json.loads(line) for line in
                   (tmp_path / f"out{suffix}" / "rejects.jsonl").read_text().splitlines()]
        assert [(r["row"], r["kind"]) for r in rejects] == [(4, "bad_caption_id")]
        assert stats.rejects == {"rows: caption_id is not a whole number": 1}


def test_every_reject_has_a_kind_and_reports_count_kinds(demo_catalog, tmp_path):
    rows = eval_rows(demo_catalog, 2)
    rows += [{"audio": str(tmp_path / "gone-1.flac"), "caption": "a"},
             {"audio": str(tmp_path / "gone-2.flac"), "caption": "b"},
             {"track_id": "x/y", "audio": rows[0]["audio"], "caption": "c"},
             {"track_id": "t9", "caption": "no audio"},
             {"audio": rows[0]["audio"], "caption": ""}]
    source = tmp_path / "set.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows) + "[1, 2]\n{broken\n")
    stats = run(ImportConfig(file=source, out=tmp_path / "set", audio_root=tmp_path.anchor,
                             clips=CLIPS, workers=1))
    rejects = [json.loads(line) for line in
               (tmp_path / "set" / "rejects.jsonl").read_text().splitlines()]
    assert all(r["kind"] in KINDS for r in rejects)
    assert sorted(r["kind"] for r in rejects) == sorted(
        ["missing_audio", "missing_audio", "bad_track_id", "no_audio", "no_caption",
         "unreadable_row", "unreadable_row"])
    assert {r["row"] for r in rejects if r["stage"] == "rows"} == {5, 6, 7, 8, 9}
    # two missing files are one line of the report, whatever their messages
    assert stats.rejects["audio: audio file is missing"] == 2
    assert stats.rejects["rows: row cannot be read"] == 2
    assert "- audio: audio file is missing: 2" in (tmp_path / "set" / "report.md").read_text()


def test_the_plan_is_written_in_the_declared_schema(demo_catalog, tmp_path):
    source = write_rows(tmp_path / "set.csv", eval_rows(demo_catalog, 3))
    run(ImportConfig(file=source, out=tmp_path / "set", audio_root=tmp_path.anchor,
                     clips=CLIPS, workers=1))
    (unit,) = (tmp_path / "set" / "_work" / "plan").glob("unit=*")
    (part,) = unit.glob("*.parquet")
    assert pq.read_schema(part).metadata[SCHEMA_KEY] == SHARD_PLAN_SCHEMA_ID.encode()
    assert [row["position"] for row in read_plan_unit(unit)] == [0, 1, 2]


def test_an_unreadable_file_or_type_is_an_error(tmp_path):
    for name, body, message in (("set.xlsx", b"x", "unknown file type"),
                                ("set.parquet", b"not parquet", "not a readable Parquet")):
        (tmp_path / name).write_bytes(body)
        with pytest.raises(ValueError, match=message):
            run(ImportConfig(file=tmp_path / name, out=tmp_path / "out"))


def test_a_name_that_is_not_a_plain_folder_name_is_refused(tmp_path):
    from schemas.config import ConfigError

    for bad in ("../elsewhere", "a/b", ".hidden", "two words"):
        with pytest.raises(ConfigError, match="names a folder of each run"):
            ImportConfig(file=tmp_path / "set.csv", out=tmp_path / "out", name=bad)
    assert ImportConfig(file=tmp_path / "set.csv", out=tmp_path / "out",
                        name="demo-test_v1.2").name == "demo-test_v1.2"
