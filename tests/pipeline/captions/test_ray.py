"""`adswap captions --executor ray`: a pool of engine actors on a local Ray cluster (2
CPUs) writes the rows of a local run; a killed actor is replaced and its chunk redone; a
chunk that keeps failing is named and left for the next run; a killed driver loses
nothing, and a rerun (on Ray or locally) generates only what is missing."""

import dataclasses
import functools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.captions.engines import EngineConfig, make_engine
from pipeline.captions.plan import DropConfig
from pipeline.captions.ray_executor import ActorsConfig
from pipeline.captions.stage import CaptionsConfig, run
from tests.pipeline.captions.test_stage import make_catalog, rows

pytestmark = pytest.mark.slow


def config(tmp_path, out, **changes):
    base = dict(catalog=tmp_path / "catalog.jsonl", out=tmp_path / out,
                engine=EngineConfig(engine="template"), drop=DropConfig(n_views=4),
                chunk_tracks=25)
    base.update(changes)
    return CaptionsConfig(**base)


class _Dying:
    """An engine that ends its process (as the out-of-memory killer would) when
    `dies(requests, marker)` says so, and otherwise answers as the template engine."""

    def __init__(self, engine, marker: Path, dies):
        self.engine, self.marker, self.dies = engine, marker, dies
        self.name, self.model_id = engine.name, engine.model_id
        self.model_revision = engine.model_revision

    def generate(self, requests, sampling):
        if self.dies(requests, self.marker):
            self.marker.with_name(f"{self.marker.name}-{os.getpid()}").touch()
            os._exit(1)
        return self.engine.generate(requests, sampling)


def _once(requests, marker: Path) -> bool:
    """Dies the first time any actor is given a chunk, mid-chunk (one actor only: the
    marker is created exclusively)."""
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return False
    return True


def _on_track_30(requests, marker: Path) -> bool:
    """Dies whenever the chunk holds track t00030: a chunk that never succeeds."""
    return any(r.request_id.startswith("t00030/") for r in requests)


def dying_factory(marker: Path, dies, engine: EngineConfig, cache_dir: Path):
    return _Dying(make_engine(engine, cache_dir), marker, dies)


@pytest.fixture(scope="module")
def catalog_and_local(tmp_path_factory):
    folder = tmp_path_factory.mktemp("captions_ray")
    make_catalog(folder / "catalog.jsonl", 200)
    run(config(folder, "local"))
    return folder, rows(folder / "local")


def test_two_actors_write_the_rows_of_a_local_run(ray_cluster, catalog_and_local):
    folder, local = catalog_and_local
    stats = run(config(folder, "ray", executor="ray"))
    assert stats.actors == 2 and stats.actor_restarts == 0 and not stats.failed_chunks
    assert stats.peak_rss_mb > 100  # this process's and the highest actor's
    assert stats.views_generated == len(local) == 200 * 4
    assert rows(folder / "ray") == local
    # a chunk lost is regenerated, and nothing else, here by an engine in a worker
    # process inside each actor (as vllm's default recycle_requests has it)
    chunks = sorted((folder / "ray").glob("views-*.parquet"))
    assert len(chunks) == 8
    chunks[3].unlink()
    again = run(config(folder, "ray", executor="ray",
                       engine=EngineConfig(engine="template", recycle_requests=40)))
    assert again.views_generated == 100 and again.views_reused == 700
    assert again.actors == 1  # one chunk to do: one actor started
    assert rows(folder / "ray") == local
    # all done: a rerun starts no cluster and no actor
    assert run(config(folder, "ray", executor="ray")).actors == 0


def test_a_killed_actor_is_replaced_and_its_chunk_redone(ray_cluster, catalog_and_local,
                                                         tmp_path):
    folder, local = catalog_and_local
    marker = tmp_path / "died"
    stats = run(config(folder, tmp_path / "views", executor="ray"),
                engine_factory=functools.partial(dying_factory, marker, _once))
    assert len(list(tmp_path.glob("died-*"))) == 1, "one actor must have died mid-chunk"
    assert stats.actor_restarts == 1 and stats.failures == 0 and not stats.failed_chunks
    assert rows(tmp_path / "views") == local
    assert not list((tmp_path / "views").glob(".*tmp*"))


def test_a_chunk_that_keeps_failing_is_named_and_left_for_the_next_run(
        ray_cluster, catalog_and_local, tmp_path):
    folder, local = catalog_and_local
    settings = config(folder, tmp_path / "views", executor="ray",
                      ray=ActorsConfig(attempts=2))
    stats = run(settings, engine_factory=functools.partial(
        dying_factory, tmp_path / "died", _on_track_30))
    bad = "views-r00000-of00001-000001.parquet"  # tracks 25-49
    assert stats.failed_chunks == [bad] and stats.actor_restarts == 2
    assert stats.failures == 100 and stats.views_generated == 700
    assert not (tmp_path / "views" / bad).exists()
    assert len(list((tmp_path / "views").glob("views-*.parquet"))) == 7
    # the next run (locally, this time) generates that chunk alone
    again = run(dataclasses.replace(settings, executor="local"))
    assert again.views_generated == 100 and again.views_reused == 700
    assert rows(tmp_path / "views") == local


def test_a_driver_killed_mid_run_loses_nothing(ray_cluster, tmp_path):
    make_catalog(tmp_path / "catalog.jsonl", 1500, seed=2)
    out = tmp_path / "killed"
    args = [sys.executable, "-m", "adswap.cli", "captions", "--catalog",
            str(tmp_path / "catalog.jsonl"), "--engine", "template", "--chunk-tracks", "30",
            "--n-views", "4", "--out", str(out), "--executor", "ray", "--address",
            ray_cluster]
    driver = subprocess.Popen(args, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              start_new_session=True)
    deadline = time.time() + 120
    while not list(out.glob("views-*.parquet")):
        assert driver.poll() is None, "the run ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.01)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    written = len(list(out.glob("views-*.parquet")))
    assert written < 50, "the run finished before the kill"

    again = run(config(tmp_path, "killed", chunk_tracks=30, executor="ray"))
    run(config(tmp_path, "clean", chunk_tracks=30))
    assert again.views_reused == written * 30 * 4
    killed_rows, clean_rows = rows(out), rows(tmp_path / "clean")
    assert len(clean_rows) == 1500 * 4
    assert len({r["content_key"] for r in killed_rows}) == len(killed_rows)
    assert killed_rows == clean_rows
    assert not list(out.glob(".*tmp*"))


def _hangs_on_track_30(requests, marker: Path) -> bool:
    if any(r.request_id.startswith("t00030/") for r in requests):
        time.sleep(3600)
    return False


def test_a_hung_actor_is_ended_after_the_chunk_timeout(ray_cluster, catalog_and_local,
                                                       tmp_path):
    folder, local = catalog_and_local
    settings = config(folder, tmp_path / "views", executor="ray",
                      ray=ActorsConfig(attempts=1, chunk_timeout_s=2))
    began = time.monotonic()
    stats = run(settings, engine_factory=functools.partial(
        dying_factory, tmp_path / "died", _hangs_on_track_30))
    assert time.monotonic() - began < 60
    assert stats.failed_chunks == ["views-r00000-of00001-000001.parquet"]
    assert stats.actor_restarts == 1 and stats.views_generated == 700
    assert "no answer in 2 s" in stats.failure_examples[0]


def broken_factory(engine: EngineConfig, cache_dir: Path):
    raise RuntimeError("no such model: /models/missing")


def test_an_engine_that_cannot_start_stops_the_run_with_its_error(ray_cluster,
                                                                 catalog_and_local, tmp_path):
    folder, _ = catalog_and_local
    settings = config(folder, tmp_path / "views", executor="ray",
                      ray=ActorsConfig(attempts=1))
    with pytest.raises(RuntimeError, match="no Ray actor could start") as err:
        run(settings, engine_factory=broken_factory)
    assert "no such model: /models/missing" in str(err.value)
    assert not list((tmp_path / "views").glob("views-*.parquet"))
