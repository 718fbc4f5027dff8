"""`adswap shards --executor ray`: shards built as Ray tasks on a local cluster (2 CPUs)
are byte for byte those of a local run; a task killed mid-shard is run again; a shard
that keeps failing is named, the others kept, and the next run (local) builds it."""

import os
from pathlib import Path

import pytest

import pipeline.shards.stage as shards_stage
from pipeline.ray_cluster import RayConfig
from pipeline.shards.audio import ClipConfig
from pipeline.shards.stage import ShardsConfig, run

pytestmark = pytest.mark.slow

CLIPS = ClipConfig(sample_rate=16_000, clip_seconds=2, clips_per_track=2, position="centre")


def shard_config(demo_catalog, demo_curated, out, **overrides):
    demo, _ = demo_catalog
    return ShardsConfig(curated=demo_curated, catalog=demo / "catalog.parquet", out=out,
                        clips=CLIPS, max_samples=8, **overrides)


def tars(folder):
    return sorted(Path(folder).glob("*.tar"))


def build_or_die(job):
    """build_shard, except that the first task given the first train shard ends its
    process before writing it, as a killed worker would; where the file `died` beside
    the out folder says 'always', it dies every time."""
    marker = job.tar.parent.parent / "died"
    if job.unit == "train-000000":
        if marker.read_text() == "always":
            os._exit(1)
        try:
            os.close(os.open(marker.with_suffix(".once"), os.O_CREAT | os.O_EXCL))
            os._exit(1)
        except FileExistsError:
            pass
    return shards_stage.build_shard(job)


@pytest.fixture(scope="module")
def local(demo_catalog, demo_curated, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards_local")
    assert run(shard_config(demo_catalog, demo_curated, out, workers=1)).complete
    return out


def same_bytes(a_folder, b_folder):
    assert [p.name for p in tars(a_folder)] == [p.name for p in tars(b_folder)]
    for a, b in zip(tars(a_folder), tars(b_folder), strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name
    for name in ("sizes.json", "manifest.json", "rejects.jsonl"):
        assert (a_folder / name).read_bytes() == (b_folder / name).read_bytes()


def test_ray_tasks_write_the_bytes_of_a_local_run(ray_cluster, demo_catalog, demo_curated,
                                                  local, tmp_path):
    stats = run(shard_config(demo_catalog, demo_curated, tmp_path, executor="ray"))
    assert stats.complete and stats.built == len(tars(local)) > 2
    same_bytes(local, tmp_path)


def test_a_killed_task_is_run_again(ray_cluster, demo_catalog, demo_curated, local,
                                    tmp_path, monkeypatch):
    marker = tmp_path / "died"
    marker.write_text("once")
    monkeypatch.setattr(shards_stage, "build_shard", build_or_die)
    stats = run(shard_config(demo_catalog, demo_curated, tmp_path / "out", executor="ray"))
    assert marker.with_suffix(".once").exists(), "a task must have died"
    assert stats.complete
    same_bytes(local, tmp_path / "out")


def test_a_shard_that_keeps_failing_is_named_and_built_by_the_next_run(
        ray_cluster, demo_catalog, demo_curated, local, tmp_path, monkeypatch):
    marker = tmp_path / "died"
    marker.write_text("always")
    monkeypatch.setattr(shards_stage, "build_shard", build_or_die)
    settings = shard_config(demo_catalog, demo_curated, tmp_path / "out", executor="ray",
                            ray=RayConfig(attempts=2))
    with pytest.raises(RuntimeError, match="train-000000") as err:
        run(settings)
    assert "rerun the same command" in str(err.value)
    assert len(tars(tmp_path / "out")) == len(tars(local)) - 1
    monkeypatch.undo()
    stats = run(shard_config(demo_catalog, demo_curated, tmp_path / "out", workers=1))
    assert stats.complete and stats.built == 1
    same_bytes(local, tmp_path / "out")
