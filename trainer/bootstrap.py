"""Paired bootstrap: how much better is run A than run B on the same eval set, and how
sure are we?

The input is what the eval protocol already computes: for each run (and each seed of
it), the text-to-music rank of every query in every random subset, as a matrix
`ranks[subset, query]` (0 where the query's track is not in that subset). Both runs
must share the queries and the subsets (the same eval set and protocol seed).

Each replicate resamples the queries with replacement (a multiplicity per query) and,
when there are several seeds, the seeds with replacement too (seed s of A stays paired
with seed s of B); both runs get the same draw. A run's metric in a replicate is the
protocol's own: per subset, the weighted R@k, or the weighted median rank, over its
queries, then the mean over subsets and over the drawn seeds. The interval is the
2.5th to 97.5th percentile of the replicates' A - B; the point estimate is the
observed difference. With one subset of all tracks and unit weights this is exactly
the report's R@k and MR.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

METRICS = ("R@1", "R@10", "MR")
REPLICATES = 2000


def _weighted_medians(rank: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per row of `weights`, the median of `rank` under those weights; the midpoint of
    the lower and upper medians, so unit weights give numpy's median."""
    order = np.argsort(rank, kind="stable")
    sorted_rank = rank[order].astype(float)
    cumulative = np.cumsum(weights[:, order], axis=1)
    half = cumulative[:, -1:] / 2
    lower = np.minimum((cumulative < half).sum(1), len(rank) - 1)
    upper = np.minimum((cumulative <= half).sum(1), len(rank) - 1)
    return (sorted_rank[lower] + sorted_rank[upper]) / 2


def metrics(ranks: np.ndarray, weights: np.ndarray) -> dict[str, np.ndarray]:
    """R@1, R@10 (in %) and median rank of one run under each row of query weights:
    `ranks` is (subsets, queries), `weights` (replicates, queries); each result is one
    value per replicate, averaged over subsets (a subset whose queries all got weight 0
    is left out of that replicate's mean)."""
    per_subset: dict[str, list[np.ndarray]] = {m: [] for m in METRICS}
    for row in ranks:
        present = row > 0
        rank, w = row[present], weights[:, present].astype(float)
        total = w.sum(1)
        empty = total == 0
        safe = np.where(empty, 1.0, total)
        for k in (1, 10):
            value = 100 * (w @ (rank <= k)) / safe
            per_subset[f"R@{k}"].append(np.where(empty, np.nan, value))
        medians = _weighted_medians(rank, np.where(empty[:, None], 1.0, w))
        per_subset["MR"].append(np.where(empty, np.nan, medians))
    return {m: np.nanmean(np.stack(v), axis=0) for m, v in per_subset.items()}


def paired_bootstrap(a: Sequence[np.ndarray], b: Sequence[np.ndarray],
                     replicates: int = REPLICATES, seed: int = 0) -> dict[str, dict]:
    """A - B for each metric: `a[s]` and `b[s]` are the (subsets, queries) rank matrices
    of seed s of each run. Returns metric -> {diff, lo, hi, excludes_zero, a, b}."""
    if len(a) != len(b) or not a:
        raise ValueError(f"paired runs need the same seeds on both sides, got {len(a)} "
                         f"and {len(b)}")
    shapes = {m.shape for m in (*a, *b)}
    if len(shapes) != 1:
        raise ValueError(f"paired runs must share queries and subsets; got shapes {shapes}")
    presence = {(m > 0).tobytes() for m in (*a, *b)}
    if len(presence) != 1:
        raise ValueError("paired runs must be scored on the same subsets (eval seed, "
                         "subset size and set)")
    n_queries = a[0].shape[1]
    rng = np.random.default_rng(seed)
    query_weights = rng.multinomial(n_queries, np.full(n_queries, 1 / n_queries),
                                    size=replicates)
    seeds = len(a)
    seed_weights = rng.multinomial(seeds, np.full(seeds, 1 / seeds), size=replicates) \
        if seeds > 1 else np.ones((replicates, 1), dtype=int)
    unit = np.ones((1, n_queries))
    diffs = {m: np.zeros(replicates) for m in METRICS}
    observed = {m: [0.0, 0.0] for m in METRICS}
    for s in range(seeds):
        run_a, run_b = metrics(a[s], query_weights), metrics(b[s], query_weights)
        once_a, once_b = metrics(a[s], unit), metrics(b[s], unit)
        for m in METRICS:
            diffs[m] += seed_weights[:, s] * (run_a[m] - run_b[m]) / seeds
            observed[m][0] += float(once_a[m][0]) / seeds
            observed[m][1] += float(once_b[m][0]) / seeds
    result = {}
    for m in METRICS:
        lo, hi = np.nanpercentile(diffs[m], [2.5, 97.5])
        result[m] = {"diff": observed[m][0] - observed[m][1], "lo": float(lo),
                     "hi": float(hi), "excludes_zero": bool(lo > 0 or hi < 0),
                     "a": observed[m][0], "b": observed[m][1]}
    return result


def describe(entry: dict) -> str:
    """'+2.4 [0.8, 4.1]*': the difference and its interval, * when it excludes 0."""
    return (f"{entry['diff']:+.1f} [{entry['lo']:+.1f}, {entry['hi']:+.1f}]"
            + ("*" if entry["excludes_zero"] else ""))
