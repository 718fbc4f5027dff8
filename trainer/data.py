"""The loader: a short list of named, picklable WebDataset stages.

Training: shards drawn with replacement (seeded by run seed, epoch, rank and worker,
so every process and worker reads its own stream and an epoch can be replayed), tar
samples, a seeded shuffle buffer, then `MakePairs`: decode the clip, crop it to the
model's input at random, and pick the text: with probability p_cap a caption view
drawn uniformly from the track's curated views (Augmented View Dropout), else the
tags as text. The view's descriptor spans travel with it to TextSwap.

Validation: each valid shard once, in order, the clip's centre, the first caption.
"""

from __future__ import annotations

import io
import json
import math
import multiprocessing
import random
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import soundfile as sf
import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset
from webdataset.utils import pytorch_worker_info

from schemas.sample import read_sample_json, tags_text
from trainer.config import AudioConfig, DataConfig

if TYPE_CHECKING:
    from trainer.audio_features import AudioFeatures

# batches each loader worker prepares ahead of the step
PREFETCH = 4


class SharedEpoch:
    """The epoch, visible to persistent DataLoader workers in other processes."""

    def __init__(self, epoch: int = 0):
        self.value = multiprocessing.get_context("forkserver").Value("i", epoch)

    def set(self, epoch: int) -> None:
        self.value.value = epoch

    def get(self) -> int:
        return self.value.value


def _seed(*parts) -> str:
    return ":".join(str(p) for p in parts)


class EpochShards(IterableDataset):
    """Shard urls drawn with replacement, a different stream per epoch, rank and worker."""

    def __init__(self, urls: list[str], seed: int, epoch: SharedEpoch):
        super().__init__()
        self.urls, self.seed, self.epoch = urls, seed, epoch

    def __iter__(self) -> Iterator[dict]:
        rank, _, worker, _ = pytorch_worker_info()
        rng = random.Random(_seed("shards", self.seed, self.epoch.get(), rank, worker))
        while True:
            yield {"url": self.urls[rng.randrange(len(self.urls))]}


class EpochShuffle:
    """A shuffle buffer seeded like the shard stream."""

    def __init__(self, bufsize: int, initial: int, seed: int, epoch: SharedEpoch):
        self.bufsize, self.initial, self.seed, self.epoch = bufsize, initial, seed, epoch

    def __call__(self, source: Iterator[dict]) -> Iterator[dict]:
        rank, _, worker, _ = pytorch_worker_info()
        rng = random.Random(_seed("shuffle", self.seed, self.epoch.get(), rank, worker))
        return wds.filters._shuffle(source, self.bufsize, self.initial, rng=rng)


def decode_audio(sample: dict) -> np.ndarray:
    data = sample.get("flac", sample.get("wav"))
    if data is None:
        raise ValueError(f"sample {sample.get('__key__')} has no .flac or .wav member")
    audio, _ = sf.read(io.BytesIO(data), dtype="float32")
    return audio


def crop(audio: np.ndarray, frames: int, rng: random.Random | None) -> torch.Tensor:
    """`frames` samples: a random window with `rng`, the centre without; zero-padded
    when the clip is shorter."""
    extra = len(audio) - frames
    if extra < 0:
        audio = np.pad(audio, (0, -extra))
    elif extra > 0:
        start = rng.randrange(extra + 1) if rng is not None else extra // 2
        audio = audio[start:start + frames]
    return torch.from_numpy(np.ascontiguousarray(audio))


class MakePairs:
    """Sample -> {audio, text, spans, tags, track_id, shard}; the sample's json is checked
    against schemas/sample first."""

    def __init__(self, data: DataConfig, audio: AudioConfig, seed: int, epoch: SharedEpoch,
                 train: bool, audio_features: AudioFeatures | None = None):
        self.p_cap, self.languages = data.p_cap, set(data.languages)
        self.view_dropout = data.view_dropout
        self.rate, self.frames = audio.sample_rate, round(audio.clip_seconds * audio.sample_rate)
        self.seed, self.epoch, self.train = seed, epoch, train
        self.audio_features = audio_features

    def __call__(self, source: Iterator[dict]) -> Iterator[dict]:
        rank, _, worker, _ = pytorch_worker_info()
        rng = random.Random(_seed("pairs", self.seed, self.epoch.get(), rank, worker))
        # cached crops are drawn from their own stream: every other draw is the uncached
        # run's
        crops = random.Random(_seed("crops", self.seed, self.epoch.get(), rank, worker))
        for sample in source:
            meta = read_sample_json(sample["json"], sample_name(sample))
            if meta["sample_rate"] != self.rate:
                raise ValueError(f"{sample.get('__url__')}: clips are {meta['sample_rate']} Hz "
                                 f"but model.audio.sample_rate is {self.rate}; make shards "
                                 "at the model's rate")
            if self.audio_features is not None:
                audio = self.audio_features.read(sample, crops)
            else:
                audio = crop(decode_audio(sample), self.frames, rng if self.train else None)
            views = [v for v in meta["views"]
                     if not self.languages or v["language"] in self.languages]
            if self.train:
                use_caption = bool(views) and rng.random() < self.p_cap
                view = None if not use_caption else views[rng.randrange(len(views))] \
                    if self.view_dropout else max(views, key=lambda v: v["view_id"])
            else:
                view = views[0] if views else None
            if view is not None:
                text, spans = view["text"], view["spans"]
            else:
                text, spans = tags_text(meta["tags"])
            yield {"audio": audio, "text": text, "spans": spans, "tags": meta["tags"],
                   "track_id": meta["track_id"], "shard": sample.get("__url__")}


def sample_name(sample: dict) -> str:
    """'shards/train-000003.tar:abc-0.json', for errors."""
    return f"{sample.get('__url__', '<shard>')}:{sample.get('__key__')}.json"


def collate(samples: list[dict]) -> dict:
    batch = {key: [s[key] for s in samples] for key in samples[0]}
    batch["audio"] = torch.stack(batch["audio"])
    return batch


def shard_urls(shards: Path, split: str) -> tuple[list[str], int]:
    """The split's shard files and their sample count, from sizes.json."""
    sizes_file = Path(shards) / "sizes.json"
    if not sizes_file.exists():
        raise ValueError(f"{sizes_file} is missing; run `adswap shards` first (`adswap "
                         "import-eval` for an eval set) and let it finish: it writes "
                         "sizes.json last")
    sizes = json.loads(sizes_file.read_text(encoding="utf-8"))
    names = sorted(n for n, count in sizes.items() if n.startswith(f"{split}-") and count > 0)
    return [str(Path(shards) / n) for n in names], sum(sizes[n] for n in names)


def train_loader(data: DataConfig, audio: AudioConfig, seed: int, epoch: SharedEpoch,
                 pin_memory: bool = False, audio_features: AudioFeatures | None = None
                 ) -> DataLoader:
    """pin_memory: batches come in page-locked memory, so copies to the GPU can overlap
    the step (`.to(device, non_blocking=True)`); audio_features: batches carry a
    feature cache's layer states of each clip instead of its audio."""
    urls, _ = shard_urls(data.shards, "train")
    if not urls:
        raise ValueError(f"no train shards in {data.shards}")
    pipeline = wds.DataPipeline(
        EpochShards(urls, seed, epoch),
        wds.tarfile_to_samples(),
        EpochShuffle(data.shuffle_buffer, data.shuffle_initial, seed, epoch),
        MakePairs(data, audio, seed, epoch, train=True, audio_features=audio_features),
        wds.batched(data.batch_size, collation_fn=collate, partial=False),
    )
    return _loader(pipeline, data.workers, pin_memory)


def eval_loader(shards: Path, split: str, data: DataConfig, audio: AudioConfig,
                batch_size: int, part: tuple[int, int] = (0, 1)) -> DataLoader:
    """part=(rank, world): every world-th shard from the rank-th, one process's share of
    a distributed pass (each row's `shard` lets the shares be put back in order)."""
    urls, _ = shard_urls(shards, split)
    rank, world = part
    if not urls[rank::world]:  # more processes than shards: this one reads none
        return DataLoader([], batch_size=None)
    pipeline = wds.DataPipeline(
        wds.SimpleShardList(urls[rank::world]),
        wds.tarfile_to_samples(),
        MakePairs(data, audio, 0, SharedEpoch(), train=False),
        wds.batched(batch_size, collation_fn=collate, partial=True),
    )
    return _loader(pipeline, 0)


def _loader(pipeline, workers: int, pin_memory: bool = False) -> DataLoader:
    if workers == 0:
        return DataLoader(pipeline, batch_size=None, num_workers=0, pin_memory=pin_memory)
    return DataLoader(pipeline, batch_size=None, num_workers=workers, persistent_workers=True,
                      multiprocessing_context="forkserver", prefetch_factor=PREFETCH,
                      pin_memory=pin_memory)


def shared_memory_need(data: DataConfig, audio: AudioConfig, workers: int,
                       sample_bytes: int = 0) -> int:
    """Bytes of shared memory (/dev/shm) one process's training loader can hold: each
    worker hands its batches over in shared memory, PREFETCH of them ahead, and a
    batch is mostly its float32 audio (or its cached states: `sample_bytes` a clip)."""
    sample_bytes = sample_bytes or round(audio.clip_seconds * audio.sample_rate) * 4
    return PREFETCH * workers * data.batch_size * sample_bytes


def shared_memory_problem(need: int, processes: int, free: int) -> str | None:
    """Why the loaders of a node's `processes` processes will not fit in `free` bytes of
    /dev/shm (a worker that finds it full dies with 'Bus error'), or None."""
    total = need * processes
    if total <= free:
        return None
    suggest = math.ceil(total * 1.25 / 1e9)  # room for what else the node keeps there
    return (f"/dev/shm has {free / 1e9:.2f} GB free, but the loader workers of this "
            f"node's {processes} training process(es) can hold {total / 1e9:.2f} GB of "
            f"batches there ({PREFETCH} prefetched per worker; {need / 1e9:.2f} GB per "
            "process); workers that find it full die with 'Bus error'. Give the "
            f"container more shared memory (docker run --shm-size={suggest}g; "
            "Kubernetes: an emptyDir volume with medium: Memory on /dev/shm), or lower "
            "data.workers or data.batch_size")
