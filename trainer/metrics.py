"""Retrieval metrics: each query ranks every item by cosine similarity.

Ranking is done in chunks of queries, so memory grows with chunk x items, never with
queries x items."""

from __future__ import annotations

import torch


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
