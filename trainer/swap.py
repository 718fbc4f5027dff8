"""TextSwap: hard negatives made by replacing one genre, mood or instrument keyword of a
caption with another descriptor of the same category that the track does not have.

Randomness is drawn per (seed, step, global anchor index), so a run on one process and
a run on many make the same swaps for the same global batch, and a resumed run repeats
an uninterrupted one.
"""

from __future__ import annotations

import random
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass

from schemas.catalog import normalise_tag
from schemas.swap_dictionary import SwapDictionary
from trainer.config import SwapConfig


def p_swap(epoch: int, config: SwapConfig) -> float:
    """0 during the warm-up epochs, then rising linearly to p_max over ramp epochs."""
    if not config.enabled or epoch < config.warmup_epochs:
        return 0.0
    if config.ramp_epochs == 0:
        return config.p_max
    return config.p_max * min(1.0, (epoch - config.warmup_epochs) / config.ramp_epochs)


class Swapper:
    def __init__(self, dictionary: SwapDictionary, categories: Sequence[str]):
        self.categories = tuple(categories)
        # (term, every name of it, the form written into captions: "R&B", not "r&b")
        self.entries = {c: sorted((d.term, {d.term, *d.synonyms}, d.written) for d in
                                  dictionary.descriptors if d.category == c)
                        for c in self.categories}

    def swap(self, text: str, spans: Sequence[Mapping], category: str,
             tags: Mapping[str, Sequence[str]], rng: random.Random,
             known: Container[str] | None = None) -> str | None:
        """`text` with one `category` span replaced, or None when no swap is possible.
        `known`: only results in it may be drawn (a feature cache holds their states);
        when it holds every result of the span, the draws are those without it."""
        own = [s for s in spans if s["category"] == category]
        if not own:
            return None
        span = own[rng.randrange(len(own))]
        results = self._results(text, span, own, category, tags)
        if known is not None:
            results = [r for r in results if r in known]
        return results[rng.randrange(len(results))] if results else None

    def variants(self, text: str, spans: Sequence[Mapping], category: str,
                 tags: Mapping[str, Sequence[str]]) -> list[str]:
        """Every text `swap` can make of `text` for `category`, in a fixed order."""
        own = [s for s in spans if s["category"] == category]
        return [r for span in own for r in self._results(text, span, own, category, tags)]

    def _results(self, text: str, span: Mapping, own: Sequence[Mapping], category: str,
                 tags: Mapping[str, Sequence[str]]) -> list[str]:
        avoid = {normalise_tag(t) for t in tags.get(category, ())}
        avoid |= {s["term"] for s in own}  # no "rock and rock"
        original = text[span["start"]:span["end"]]
        return [text[:span["start"]] + _match_form(written, original, span["term"]) +
                text[span["end"]:]
                for _, names, written in self.entries.get(category, ()) if not names & avoid]


def _match_form(term: str, original: str, canonical: str) -> str:
    """Keep the original's capital and plural: 'Guitars' -> 'Pianos'. `term` is the
    replacement's display form, whose own capitals stay ('R&B')."""
    lower = original.lower()
    if lower != canonical and lower in (canonical + "s", canonical + "es"):
        term += "es" if lower.endswith("es") and not canonical.endswith("e") else "s"
    return term[:1].upper() + term[1:] if original[:1].isupper() else term


@dataclass(frozen=True)
class HardNegatives:
    rows: list[int]  # local anchor (audio) index
    columns: list[int]  # global text column the negative replaces in that anchor's row
    texts: list[str]

    def __len__(self) -> int:
        return len(self.texts)


def hard_negatives(swapper: Swapper, texts: Sequence[str], spans: Sequence[Sequence[Mapping]],
                   tags: Sequence[Mapping], p: float, seed: int, step: int, offset: int,
                   columns: int, known: Container[str] | None = None) -> HardNegatives:
    """For each anchor and each category in its caption, with probability p, a swapped
    caption that replaces a random other caption (not the anchor's own) in its row.

    `offset` is the global index of this process's first anchor; `columns` the global
    batch size; `known` the swapped texts that may be made (Swapper.swap)."""
    rows, targets, out = [], [], []
    if p <= 0:
        return HardNegatives(rows, targets, out)
    for i, (text, view_spans, track_tags) in enumerate(zip(texts, spans, tags, strict=True)):
        anchor = offset + i
        rng = random.Random(f"{seed}:{step}:{anchor}")
        present = [c for c in swapper.categories if any(s["category"] == c for s in view_spans)]
        taken: set[int] = {anchor}
        for category in present:
            if rng.random() >= p:
                continue
            swapped = swapper.swap(text, view_spans, category, track_tags, rng, known)
            if swapped is None or len(taken) >= columns:
                continue
            column = anchor
            while column in taken:  # at most three are taken: this ends fast
                column = rng.randrange(columns)
            taken.add(column)
            rows.append(i)
            targets.append(column)
            out.append(swapped)
    return HardNegatives(rows, targets, out)
