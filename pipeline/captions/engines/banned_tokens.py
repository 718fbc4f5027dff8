"""Faithful decoding inside the offline vLLM engine: banned token sequences.

vLLM's own `bad_words` bans a word's leading-space form (the one a word takes in the
middle of a sentence) only when it tokenizes to as many tokens as the bare word. With
SmolLM2's tokenizer that drops " jazz", " piano", " calm", " acoustic guitar" and " synth
pad", 71 of the demo's 180 forms, so the model could still write them after a space.
Here each banned word is tokenized both ways, every sequence is kept, and at every
decoding step the last token of a sequence is masked whenever the tokens just
generated are the rest of it (vLLM's rule, for all of them). Single-token sequences,
most of the list, are masked with one index operation.

The vllm engine registers `BannedSequences` as a logits processor and passes each
request's sequences in `SamplingParams.extra_args[EXTRA_ARG]`.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from vllm.v1.sample.logits_processor import AdapterLogitsProcessor

EXTRA_ARG = "adswap_banned_token_ids"


def token_sequences(tokenizer, words: Iterable[str], cache: dict) -> list[list[int]]:
    """Each word's token ids bare and after a space, without repeats; `cache` keeps
    one word's sequences across requests (banned lists repeat from view to view)."""
    found: dict[tuple[int, ...], None] = {}
    for word in words:
        if word not in cache:
            forms = (tokenizer.encode(text, add_special_tokens=False)
                     for text in (word, " " + word))
            cache[word] = [tuple(ids) for ids in forms if ids]
        found.update(dict.fromkeys(cache[word]))
    return [list(ids) for ids in found]


class BannedSequences(AdapterLogitsProcessor):
    """Masks the last token of a banned sequence when the output ends with its prefix."""

    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool):
        super().__init__(vllm_config, device, is_pin_memory)
        self.device = device

    def is_argmax_invariant(self) -> bool:
        return False  # it changes which token greedy decoding picks

    def new_req_logits_processor(self, params):
        sequences = (params.extra_args or {}).get(EXTRA_ARG)
        if not sequences:
            return None
        single = torch.tensor(sorted({s[0] for s in sequences if len(s) == 1}),
                              dtype=torch.long, device=self.device)
        # prefix length -> prefix -> last tokens to mask after it
        longer: dict[int, dict[tuple[int, ...], list[int]]] = {}
        for sequence in sequences:
            if len(sequence) > 1:
                longer.setdefault(len(sequence) - 1, {}).setdefault(
                    tuple(sequence[:-1]), []).append(sequence[-1])

        def mask(output_ids: list[int], logits: torch.Tensor) -> torch.Tensor:
            logits[single] = -torch.inf
            for length, prefixes in longer.items():
                if len(output_ids) >= length:
                    last = prefixes.get(tuple(output_ids[-length:]))
                    if last:
                        logits[last] = -torch.inf
            return logits

        return mask
