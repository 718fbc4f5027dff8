"""NucleusMask against vLLM's own top-p (these run in .venv-llm)."""

import pytest

pytestmark = pytest.mark.llm

VOCAB = 49152  # SmolLM2's


def zipf_logits(rows: int, sharpness: float, seed: int):
    """Logits shaped like a language model's: a token's logit falls with the log of
    its rank (Zipf), in a random order over the vocabulary, at temperature 0.7."""
    import torch

    g = torch.Generator().manual_seed(seed)
    ranks = torch.argsort(torch.rand(rows, VOCAB, generator=g), dim=-1).float()
    noise = 0.3 * torch.randn(rows, VOCAB, generator=g)
    return (-sharpness * torch.log(ranks + 1) + noise) / 0.7


def from_probs(probs):
    """Logits with these probabilities, the tokens shuffled over the vocabulary."""
    import torch

    g = torch.Generator().manual_seed(len(probs))
    logits = torch.full((VOCAB,), -torch.inf)
    logits[torch.randperm(VOCAB, generator=g)[:len(probs)]] = torch.tensor(probs).log().float()
    return logits


def vllms(logits, top_p):
    from vllm.v1.sample.ops.topk_topp_sampler import apply_top_k_top_p_pytorch

    return apply_top_k_top_p_pytorch(logits.clone(), None, top_p)


@pytest.mark.parametrize("top_p", [0.5, 0.9, 0.95, 0.99])
def test_the_nucleus_is_vllms_token_for_token(top_p):
    """Peaked rows (nuclei of a few tokens, the common case) are masked without a sort;
    flat ones, whose nucleus runs past the candidates, by vLLM's function; either way
    the logits come out bit for bit as vLLM's, banned (-inf) tokens included."""
    import torch

    from pipeline.captions.nucleus import TOP_K, nucleus_mask

    for sharpness in (2.0, 1.4, 0.8):
        logits = zipf_logits(64, sharpness, seed=int(top_p * 100))
        logits[:, :500] = -torch.inf  # a banned-word list
        p = torch.full((64,), top_p)
        expected = vllms(logits, p)
        sorted_rows = nucleus_mask(logits, p)
        assert torch.equal(logits, expected), (top_p, sharpness)
        if sharpness == 2.0:  # a few tokens in each nucleus
            assert sorted_rows <= 6, (top_p, sorted_rows)
        if (expected > -torch.inf).sum(-1).min() > TOP_K:
            assert sorted_rows == 64, (top_p, sharpness)


def test_rows_vllms_rounding_or_sort_order_decides_take_vllms_sort():
    """A token whose mass at or below it is the threshold to the last bits (float32
    rounding in vLLM's sum decides), and two equal logits straddling the boundary
    (vLLM's sort order decides which is cut): both rows go through vLLM's function."""
    import torch

    from pipeline.captions.nucleus import nucleus_mask

    g = torch.Generator().manual_seed(0)
    rest = torch.rand(300, generator=g, dtype=torch.float64)
    # 1 - 0.95 in float32, as vLLM compares it: the rest sums to it exactly
    threshold = float(1 - torch.tensor(0.95))
    at_threshold = [0.6, 0.35 - threshold + 0.05, *(rest / rest.sum() * threshold).tolist()]
    tied = [0.6, 0.33, 0.03, 0.03, *(rest / rest.sum() * 0.01).tolist()]
    logits = torch.stack([from_probs(at_threshold), from_probs(tied)])
    p = torch.full((2,), 0.95)
    expected = vllms(logits, p)
    assert nucleus_mask(logits, p) == 2
    assert torch.equal(logits, expected)
    # vLLM cuts one of the tied pair: the mask is not "every token at or above a value"
    assert (expected[1] > -torch.inf).sum() == 3


def test_the_processor_masks_the_rows_of_its_requests_as_the_batch_changes():
    import torch
    from vllm import SamplingParams
    from vllm.v1.sample.logits_processor import BatchUpdate, MoveDirectionality

    from pipeline.captions.nucleus import EXTRA_ARG, NucleusMask

    processor = NucleusMask(None, torch.device("cpu"), False)
    assert processor.is_argmax_invariant()  # vLLM then applies it where it applies top_p
    params = {0.9: SamplingParams(extra_args={EXTRA_ARG: 0.9}),
              0.5: SamplingParams(extra_args={EXTRA_ARG: 0.5}), None: SamplingParams()}
    processor.update_state(BatchUpdate(3, removed=[], moved=[], added=[
        (0, params[0.9], [], []), (1, params[None], [], []), (2, params[0.5], [], [])]))
    logits = zipf_logits(3, 1.6, seed=1)
    before = logits.clone()
    processor.apply(logits)
    assert torch.equal(logits[0], vllms(before[:1], torch.tensor([0.9]))[0])
    assert torch.equal(logits[1], before[1])
    assert torch.equal(logits[2], vllms(before[2:], torch.tensor([0.5]))[0])
    # row 0 finishes and row 2 moves into its place
    processor.update_state(BatchUpdate(2, removed=[0], added=[], moved=[
        (2, 0, MoveDirectionality.UNIDIRECTIONAL)]))
    logits = before[:2].clone()
    processor.apply(logits)
    assert torch.equal(logits[0], vllms(before[:1], torch.tensor([0.5]))[0])
    assert torch.equal(logits[1], before[1])


def test_a_request_asking_for_both_nuclei_is_refused():
    from vllm import SamplingParams

    from pipeline.captions.nucleus import EXTRA_ARG, NucleusMask

    NucleusMask.validate_params(SamplingParams(extra_args={EXTRA_ARG: 0.95}))
    with pytest.raises(ValueError, match="replaces top_p: pass top_p=1"):
        NucleusMask.validate_params(SamplingParams(top_p=0.9, extra_args={EXTRA_ARG: 0.95}))
    with pytest.raises(ValueError, match=r"must be a number in \(0, 1\]"):
        NucleusMask.validate_params(SamplingParams(extra_args={EXTRA_ARG: 0}))
