"""What the text feature cache (`adswap features`) buys: training steps per second with
the frozen MiniLM run at every step against its states read from the cache, on the
same shards, config and seed, in the same run; and what building the cache costs.

Data: the 400-track demo bench/train.py trains on (template captions, 5 s clips), the
default (demo) training config: log-mel CNN, frozen MiniLM, batch 64, TextSwap at its
top probability (p_max 0.15) from the first step, so the swapped captions' states are
read (or computed) as well. Each row is a real `train()` in its own process, two loader
workers; a step's time is the trainer's own (samples/s in metrics.jsonl: fetching the
batch included), the median after the warm-up steps. Goal: cached >= 3x uncached.

Build: `build_features` on the train shards (in its own process): seconds and bytes per
1,000 train clips, the share of TextSwap texts, and from the measured tokens per track
what the text states of 1M tracks would take for CLIP ViT-B/32's text tower (512 wide,
float16, the paper's frozen text encoder), at this cache's swap_variants.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path

from bench.data import check_demo
from bench.harness import WORK, Outcome, in_child
from bench.train import shards_for
from schemas.config import Config, setting

CLIP_TEXT_WIDTH = 512
GOAL = 3.0


@dataclass(frozen=True)
class Settings(Config):
    tracks: int = setting(400, help="train/valid tracks of the demo catalog")
    test_tracks: int = setting(500, help="held-out test tracks rendered beside them")
    duration_s: tuple[float, ...] = setting((10.0, 15.0), help="shortest and longest track")
    batch: int = setting(64, help="pairs per step")
    steps: int = setting(12, help="measured steps per row, after the warm-up")
    warmup: int = setting(3, help="steps run before the measured ones")
    swap_variants: int = setting(8, help="TextSwap texts cached per caption and category")
    work: Path = setting(WORK, help="folder of the demo and its shards (bench/train.py's)")

    def check(self) -> list[str]:
        problems = check_demo(self.tracks, self.test_tracks, self.duration_s)
        if self.steps < 1 or self.warmup < 1 or self.batch < 2:
            problems.append("steps and warmup must be >= 1, batch >= 2")
        return problems


def _overrides(shards: str, features: str, batch: int, variants: int) -> list[str]:
    return [f"data.shards={shards}", f"features.dir={features}", f"data.batch_size={batch}",
            f"features.swap_variants={variants}", "data.workers=2", "run.device=cpu",
            "swap.warmup_epochs=0", "swap.ramp_epochs=0", "run.validate=false",
            "run.log_every=1"]


def build_child(shards: str, features: str, variants: int) -> dict:
    from trainer.config import load_config
    from trainer.features import build_features

    stats = build_features(load_config(None, _overrides(shards, features, 64, variants)),
                           log=lambda _: None)
    size = sum(p.stat().st_size for p in stats.folder.iterdir())
    return {"texts": stats.texts, "swaps": stats.swaps, "tokens": stats.tokens,
            "bytes": size, "seconds": round(stats.seconds, 2)}


def train_child(shards: str, features: str, out: str, batch: int, variants: int,
                steps: int, warmup: int) -> dict:
    from trainer.config import load_config
    from trainer.train import train

    train(load_config(None, [*_overrides(shards, features, batch, variants),
                             f"run.out={out}", f"run.max_steps={warmup + steps}"]))
    rows = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text()
            .splitlines()]
    rates = [r["samples_per_s"] for r in rows if r["type"] == "step" and r["step"] > warmup]
    return {"samples_per_s": round(statistics.median(rates), 1),
            "hard_negatives_per_step": statistics.mean(
                r["hard_negatives"] for r in rows if r["type"] == "step")}


def run(settings: Settings) -> Outcome:
    import shutil

    shards = shards_for(settings)
    sizes = json.loads((shards / "sizes.json").read_text())
    clips = sum(n for name, n in sizes.items() if name.startswith("train-"))
    manifest = json.loads((shards / "manifest.json").read_text())
    tracks = clips / manifest["settings"]["clips"]["clips_per_track"]
    work = Path(settings.work) / "features"
    shutil.rmtree(work, ignore_errors=True)
    built, measured = in_child(build_child, str(shards), str(work / "cache"),
                               settings.swap_variants)
    rows = {}
    for name, features in (("uncached", ""), ("cached", str(work / "cache"))):
        rows[name], _ = in_child(train_child, str(shards), features, str(work / name),
                                 settings.batch, settings.swap_variants, settings.steps,
                                 settings.warmup)
    speedup = round(rows["cached"]["samples_per_s"] / rows["uncached"]["samples_per_s"], 2)
    tokens_per_track = built["tokens"] / tracks
    figures = {
        "train_clips": clips,
        "build": {**built, "process_wall_s": round(measured.wall_s, 1),
                  "seconds_per_1000_clips": round(built["seconds"] * 1000 / clips, 2),
                  "mb_per_1000_clips": round(built["bytes"] / 1e6 * 1000 / clips, 1),
                  "swap_share": round(built["swaps"] / built["texts"], 3),
                  "tokens_per_track": round(tokens_per_track, 1)},
        "rows": rows,
        "speedup": speedup,
        "speedup_to_goal": round(speedup / GOAL, 2),
        # an upper bound: a track whose clips fall in two shards has its texts twice
        "clip_text_gb_per_1m_tracks": round(tokens_per_track * CLIP_TEXT_WIDTH * 2 * 1e6 /
                                            1e9, 1)}
    baseline = {"speedup": "the uncached row (frozen MiniLM run every step), same shards, "
                "config and seed, same run",
                "speedup_to_goal": f"the issue's goal of {GOAL:g}x"}
    summary = (f"features: cached {rows['cached']['samples_per_s']} samples/s vs uncached "
               f"{rows['uncached']['samples_per_s']} ({speedup}x; goal {GOAL:g}x); build "
               f"{figures['build']['seconds_per_1000_clips']} s and "
               f"{figures['build']['mb_per_1000_clips']} MB per 1,000 clips "
               f"({figures['build']['swap_share']:.0%} of the texts TextSwap's)")
    return Outcome(figures, baseline, summary)
