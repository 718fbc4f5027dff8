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
             unit: str, chunksize: int = 1) -> Iterator[Result]:
    """Yield function(job) for each job, in order; `workers` 0 means all cores, and one
    worker (or one job) runs inline, with no process start-up."""
    workers = min(workers or os.cpu_count() or 1, max(1, len(jobs)))
    with tqdm(total=len(jobs), desc=desc, unit=unit, file=sys.stderr) as bar:
        if workers == 1:
            for job in jobs:
                yield function(job)
                bar.update()
            return
        context = multiprocessing.get_context("forkserver")
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            for result in pool.map(function, jobs, chunksize=chunksize):
                yield result
                bar.update()
