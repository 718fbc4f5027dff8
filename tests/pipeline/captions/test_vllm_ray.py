"""The vLLM engine in a Ray actor (runs in .venv-llm, in `make test`'s LLM_TESTS; about
a minute on 2 cores, the cluster's start included): the bundled SmolLM2 on one actor
writes the rows of a local run, sampled text and faithful decoding included."""

from pathlib import Path

import pytest

from pipeline.captions.engines import EngineConfig, Sampling
from pipeline.captions.plan import DropConfig
from pipeline.captions.ray_executor import ActorsConfig
from pipeline.captions.stage import CaptionsConfig, run
from tests.pipeline.captions.test_stage import make_catalog, rows

pytestmark = pytest.mark.llm


def test_smollm2_on_a_ray_actor_writes_the_rows_of_a_local_run(ray_cluster, tmp_path):
    pytest.importorskip("vllm")
    make_catalog(tmp_path / "catalog.jsonl", 3)

    def settings(out: Path, executor: str) -> CaptionsConfig:
        # the engine in the calling process (locally) or the actor's (on Ray): each
        # request's seed alone decides its text
        return CaptionsConfig(catalog=tmp_path / "catalog.jsonl", out=out,
                              engine=EngineConfig(engine="vllm", recycle_requests=0),
                              drop=DropConfig(n_views=2), chunk_tracks=2,
                              sampling=Sampling(temperature=0.7, max_tokens=24),
                              executor=executor, ray=ActorsConfig(cpus_per_actor=2))

    on_ray = run(settings(tmp_path / "ray", "ray"))
    local = run(settings(tmp_path / "local", "local"))
    assert on_ray.actors == 1 and on_ray.views_generated == local.views_generated == 6
    found = rows(tmp_path / "ray")
    assert found == rows(tmp_path / "local")
    assert all(r["model_id"] == "HuggingFaceTB/SmolLM2-135M-Instruct" for r in found)
    assert len({r["text"] for r in found}) > 3  # sampled, not all alike
