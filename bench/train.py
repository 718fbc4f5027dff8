"""What Augment, Drop & Swap costs in training, the loader, and step memory.

1. Overhead: the same batches (default CPU config: log-mel CNN, frozen MiniLM, batch 64,
   5 s clips) trained with TextSwap at p_swap = 0.15 and without, alternating step by
   step on one model, so both see the same machine state. View sampling happens in the
   loader and is measured there. The remainder is split into making the swapped
   captions and embedding them.
2. Loader: samples/s with 1 and 2 workers against what a training step consumes.
3. Memory: peak RSS of a training step (its own process) at batch 16 to 128.

Data: the 400-track demo bench/shards.py also uses (template captions, bench/data.py),
cut into 5 s clips.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from bench.data import check_demo, curated_demo
from bench.harness import WORK, Outcome, in_child
from schemas.config import Config, setting


@dataclass(frozen=True)
class Settings(Config):
    tracks: int = setting(400, help="train/valid tracks of the demo catalog")
    test_tracks: int = setting(500, help="held-out test tracks rendered beside them")
    duration_s: tuple[float, ...] = setting((10.0, 15.0), help="shortest and longest track")
    batch: int = setting(64, help="batch of the overhead and loader measurements")
    batches: int = setting(6, help="batches each overhead round trains on")
    loader_workers: tuple[int, ...] = setting((1, 2), help="loader workers to measure")
    memory_batches: tuple[int, ...] = setting((16, 32, 64, 128), help="batch sizes whose "
                                              "step memory is measured, each in its own "
                                              "process")
    work: Path = setting(WORK, help="folder for the demo catalog and shards, kept and "
                         "reused (bench/shards.py's too)")

    def check(self) -> list[str]:
        problems = check_demo(self.tracks, self.test_tracks, self.duration_s)
        if not self.memory_batches:
            problems.append("memory_batches must name one size or more")
        return problems


def shards_for(settings: Settings) -> Path:
    folder = curated_demo(settings.work, settings.tracks, settings.test_tracks,
                          settings.duration_s)
    out = folder / "train-shards-5s"
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


def overhead(shards: Path, size: int, count: int) -> dict:
    from trainer.swap import hard_negatives
    from trainer.train import train_step

    learner, run, loader = setup(shards, size)
    model = learner.model
    batches = [b for _, b in zip(range(count), loader, strict=False)]
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
    return {"batch": size, "plain_step_s": round(plain, 4), "swap_step_s": round(swap, 4),
            "overhead_pct": round(100 * (swap - plain) / plain, 2),
            "hard_negatives_per_step": statistics.mean(hard),
            "making_swaps_ms": round(1000 * statistics.median(making), 3),
            "embedding_swaps_ms": round(1000 * statistics.median(embedding), 1) if embedding
            else 0.0,
            "plain_samples_per_s": round(size / plain, 1)}


def loader_speed(shards: Path, size: int, workers: int) -> float:
    *_, loader = setup(shards, size, workers)
    batches = iter(loader)
    next(batches)  # worker start-up is not throughput
    started = time.perf_counter()
    count = sum(len(next(batches)["text"]) for _ in range(8))
    return round(count / (time.perf_counter() - started), 1)


def step_memory_child(shards: str, batch: int) -> tuple[float, float]:
    """In a fresh process: its peak RSS after two steps, and what was resident before them
    (model, loader and one batch loaded), in MB."""
    from pipeline.captions.memory import peak_resident_mb, resident_mb
    from trainer.train import train_step

    learner, run, loader = setup(Path(shards), batch)
    batches = iter(loader)
    next(batches)
    before = resident_mb()
    for i in range(2):
        train_step(learner, run, [next(batches)], 0.15, i)
    return peak_resident_mb(), before


def step_memory(shards: Path, batch: int) -> dict:
    """The process's peak RSS, and how far the steps raised it above what was resident
    before them."""
    (peak, before), _ = in_child(step_memory_child, shards, batch)
    return {"process_peak_mb": round(peak, 1), "step_mb": round(peak - before, 1)}


def run(settings: Settings) -> Outcome:
    shards = shards_for(settings)
    figures = {"threads": torch.get_num_threads(),
               "overhead": overhead(shards, settings.batch, settings.batches)}
    figures["loader_samples_per_s"] = {f"workers_{w}": loader_speed(shards, settings.batch, w)
                                       for w in settings.loader_workers}
    figures["loader_to_step_ratio"] = {
        k: round(v / figures["overhead"]["plain_samples_per_s"], 2)
        for k, v in figures["loader_samples_per_s"].items()}
    memory = {f"batch_{b}": step_memory(shards, b) for b in settings.memory_batches}
    figures["memory"] = memory
    low, high = min(settings.memory_batches), max(settings.memory_batches)
    if high > low:
        figures["step_mb_per_sample"] = round(
            (memory[f"batch_{high}"]["step_mb"] - memory[f"batch_{low}"]["step_mb"]) /
            (high - low), 2)
    over = figures["overhead"]
    return Outcome(figures, {
        "overhead.overhead_pct": "the same batches' steps without TextSwap, alternating "
                                 "step by step, same run (a percentage over them)",
        **{f"loader_to_step_ratio.{k}": "the samples/s a plain training step consumes"
           for k in figures["loader_to_step_ratio"]}},
        f"train: TextSwap (p_swap 0.15) adds {over['overhead_pct']}% to a batch-"
        f"{over['batch']} step ({over['plain_step_s']} s -> {over['swap_step_s']} s); the "
        "loader makes " + ", ".join(f"{v}x ({k})" for k, v in
                                    figures["loader_to_step_ratio"].items())
        + f" what a step consumes; step memory {figures.get('step_mb_per_sample')} MB per "
        "sample")
