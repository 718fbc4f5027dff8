"""The contrastive loss against a naive reference that loops over rows."""

import math

import torch

from trainer.loss import contrastive_loss
from trainer.swap import HardNegatives


def naive_loss(audio, text, scale, replaced=None):
    """Row by row: -log softmax of the positive, both directions; `replaced` maps
    (row, column) to the text embedding that takes that column's place in that row."""
    replaced = replaced or {}
    n, total = len(audio), 0.0
    for i in range(n):
        scores = [scale * torch.dot(audio[i], replaced.get((i, j), text[j])) for j in range(n)]
        total = total - (scores[i] - torch.logsumexp(torch.stack(scores), 0))
    for i in range(n):
        scores = [scale * torch.dot(text[i], audio[j]) for j in range(n)]
        total = total - (scores[i] - torch.logsumexp(torch.stack(scores), 0))
    return total / (2 * n)


def embeddings(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    a = torch.nn.functional.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)
    t = torch.nn.functional.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)
    return a.requires_grad_(), t.requires_grad_()


def test_loss_and_gradients_match_the_reference():
    audio, text = embeddings(7, 16, 0)
    scale = torch.tensor(1 / 0.03, dtype=torch.float64)
    ours = contrastive_loss(audio, text, audio, text, scale, 0)
    reference = naive_loss(audio, text, scale)
    assert torch.allclose(ours, reference, atol=1e-10)
    ga, gt = torch.autograd.grad(ours, (audio, text))
    ra, rt = torch.autograd.grad(reference, (audio, text))
    assert torch.allclose(ga, ra, atol=1e-10) and torch.allclose(gt, rt, atol=1e-10)


def test_hard_negatives_replace_their_column_in_their_row_only():
    audio, text = embeddings(6, 8, 1)
    g = torch.Generator().manual_seed(2)
    hard = torch.nn.functional.normalize(torch.randn(3, 8, generator=g, dtype=torch.float64),
                                         dim=1).requires_grad_()
    negatives = HardNegatives(rows=[0, 0, 4], columns=[3, 5, 1], texts=["a", "b", "c"])
    scale = torch.tensor(20.0, dtype=torch.float64)
    ours = contrastive_loss(audio, text, audio, text, scale, 0, negatives, hard)
    reference = naive_loss(audio, text, scale, {(0, 3): hard[0], (0, 5): hard[1],
                                                (4, 1): hard[2]})
    assert torch.allclose(ours, reference, atol=1e-10)
    for ours_grad, ref_grad in zip(torch.autograd.grad(ours, (audio, text, hard)),
                                   torch.autograd.grad(reference, (audio, text, hard)),
                                   strict=True):
        assert torch.allclose(ours_grad, ref_grad, atol=1e-10)
    plain = contrastive_loss(audio, text, audio, text, scale, 0)
    assert abs(plain.item() - ours.item()) > 1e-6


def test_local_rows_against_the_global_batch_average_to_the_full_loss():
    """What each process computes (its rows, all columns) averages to the one-process loss."""
    audio, text = embeddings(8, 16, 3)
    scale = torch.tensor(10.0, dtype=torch.float64)
    full = contrastive_loss(audio, text, audio, text, scale, 0)
    halves = [contrastive_loss(audio[r * 4:(r + 1) * 4], text[r * 4:(r + 1) * 4], audio, text,
                               scale, r * 4) for r in range(2)]
    assert torch.allclose(full, sum(halves) / 2, atol=1e-12)


def test_perfect_alignment_gives_a_low_loss_and_chance_gives_log_n():
    eye = torch.eye(5, dtype=torch.float64)
    assert contrastive_loss(eye, eye, eye, eye, torch.tensor(100.0), 0) < 1e-6
    same = torch.ones(5, 3, dtype=torch.float64) / math.sqrt(3)
    assert math.isclose(contrastive_loss(same, same, same, same, torch.tensor(10.0), 0).item(),
                        math.log(5), rel_tol=1e-9)
