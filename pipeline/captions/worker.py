"""An engine that runs in a child process, replaced after a number of requests.

vLLM on CPU keeps memory it has freed (issue 17: glibc's arenas fragment as every
step's activations take a new size). Trimming hands the free pages back, but the
arenas keep growing with the process's age (2 GB of free chunks by 7,000 views), and
in one process batches ran ~5% slower after 4,000 views than before. A process that
ends gives all of it back, so the stage bounds a long run by generating in a worker
that is shut down after `recycle_requests` requests and started afresh for the next
batch. Outputs do not change: every request carries its own seed, so a fresh engine
answers it as the old one would have (tested with vLLM on CPU at temperature 1; on GPUs
this holds with vLLM's batch invariance, the vllm engine's default there).

The child is started with the 'spawn' method (no copy of the parent's threads or
locks) and builds its engine from the picklable factory and EngineConfig; the parent
sends (requests, sampling) and gets the results back over a pipe. It is not a daemon:
vLLM on a GPU starts processes of its own (its engine core, one worker per GPU with
tensor parallelism), which a daemon may not. So it leads a process group of its own,
and ending it ends the group, the processes its engine started included; it is ended
with the stage, and before the interpreter exits, so a parent that fails never waits
on it.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.util
import os
import signal
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from pipeline.captions.engines import Engine, EngineConfig, Request, Result, Sampling
from pipeline.captions.memory import peak_resident_mb

# A worker serves at least this many times as long as it took to start (spawn, imports,
# model load) before it is replaced, so replacements cost at most ~5% of the run
# whatever the device: on a GPU, 2,500 requests may take less time than a model load.
MIN_LIFE_PER_START = 20.0
_POLL_S = 0.5


class EngineWorkerDied(RuntimeError):
    """The worker process ended while the parent waited for it (killed, out of memory,
    crashed in native code); `killed`: by SIGKILL, as the out-of-memory killer does."""

    def __init__(self, message: str, killed: bool):
        super().__init__(message)
        self.killed = killed


def _serve(conn, factory: Callable, config: EngineConfig, cache_dir: Path) -> None:
    # its own group, which its engine's processes join, so one signal ends them all; a
    # Ctrl-C reaches the parent's group only, and the parent ends this one
    os.setpgid(0, 0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        engine = factory(config, cache_dir)
    except BaseException:
        conn.send(("error", traceback.format_exc()))
        return
    conn.send(("ready", (engine.name, engine.model_id, engine.model_revision)))
    while True:
        message = conn.recv()
        if message is None:
            return
        requests, sampling = message
        try:
            results = engine.generate(requests, sampling)
        except BaseException:
            conn.send(("error", traceback.format_exc()))
            return
        conn.send(("results", (results, peak_resident_mb())))


def _describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "stopped answering"
    if exitcode < 0:
        name = (signal.Signals(-exitcode).name if -exitcode in signal.valid_signals()
                else f"signal {-exitcode}")
        why = (" (the kernel's out-of-memory killer sends it; so does `kill -9`)"
               if -exitcode == signal.SIGKILL else "")
        return f"was killed by {name}{why}"
    return f"exited with code {exitcode}"


class WorkerEngine:
    """The Engine interface over a child process; see the module's docstring."""

    def __init__(self, factory: Callable[[EngineConfig, Path], Engine], config: EngineConfig,
                 cache_dir: Path, recycle_requests: int):
        if recycle_requests < 1:
            raise ValueError("recycle_requests must be >= 1 for a worker engine")
        self.factory, self.config, self.cache_dir = factory, config, cache_dir
        self.recycle_requests = recycle_requests
        self.pids: list[int] = []         # every worker started, in order
        self.peak_rss_mb = 0.0            # the highest any worker reached
        self._context = multiprocessing.get_context("spawn")
        self._process = self._conn = None
        self._start()

    def _start(self) -> None:
        started = time.perf_counter()
        self._conn, child_end = self._context.Pipe()
        self._process = self._context.Process(
            target=_serve, args=(child_end, self.factory, self.config, self.cache_dir),
            name="adswap-engine", daemon=False)
        self._process.start()
        # before multiprocessing joins its non-daemon children at exit
        self._finalizer = multiprocessing.util.Finalize(self, self.close, exitpriority=10)
        child_end.close()  # so the parent's reads end when the child does
        self.pids.append(self._process.pid)
        self.name, self.model_id, self.model_revision = self._receive(
            "ready", "while loading the engine")
        self._start_s = time.perf_counter() - started
        self._ready_at = time.perf_counter()
        self._served = 0

    def generate(self, requests: Sequence[Request], sampling: Sampling) -> list[Result]:
        if self._process is None:
            self._start()
        when = f"during a batch of {len(requests)} requests"
        try:
            self._conn.send((list(requests), sampling))
        except OSError:  # it died between batches
            self._died(when)
        results, peak = self._receive("results", when)
        self.peak_rss_mb = max(self.peak_rss_mb, peak)
        self._served += len(requests)
        lived = time.perf_counter() - self._ready_at
        if (self._served >= self.recycle_requests
                and lived >= MIN_LIFE_PER_START * self._start_s):
            self.close()
        return results

    def _receive(self, kind: str, when: str):
        # polling, rather than one blocking recv, because a child that died may leave
        # processes of its own holding the pipe open
        while not self._conn.poll(_POLL_S):
            if not self._process.is_alive() and not self._conn.poll(0):
                self._died(when)
        try:
            got, payload = self._conn.recv()
        except (EOFError, OSError):
            self._died(when)
        if got == "error":
            self.close()
            raise RuntimeError(f"the caption engine failed {when}:\n{payload}")
        assert got == kind, (got, kind)
        return payload

    def _died(self, when: str):
        self._process.join(5)
        pid, exitcode = self._process.pid, self._process.exitcode
        self._forget()
        raise EngineWorkerDied(f"the caption engine's worker process (pid {pid}) "
                               f"{_describe_exit(exitcode)} {when}",
                               killed=exitcode == -signal.SIGKILL)

    def close(self) -> None:
        """End the worker (a later generate starts a fresh one)."""
        if self._process is None:
            return
        try:
            self._conn.send(None)
        except OSError:
            pass
        self._process.join(30)
        self._forget()

    def _forget(self) -> None:
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        # what the engine started may outlive the worker (killed, or ended without
        # shutting its engine down): the worker's group goes with it
        try:
            os.killpg(self._process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self._finalizer.cancel()
        self._conn.close()
        self._process.close()
        self._process = self._conn = None
