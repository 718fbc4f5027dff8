import os

import pytest

# Half the cores per test process (ADSWAP_TEST_THREADS overrides), also for the
# processes tests start: two test processes on 2 cores with 2 threads each slowed the
# learning test from 65 s to 1,084 s. Set before torch is imported anywhere.
THREADS = os.environ.setdefault("ADSWAP_TEST_THREADS", str(max(1, (os.cpu_count() or 2) // 2)))
for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, THREADS)

from pipeline.demo_data import DemoConfig, run  # noqa: E402
from schemas.catalog import read_catalog  # noqa: E402


@pytest.fixture(scope="session")
def demo_catalog(tmp_path_factory):
    """A 40-track demo catalog (32 train/valid, 8 test) rendered once per test session."""
    out = tmp_path_factory.mktemp("demo")
    run(DemoConfig(out=out, tracks=32, test_tracks=8, seed=7, min_duration_s=6, max_duration_s=8,
                   workers=2))
    return out, read_catalog(out / "catalog.parquet")


@pytest.fixture(scope="session")
def demo_curated(demo_catalog, tmp_path_factory):
    """The demo catalog captioned by the template engine (4 views per track) and curated."""
    from pipeline.captions.engines import EngineConfig
    from pipeline.captions.plan import DropConfig
    from pipeline.captions.stage import CaptionsConfig
    from pipeline.captions.stage import run as captions
    from pipeline.curate.stage import CurateConfig
    from pipeline.curate.stage import run as curate

    demo, _ = demo_catalog
    work = tmp_path_factory.mktemp("curated")
    captions(CaptionsConfig(catalog=demo / "catalog.parquet", out=work / "views",
                            engine=EngineConfig(engine="template"), drop=DropConfig(n_views=4)))
    curate(CurateConfig(views=work / "views", catalog=demo / "catalog.parquet",
                        out=work / "curated"))
    return work / "curated"


@pytest.fixture(scope="session")
def demo_shards(demo_curated, demo_catalog, tmp_path_factory):
    """Shards of the curated demo: two 2 s clips per track at 16 kHz, 8 samples a shard."""
    from pipeline.shards.audio import ClipConfig
    from pipeline.shards.stage import ShardsConfig
    from pipeline.shards.stage import run as shards

    demo, _ = demo_catalog
    out = tmp_path_factory.mktemp("demo_shards")
    shards(ShardsConfig(curated=demo_curated, catalog=demo / "catalog.parquet", out=out,
                        clips=ClipConfig(sample_rate=16_000, clip_seconds=2,
                                         clips_per_track=2),
                        max_samples=8, workers=2))
    return out


@pytest.fixture(scope="session")
def trained_runs(demo_shards, tmp_path_factory):
    """Two tiny runs on the demo shards (seeds 0 and 1, two epochs each): models to
    embed, search with, compare by ear and export."""
    from trainer.config import load_config
    from trainer.train import train

    runs = []
    for seed in (0, 1):
        out = tmp_path_factory.mktemp(f"run{seed}")
        train(load_config(None, [
            f"data.shards={demo_shards}", f"run.out={out}", f"run.seed={seed}",
            "data.batch_size=8", "data.workers=1", "model.audio.clip_seconds=1.5",
            "model.audio.cnn.channels=[4,8]", "model.dim=32", "model.layers=1", "optim.epochs=2",
            "optim.warmup_epochs=1"]))
        runs.append(out)
    return runs


@pytest.fixture(scope="session")
def demo_indexes(trained_runs, demo_shards, demo_catalog, tmp_path_factory):
    """Each run's embeddings of the demo shards, with the catalog's audio linked; the
    first also has its approximate index."""
    from retrieval.ann import build_for
    from retrieval.embed import EmbedConfig, embed

    demo, _ = demo_catalog
    indexes = []
    for trained in trained_runs:
        out = tmp_path_factory.mktemp("index") / "index"
        embed(EmbedConfig(run=trained, out=out, shards=demo_shards,
                          catalog=demo / "catalog.parquet", device="cpu"))
        indexes.append(out)
    build_for(indexes[0])
    return indexes
