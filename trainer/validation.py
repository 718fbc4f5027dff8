"""Validation during training: the valid split's loss and retrieval, computed the same
way by any number of processes."""

from __future__ import annotations

import math

import numpy as np
import torch

from trainer.config import TrainConfig
from trainer.data import eval_loader, shard_urls
from trainer.distributed import Dist
from trainer.loss import contrastive_loss
from trainer.metrics import pool_tracks, ranks, recall_summary
from trainer.model import DualEncoder


@torch.no_grad()
def embed_batches(model: DualEncoder, loader, device, autocast
          ) -> tuple[torch.Tensor, torch.Tensor, list, list]:
    """Audio and text embeddings (on the CPU) of every sample a loader yields, in order,
    with their track ids and shards."""
    was_training = model.training
    model.eval()
    audio, text, ids, shards = [], [], [], []
    for batch in loader:
        with autocast():
            audio.append(model.encode_audio(batch["audio"].to(device)).float().cpu())
            text.append(model.encode_text(model.tokenize(batch["text"]).to(device))
                        .float().cpu())
        ids += batch["track_id"]
        shards += batch["shard"]
    model.train(was_training)
    if not audio:
        empty = torch.zeros(0, model.dim)
        return empty, empty, [], []
    return torch.cat(audio), torch.cat(text), ids, shards


def validate(model: DualEncoder, config: TrainConfig, info: Dist, autocast) -> dict | None:
    """Validation loss (InfoNCE over clips, in batches of data.batch_size) and
    text-to-audio retrieval per track, each track's first caption against every track.

    Every process embeds its share of the valid shards; rank 0 puts the rows back in
    shard order (so any number of processes gives the numbers of one) and scores them.
    Other ranks get None."""
    urls, _ = shard_urls(config.data.shards, "valid")
    loader = eval_loader(config.data.shards, "valid", config.data, config.model.audio,
                         config.data.batch_size, part=(info.rank, info.world))
    audio, text, track_ids, shards = embed_batches(model, loader, info.device, autocast)
    position = {url: i for i, url in enumerate(urls)}
    shard = torch.tensor([float(position[s]) for s in shards]).reshape(-1, 1)
    # one gather for both embeddings and each row's shard (exact as a float)
    rows = info.gather_rows("validation embeddings", torch.cat([audio, text, shard], 1))
    track_ids = [t for part in info.gather_objects("validation track ids", track_ids)
                 for t in part]
    if not info.main:
        return None
    rows = rows.cpu()
    order = torch.sort(rows[:, -1], stable=True).indices
    dim = audio.shape[1]
    audio, text = rows[order, :dim], rows[order, dim:2 * dim]
    track_ids = [track_ids[i] for i in order.tolist()]
    if len(audio) < 2:
        return {"valid_loss": None}
    scale = model.logit_scale.clamp(max=math.log(100)).exp().cpu()
    losses = []
    for start in range(0, len(audio), config.data.batch_size):
        a, t = audio[start:start + config.data.batch_size], text[start:start +
                                                                  config.data.batch_size]
        if len(a) < 2:
            continue
        losses.append(contrastive_loss(a, t, a, t, scale, 0).item())
    # one item per track, queried by its first clip's caption: a track's other clips
    # never count as wrong answers
    order = list(dict.fromkeys(track_ids))
    index = {t: i for i, t in enumerate(order)}
    tracks = pool_tracks(audio, torch.tensor([index[t] for t in track_ids]), len(order),
                         "mean")
    queries = text[[track_ids.index(t) for t in order]]
    summary = recall_summary(ranks(queries, tracks, torch.arange(len(tracks))))
    return {"valid_loss": float(np.mean(losses)) if losses else None,
            "valid_R@1": summary["R@1"], "valid_R@10": summary["R@10"],
            "valid_MR": summary["MR"], "valid_tracks": len(tracks)}
