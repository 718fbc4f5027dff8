"""A short CPU run on demo shards retrieves the right track far above chance."""

import json

import pytest

from pipeline.captions.engines import EngineConfig
from pipeline.captions.stage import CaptionsConfig
from pipeline.captions.stage import run as captions
from pipeline.curate.rules_config import SplitsConfig
from pipeline.curate.stage import CurateConfig
from pipeline.curate.stage import run as curate
from pipeline.demo_data import DemoConfig
from pipeline.demo_data import run as demo
from pipeline.shards.audio import ClipConfig
from pipeline.shards.stage import ShardsConfig
from pipeline.shards.stage import run as shards
from trainer.config import load_config
from trainer.train import train


@pytest.fixture(scope="module")
def shards_300(tmp_path_factory):
    work = tmp_path_factory.mktemp("learn")
    demo(DemoConfig(out=work / "demo", tracks=300, test_tracks=0, seed=11, min_duration_s=6,
                    max_duration_s=8, workers=2))
    catalog = work / "demo" / "catalog.parquet"
    captions(CaptionsConfig(catalog=catalog, out=work / "views",
                            engine=EngineConfig(engine="template")))
    # the demo assigns its own splits; drop them so the curation fractions decide
    import pyarrow.parquet as pq

    table = pq.read_table(catalog)
    pq.write_table(table.drop_columns(["split"]), catalog)
    curate(CurateConfig(views=work / "views", catalog=catalog, out=work / "curated",
                        splits=SplitsConfig(valid_fraction=0.15, test_fraction=0)))
    shards(ShardsConfig(curated=work / "curated", catalog=catalog, out=work / "shards",
                        clips=ClipConfig(sample_rate=16_000, clip_seconds=2,
                                         clips_per_track=3), max_samples=48, workers=2))
    return work / "shards"


@pytest.mark.slow
def test_short_run_beats_chance_by_a_clear_margin(shards_300, tmp_path):
    config = load_config("trainer/configs/demo.yaml", [
        f"data.shards={shards_300}", f"run.out={tmp_path}", "model.audio.clip_seconds=2",
        "model.dim=64", "model.dropout=0", "optim.lr=2e-3", "optim.epochs=10",
        "optim.warmup_epochs=1",
        "swap.warmup_epochs=2", "swap.ramp_epochs=2"])
    train(config)
    epochs = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()
              if '"epoch", "epoch"' in line]
    last = epochs[-1]
    tracks = last["valid_tracks"]
    chance_r10, chance_mr = 100 * 10 / tracks, (tracks + 1) / 2
    assert tracks >= 30
    assert last["valid_R@10"] > 2 * chance_r10, epochs
    assert last["valid_MR"] < 0.5 * chance_mr, epochs
    assert epochs[-1]["valid_loss"] < epochs[0]["valid_loss"]
