"""The engine in a worker process that is replaced after a number of requests."""

import multiprocessing
import os
import signal
import time

import pytest

from pipeline.captions import worker as worker_module
from pipeline.captions.engines import EngineConfig, Request, Sampling
from pipeline.captions.engines.template import TemplateEngine
from pipeline.captions.engines.vllm_engine import RECYCLE_VLLM
from pipeline.captions.stage import run
from pipeline.captions.worker import EngineWorkerDied, WorkerEngine
from schemas.config import ConfigError
from tests.pipeline.captions.test_stage import config, make_catalog, rows


class RecordingEngine(TemplateEngine):
    """Notes the process it runs in; kills that process at its first request for track
    t00020 while the file `kill-at-t00020` exists (deleted first, so a rerun lives)."""

    def __init__(self, folder):
        self.folder = folder
        with (folder / "pids").open("a") as f:
            f.write(f"{os.getpid()}\n")

    def generate(self, requests, sampling):
        trigger = self.folder / "kill-at-t00020"
        if trigger.exists() and any(r.request_id.startswith("t00020/") for r in requests):
            trigger.unlink()
            os.kill(os.getpid(), signal.SIGKILL)
        return super().generate(requests, sampling)


def recording_engine(engine_config, cache_dir):  # module level: the worker unpickles it
    return RecordingEngine(cache_dir)


def _sleep():
    time.sleep(600)


def alive(pid: int) -> bool:
    """Running, not ended (a zombie waits for its parent to read its exit)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


class SpawningEngine(RecordingEngine):
    """As vLLM on a GPU: loading starts a process of its own (vLLM's engine core is a
    daemon child of the process that builds the engine), which a daemonic worker may
    not have ("daemonic processes are not allowed to have children")."""

    def __init__(self, folder):
        super().__init__(folder)
        self.child = multiprocessing.get_context("spawn").Process(target=_sleep, daemon=True)
        self.child.start()
        with (folder / "children").open("a") as f:
            f.write(f"{self.child.pid}\n")


def spawning_engine(engine_config, cache_dir):
    return SpawningEngine(cache_dir)


def test_an_engine_that_starts_processes_runs_in_workers_that_end_them(tmp_path, catalog):
    (tmp_path / "w").mkdir()
    recycled = config(tmp_path, out="recycled", batch_requests=16, cache_dir=tmp_path / "w",
                      engine=EngineConfig(engine="template", recycle_requests=50))
    assert run(recycled, engine_factory=spawning_engine).views_generated == 120
    assert rows(tmp_path / "recycled") == rows(_in_process(tmp_path))
    children = _pids(tmp_path / "w", "children")
    assert len(children) == 2 and len(set(_pids(tmp_path / "w"))) == 2  # replaced once
    assert not any(map(alive, children))  # ended with their workers


def test_a_killed_worker_takes_the_processes_its_engine_started_with_it(tmp_path, catalog):
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "kill-at-t00020").touch()
    killed = config(tmp_path, out="killed", cache_dir=tmp_path / "w",
                    engine=EngineConfig(engine="template", recycle_requests=50))
    with pytest.raises(RuntimeError, match="was killed by SIGKILL"):
        run(killed, engine_factory=spawning_engine)
    orphan = _pids(tmp_path / "w", "children")[-1]
    deadline = time.monotonic() + 10
    while alive(orphan) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(orphan)  # SIGKILL to the worker's process group
    again = run(killed, engine_factory=spawning_engine)
    assert again.views_reused == 64 and again.views_generated == 56
    assert rows(tmp_path / "killed") == rows(_in_process(tmp_path))
    assert not any(map(alive, _pids(tmp_path / "w", "children")))


def _in_process(tmp_path):
    if not (tmp_path / "in-process").exists():
        run(config(tmp_path, out="in-process", batch_requests=16))
    return tmp_path / "in-process"


def failing_engine(engine_config, cache_dir):
    raise OSError("no model at /models/missing")


@pytest.fixture
def catalog(tmp_path):
    return make_catalog(tmp_path / "catalog.jsonl", 30)


@pytest.fixture(autouse=True)
def replace_on_count_alone(monkeypatch):
    # a worker that starts in a second would otherwise live 20 s before its replacement
    monkeypatch.setattr(worker_module, "MIN_LIFE_PER_START", 0.0)


def _pids(folder, name="pids"):
    return [int(line) for line in (folder / name).read_text().split()]


def test_a_replaced_worker_writes_the_rows_of_an_in_process_run(tmp_path, catalog):
    (tmp_path / "w").mkdir()
    recycled = run(config(tmp_path, out="recycled", batch_requests=16, cache_dir=tmp_path / "w",
                          engine=EngineConfig(engine="template", recycle_requests=50)),
                   engine_factory=recording_engine)
    in_process = run(config(tmp_path, out="in-process", batch_requests=16))
    assert recycled.views_generated == in_process.views_generated == 120
    assert rows(tmp_path / "recycled") == rows(tmp_path / "in-process")
    # a worker serves whole batches until it has served 50 requests: 4 batches of 16
    # (the 8-track chunks plan 32 views, so 2 chunks), then a fresh one takes over
    pids = _pids(tmp_path / "w")
    assert len(pids) == len(set(pids)) == 2 and os.getpid() not in pids
    assert recycled.peak_rss_mb > in_process.peak_rss_mb + 20  # plus the worker's peak


def test_a_killed_worker_is_named_and_a_rerun_resumes_with_identical_rows(tmp_path, catalog):
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "kill-at-t00020").touch()
    recycled = config(tmp_path, out="killed", cache_dir=tmp_path / "w",
                      engine=EngineConfig(engine="template", recycle_requests=50))
    with pytest.raises(RuntimeError) as err:
        run(recycled, engine_factory=recording_engine)
    message = str(err.value)
    pid = _pids(tmp_path / "w")[-1]
    for part in (f"worker process (pid {pid}) was killed by SIGKILL", "out-of-memory killer",
                 "during a batch of 32 requests",
                 f"The 2 chunk files before this one in {tmp_path / 'killed'} are complete "
                 "and kept: rerun the same command to resume"):
        assert part in message, message
    assert len(list((tmp_path / "killed").glob("views-*.parquet"))) == 2
    again = run(recycled, engine_factory=recording_engine)
    assert again.views_reused == 64 and again.views_generated == 56
    run(config(tmp_path, out="clean"))
    assert rows(tmp_path / "killed") == rows(tmp_path / "clean")


def test_a_worker_that_died_between_batches_is_named(tmp_path):
    engine = WorkerEngine(recording_engine, EngineConfig(engine="template"), tmp_path, 100)
    request = Request("t1/0/en", [], {"genre": ["rock"]}, "en", seed=1)
    assert engine.generate([request], Sampling())[0].text == "A rock track with various " \
        "instruments."
    os.kill(engine.pids[0], signal.SIGTERM)
    time.sleep(0.5)
    with pytest.raises(EngineWorkerDied, match=rf"\(pid {engine.pids[0]}\) was killed by "
                       "SIGTERM during a batch of 1 requests") as err:
        engine.generate([request], Sampling())
    assert not err.value.killed
    assert engine.generate([request], Sampling())  # the next batch gets a fresh worker
    assert len(set(engine.pids)) == 2
    engine.close()


def test_an_engine_that_cannot_start_in_the_worker_says_why(tmp_path, catalog):
    with pytest.raises(RuntimeError, match="while loading the engine(.|\n)*no model at "
                       "/models/missing"):
        run(config(tmp_path, engine=EngineConfig(engine="template", recycle_requests=10)),
            engine_factory=failing_engine)


def test_recycling_is_on_for_vllm_by_default_and_checked():
    assert EngineConfig(engine="vllm").recycle_after == RECYCLE_VLLM
    assert EngineConfig(engine="template").recycle_after == 0
    assert EngineConfig(engine="openai").recycle_after == 0
    assert EngineConfig(engine="vllm", recycle_requests=0).recycle_after == 0
    assert EngineConfig(engine="template", recycle_requests=7).recycle_after == 7
    with pytest.raises(ConfigError, match="recycle_requests must be >= 0"):
        EngineConfig(recycle_requests=-1)
