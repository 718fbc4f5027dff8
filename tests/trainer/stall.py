"""Two processes (torchrun, gloo); after one collective together, the last rank stalls
for a long time before the next, as a rank stuck on a hung file system would. The
others must stop after dist.timeout_s and name it."""

import sys
import time

from trainer.config import DistConfig
from trainer.distributed import setup

TIMEOUT_S, STALL_S = 2.0, 60.0

if __name__ == "__main__":
    info = setup("cpu", DistConfig(timeout_s=TIMEOUT_S))
    info.sum("first", 1.0)
    if info.rank == info.world - 1:
        time.sleep(STALL_S)
    info.sum("loss totals", 1.0)
    print("the stalled collective completed", file=sys.stderr)
    info.close()
