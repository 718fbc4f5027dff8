"""A frozen audio model's layer states, computed once (`adswap features`): for MERT-style
encoders (hf-frozen) every epoch would otherwise run the whole model on every clip, to
train a layer mix and a projection that are about 1% of the weights.

What is cached, per train shard (one unit): for every sample, `features.audio_crops`
crops of model.audio.clip_seconds at positions seeded by the sample's key, each as
what FrozenHFAudio.layer_states returns (every layer's states, pooled in time to
model.audio.hf_frozen.frame_rate), stacked: `<shard>.npy` [samples, crops, layers + 1,
frames, width] and `<shard>.parquet` (key, row). Training draws one of a clip's crops
each time it sees it, from a stream of its own, so every other draw (views, p_cap,
TextSwap) is the uncached run's.
"""

from __future__ import annotations

import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import webdataset as wds
from tqdm import tqdm

from schemas.atomic import atomic_path
from schemas.config import as_dict
from trainer.config import TrainConfig
from trainer.data import crop, decode_audio
from trainer.encoders import audio_encoder
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

SCHEMA = "adswap.features.audio/1"


def audio_identity(config: TrainConfig) -> dict:
    """Everything the cached states depend on, and nothing else."""
    audio = config.model.audio
    settings = getattr(audio, audio.encoder.section, None)  # None: the encoder has none
    return {"schema": SCHEMA, "split": "train",
            "encoder": {"kind": audio.kind, "path": audio.path,
                        "revision": encoder_revision(audio.path),
                        "settings": as_dict(settings) if settings is not None else {}},
            "sample_rate": audio.sample_rate, "clip_seconds": audio.clip_seconds,
            "crops": config.features.audio_crops, "dtype": config.features.dtype,
            "shards_manifest_sha256": file_digest(Path(config.data.shards) /
                                                  "manifest.json")}


def crop_window(audio: np.ndarray, frames: int, key: str, index: int) -> torch.Tensor:
    """Crop `index` of the sample `key`: the same window in every build."""
    return crop(audio, frames, random.Random(f"crop:{key}:{index}"))


@dataclass
class AudioStats(FeatureStats):
    crops: int = 0
    layers: int = 0
    frames: int = 0
    width: int = 0


@dataclass
class AudioCacheBuild:
    """A planned audio cache: its shape from one forward of a silent clip, so its size
    is known before any clip is encoded; `build` writes the units not yet done."""

    config: TrainConfig
    identity: dict
    stats: AudioStats
    encoder: torch.nn.Module
    urls: dict[str, str] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    todo: list[str] = field(default_factory=list)

    @classmethod
    def plan(cls, config: TrainConfig, urls: list[str], sizes: dict[str, int]
             ) -> AudioCacheBuild:
        identity = audio_identity(config)
        folder = cache_folder(config, "audio", identity)
        encoder = audio_encoder(config.model.audio).eval()
        if not hasattr(encoder, "layer_states"):
            raise ValueError(f"audio kind {config.model.audio.kind} has frozen weights but "
                             "no layer_states(audio) to cache; train without features.dir")
        frames = round(config.model.audio.clip_seconds * config.model.audio.sample_rate)
        with torch.no_grad():
            states = encoder.layer_states(torch.zeros(1, frames))
        stats = AudioStats("audio", folder, crops=config.features.audio_crops,
                           layers=len(states), frames=states[0].shape[1],
                           width=states[0].shape[2])
        build = cls(config, identity, stats, encoder)
        for url in urls:
            name = Path(url).name.removesuffix(".tar")
            build.urls[name], build.counts[name] = url, sizes[Path(url).name]
            if (folder / f"{name}.parquet").exists():
                stats.units_done_before += 1
            else:
                build.todo.append(name)
        stats.units, stats.items = len(urls), sum(build.counts.values())
        stats.estimated_gb = (stats.items * stats.crops * stats.layers * stats.frames *
                              stats.width * np.dtype(config.features.dtype).itemsize / 1e9)
        return build

    def describe(self) -> str:
        s = self.stats
        return (f"audio: {s.items:,} clips x {s.crops} crops x {s.layers} layers x "
                f"{s.frames} frames x {s.width} = {s.estimated_gb:.2f} GB -> {s.folder}")

    def shrink_hint(self) -> str:
        return ("lower features.audio_crops or model.audio.hf_frozen.frame_rate (the cache "
                "grows with both)")

    def build(self, device: torch.device) -> AudioStats:
        started = time.perf_counter()
        folder = self.stats.folder
        start_folder(folder, self.identity)
        self.encoder.to(device)
        bar = tqdm(total=sum(self.counts[n] for n in self.todo) * self.stats.crops,
                   desc="audio features", unit="crop", file=sys.stderr)
        for name in self.todo:
            self._write_unit(name, device, bar)
        bar.close()
        s = self.stats
        finish_folder(folder, self.identity, list(self.urls), clips=s.items, crops=s.crops,
                      layers=s.layers, frames=s.frames, width=s.width)
        s.seconds = time.perf_counter() - started
        return s

    def _write_unit(self, name: str, device: torch.device, bar: tqdm) -> None:
        s, config = self.stats, self.config
        frames = round(config.model.audio.clip_seconds * config.model.audio.sample_rate)
        shape = (self.counts[name], s.crops, s.layers, s.frames, s.width)
        keys: list[str] = []
        pending: list[tuple[int, int, torch.Tensor]] = []  # (row, crop, clip)
        with atomic_path(s.folder / f"{name}.npy") as tmp:
            # written in place on disk: a unit of MERT states can be larger than memory
            states = np.lib.format.open_memmap(tmp, mode="w+", dtype=config.features.dtype,
                                               shape=shape)
            samples = wds.DataPipeline(wds.SimpleShardList([self.urls[name]]),
                                       wds.tarfile_to_samples())
            for sample in samples:
                if len(keys) == shape[0]:
                    raise ValueError(f"{self.urls[name]} holds more samples than sizes.json "
                                     f"says ({shape[0]}); rebuild the shards")
                audio = decode_audio(sample)
                for index in range(s.crops):
                    pending.append((len(keys), index,
                                    crop_window(audio, frames, sample["__key__"], index)))
                keys.append(sample["__key__"])
                if len(pending) >= config.features.batch_size:
                    self._encode(pending, states, device, bar)
            self._encode(pending, states, device, bar)
            if len(keys) != shape[0]:
                raise ValueError(f"{self.urls[name]} holds {len(keys)} samples, sizes.json "
                                 f"says {shape[0]}; rebuild the shards")
            states.flush()
            del states
        with atomic_path(s.folder / f"{name}.parquet") as tmp:
            pq.write_table(pa.table({"key": keys, "row": np.arange(len(keys))}), tmp)

    def _encode(self, pending: list, states: np.ndarray, device: torch.device,
                bar: tqdm) -> None:
        if not pending:
            return
        with torch.no_grad():
            out = self.encoder.layer_states(torch.stack([c for _, _, c in pending])
                                            .to(device))
        stacked = torch.stack([state.float() for state in out], dim=1).cpu().numpy()
        for (row, index, _), value in zip(pending, stacked, strict=True):
            states[row, index] = value
        bar.update(len(pending))
        pending.clear()


class AudioFeatures:
    """A built audio cache, read by the loader's workers: a sample's crop of layer
    states. Pickles as its folder; each worker maps the units it meets."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        manifest = read_manifest(self.folder)
        self.crops = manifest["crops"]
        self.sample_bytes = (manifest["layers"] * manifest["frames"] * manifest["width"] *
                             np.dtype(manifest["identity"]["dtype"]).itemsize)
        self._units: dict[str, tuple[np.ndarray, dict[str, int]]] = {}

    @classmethod
    def open(cls, config: TrainConfig) -> AudioFeatures:
        """The cache for this config's encoder and shards (feature_cache.open_cache)."""
        return cls(open_cache(config, "audio", audio_identity(config)))

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_units": {}}

    def read(self, sample: dict, rng: random.Random) -> torch.Tensor:
        """A random one of the sample's cached crops: [layers + 1, frames, width]."""
        name = Path(sample["__url__"]).name.removesuffix(".tar")
        if name not in self._units:
            if not (self.folder / f"{name}.parquet").exists():
                raise ValueError(f"{sample['__url__']} is not in the audio feature cache "
                                 f"{self.folder}: it was built for other shards; {REBUILD}")
            table = pq.read_table(self.folder / f"{name}.parquet")
            self._units[name] = (np.load(self.folder / f"{name}.npy", mmap_mode="r"),
                                 dict(zip(table.column("key").to_pylist(),
                                          table.column("row").to_pylist(), strict=True)))
        states, rows = self._units[name]
        row = rows.get(sample["__key__"])
        if row is None:
            raise ValueError(f"{sample['__url__']}:{sample['__key__']} is not in the audio "
                             f"feature cache {self.folder}; {REBUILD}")
        return torch.from_numpy(np.array(states[row, rng.randrange(self.crops)]))
