"""Processes, devices and collectives for multi-GPU training.

One process per GPU (torchrun sets RANK, WORLD_SIZE, LOCAL_RANK). On CUDA the process
group is NCCL only, and every tensor handed to a collective lives on the training device:
the methods of `Dist` put their tensors there themselves, so callers cannot hand NCCL a
CPU tensor (NCCL serves CUDA tensors only; a CPU one fails with "no backend for cpu").
We chose this over a group serving both device types ("cpu:gloo,cuda:nccl"): a second
transport would need its own sockets beside NCCL's (on clusters gloo often picks the
wrong network interface), and collectives that mix transports are ordered by nothing;
the price, copying a few bookkeeping numbers to the GPU, is nothing beside a step.

Every collective here has a name. Each rank records the last one it entered in the
process group's store, and a watchdog thread stops a rank that has waited in one for
`dist.timeout_s` with a message naming the ranks that never arrived; the backend's own
timeout is set later, so this message comes first.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta

import torch
import torch.distributed as dist

from trainer.config import DistConfig

# seconds the backend waits beyond dist.timeout_s, so that the watchdog's message, which
# names the stalled rank, comes before the backend's own abort, which does not
BACKEND_GRACE_S = 60.0
STALL_EXIT_CODE = 3


class Watch:
    """Records each named collective in the store; a thread reports a wait that is too
    long, naming the ranks that have not reached the collective, and ends the process
    (torchrun then stops the others)."""

    def __init__(self, store, rank: int, world: int, timeout_s: float):
        self.store, self.rank, self.world, self.timeout_s = store, rank, world, timeout_s
        self.seq = 0
        self.waiting: tuple[int, str, float] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="adswap-collective-watch",
                                        daemon=True)
        self._thread.start()

    @contextmanager
    def collective(self, name: str):
        self.seq += 1
        self.store.set(str(self.rank), json.dumps([self.seq, name, time.time()]))
        self.waiting = (self.seq, name, time.monotonic())
        try:
            yield
        except RuntimeError as err:  # the backend failed or gave up first: say who is missing
            raise RuntimeError(f"{err}\nadswap: " + self.report(
                self.seq, name, time.monotonic() - self.waiting[2])) from err
        finally:
            self.waiting = None

    def report(self, seq: int, name: str, waited: float) -> str:
        missing = []
        for other in range(self.world):
            if other == self.rank:
                continue
            if not self.store.check([str(other)]):
                missing.append(f"rank {other} (has entered no collective)")
                continue
            their_seq, their_name, at = json.loads(self.store.get(str(other)))
            if their_seq < seq:
                missing.append(f"rank {other} (last entered #{their_seq} '{their_name}' "
                               f"{time.time() - at:.0f} s ago)")
        who = ", ".join(missing) or "none: every rank entered it, so the backend itself " \
            "is stuck (NCCL: check the network and NCCL_DEBUG=INFO)"
        return (f"rank {self.rank} waited {waited:.0f} s in collective #{seq} '{name}' "
                f"(dist.timeout_s={self.timeout_s:g}); not arrived: {who}. A rank that "
                "stalls outside collectives (a hung file system, a stuck loader worker) "
                "leaves the others waiting here; raise dist.timeout_s if one rank "
                "legitimately works alone for longer")

    def _run(self) -> None:
        poll = min(1.0, self.timeout_s / 10)
        while not self._stop.wait(poll):
            waiting = self.waiting
            if waiting is None:
                continue
            seq, name, since = waiting
            waited = time.monotonic() - since
            if waited > self.timeout_s and self.waiting is waiting:
                print(f"adswap: {self.report(seq, name, waited)}", file=sys.stderr, flush=True)
                # the main thread is blocked inside the backend and cannot be interrupted
                os._exit(STALL_EXIT_CODE)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


@dataclass(frozen=True)
class Dist:
    """This process's place in the run and the collectives it takes part in. The
    default is a single process on the CPU, where every collective is the identity."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    watch: Watch | None = field(default=None, compare=False, repr=False)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @contextmanager
    def _collective(self, name: str):
        with self.watch.collective(name) if self.watch else _nothing():
            yield

    def sum(self, name: str, *values: torch.Tensor | float) -> list[float]:
        """Each value summed over ranks, in one collective and one device sync."""
        totals = torch.stack([v.detach().to(self.device, torch.float64).reshape(())
                              if isinstance(v, torch.Tensor)
                              else torch.tensor(float(v), dtype=torch.float64,
                                                device=self.device) for v in values])
        with self._collective(name):
            if self.world > 1:
                dist.all_reduce(totals)
            return totals.cpu().tolist()

    def broadcast_flag(self, name: str, flag: bool) -> bool:
        """Rank 0's flag, on every rank."""
        if self.world == 1:
            return flag
        value = torch.tensor([int(flag)], dtype=torch.int32, device=self.device)
        with self._collective(name):
            dist.broadcast(value, 0)
            return bool(value.cpu().item())

    def barrier(self, name: str) -> None:
        # an all-reduce on our own device rather than dist.barrier(), which on NCCL
        # guesses a device when it has none and is not seen by the watch
        if self.world > 1:
            self.sum(name, 0.0)

    def gather_rows(self, name: str, rows: torch.Tensor) -> torch.Tensor:
        """Every rank's rows ([n, ...], n may differ), concatenated in rank order, on
        this rank's device."""
        rows = rows.to(self.device)
        if self.world == 1:
            return rows
        counts = [int(n) for n in self.sum(f"{name} (sizes)",
                                           *[len(rows) if r == self.rank else 0
                                             for r in range(self.world)])]
        padded = torch.zeros((max(counts), *rows.shape[1:]), dtype=rows.dtype,
                             device=self.device)
        padded[:len(rows)] = rows
        parts = [torch.empty_like(padded) for _ in range(self.world)]
        with self._collective(name):
            dist.all_gather(parts, padded)
        return torch.cat([part[:n] for part, n in zip(parts, counts, strict=True)])

    def gather_objects(self, name: str, value) -> list:
        """Every rank's picklable value, in rank order. NCCL moves the pickles through
        the current CUDA device, which `setup` sets before the group exists."""
        if self.world == 1:
            return [value]
        out = [None] * self.world
        with self._collective(name):
            dist.all_gather_object(out, value)
        return out

    def close(self) -> None:
        """Leave together (gloo aborts a rank whose peer tears down first)."""
        if self.world == 1:
            return
        self.barrier("end of training")
        self.watch.close()
        dist.destroy_process_group()


@contextmanager
def _nothing():
    yield


def setup(device: str, config: DistConfig = DistConfig()) -> Dist:
    """This process's rank and device; with WORLD_SIZE > 1 (torchrun), the process group.

    `device`: auto | cpu | cuda. On CUDA each process takes the GPU of its LOCAL_RANK,
    made current before the group exists: NCCL binds a rank's communicator to the
    current device, so a rank that created it while on GPU 0 would put its buffers
    there (and barriers and object collectives would run on the wrong GPU)."""
    want_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if want_cuda and not torch.cuda.is_available():
        raise ValueError(f"run.device is cuda but torch {torch.__version__} sees no CUDA "
                         "GPU (torch.cuda.is_available() is False); use run.device=auto "
                         "or cpu, or a CUDA build of torch on a GPU machine")
    world = int(os.environ.get("WORLD_SIZE", 1))
    rank, local_rank = int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0))
    if world > 1 and device == "auto" and not want_cuda:
        # a CUDA wheel that cannot see the driver would otherwise train on gloo, on the
        # CPU, in every process, and say nothing
        raise ValueError(f"{world} processes were started but torch {torch.__version__} "
                         "sees no CUDA GPU (torch.cuda.is_available() is False: check "
                         "nvidia-smi, the driver and CUDA_VISIBLE_DEVICES); set "
                         "run.device=cpu to train on CPU processes on purpose")
    target = torch.device("cpu")
    if want_cuda:
        visible = torch.cuda.device_count()
        if local_rank >= visible:
            raise ValueError(f"LOCAL_RANK {local_rank} but {visible} GPU(s) visible: start "
                             f"one process per GPU (torchrun --nproc_per_node {visible}, "
                             f"make train NPROC={visible})")
        torch.cuda.set_device(local_rank)
        target = torch.device("cuda", local_rank)
    if world == 1:
        return Dist(device=target)
    timeout = timedelta(seconds=config.timeout_s + BACKEND_GRACE_S)
    store, rank, world = next(dist.rendezvous("env://", timeout=timeout))
    store.set_timeout(timeout)
    dist.init_process_group("nccl" if want_cuda else "gloo", store=store, rank=rank,
                            world_size=world, timeout=timeout,
                            device_id=target if want_cuda else None)
    watch = Watch(dist.PrefixStore("adswap/collectives/", store), rank, world,
                  config.timeout_s)
    return Dist(rank, world, local_rank, target, watch)


def loader_workers(requested: int, cores: int | None = None,
                   processes: int | None = None) -> int:
    """Loader workers per process such that all processes' workers on this node fit in
    its cores (each worker runs one thread: decoding is single-threaded, and PyTorch
    sets one torch thread per worker). `cores`: this process's usable cores (its CPU
    affinity, which SLURM and containers restrict); `processes`: LOCAL_WORLD_SIZE."""
    cores = cores if cores is not None else usable_cores()
    processes = processes if processes is not None else local_processes()
    return min(requested, max(0, cores // processes))


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, which SLURM and containers
    restrict)."""
    return len(os.sched_getaffinity(0))


def local_processes() -> int:
    """Training processes on this node (torchrun's LOCAL_WORLD_SIZE)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", 1))


def loader_note(requested: int, workers: int, cores: int, processes: int) -> str | None:
    """What to tell a user whose loader got fewer workers than data.workers."""
    if workers >= requested:
        return None
    where = (f"this process sees {cores} CPU core(s) for the {processes} training "
             f"process(es) of its node")
    if workers == 0:
        return (f"train: {where}, so data.workers {requested} -> 0: audio is decoded in "
                "the training process, between steps, and the GPU waits for it. Give each "
                "process cores for its workers (SLURM: --cpus-per-task, e.g. "
                f"{requested + 1} per GPU; containers: --cpus)")
    return (f"train: {where}, so data.workers {requested} -> {workers} per process, so "
            "that the loader workers of this node's processes fit in its cores")
