"""Augmented View Dropout: which tags each caption view of a track is written from.

Each view keeps a random subset of every category's tags (each tag kept with
`keep_prob`, topped up to `min_per_category` for categories that have tags), so views
are partial but balanced descriptions. A view depends only on (seed, track_id, view
index) and the views before it on the same track, never on shards or workers.

Views of a track are distinct: a track with fewer possible subsets than `n_views` gets
one view per subset (a 1-tag track gets one view, not ten identical ones), and with
`full_view` the dropout views leave out the full set, which the last view already is.
Identical views cost LLM calls and are then removed as duplicates by curation;
`repeat_views` asks for them anyway (views cycle through the subsets, likelier first).
"""

from __future__ import annotations

import hashlib
import itertools
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from schemas.config import Config, setting

TagSet = dict[str, tuple[str, ...]]
_ATTEMPTS = 32
# Tracks with at most this many possible views enumerate them instead of sampling.
_ENUMERATE_LIMIT = 64


@dataclass(frozen=True)
class DropConfig(Config):
    n_views: int = setting(10, help="Views per track (View Dropout; the paper's 10).")
    keep_prob: float = setting(0.5, help="Chance each tag is kept in a view; 1 turns "
                               "dropout off.")
    min_per_category: int = setting(1, help="Tags kept at least, in each category the "
                                    "track has.")
    full_view: bool = setting(False, help="Add one more view, the last, written from "
                              "every tag.")
    seed: int = setting(0, help="Seed for view planning.")
    repeat_views: bool = setting(False, help="Give every track n_views views even when it "
                                 "has fewer distinct tag subsets (the same subset is then "
                                 "captioned several times).")

    def check(self) -> list[str]:
        problems = []
        if not 1 <= self.n_views <= 1000:
            problems.append("n_views must be between 1 and 1000")
        if not 0 < self.keep_prob <= 1:
            problems.append("keep_prob must be in (0, 1]")
        if self.min_per_category < 0:
            problems.append("min_per_category must be >= 0")
        return problems


def _rng(seed: int, track_id: str, view: int, attempt: int) -> random.Random:
    digest = hashlib.blake2b(f"{seed}\0{track_id}\0{view}\0{attempt}".encode(),
                             digest_size=16).digest()
    return random.Random(int.from_bytes(digest, "big"))


def _sample(tags: Mapping[str, Sequence[str]], config: DropConfig,
            rng: random.Random) -> TagSet:
    view: TagSet = {}
    for category, values in tags.items():
        keep = [rng.random() < config.keep_prob for _ in values]
        missing = min(config.min_per_category, len(values)) - sum(keep)
        if missing > 0:
            dropped = [i for i, k in enumerate(keep) if not k]
            for i in rng.sample(dropped, missing):
                keep[i] = True
        view[category] = tuple(v for v, k in zip(values, keep, strict=True) if k)
    if not any(view.values()):  # only possible with min_per_category = 0
        category = rng.choice([c for c, v in tags.items() if v])
        view[category] = (rng.choice(list(tags[category])),)
    return view


def possible_views(tags: Mapping[str, Sequence[str]], config: DropConfig) -> int:
    """How many distinct views the track allows (ignoring the all-empty one)."""
    total = 1
    for values in tags.values():
        n, low = len(values), min(config.min_per_category, len(values))
        total *= sum(math.comb(n, k) for k in range(low, n + 1))
    return total - (1 if config.min_per_category == 0 else 0)


def _all_views(tags: Mapping[str, Sequence[str]], config: DropConfig) -> list[TagSet]:
    per_category = []
    for category, values in tags.items():
        low = min(config.min_per_category, len(values))
        options = [tuple(v for v, k in zip(values, mask, strict=True) if k)
                   for mask in itertools.product((False, True), repeat=len(values))
                   if sum(mask) >= low]
        per_category.append([(category, o) for o in options])
    return [dict(combo) for combo in itertools.product(*per_category) if any(v for _, v in combo)]


def plan_views(track_id: str, tags: Mapping[str, Sequence[str]],
               config: DropConfig) -> list[TagSet]:
    """The tag subset of each view, view id = list index: distinct subsets, at most
    n_views of them (plus the full view), unless `repeat_views` asks for n_views
    whatever the track allows."""
    tags = {c: tuple(v) for c, v in tags.items()}
    if not any(tags.values()):
        raise ValueError(f"track {track_id} has no tags to write a view from")
    room = possible_views(tags, config)
    full = dict(tags)
    # with full_view the full set is the last view; a dropout view equal to it repeats it
    taken = [full] if config.full_view and not config.repeat_views else []
    if config.keep_prob == 1:  # no dropout: every view sees every tag
        views = [full] * (config.n_views if config.repeat_views else 1 - len(taken))
    elif room <= _ENUMERATE_LIMIT:
        order = [v for v in _weighted_order(track_id, tags, config) if v not in taken]
        views = [order[i % len(order)] for i in range(config.n_views)] \
            if config.repeat_views else order[:config.n_views]
    else:
        views = []
        for index in range(config.n_views):
            for attempt in range(_ATTEMPTS):
                view = _sample(tags, config, _rng(config.seed, track_id, index, attempt))
                if view not in views and view not in taken:
                    views.append(view)
                    break
            else:
                if config.repeat_views:
                    views.append(view)
    if config.full_view:
        views.append(full)
    return views


def _weighted_order(track_id: str, tags: Mapping[str, tuple[str, ...]],
                    config: DropConfig) -> list[TagSet]:
    """Every possible view, in a random order drawn without replacement with each view's
    chance under independent keep_prob draws (Efraimidis-Spirakis keys). Small tag sets
    get distinct views without rejection sampling's retries."""
    rng = _rng(config.seed, track_id, 0, 0)
    p = config.keep_prob
    keyed = []
    for view in _all_views(tags, config):
        weight = 1.0
        for category, values in tags.items():
            kept = len(view[category])
            weight *= p ** kept * (1 - p) ** (len(values) - kept)
        # log(u) / w orders like u ** (1 / w) without underflowing for tiny weights
        keyed.append((math.log(1.0 - rng.random()) / max(weight, 1e-300), view))
    keyed.sort(key=lambda item: -item[0])
    return [view for _, view in keyed]
