"""`adswap features`: every frozen tower's outputs on the train shards, computed once,
so training reads them instead of running the towers at every step (the text cache,
trainer/text_features.py; a frozen audio model's, trainer/audio_features.py). The
size of each is estimated before any work and the whole refused over
features.budget_gb."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from trainer.audio_features import AudioCacheBuild
from trainer.config import TrainConfig, cached_towers
from trainer.data import shard_urls
from trainer.feature_cache import FeatureStats
from trainer.text_features import TextCacheBuild


def build_features(config: TrainConfig, log=print) -> dict[str, FeatureStats]:
    """Write the caches of `config`'s frozen towers (resuming a killed build); returns
    each tower's stats by name."""
    if not config.features.dir:
        raise ValueError("features.dir is empty: name the folder the cache goes in "
                         "(--features DIR)")
    towers = cached_towers(config)
    if not towers:
        raise ValueError("every tower of this config is trained: there is nothing to cache")
    urls, _ = shard_urls(config.data.shards, "train")
    if not urls:
        raise ValueError(f"no train shards in {config.data.shards}")
    sizes = json.loads((Path(config.data.shards) / "sizes.json").read_text(encoding="utf-8"))
    builds = [TextCacheBuild.plan(config, urls) if tower == "text"
              else AudioCacheBuild.plan(config, urls, sizes) for tower in towers]
    for build in builds:
        log(f"features: {build.describe()}")
    total = sum(build.stats.estimated_gb for build in builds)
    if total > config.features.budget_gb:
        raise ValueError(f"the feature cache would take {total:.1f} GB (" + ", ".join(
            f"{b.stats.tower} {b.stats.estimated_gb:.1f}" for b in builds) + "), more than "
            f"features.budget_gb={config.features.budget_gb:g}; raise the budget, or " +
            "; or ".join(b.shrink_hint() for b in builds))
    device = torch.device("cuda" if config.run.device != "cpu" and torch.cuda.is_available()
                          else "cpu")
    return {build.stats.tower: build.build(device) for build in builds}
