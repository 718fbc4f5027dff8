import pytest

from pipeline.demo_data import DemoConfig, run
from schemas.catalog import read_catalog


@pytest.fixture(scope="session")
def demo_catalog(tmp_path_factory):
    """A 40-track demo catalog rendered once per test session."""
    out = tmp_path_factory.mktemp("demo")
    run(DemoConfig(out=out, tracks=40, seed=7, min_duration_s=6, max_duration_s=8, workers=2))
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
