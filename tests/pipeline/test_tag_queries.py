"""`adswap tag-queries`: each held-out track's query is word for word the tags text the
shards stage writes (what p_cap 0 trains on), and `adswap import-eval` takes the file."""

import pyarrow.parquet as pq
import pytest
import webdataset as wds
from typer.testing import CliRunner

from adswap.cli import app
from pipeline.eval_sets import ImportConfig
from pipeline.eval_sets import run as import_eval
from pipeline.shards.audio import ClipConfig
from pipeline.tag_queries import TagQueriesConfig, run
from schemas.catalog import Track, write_catalog
from schemas.problems import SCHEMA_KEY


def shard_tags_text(shards, split):
    samples = wds.WebDataset([str(p) for p in sorted(shards.glob(f"{split}-*.tar"))],
                             shardshuffle=False).decode()
    return {s["json"]["track_id"]: s["json"]["tags_text"] for s in samples}


def test_queries_are_the_shards_tags_text_and_import_eval_reads_them(
        demo_catalog, demo_shards, tmp_path):
    demo, catalog = demo_catalog
    # the demo's test tracks get no views, so no shards: train and valid have both
    for split in ("train", "valid", "test"):
        out = tmp_path / f"{split}.parquet"
        stats = run(TagQueriesConfig(catalog=demo / "catalog.parquet", out=out, split=split))
        table = pq.read_table(out)
        assert table.schema.metadata[SCHEMA_KEY] == b"eval_captions/1"
        rows = table.to_pylist()
        assert stats.queries == len(rows) == sum(t.split == split for t in catalog.tracks)
        assert {r["caption_id"] for r in rows} == {0} and {r["language"] for r in rows} == {"en"}
        queries = {r["track_id"]: r["text"] for r in rows}
        if split == "test":
            assert set(queries) == {t.track_id for t in catalog.tracks if t.split == "test"}
        else:
            assert queries == shard_tags_text(demo_shards, split)
    imported = import_eval(ImportConfig(
        file=tmp_path / "test.parquet", catalog=demo / "catalog.parquet", out=tmp_path / "set",
        clips=ClipConfig(sample_rate=16_000, clip_seconds=2, position="start"), workers=1))
    assert imported.tracks == imported.captions == sum(t.split == "test" for t in catalog.tracks)
    assert not imported.rejects


def test_bad_input_names_what_to_fix(demo_catalog, tmp_path):
    demo, _ = demo_catalog
    with pytest.raises(ValueError, match="out must be a .parquet file"):
        TagQueriesConfig(catalog=demo / "catalog.parquet", out=tmp_path / "q.csv")
    with pytest.raises(ValueError, match="split"):
        TagQueriesConfig(catalog=demo / "catalog.parquet", out=tmp_path / "q.parquet",
                         split="holdout")
    only_train = write_catalog([Track("a", "a.flac", {"genre": ("rock",)}, split="train")],
                               tmp_path / "catalog.parquet")
    result = CliRunner().invoke(app, ["tag-queries", "--catalog", str(only_train),
                                      "--out", str(tmp_path / "q.parquet")])
    assert result.exit_code != 0
    assert "no valid track has split 'test'" in result.output
    assert not (tmp_path / "q.parquet").exists()
    assert "Traceback" not in result.output
