"""Run a stage's independent units of work in worker processes, with a progress bar.

Workers start from a forkserver, never by forking a process that may hold threads or
open files (audio and Parquet libraries do), and results come back in job order.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

from tqdm import tqdm

Job = TypeVar("Job")
Result = TypeVar("Result")


def map_jobs(function: Callable[[Job], Result], jobs: Sequence[Job], workers: int, desc: str,
             unit: str, chunksize: int = 1, weights: Sequence[int] | None = None,
             postfix: Callable[[Result], str] | None = None) -> Iterator[Result]:
    """Yield function(job) for each job, in order; `workers` 0 means all cores, and one
    worker (or one job) runs inline, with no process start-up.

    `weights` counts each job in the bar's unit (a shard job counts its tracks, so the
    bar shows tracks/s); `postfix(result)` returns text shown after the rate (e.g. MB/s).
    """
    workers = min(workers or os.cpu_count() or 1, max(1, len(jobs)))
    weights = list(weights) if weights is not None else [1] * len(jobs)
    with tqdm(total=sum(weights), desc=desc, unit=unit, file=sys.stderr) as bar:
        def advance(result: Result, weight: int) -> Result:
            bar.update(weight)
            if postfix is not None:
                bar.set_postfix_str(postfix(result), refresh=False)
            return result

        if workers == 1:
            for job, weight in zip(jobs, weights, strict=True):
                yield advance(function(job), weight)
            return
        context = multiprocessing.get_context("forkserver")
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            for result, weight in zip(pool.map(function, jobs, chunksize=chunksize), weights,
                                      strict=True):
                yield advance(result, weight)


def map_jobs_on_ray(function: Callable[[Job], Result], jobs: Sequence[Job], desc: str,
                    unit: str, attempts: int, weights: Sequence[int] | None = None,
                    postfix: Callable[[Result], str] | None = None,
                    ) -> Iterator[tuple[Job, Result | None, str | None]]:
    """Yield (job, function(job), None) for each job as Ray tasks finish them (one CPU
    each, on whichever node has one), or (job, None, why) for a job given up.

    A task whose worker process dies (killed, out of memory, a lost node) is run again,
    `attempts` times in all; one that raises is not (its error would repeat) and is
    given up at once. The caller must be connected to a cluster (pipeline/ray_cluster.py)
    and `function` must be importable there, as a module-level function is."""
    import ray

    remote = ray.remote(num_cpus=1, max_retries=attempts - 1, retry_exceptions=False)(function)
    weights = list(weights) if weights is not None else [1] * len(jobs)
    waiting = {remote.remote(job): (job, weight)
               for job, weight in zip(jobs, weights, strict=True)}
    with tqdm(total=sum(weights), desc=desc, unit=unit, file=sys.stderr) as bar:
        while waiting:
            [ref], _ = ray.wait(list(waiting), num_returns=1)
            job, weight = waiting.pop(ref)
            try:
                result = ray.get(ref)
            except ray.exceptions.RayError as err:
                lines = str(err).strip().splitlines()
                yield job, None, lines[-1] if lines else type(err).__name__
                continue
            bar.update(weight)
            if postfix is not None:
                bar.set_postfix_str(postfix(result), refresh=False)
            yield job, result, None
