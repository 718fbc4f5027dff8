"""Which share of the work this process does: `rank`/`world_size` settings, or a SLURM
array's task id and count when they are left unset."""

from __future__ import annotations

import dataclasses
import os

from schemas.config import setting


def rank_setting():
    return setting(None, help="This job's share, from 0 (default: the SLURM array task, "
                   "or 0).")


def world_size_setting():
    return setting(None, help="Number of jobs sharing the work (default: the SLURM array "
                   "size, or 1).")


def check_rank(config) -> list[str]:
    """The problems of a config's rank/world_size, as far as they are set."""
    rank, world = config.rank, config.world_size
    if world is not None and world < 1:
        return ["world_size must be >= 1"]
    if rank is not None and (rank < 0 or (world is not None and rank >= world)):
        return [f"rank: need 0 <= rank < world_size, got rank={rank}, world_size={world}"]
    return []


def resolve_rank(config):
    """The config with rank and world_size filled: given ones win; otherwise a SLURM job
    array's task id and count; otherwise (0, 1)."""
    rank, world_size = config.rank, config.world_size
    if rank is None and world_size is None and "SLURM_ARRAY_TASK_ID" in os.environ:
        task = int(os.environ["SLURM_ARRAY_TASK_ID"])
        first = int(os.environ.get("SLURM_ARRAY_TASK_MIN", 0))
        count = int(os.environ.get("SLURM_ARRAY_TASK_COUNT", 1))
        rank, world_size = task - first, count
    return dataclasses.replace(config, rank=0 if rank is None else rank,
                               world_size=1 if world_size is None else world_size)
