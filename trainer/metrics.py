"""Retrieval metrics: each query ranks every item by cosine similarity.

Ranking is done in chunks of queries, so memory grows with chunk x items, never with
queries x items."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def ranks(queries: torch.Tensor, items: torch.Tensor, targets: torch.Tensor,
          chunk: int = 1024) -> torch.Tensor:
    """1-based rank of each query's target item; ties count against the target
    (an item scoring equal to the target is ranked above it)."""
    out = []
    for start in range(0, len(queries), chunk):
        scores = queries[start:start + chunk] @ items.T
        target = scores.gather(1, targets[start:start + chunk, None])
        out.append((scores >= target).sum(1))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def recall_summary(rank: torch.Tensor, ks=(1, 5, 10)) -> dict[str, float]:
    summary = {f"R@{k}": float((rank <= k).float().mean()) * 100 for k in ks}
    summary["MR"] = float(rank.float().quantile(0.5)) if len(rank) else float("nan")
    return summary


def pool_tracks(clips: torch.Tensor, clip_track: torch.Tensor, n_tracks: int,
                how: str) -> torch.Tensor:
    if how == "first":
        first = torch.full((n_tracks,), -1, dtype=torch.long)
        for i in reversed(range(len(clip_track))):
            first[clip_track[i]] = i
        return clips[first]
    summed = torch.zeros(n_tracks, clips.shape[1]).index_add_(0, clip_track, clips)
    return F.normalize(summed, dim=-1)
