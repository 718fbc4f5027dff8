import pytest

from pipeline.demo_data import DemoConfig, run
from schemas.catalog import read_catalog


@pytest.fixture(scope="session")
def demo_catalog(tmp_path_factory):
    """A 40-track demo catalog rendered once per test session."""
    out = tmp_path_factory.mktemp("demo")
    run(DemoConfig(out=out, tracks=40, seed=7, min_duration_s=6, max_duration_s=8, workers=2))
    return out, read_catalog(out / "catalog.parquet")
