"""`train()` under torchrun on the CPU, each process believing it drives a CUDA GPU
through NCCL (fake_cuda.py). Writes rank<N>.json into the folder given first: every
set_device, init_process_group and collective call with the devices it was handed.
Further arguments are config overrides."""

import json
import os
import sys
from pathlib import Path

from fake_cuda import FakeCuda

from trainer.config import load_config
from trainer.train import train


def main(out: Path, overrides: list[str]) -> None:
    fake = FakeCuda(gpus=int(os.environ.get("LOCAL_WORLD_SIZE", 1)),
                    local_rank=int(os.environ.get("LOCAL_RANK", 0)))
    config = load_config(None, overrides)
    error = None
    try:
        with fake:
            train(config)
    except Exception as err:
        error = str(err)
        raise
    finally:
        (out / f"rank{os.environ.get('RANK', 0)}.json").write_text(
            json.dumps({"events": fake.events, "error": error}))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
