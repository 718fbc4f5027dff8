"""Benchmark: what Augment, Drop & Swap costs in training, the loader, and step memory.

1. Overhead: the same batches (default CPU config: log-mel CNN, frozen MiniLM, batch 64,
   5 s clips) trained with TextSwap at p_swap = 0.15 and without, alternating step by
   step on one model, so both see the same machine state. View sampling happens in the
   loader and is measured there. The remainder is split into making the swapped
   captions and embedding them.
2. Loader: samples/s with 1 and 2 workers against what a training step consumes.
3. Memory: peak RSS of a training step (its own process) at batch 16 to 128.

Data: the 400-track demo from bench/shards.py (template captions), cut into 5 s clips.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch  # noqa: E402

BATCHES = 6


def shards_for(work: Path) -> Path:
    from shards import prepare

    folder = prepare(work, 400)
    out = work / "train-shards-5s"
    if not (out / "sizes.json").exists():
        subprocess.run([sys.executable, "-m", "adswap.cli", "shards", "--curated",
                        str(folder / "curated"), "--catalog", str(folder / "catalog.parquet"),
                        "--out", str(out), "--clip-seconds", "5", "--clips-per-track", "2",
                        "--max-samples", "64"], check=True, stderr=subprocess.DEVNULL)
    return out


def setup(shards: Path, batch: int, workers: int = 0):
    """A CPU learner, its step context (no autocast) and a loader of the shards."""
    from schemas.swap_dictionary import SwapDictionary
    from trainer.config import load_config
    from trainer.data import SharedEpoch, train_loader
    from trainer.distributed import Dist
    from trainer.model import DuetMC
    from trainer.swap import Swapper
    from trainer.train import Learner, RunContext

    config = load_config(None, [f"data.shards={shards}", f"data.batch_size={batch}",
                                f"data.workers={workers}", "run.device=cpu"])
    torch.manual_seed(0)
    model = DuetMC(config.model)
    info = Dist()
    learner = Learner.wrap(model, torch.optim.AdamW(model.trainable_parameters(), lr=1e-4),
                           info)
    swapper = Swapper(SwapDictionary.load(shards / "swap_dictionary.json"),
                      config.swap.categories)
    loader = train_loader(config.data, config.model.audio, 0, SharedEpoch())
    return learner, RunContext(config, info, swapper), loader


def overhead(shards: Path) -> dict:
    from trainer.swap import hard_negatives
    from trainer.train import train_step

    learner, run, loader = setup(shards, 64)
    model = learner.model
    batches = [b for _, b in zip(range(BATCHES), loader, strict=False)]
    times: dict[str, list[float]] = {"plain": [], "swap": []}
    hard = []
    for round_ in range(3):  # round 0 warms up
        for i, batch in enumerate(batches):
            for name, p in (("plain", 0.0), ("swap", 0.15)):
                started = time.perf_counter()
                _, n = train_step(learner, run, [batch], p, i)
                if round_:
                    times[name].append(time.perf_counter() - started)
                    if p:
                        hard.append(n)
    making, embedding = [], []
    for i, batch in enumerate(batches):
        started = time.perf_counter()
        negatives = hard_negatives(run.swapper, batch["text"], batch["spans"], batch["tags"], 0.15,
                                   0, i, 0, len(batch["text"]))
        making.append(time.perf_counter() - started)
        if len(negatives):
            started = time.perf_counter()
            model.encode_text(model.tokenize(negatives.texts)).sum().backward()
            embedding.append(time.perf_counter() - started)
    plain, swap = statistics.median(times["plain"]), statistics.median(times["swap"])
    return {"batch": 64, "plain_step_s": round(plain, 4), "swap_step_s": round(swap, 4),
            "overhead_pct": round(100 * (swap - plain) / plain, 2),
            "hard_negatives_per_step": statistics.mean(hard),
            "making_swaps_ms": round(1000 * statistics.median(making), 3),
            "embedding_swaps_ms": round(1000 * statistics.median(embedding), 1) if embedding
            else 0.0,
            "plain_samples_per_s": round(64 / plain, 1)}


def loader_speed(shards: Path, workers: int) -> float:
    *_, loader = setup(shards, 64, workers)
    batches = iter(loader)
    next(batches)  # worker start-up is not throughput
    started = time.perf_counter()
    count = sum(len(next(batches)["text"]) for _ in range(8))
    return round(count / (time.perf_counter() - started), 1)


_STEP = """
import resource, sys, torch
sys.path.insert(0, {bench!r})
from train import setup
from trainer.train import train_step
from pathlib import Path
learner, run, loader = setup(Path({shards!r}), {batch})
batches = iter(loader)
first = next(batches)
resident = int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize() // 1024
for i in range(2):
    train_step(learner, run, [next(batches)], 0.15, i)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resident)
"""


def step_memory(shards: Path, batch: int) -> dict:
    """The process's peak RSS, and how far the steps raised it above what was resident
    before them (model, loader and one batch loaded)."""
    code = _STEP.format(bench=str(Path(__file__).parent), shards=str(shards), batch=batch)
    peak, resident = map(int, subprocess.run([sys.executable, "-c", code], check=True,
                                             capture_output=True,
                                             text=True).stdout.split()[-2:])
    return {"process_peak_mb": round(peak / 1024, 1),
            "step_mb": round((peak - resident) / 1024, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", type=Path, default=Path("bench/results/shards-work"))
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    shards = shards_for(args.work)
    results = {"threads": torch.get_num_threads(), "overhead": overhead(shards)}
    results["loader_samples_per_s"] = {f"workers_{w}": loader_speed(shards, w) for w in (1, 2)}
    results["loader_to_step_ratio"] = {
        k: round(v / results["overhead"]["plain_samples_per_s"], 2)
        for k, v in results["loader_samples_per_s"].items()}
    memory = {f"batch_{b}": step_memory(shards, b) for b in (16, 32, 64, 128)}
    results["memory"] = memory
    results["step_mb_per_sample"] = round(
        (memory["batch_128"]["step_mb"] - memory["batch_16"]["step_mb"]) / 112, 2)
    print(json.dumps(results, indent=1))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "train.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
