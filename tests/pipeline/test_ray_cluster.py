"""The `executor` and `ray.*` settings, without a cluster: the pool a cluster's GPUs give,
what a machine without Ray is told, and that nothing imports Ray unless asked to."""

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from adswap.cli import app
from pipeline.captions.engines import EngineConfig
from pipeline.captions.engines.vllm_engine import VllmSettings
from pipeline.captions.ray_executor import ActorsConfig, gpus_per_actor, pool_size
from pipeline.ray_cluster import RayConfig, import_ray
from schemas.config import ConfigError


def actors_on(cluster: dict, engine: EngineConfig, **settings) -> tuple[float, int]:
    config = ActorsConfig(**settings)
    gpus = gpus_per_actor(config, engine, cluster.get("GPU", 0))
    return gpus, pool_size(config, gpus, cluster)


def test_an_eight_gpu_node_gets_an_engine_on_every_gpu():
    node = {"CPU": 32.0, "GPU": 8.0}
    vllm = EngineConfig(engine="vllm")
    assert actors_on(node, vllm) == (1.0, 8)
    two_gpus_each = EngineConfig(engine="vllm", vllm=VllmSettings(tensor_parallel_size=2))
    assert actors_on(node, two_gpus_each) == (2.0, 4)
    assert actors_on({"CPU": 64.0, "GPU": 16.0}, vllm) == (1.0, 16)  # two such nodes
    assert actors_on(node, vllm, gpus_per_actor=0.5) == (0.5, 16)
    assert actors_on(node, vllm, actors=3) == (1.0, 3)
    # no GPUs: vLLM on CPUs, and engines that need none take a CPU each
    assert actors_on({"CPU": 2.0}, vllm, cpus_per_actor=2) == (0.0, 1)
    assert actors_on(node, EngineConfig(engine="template")) == (0.0, 32)
    assert actors_on(node, EngineConfig(engine="openai")) == (0.0, 32)
    with pytest.raises(RuntimeError, match="has 0 GPUs; an actor needs 1"):
        actors_on({"CPU": 2.0}, vllm, gpus_per_actor=1)


def test_ray_settings_report_every_problem():
    with pytest.raises(ConfigError) as err:
        ActorsConfig(attempts=0, actors=-1, gpus_per_actor=-1, cpus_per_actor=0)
    for word in ("attempts", "actors", "gpus_per_actor", "cpus_per_actor"):
        assert word in str(err.value)
    with pytest.raises(ConfigError, match="attempts"):
        RayConfig(attempts=0)


def test_without_ray_the_error_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if it were not installed
    with pytest.raises(RuntimeError, match=r"pip install -e '\.\[ray\]'"):
        import_ray()
    (tmp_path / "catalog.jsonl").write_text(json.dumps(
        {"track_id": "t1", "audio": "a.flac", "tags": {"genre": ["rock"]}}) + "\n")
    result = CliRunner().invoke(app, ["captions", "--catalog", str(tmp_path / "catalog.jsonl"),
                                      "--out", str(tmp_path / "views"), "--engine", "template",
                                      "--executor", "ray"])
    assert result.exit_code == 1 and "`ray` extra" in result.output
    result = CliRunner().invoke(app, ["captions", "--catalog", str(tmp_path / "catalog.jsonl"),
                                      "--out", str(tmp_path / "views"), "--executor", "slurm"])
    assert result.exit_code != 0 and "executor must be one of local, ray" in result.output


def test_the_cli_and_the_local_stages_never_import_ray():
    code = ("import sys, adswap.cli, pipeline.captions.stage, pipeline.shards.stage, "
            "pipeline.captions.ray_executor; print('ray' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "False"
