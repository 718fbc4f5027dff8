"""The caption stage never captions the catalog's test split unless asked to: test
tracks need reference captions only, and LLM captions of them must not reach training."""

import json

import pytest
from tqdm import tqdm
from typer.testing import CliRunner

from adswap.cli import app
from pipeline.captions import stage
from pipeline.captions.engines import EngineConfig, Result
from pipeline.captions.engines.template import TemplateEngine
from pipeline.captions.plan import DropConfig
from pipeline.captions.stage import CaptionsConfig, run
from tests.pipeline.captions.test_stage import rows


def write_catalog(path, splits):
    with path.open("w") as f:
        for i, split in enumerate(splits):
            row = {"track_id": f"t{i:03d}", "audio": f"a/{i}.flac",
                   "tags": {"genre": ["rock"], "mood": ["calm"], "instrument": ["piano"]}}
            if split is not None:
                row["split"] = split
            f.write(json.dumps(row) + "\n")
    return path


class Recording(TemplateEngine):
    """The template engine, remembering every request it was sent."""

    def __init__(self):
        super().__init__()
        self.seen: list[str] = []

    def generate(self, requests, sampling) -> list[Result]:
        self.seen += [r.request_id.split("/")[0] for r in requests]
        return super().generate(requests, sampling)


SPLITS = ["train", "test", "valid", "test", "train", "test", "train", "valid"]


@pytest.mark.parametrize("world_size", [1, 2])
def test_the_test_split_is_never_sent_to_the_engine(tmp_path, world_size):
    catalog = write_catalog(tmp_path / "catalog.jsonl", SPLITS)
    test_ids = {f"t{i:03d}" for i, s in enumerate(SPLITS) if s == "test"}
    engine = Recording()
    skipped = 0
    for rank in range(world_size):
        config = CaptionsConfig(catalog=catalog, out=tmp_path / "views",
                                engine=EngineConfig(engine="template"),
                                drop=DropConfig(n_views=2), chunk_tracks=2, rank=rank,
                                world_size=world_size)
        stats = run(config, engine_factory=lambda *_: engine)
        skipped += stats.test_skipped
    assert skipped == 3 * world_size  # every rank reads (and skips) the whole catalog
    assert engine.seen and not set(engine.seen) & test_ids
    found = {r["track_id"] for r in rows(tmp_path / "views")}
    assert found == {f"t{i:03d}" for i, s in enumerate(SPLITS) if s != "test"}
    saved = json.loads((tmp_path / "views" / "_stats" / f"r00000-of{world_size:05d}.json")
                       .read_text())
    assert saved["test_skipped"] == 3


def test_include_test_captions_it_and_a_catalog_without_splits_is_all_captioned(tmp_path):
    catalog = write_catalog(tmp_path / "catalog.jsonl", SPLITS)
    result = CliRunner().invoke(app, ["captions", "--catalog", str(catalog), "--out",
                                      str(tmp_path / "all"), "--engine", "template",
                                      "--n-views", "1", "--include-test"])
    assert result.exit_code == 0, result.output
    assert len({r["track_id"] for r in rows(tmp_path / "all")}) == len(SPLITS)
    plain = write_catalog(tmp_path / "plain.jsonl", [None] * 4)
    stats = run(CaptionsConfig(catalog=plain, out=tmp_path / "plain",
                               engine=EngineConfig(engine="template"),
                               drop=DropConfig(n_views=1)))
    assert stats.tracks == 4 and stats.test_skipped == 0


def test_a_catalog_of_test_tracks_only_says_why_nothing_was_captioned(tmp_path):
    catalog = write_catalog(tmp_path / "catalog.jsonl", ["test", "test"])
    with pytest.raises(ValueError, match="2 test-split tracks skipped: --include-test"):
        run(CaptionsConfig(catalog=catalog, out=tmp_path / "views",
                           engine=EngineConfig(engine="template")))


class Bar(tqdm):
    """The stage's progress bar, noting its total at every step of progress."""

    seen: list[tuple[int, int]] = []

    def update(self, n=1):
        result = super().update(n)
        Bar.seen.append((self.n, self.total))
        return result


def test_an_llm_runs_progress_bar_counts_only_the_views_it_will_generate(tmp_path,
                                                                        monkeypatch):
    """A 900-track demo showed 9,900 views and a 1h10m ETA for 4,400 views of work:
    the total counted its test tracks. With an LLM engine the bar's total is the work
    to be done from the start, and on a rerun the views already on disk leave it as
    their chunks are passed (before any generation, for a killed run's rerun)."""
    monkeypatch.setattr(stage, "tqdm", Bar)
    catalog = write_catalog(tmp_path / "catalog.jsonl", SPLITS)
    # tracks 0 and 2 get two instruments, so two tag subsets for their two views; the
    # others one subset, so one view (planning makes no more views than subsets)
    lines = catalog.read_text().splitlines()
    for i in (0, 2):
        row = json.loads(lines[i])
        row["tags"]["instrument"] = ["piano", "drums"]
        lines[i] = json.dumps(row)
    catalog.write_text("\n".join(lines) + "\n")
    config = CaptionsConfig(catalog=catalog, out=tmp_path / "views", chunk_tracks=2,
                            engine=EngineConfig(engine="openai"), drop=DropConfig(n_views=2))
    Bar.seen = []
    run(config, engine_factory=lambda *_: Recording())
    assert Bar.seen[-1] == (7, 7)  # of 5 train/valid tracks: 2 x 2 views + 3 x 1
    assert {total for _, total in Bar.seen} == {7}  # from the first step on
    # a run killed after its first chunk file: a rerun's bar counts the rest
    for path in sorted((tmp_path / "views").glob("views-*.parquet"))[1:]:
        path.unlink()
    Bar.seen = []
    again = run(config, engine_factory=lambda *_: Recording())
    assert again.views_generated == 3 and again.views_reused == 4
    assert Bar.seen[-1] == (3, 3) and {total for _, total in Bar.seen} == {3}
