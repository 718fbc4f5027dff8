import pytest

from pipeline.demo_data import DemoConfig, run
from schemas.catalog import read_catalog


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
