"""What the feature cache (`adswap features`) buys: training steps per second with the
frozen towers run at every step against their outputs read from the cache, on the same
shards, config and seed, in the same run; and what building the cache costs.

Data: the 400-track demo bench/train.py trains on (template captions, 5 s clips), batch
64, TextSwap at its top probability (p_max 0.15) from the first step, so the swapped
captions' states are read (or computed, with no swaps cached) as well. Two configurations:
- demo: the demo's training config (log-mel CNN trained, frozen MiniLM): the text cache.
  Goal: cached >= 3x uncached.
- frozen_audio: the paper's frozen setting in small: a frozen wav2vec2-style model made
  by the bench (random weights; `audio_width` wide, `audio_layers` layers, 50 frames/s
  at 16 kHz, its layers mixed and pooled to `frame_rate`) and frozen MiniLM: both
  caches. Goal: cached >= 10x uncached.
Each row is a real `train()` in its own process, two loader workers; a step's time is
the trainer's own (samples/s in metrics.jsonl: fetching the batch included), the median
after the warm-up steps.

Build: `build_features` on the train shards (in its own process): seconds and MB per
1,000 train clips, and the build's cost in uncached epochs (where the cache breaks
even); the share of TextSwap texts; from the measured tokens per track, what the text
states of 1M tracks take for CLIP ViT-B/32's text tower (512 wide, float16; at this
cache's swap_variants, and at 8 per category from the measured ratio), and what
MERT-v1-330M's pooled layer states of 1M 10 s clips take (25 layers x 1024 x 2 bytes
per frame) per cached crop at 1, 2 and 5 frames/s.
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
MERT_LAYERS, MERT_WIDTH = 25, 1024  # MERT-v1-330M: 24 layers and their input
GOALS = {"demo": 3.0, "frozen_audio": 10.0}


@dataclass(frozen=True)
class Settings(Config):
    tracks: int = setting(400, help="train/valid tracks of the demo catalog")
    test_tracks: int = setting(500, help="held-out test tracks rendered beside them")
    duration_s: tuple[float, ...] = setting((10.0, 15.0), help="shortest and longest track")
    batch: int = setting(64, help="pairs per step")
    steps: int = setting(12, help="measured steps per row, after the warm-up")
    warmup: int = setting(3, help="steps run before the measured ones")
    swap_variants: int = setting(0, help="TextSwap texts cached per caption and category "
                                 "(0, the default: the drawn swaps run through the encoder)")
    audio_width: int = setting(256, help="hidden size of the bench's frozen audio model")
    audio_layers: int = setting(6, help="layers of the bench's frozen audio model")
    frame_rate: float = setting(5.0, help="frames/s the frozen audio layers are pooled to")
    audio_crops: int = setting(2, help="crops per clip in the audio cache")
    work: Path = setting(WORK, help="folder of the demo and its shards (bench/train.py's)")

    def check(self) -> list[str]:
        problems = check_demo(self.tracks, self.test_tracks, self.duration_s)
        if self.steps < 1 or self.warmup < 1 or self.batch < 2:
            problems.append("steps and warmup must be >= 1, batch >= 2")
        return problems


def make_audio_model(folder: str, width: int, layers: int) -> None:
    """A random wav2vec2-style model: conv front end striding 320 samples (50 frames/s
    at 16 kHz, as wav2vec2 and HuBERT), `layers` transformer layers `width` wide."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(0)
    Wav2Vec2Model(Wav2Vec2Config(
        hidden_size=width, num_hidden_layers=layers, num_attention_heads=4,
        intermediate_size=4 * width, conv_dim=(64,) * 7)).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(sampling_rate=16_000, do_normalize=True).save_pretrained(folder)


def _overrides(shards: str, features: str, batch: int, settings: dict) -> list[str]:
    extra = [f"{k}={v}" for k, v in settings.items()]
    return [f"data.shards={shards}", f"features.dir={features}", f"data.batch_size={batch}",
            "data.workers=2", "run.device=cpu", "swap.warmup_epochs=0", "swap.ramp_epochs=0",
            "run.validate=false", "run.log_every=1", *extra]


def build_child(shards: str, features: str, settings: dict) -> dict:
    from trainer.config import load_config
    from trainer.features import build_features

    built = build_features(load_config(None, _overrides(shards, features, 64, settings)),
                           log=lambda _: None)
    out = {}
    for tower, stats in built.items():
        out[tower] = {"items": stats.items, "seconds": round(stats.seconds, 2),
                      "bytes": sum(p.stat().st_size for p in stats.folder.iterdir())}
        if tower == "text":
            out[tower].update(swaps=stats.swaps, tokens=stats.tokens)
    return out


def train_child(shards: str, features: str, out: str, batch: int, settings: dict,
                steps: int, warmup: int) -> dict:
    from trainer.config import load_config
    from trainer.train import train

    train(load_config(None, [*_overrides(shards, features, batch, settings),
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
    work.mkdir(parents=True)
    in_child(make_audio_model, str(work / "audio_model"), settings.audio_width,
             settings.audio_layers)
    configs = {"demo": {"features.swap_variants": settings.swap_variants},
               "frozen_audio": {"features.swap_variants": settings.swap_variants,
                                "model.audio.kind": "hf-frozen",
                                "model.audio.path": str(work / "audio_model"),
                                "model.audio.hf_frozen.frame_rate": settings.frame_rate,
                                "features.audio_crops": settings.audio_crops}}
    figures, baseline, lines = {"train_clips": clips}, {}, []
    for name, overrides in configs.items():
        cache = str(work / f"{name}-cache")
        built, _ = in_child(build_child, str(shards), cache, overrides)
        rows = {row: in_child(train_child, str(shards), features, str(work / f"{name}-{row}"),
                              settings.batch, overrides, settings.steps, settings.warmup)[0]
                for row, features in (("uncached", ""), ("cached", cache))}
        speedup = round(rows["cached"]["samples_per_s"] / rows["uncached"]["samples_per_s"], 2)
        build_s = sum(t["seconds"] for t in built.values())
        epoch_s = clips / rows["uncached"]["samples_per_s"]
        figures[name] = {
            "rows": rows, "speedup": speedup, "speedup_to_goal": round(speedup / GOALS[name], 2),
            "build": built,
            "build_seconds_per_1000_clips": round(build_s * 1000 / clips, 2),
            "build_mb_per_1000_clips": round(sum(t["bytes"] for t in built.values()) / 1e6 *
                                             1000 / clips, 1),
            "build_in_uncached_epochs": round(build_s / epoch_s, 2)}
        baseline[f"{name}.speedup"] = (f"the uncached row of {name} (frozen towers run every "
                                       "step), same shards, config and seed, same run")
        baseline[f"{name}.speedup_to_goal"] = f"the issue's goal of {GOALS[name]:g}x"
        baseline[f"{name}.build_in_uncached_epochs"] = (f"one epoch of {name}'s uncached row, "
                                                        "same run")
        lines.append(f"{name}: cached {rows['cached']['samples_per_s']} samples/s vs uncached "
                     f"{rows['uncached']['samples_per_s']} ({speedup}x; goal "
                     f"{GOALS[name]:g}x), build {figures[name]['build_seconds_per_1000_clips']}"
                     f" s and {figures[name]['build_mb_per_1000_clips']} MB per 1,000 clips "
                     f"(= {figures[name]['build_in_uncached_epochs']} uncached epochs)")
    text = figures["demo"]["build"]["text"]
    tokens_per_track = text["tokens"] / tracks
    figures["swap_share"] = round(text["swaps"] / text["items"], 3)
    figures["tokens_per_track"] = round(tokens_per_track, 1)
    # an upper bound: a track whose clips fall in two shards has its texts twice
    figures["clip_text_gb_per_1m_tracks"] = round(tokens_per_track * CLIP_TEXT_WIDTH * 2 *
                                                  1e6 / 1e9, 1)
    figures["mert_gb_per_1m_crops_of_10s"] = {
        f"{rate:g}_hz": round(MERT_LAYERS * MERT_WIDTH * 2 * rate * 10 * 1e6 / 1e9)
        for rate in (1, 2, 5)}
    return Outcome(figures, baseline, "features: " + "; ".join(lines))
