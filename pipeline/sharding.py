"""Which share of the work this process does: `--rank/--world-size`, or a SLURM array."""

from __future__ import annotations

import os


def resolve_rank(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """Flags win; otherwise a SLURM job array's task id and count; otherwise (0, 1)."""
    if rank is None and world_size is None and "SLURM_ARRAY_TASK_ID" in os.environ:
        task = int(os.environ["SLURM_ARRAY_TASK_ID"])
        first = int(os.environ.get("SLURM_ARRAY_TASK_MIN", 0))
        count = int(os.environ.get("SLURM_ARRAY_TASK_COUNT", 1))
        rank, world_size = task - first, count
    rank = 0 if rank is None else rank
    world_size = 1 if world_size is None else world_size
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, "
                         f"world_size={world_size}")
    return rank, world_size
