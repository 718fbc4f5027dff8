"""Two processes (torchrun, gloo) give the loss trajectory of one process with the same
global batch; so does gradient accumulation; a real 2-process run completes; the same
run, believing it drives CUDA GPUs through NCCL, hands every collective tensors on its
own GPU; setup picks NCCL and the GPU before the group; a stalled rank is named."""

import json
import socket
import subprocess
import sys
import time
from contextlib import nullcontext
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from trainer.config import DistConfig
from trainer.distributed import BACKEND_GRACE_S, Dist, loader_note, loader_workers, setup

HERE = Path(__file__).parent
SCRIPT = HERE / "ddp_steps.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args, nproc=2):
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node",
                           str(nproc), "--master_addr", "127.0.0.1", "--master_port",
                           str(free_port()), *map(str, args)], capture_output=True, text=True,
                          timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("text", [[], ["text"]], ids=["frozen-text", "trained-text"])
def test_two_processes_and_accumulation_match_one_process(tmp_path, text):
    """With a trained text encoder too: a pretrained tower's gradients come back through
    the global batch's gather."""
    one, accumulated, two = tmp_path / "one.json", tmp_path / "acc.json", tmp_path / "two.json"
    subprocess.run([sys.executable, str(SCRIPT), str(one), "1", *text], check=True,
                   timeout=600)
    subprocess.run([sys.executable, str(SCRIPT), str(accumulated), "2", *text], check=True,
                   timeout=600)
    result = torchrun(SCRIPT, two, 1, *text)
    assert result.returncode == 0, result.stderr[-3000:]
    reference = json.loads(one.read_text())
    assert reference["losses"][-1] < reference["losses"][0]  # it trains
    assert sum(reference["hard_negatives"]) > 0  # with TextSwap on
    for other in (json.loads(two.read_text()), json.loads(accumulated.read_text())):
        assert other["hard_negatives"] == reference["hard_negatives"]
        # float32 kernels may take another path for another batch size: on one CPU
        # model the 2-process losses differed by 3e-5 (relative) at 74cc12a too; a
        # wrong gradient sync is off by far more
        assert other["losses"] == pytest.approx(reference["losses"], rel=1e-4)


def small_run(shards, out, *extra) -> list[str]:
    return [f"data.shards={shards}", f"run.out={out}", "data.batch_size=4", "data.workers=1",
            "model.audio.clip_seconds=1", "model.audio.cnn.channels=[4,8]", "model.dim=32",
            "optim.epochs=2", "optim.warmup_epochs=1", "run.log_every=1",
            "data.samples_per_epoch=24", *extra]


@pytest.mark.slow
def test_adswap_train_under_torchrun(demo_shards, tmp_path):
    out = tmp_path / "run"
    result = torchrun("-m", "adswap.cli", "train",
                      *[a for s in small_run(demo_shards, out, "run.device=cpu")
                        for a in ("--set", s)])
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if r["type"] == "step"]
    assert [r["step"] for r in steps] == list(range(1, 7))  # 24 samples / (4 x 2 ranks) x 2
    assert [r["epoch"] for r in rows if r["type"] == "epoch"] == [0, 1]
    assert (out / "checkpoints" / "last.pt").exists()


@pytest.mark.slow
@pytest.mark.parametrize("accumulate,text", [(1, "false"), (2, "false"), (1, "true")],
                         ids=["one", "accumulated", "trained-text"])
def test_a_run_that_believes_in_cuda_hands_nccl_only_tensors_on_its_gpu(
        demo_shards, tmp_path, accumulate, text):
    """What a CUDA run would hand NCCL, checked on the CPU (tests/trainer/fake_cuda.py):
    on the code before this test, the loss totals reached NCCL as a CPU tensor. With
    TextSwap on, with gradient caching, and with a trained (pretrained) text encoder,
    whose gradients DDP reduces on the GPU too."""
    out, record = tmp_path / "run", tmp_path / "record"
    record.mkdir()
    # fp32: the fake GPU computes on the CPU, where CUDA's autocast does nothing (bf16
    # training is test_train's on the CPU, and gpu-check's on GPUs)
    result = torchrun(HERE / "fake_cuda_run.py", record, *small_run(
        demo_shards, out, "run.checkpoint_every=2", "swap.warmup_epochs=0",
        "swap.ramp_epochs=1", "swap.p_max=0.5", f"data.accumulate={accumulate}",
        "optim.precision=fp32", f"model.text.trainable={text}"))
    ranks = [json.loads((record / f"rank{r}.json").read_text()) for r in range(2)]
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if r["type"] == "step"]
    assert sum(r["hard_negatives"] for r in steps) > 0
    for rank, body in enumerate(ranks):
        events = body["events"]
        setup_events = [e for e in events if e["event"] != "collective"][:2]
        assert setup_events == [
            {"event": "set_device", "device": rank},
            {"event": "init_process_group", "backend": "nccl", "device_id": f"cuda:{rank}",
             "current_device": rank}]
        calls = [e for e in events if e["event"] == "collective"]
        # every kind of collective the run makes was seen, from where we expect it
        callers = {(e["name"], e["caller"].split(":")[0]) for e in calls}
        assert {("all_reduce", "trainer/distributed.py"), ("broadcast", "trainer/distributed.py"),
                ("all_gather", "trainer/distributed.py"), ("all_gather", "open_clip/loss.py"),
                ("all_gather_object", "trainer/distributed.py")} <= callers, callers
        assert all(d == f"cuda:{rank}" for e in calls for d in e["devices"]
                   if d != "None"), calls
        assert sum(d == f"cuda:{rank}" for e in calls for d in e["devices"]) > 20
        # the training batches' audio (1 s clips of 16 kHz; validation's are copied in
        # embed_batches) came pinned by the loader and was copied without blocking
        audio = [e for e in events if e["event"] == "copy_to_gpu" and
                 e["shape"][1:] == [16_000] and not e["caller"].endswith(" in embed_batches")]
        assert len(audio) == len(steps) * accumulate
        assert all(e["pinned"] and e["non_blocking"] for e in audio)
    # distributed validation puts the shards back in order: one process on the last
    # checkpoint's weights gets the numbers the two processes logged
    from trainer.checkpoint import load_model
    from trainer.validation import validate

    logged = [r for r in rows if r["type"] == "epoch"][-1]
    model, config = load_model(out, out / "checkpoints" / "last.pt")
    if text == "true":  # the pretrained tower was trained, and the checkpoint keeps it
        from trainer.encoders import TextEncoder

        pretrained = TextEncoder(config.model.text).state_dict()
        saved = torch.load(out / "checkpoints" / "last.pt", weights_only=True)["model"]
        tower = [k for k in saved if k.startswith("text.")]
        assert tower and any(not torch.equal(saved[k], pretrained[k[len("text."):]])
                             for k in tower)
    alone = validate(model, config, Dist(), nullcontext)
    assert alone["valid_tracks"] == logged["valid_tracks"] > 2
    for key in ("valid_loss", "valid_R@1", "valid_R@10", "valid_MR"):
        assert alone[key] == pytest.approx(logged[key], rel=1e-5), key


class Recorder:
    def __init__(self):
        self.calls = []

    def __call__(self, name):
        return lambda *args, **kwargs: self.calls.append((name, args, kwargs))


def test_setup_on_cuda_sets_the_gpu_then_makes_an_nccl_group(monkeypatch):
    record = Recorder()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", record("set_device"))
    monkeypatch.setattr(dist, "rendezvous", lambda *a, **k: iter([(dist.HashStore(), 1, 2)]))
    monkeypatch.setattr(dist, "init_process_group", record("init_process_group"))
    info = setup("auto", DistConfig(timeout_s=5))
    info.watch.close()
    assert [name for name, *_ in record.calls] == ["set_device", "init_process_group"]
    assert record.calls[0][1] == (1,)
    _, args, kwargs = record.calls[1]
    assert args == ("nccl",) and kwargs["device_id"] == torch.device("cuda", 1)
    assert kwargs["rank"] == 1 and kwargs["world_size"] == 2
    assert kwargs["timeout"] == timedelta(seconds=5 + BACKEND_GRACE_S)
    assert (info.rank, info.world, info.device) == (1, 2, torch.device("cuda", 1))


def test_setup_refuses_more_processes_than_gpus_and_cuda_without_a_gpu(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ValueError, match="one process per GPU"):
        setup("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="sees no CUDA GPU"):
        setup("cuda")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert setup("auto") == Dist()  # one process on the CPU: no group
    # several processes and no GPU: a CUDA wheel that cannot see the driver, say
    monkeypatch.setenv("WORLD_SIZE", "8")
    with pytest.raises(ValueError, match="8 processes were started but torch .* sees no "
                       "CUDA GPU .* set run.device=cpu to train on CPU processes on purpose"):
        setup("auto")


def test_a_stalled_rank_is_named_after_the_timeout():
    started = time.monotonic()
    result = torchrun(HERE / "stall.py")
    elapsed = time.monotonic() - started
    assert result.returncode != 0
    assert "the stalled collective completed" not in result.stderr
    assert "rank 0 waited 2 s in collective #2 'loss totals'" in result.stderr
    assert "not arrived: rank 1 (last entered #1 'first'" in result.stderr
    assert elapsed < 45  # the stall lasts 60 s; the backend would wait 62 s


def test_loader_workers_fit_the_node():
    assert loader_workers(8, cores=16, processes=8) == 2
    assert loader_workers(8, cores=128, processes=8) == 8
    assert loader_workers(2, cores=2, processes=1) == 2
    assert loader_workers(1, cores=2, processes=4) == 0  # the process loads its own data
    assert loader_workers(0, cores=64, processes=1) == 0


def test_a_loader_without_workers_says_what_to_give_it():
    assert loader_note(8, 8, cores=128, processes=8) is None
    lowered = loader_note(8, 2, cores=16, processes=8)
    assert "16 CPU core(s) for the 8 training process(es)" in lowered
    assert "data.workers 8 -> 2 per process" in lowered
    # SLURM's default of one CPU per task
    starved = loader_note(8, 0, cores=1, processes=1)
    assert "data.workers 8 -> 0: audio is decoded in the training process" in starved
    assert "--cpus-per-task, e.g. 9 per GPU" in starved


def test_the_loaders_shared_memory_is_checked_against_dev_shm():
    from trainer.config import load_config
    from trainer.data import shared_memory_need, shared_memory_problem

    paper = load_config(Path(__file__).parents[2] / "trainer/configs/paper-mert-clip.yaml")
    need = shared_memory_need(paper.data, paper.model.audio, paper.data.workers)
    assert need == 4 * 8 * 128 * 240_000 * 4  # 3.9 GB a process: 4 ahead x 8 workers
    assert shared_memory_problem(need, 8, free=64 * 2**30) is None
    problem = shared_memory_problem(need, 8, free=64 * 2**20)  # docker's default
    for words in ("/dev/shm has 0.07 GB free", "node's 8 training process(es) can hold "
                  "31.46 GB", "3.93 GB per process", "'Bus error'", "--shm-size=40g",
                  "medium: Memory",
                  "lower data.workers or data.batch_size"):
        assert words in problem, problem


def test_train_stops_before_any_work_when_dev_shm_is_too_small(demo_shards, tmp_path,
                                                               monkeypatch):
    from collections import namedtuple

    from trainer import train as train_module
    from trainer.config import load_config

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(train_module, "SHARED_MEMORY", tmp_path)
    monkeypatch.setattr(train_module.shutil, "disk_usage", lambda path: usage(1, 1, 2**20))
    config = load_config(None, small_run(demo_shards, tmp_path / "run", "data.workers=2"))
    with pytest.raises(ValueError, match=r"/dev/shm has 0.00 GB free.*Bus error"):
        train_module.train(config)
    assert not (tmp_path / "run").exists()


class Turns:
    """A process's place in the run, recording its barriers and builds."""

    def __init__(self, rank, local_rank, world=8):
        self.rank, self.local_rank, self.world, self.events = rank, local_rank, world, []

    def barrier(self, name):
        self.events.append(name)


def test_rank_zero_builds_first_then_each_nodes_first_process_then_the_rest():
    from trainer.train import _build_in_turns

    order = {}
    for rank, local_rank in ((0, 0), (4, 0), (1, 1), (5, 1)):  # two nodes of four
        info = Turns(rank, local_rank)
        _build_in_turns(info, lambda info=info: info.events.append("build"))
        order[rank] = info.events
    assert order[0][0] == "build" and order[0].count("build") == 1
    assert order[4] == ["models built (turn 1)", "build", "models built (turn 2)"]
    assert order[1] == order[5] == ["models built (turn 1)", "models built (turn 2)", "build"]
    alone = Turns(0, 0, world=1)
    _build_in_turns(alone, lambda: alone.events.append("build"))
    assert alone.events == ["build"]  # one process: no barriers


def test_batch_norm_is_synchronised_across_gpus_only():
    from trainer.train import sync_batch_norm

    def model():
        return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4))

    gpus, cpus, one = model(), model(), model()
    weight = gpus[1].weight
    sync_batch_norm(gpus, Dist(world=2, device=torch.device("cuda", 0)))
    assert isinstance(gpus[1], torch.nn.SyncBatchNorm) and gpus[1].weight is weight
    sync_batch_norm(cpus, Dist(world=2))  # gloo: SyncBatchNorm has no CPU kernel
    sync_batch_norm(one, Dist(device=torch.device("cuda", 0)))
    assert type(cpus[1]) is type(one[1]) is torch.nn.BatchNorm2d
