import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """A Ray cluster of 2 CPUs on this machine for one test module (it takes 5-20 s to
    start on 2 cores): no dashboard, usage stats off, its files under the test's temp
    folder; its workers import this checkout's modules (the tests' engines among them).
    Yields the address a second driver (a CLI process) joins it by."""
    ray = pytest.importorskip("ray")
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING",
             _temp_dir=str(tmp_path_factory.mktemp("ray")),
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT),
                                       "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS",
                                                                         "1")}})
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
