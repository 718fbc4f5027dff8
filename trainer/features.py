"""Frozen text features, computed once (`adswap features`): the frozen text encoder's
token states of every text training can feed it, so training reads them instead of
running the encoder at every step. On the demo the frozen MiniLM is most of a step.

What is cached, per train shard (one unit, named as the shard): every caption view and
the tags text of every sample, and for each of them and each TextSwap category up to
`features.swap_variants` swapped texts (all that the text allows when it allows no
more; else a sample seeded by the text), since hard negatives are new strings.
Training then swaps among the cached texts only; with every swap cached its draws are
the uncached run's.

Layout: FEATURES/text-<identity hash>/ with identity.json (what the states depend on:
encoder and revision, max length, dtype, swap settings and dictionary, the shards'
manifest), per shard `<shard>.npy` (the real tokens' states, [tokens, width], stacked)
and `<shard>.parquet` (text, offset, length, kind, category; written last: the unit's
done marker), and manifest.json when every unit is done. A changed encoder, shard set
or swap dictionary has another identity, so stale states are never read.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm import tqdm

from schemas.atomic import atomic_path, write_text_atomic
from schemas.sample import read_sample_json, tags_text
from schemas.swap_dictionary import SwapDictionary
from trainer.config import TrainConfig, flatten
from trainer.data import shard_urls
from trainer.encoders import CachedText, TextEncoder
from trainer.revision import encoder_revision
from trainer.swap import Swapper

SCHEMA = "adswap.features.text/1"
REBUILD = "run `adswap features` with this training config (`make features`)"


def text_identity(config: TrainConfig) -> dict:
    """Everything the cached states depend on, and nothing else."""
    shards = Path(config.data.shards)
    digest = lambda path: hashlib.sha256(path.read_bytes()).hexdigest()  # noqa: E731
    text = config.model.text
    return {"schema": SCHEMA, "split": "train",
            "encoder": {"path": text.path, "revision": encoder_revision(text.path),
                        "max_length": text.max_length},
            "dtype": config.features.dtype,
            "swap": {"variants": config.features.swap_variants,
                     "categories": list(config.swap.categories),
                     "dictionary_sha256": digest(shards / "swap_dictionary.json")},
            "shards_manifest_sha256": digest(shards / "manifest.json")}


def text_folder(config: TrainConfig, identity: dict | None = None) -> Path:
    identity = identity or text_identity(config)
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
    return Path(config.features.dir) / f"text-{key}"


@dataclass
class FeatureStats:
    folder: Path
    texts: int = 0
    swaps: int = 0
    tokens: int = 0
    estimated_gb: float = 0.0
    units: int = 0
    units_done_before: int = 0
    seconds: float = 0.0


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


def build_features(config: TrainConfig, log=print) -> FeatureStats:
    """Write the text cache for `config` (resuming a killed build); refuses a config
    whose text encoder is trained and a cache larger than features.budget_gb."""
    if not config.features.dir:
        raise ValueError("features.dir is empty: name the folder the cache goes in "
                         "(--features DIR)")
    started = time.perf_counter()
    identity = text_identity(config)
    folder = text_folder(config, identity)
    stats = FeatureStats(folder)
    urls, _ = shard_urls(config.data.shards, "train")
    if not urls:
        raise ValueError(f"no train shards in {config.data.shards}")
    swapper = Swapper(SwapDictionary.load(Path(config.data.shards) / "swap_dictionary.json"),
                      config.swap.categories)
    encoder = TextEncoder(config.model.text).eval()
    units = [(Path(url).name.removesuffix(".tar"), url) for url in urls]
    todo, texts = [], {}
    for name, url in units:
        if (folder / f"{name}.parquet").exists():
            stats.units_done_before += 1
        else:
            todo.append(name)
        texts[name] = shard_texts(url, swapper, config.features.swap_variants)
    stats.units = len(units)
    every = [t for unit in texts.values() for t in unit]
    stats.texts = len(every)
    stats.swaps = sum(kind == "swap" for unit in texts.values() for kind, _ in unit.values())
    lengths = {name: _lengths(encoder, list(unit)) for name, unit in texts.items()}
    stats.tokens = int(sum(int(v.sum()) for v in lengths.values()))
    width = encoder.out_dim
    itemsize = np.dtype(config.features.dtype).itemsize
    stats.estimated_gb = stats.tokens * width * itemsize / 1e9
    log(f"features: {stats.texts:,} texts ({stats.swaps:,} TextSwap variants) in "
        f"{len(units)} shards, {stats.tokens:,} tokens x {width} x {itemsize} B = "
        f"{stats.estimated_gb:.2f} GB -> {folder}")
    if stats.estimated_gb > config.features.budget_gb:
        raise ValueError(f"the text cache would take {stats.estimated_gb:.1f} GB, more than "
                         f"features.budget_gb={config.features.budget_gb:g}; raise the budget, "
                         "or lower features.swap_variants (its TextSwap texts are "
                         f"{stats.swaps / max(1, stats.texts):.0%} of the texts)")
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(folder / "identity.json", json.dumps(identity, indent=1, sort_keys=True))
    device = torch.device("cuda" if config.run.device != "cpu" and torch.cuda.is_available()
                          else "cpu")
    encoder.to(device)
    bar = tqdm(total=sum(len(texts[n]) for n in todo), desc="text features", unit="text",
               file=sys.stderr)
    for name in todo:
        _write_unit(folder, name, texts[name], lengths[name], encoder, config, device, bar)
    bar.close()
    write_text_atomic(folder / "manifest.json", json.dumps(
        {"identity": identity, "units": [n for n, _ in units], "texts": stats.texts,
         "swaps": stats.swaps, "tokens": stats.tokens, "width": width}, indent=1))
    stats.seconds = time.perf_counter() - started
    return stats


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
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
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
        """The cache for this config's encoder and shards, or an error saying what the
        caches that are there were built for."""
        identity = text_identity(config)
        folder = text_folder(config, identity)
        if (folder / "manifest.json").exists():
            return cls(folder)
        if folder.exists():
            raise ValueError(f"the text feature cache {folder} is not finished (a build was "
                             f"stopped); {REBUILD} to finish it")
        others = sorted(Path(config.features.dir).glob("text-*/identity.json"))
        if not others:
            raise ValueError(f"no text feature cache in {config.features.dir}; {REBUILD}")
        differences = []
        for other in others:
            theirs = flatten(json.loads(other.read_text(encoding="utf-8")))
            ours = flatten(identity)
            differences.append(f"{other.parent.name}: " + "; ".join(
                f"{k}: {theirs.get(k)} -> {ours.get(k)}" for k in sorted(ours | theirs)
                if theirs.get(k) != ours.get(k)))
        raise ValueError(f"the text feature caches in {config.features.dir} were built for "
                         "other settings than this run's (" + " | ".join(differences) +
                         f"); {REBUILD}")

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

