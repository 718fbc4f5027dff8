"""The frozen text encoder's token states of every text training can feed it, computed
once (`adswap features`), so training reads them instead of running the encoder at
every step. On the demo the frozen MiniLM is most of a step.

What is cached, per train shard (one unit, named as the shard): every caption view and
the tags text of every sample, and for each of them and each TextSwap category up to
`features.swap_variants` swapped texts (all that the text allows when it allows no
more; else a sample seeded by the text), since hard negatives are new strings.
Training then swaps among the cached texts only; with every swap cached its draws are
the uncached run's. With none cached (0, the default) the swaps a step draws run
through the encoder: on the demo 2 variants made the cache 6.7x larger (26,773 texts at
2 variants against 3,996 views and tags texts) for texts of which a run draws a few
per step.

Per unit: `<shard>.npy` (the real tokens' states, [tokens, width], stacked) and
`<shard>.parquet` (text, offset, length, kind, category), in a folder laid out as
trainer/feature_cache.py says.
"""

from __future__ import annotations

import random
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm import tqdm

from schemas.atomic import atomic_path
from schemas.sample import read_sample_json, tags_text
from schemas.swap_dictionary import SwapDictionary
from trainer.config import TrainConfig
from trainer.encoders import CachedText, TextEncoder
from trainer.feature_cache import (
    REBUILD,
    FeatureStats,
    cache_folder,
    file_digest,
    finish_folder,
    open_cache,
    read_manifest,
    start_folder,
)
from trainer.revision import encoder_revision
from trainer.swap import Swapper

SCHEMA = "adswap.features.text/1"


def text_identity(config: TrainConfig) -> dict:
    """Everything the cached states depend on, and nothing else."""
    shards = Path(config.data.shards)
    text = config.model.text
    return {"schema": SCHEMA, "split": "train",
            "encoder": {"path": text.path, "revision": encoder_revision(text.path),
                        "max_length": text.max_length},
            "dtype": config.features.dtype,
            "swap": {"variants": config.features.swap_variants,
                     "categories": list(config.swap.categories),
                     "dictionary_sha256": file_digest(shards / "swap_dictionary.json")},
            "shards_manifest_sha256": file_digest(shards / "manifest.json")}


def text_folder(config: TrainConfig) -> Path:
    return cache_folder(config, "text", text_identity(config))


@dataclass
class TextStats(FeatureStats):
    swaps: int = 0
    tokens: int = 0


def shard_texts(url: str, swapper: Swapper, variants: int) -> dict[str, tuple[str, str]]:
    """text -> (kind, category) of every text training can feed the encoder from this
    shard: views, tags texts, then their cached swaps; first occurrence kept."""
    found: dict[str, tuple[str, str]] = {}
    swaps: dict[str, tuple[str, str]] = {}
    with tarfile.open(url) as tar:
        for member in tar:
            if not member.name.endswith(".json"):
                continue
            meta = read_sample_json(tar.extractfile(member).read(), f"{url}:{member.name}")
            sources = [("view", v["text"], v["spans"]) for v in meta["views"]]
            sources.append(("tags", *tags_text(meta["tags"])))
            for kind, text, spans in sources:
                found.setdefault(text, (kind, ""))
                for category in swapper.categories:
                    made = swapper.variants(text, spans, category, meta["tags"])
                    if len(made) > variants:
                        made = random.Random(f"{text}\0{category}").sample(made, variants)
                    for swapped in made:
                        swaps.setdefault(swapped, ("swap", category))
    for text, kind in swaps.items():
        found.setdefault(text, kind)
    return found


@dataclass
class TextCacheBuild:
    """A planned text cache: every unit's texts and their token counts, so its size is
    known before any state is computed; `build` writes the units not yet done."""

    config: TrainConfig
    identity: dict
    stats: TextStats
    encoder: TextEncoder
    units: list[str] = field(default_factory=list)
    todo: list[str] = field(default_factory=list)
    texts: dict[str, dict[str, tuple[str, str]]] = field(default_factory=dict)
    lengths: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def plan(cls, config: TrainConfig, urls: list[str]) -> TextCacheBuild:
        identity = text_identity(config)
        folder = cache_folder(config, "text", identity)
        shards = Path(config.data.shards)
        swapper = Swapper(SwapDictionary.load(shards / "swap_dictionary.json"),
                          config.swap.categories)
        build = cls(config, identity, TextStats("text", folder),
                    TextEncoder(config.model.text).eval())
        for url in urls:
            name = Path(url).name.removesuffix(".tar")
            build.units.append(name)
            if (folder / f"{name}.parquet").exists():
                build.stats.units_done_before += 1
            else:
                build.todo.append(name)
            build.texts[name] = shard_texts(url, swapper, config.features.swap_variants)
            build.lengths[name] = _lengths(build.encoder, list(build.texts[name]))
        stats = build.stats
        stats.units = len(urls)
        stats.items = sum(len(unit) for unit in build.texts.values())
        stats.swaps = sum(kind == "swap" for unit in build.texts.values()
                          for kind, _ in unit.values())
        stats.tokens = int(sum(int(v.sum()) for v in build.lengths.values()))
        stats.estimated_gb = (stats.tokens * build.encoder.out_dim *
                              np.dtype(config.features.dtype).itemsize / 1e9)
        return build

    def describe(self) -> str:
        s = self.stats
        return (f"text: {s.items:,} texts ({s.swaps:,} TextSwap variants), {s.tokens:,} tokens"
                f" x {self.encoder.out_dim} = {s.estimated_gb:.2f} GB -> {s.folder}")

    def shrink_hint(self) -> str:
        return (f"lower features.swap_variants (its TextSwap texts are "
                f"{self.stats.swaps / max(1, self.stats.items):.0%} of the texts)")

    def build(self, device: torch.device) -> TextStats:
        started = time.perf_counter()
        folder = self.stats.folder
        start_folder(folder, self.identity)
        self.encoder.to(device)
        bar = tqdm(total=sum(len(self.texts[n]) for n in self.todo), desc="text features",
                   unit="text", file=sys.stderr)
        for name in self.todo:
            _write_unit(folder, name, self.texts[name], self.lengths[name], self.encoder,
                        self.config, device, bar)
        bar.close()
        finish_folder(folder, self.identity, self.units, texts=self.stats.items,
                      swaps=self.stats.swaps, tokens=self.stats.tokens,
                      width=self.encoder.out_dim)
        self.stats.seconds = time.perf_counter() - started
        return self.stats


def _lengths(encoder: TextEncoder, texts: list[str]) -> np.ndarray:
    """Tokens per text as the encoder's tokenizer cuts them (max_length included)."""
    out = np.zeros(len(texts), dtype=np.int64)
    for start in range(0, len(texts), 4096):
        out[start:start + 4096] = encoder.tokenize(texts[start:start + 4096]).mask.sum(1)
    return out


def _write_unit(folder: Path, name: str, texts: dict[str, tuple[str, str]],
                lengths: np.ndarray, encoder: TextEncoder, config: TrainConfig,
                device: torch.device, bar: tqdm) -> None:
    order = list(texts)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    states = np.zeros((int(lengths.sum()), encoder.out_dim), dtype=config.features.dtype)
    # by length, so a batch pads little
    by_length = sorted(range(len(order)), key=lambda i: lengths[i])
    size = config.features.batch_size
    with torch.no_grad():
        for start in range(0, len(order), size):
            rows = by_length[start:start + size]
            tokens = encoder.tokenize([order[i] for i in rows])
            if not all(bool(m[:int(m.sum())].all()) for m in tokens.mask):
                raise ValueError(f"{config.model.text.path}'s tokenizer pads on the left; "
                                 "the feature cache keeps the real tokens first, as "
                                 "right padding does: train without features.dir")
            out, _ = encoder(tokens.to(device))
            out = out.float().cpu().numpy()
            for j, i in enumerate(rows):
                states[offsets[i]:offsets[i] + lengths[i]] = out[j, :lengths[i]]
            bar.update(len(rows))
    with atomic_path(folder / f"{name}.npy") as tmp, open(tmp, "wb") as f:
        np.save(f, states)
    table = pa.table({"text": order, "offset": offsets, "length": lengths.astype(np.int32),
                      "kind": [texts[t][0] for t in order],
                      "category": [texts[t][1] for t in order]})
    with atomic_path(folder / f"{name}.parquet") as tmp:
        pq.write_table(table, tmp)


class TextFeatures:
    """A built text cache, memory-mapped: texts to their states (CachedText)."""

    def __init__(self, folder: Path):
        manifest = read_manifest(folder)
        self.folder, self.width = folder, manifest["width"]
        self.parts = [np.load(folder / f"{unit}.npy", mmap_mode="r")
                      for unit in manifest["units"]]
        self.index: dict[str, tuple[int, int, int]] = {}
        for part, unit in enumerate(manifest["units"]):
            table = pq.read_table(folder / f"{unit}.parquet", columns=["text", "offset",
                                                                       "length"])
            for text, offset, length in zip(*(table.column(c).to_pylist() for c in
                                              ("text", "offset", "length")), strict=True):
                self.index[text] = (part, offset, length)

    @classmethod
    def open(cls, config: TrainConfig) -> TextFeatures:
        """The cache for this config's encoder and shards (feature_cache.open_cache)."""
        return cls(open_cache(config, "text", text_identity(config)))

    def __contains__(self, text: str) -> bool:
        return text in self.index

    def lookup(self, texts: list[str]) -> CachedText:
        """The texts' states as float32, padded with zeros to the longest."""
        missing = [t for t in texts if t not in self.index]
        if missing:
            raise ValueError(f"{len(missing)} texts are not in the feature cache {self.folder}"
                             f" (e.g. {missing[0]!r}): it was built for other shards; "
                             f"{REBUILD}")
        where = [self.index[t] for t in texts]
        longest = max(length for _, _, length in where)
        states = np.zeros((len(texts), longest, self.width), dtype=np.float32)
        mask = np.zeros((len(texts), longest), dtype=bool)
        for row, (part, offset, length) in enumerate(where):
            states[row, :length] = self.parts[part][offset:offset + length]
            mask[row, :length] = True
        return CachedText(torch.from_numpy(states), torch.from_numpy(mask))

