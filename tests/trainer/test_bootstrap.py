"""The paired bootstrap against hand-checked cases: identical runs, a run that wins
every query, a 60/40 split whose interval the normal approximation gives, seeds that
disagree, and the protocol's own metrics with unit weights."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from trainer.bootstrap import describe, metrics, paired_bootstrap
from trainer.evaluate import subset_draws, subset_metrics, t2m_rank_matrix


def one_subset(ranks):
    return np.asarray(ranks, dtype=np.int64)[None, :]


def test_identical_runs_give_an_interval_around_zero():
    rng = np.random.default_rng(0)
    ranks = one_subset(rng.integers(1, 500, size=300))
    result = paired_bootstrap([ranks], [ranks.copy()])
    for m in ("R@1", "R@10", "MR"):
        assert result[m]["diff"] == 0 and result[m]["lo"] <= 0 <= result[m]["hi"]
        assert not result[m]["excludes_zero"]


def test_a_run_that_wins_every_query_gives_an_interval_above_zero():
    rng = np.random.default_rng(1)
    b = rng.integers(12, 400, size=200)
    a = np.ones(200, dtype=np.int64)              # always the right track first
    result = paired_bootstrap([one_subset(a)], [one_subset(b)])
    assert result["R@1"]["diff"] == 100 and result["R@1"]["lo"] == 100
    assert result["R@10"]["lo"] == 100 and result["R@10"]["excludes_zero"]
    assert result["MR"]["hi"] < 0 and result["MR"]["excludes_zero"]  # lower rank: better
    assert result["MR"]["diff"] == pytest.approx(1 - np.median(b))
    assert describe(result["R@10"]) == "+100.0 [+100.0, +100.0]*"


def test_sixty_forty_matches_the_normal_approximation():
    """A is right at rank 1 on 60 of 100 queries where B is at rank 50, and they tie
    elsewhere: the R@1 difference is 60 points, with standard error
    100 * sqrt(0.6 * 0.4 / 100) = 4.9, so the interval is about 60 -/+ 9.6."""
    a = np.array([1] * 60 + [50] * 40)
    b = np.full(100, 50)
    result = paired_bootstrap([one_subset(a)], [one_subset(b)], replicates=20000)
    assert result["R@1"]["diff"] == 60
    assert result["R@1"]["lo"] == pytest.approx(60 - 9.6, abs=1.2)
    assert result["R@1"]["hi"] == pytest.approx(60 + 9.6, abs=1.2)
    # a half-and-half split is a wash: the interval straddles 0 (about -/+ 19.6)
    even = paired_bootstrap([one_subset([1] * 50 + [50] * 50)],
                            [one_subset([50] * 50 + [1] * 50)], replicates=20000)
    assert even["R@1"]["diff"] == 0 and not even["R@1"]["excludes_zero"]
    assert even["R@1"]["hi"] == pytest.approx(19.6, abs=2)


def test_seeds_that_disagree_widen_the_interval():
    """Seed 0: A is first on every query and B never; seed 1: the other way round. Query
    resampling changes nothing, and seeds are resampled as pairs: (2, 0), (1, 1) or
    (0, 2) draws give +100, 0 or -100 with chances 1/4, 1/2, 1/4."""
    first, late = np.ones(10, dtype=np.int64), np.full(10, 30)
    result = paired_bootstrap([one_subset(first), one_subset(late)],
                              [one_subset(late), one_subset(first)], replicates=4000)
    assert result["R@1"]["diff"] == 0
    assert result["R@1"]["lo"] == -100 and result["R@1"]["hi"] == 100
    # one seed alone, ahead on 2 of 10 queries: sure of itself only as far as 10 queries
    # allow (no hit among 10 draws has chance 0.8 ** 10 = 11%)
    ahead = np.concatenate([first[:2], late[:8]])
    alone = paired_bootstrap([one_subset(ahead)], [one_subset(late)], replicates=4000)
    assert alone["R@1"]["diff"] == 20 and alone["R@1"]["lo"] == 0
    assert not alone["R@1"]["excludes_zero"]


def test_unit_weights_give_the_protocols_metrics():
    g = torch.Generator().manual_seed(2)
    tracks = F.normalize(torch.randn(60, 8, generator=g), dim=1)
    caption_track = torch.arange(60).repeat_interleave(2)
    text = F.normalize(tracks[caption_track] + 0.9 * torch.randn(120, 8, generator=g), dim=1)
    summary = subset_metrics(tracks, text, caption_track, subsets=4, size=25, seed=5)
    matrix = t2m_rank_matrix(tracks, text, caption_track,
                             subset_draws(caption_track, 4, 25, 5))
    assert matrix.shape == (4, 120) and ((matrix > 0).sum(1) == 50).all()
    once = metrics(matrix, np.ones((1, 120)))
    assert once["R@1"][0] == pytest.approx(summary["t2m_R@1"]["mean"])
    assert once["R@10"][0] == pytest.approx(summary["t2m_R@10"]["mean"])
    assert once["MR"][0] == pytest.approx(summary["t2m_MR"]["mean"])


def test_weighted_median_counts_multiplicities():
    ranks = one_subset([1, 2, 3, 4])
    weights = np.array([[0, 1, 0, 1], [3, 0, 0, 1], [1, 1, 1, 1]])
    assert metrics(ranks, weights)["MR"].tolist() == [3.0, 1.0, 2.5]


def test_mismatched_runs_are_refused():
    with pytest.raises(ValueError, match="same seeds"):
        paired_bootstrap([one_subset([1, 2])], [])
    with pytest.raises(ValueError, match="share queries"):
        paired_bootstrap([one_subset([1, 2])], [one_subset([1, 2, 3])])
    with pytest.raises(ValueError, match="same subsets"):
        paired_bootstrap([np.array([[1, 0]])], [np.array([[0, 1]])])
