"""TextSwap: category-correct replacements, never a track's own tag, the rest of the
caption byte-identical; the curriculum; deterministic hard negatives."""

import random

import pytest

from schemas.descriptors import DescriptorMatcher
from schemas.swap_dictionary import Descriptor, SwapDictionary
from trainer.config import SwapConfig
from trainer.swap import Swapper, hard_negatives, p_swap

DICTIONARY = SwapDictionary(tuple(
    [Descriptor("genre", g) for g in ("rock", "jazz", "hip hop", "pop", "blues")] +
    [Descriptor("mood", m) for m in ("happy", "sad", "calm")] +
    [Descriptor("instrument", i) for i in ("guitar", "piano", "drums", "acoustic guitar")]))
MATCHER = DescriptorMatcher(DICTIONARY)
SWAPPER = Swapper(DICTIONARY, ("genre", "mood", "instrument"))


def spans(text):
    return [m._asdict() for m in MATCHER.find(text)]


def test_swap_replaces_one_keyword_of_the_category_and_nothing_else():
    text = "A calm rock tune with acoustic guitar, rocket-fast."
    tags = {"genre": ["rock", "pop"], "mood": ["calm"], "instrument": ["acoustic guitar"]}
    seen = set()
    for seed in range(200):
        swapped = SWAPPER.swap(text, spans(text), "genre", tags, random.Random(seed))
        assert swapped.startswith("A calm ") and swapped.endswith(
            " tune with acoustic guitar, rocket-fast.")
        new = swapped[len("A calm "):-len(" tune with acoustic guitar, rocket-fast.")]
        assert new in {"jazz", "hip hop", "blues"}  # never rock or pop, the track's tags
        found = [m for m in MATCHER.find(swapped) if m.term == new]
        assert found and found[0].category == "genre"
        seen.add(new)
    assert seen == {"jazz", "hip hop", "blues"}


def test_swap_keeps_capitals_and_plurals_and_gives_up_without_a_choice():
    text = "Guitars and Jazz."
    result = SWAPPER.swap(text, spans(text), "instrument", {"instrument": ["guitar"]},
                          random.Random(0))
    assert result.endswith(" and Jazz.") and result[0].isupper() and \
        result.split(" ")[0].endswith("s")
    assert SWAPPER.swap(text, spans(text), "mood", {}, random.Random(0)) is None
    only = Swapper(SwapDictionary((Descriptor("genre", "jazz"), Descriptor("genre", "rock"))),
                   ["genre"])
    assert only.swap("jazz", [{"category": "genre", "term": "jazz", "start": 0, "end": 4}],
                     "genre", {"genre": ["rock"]}, random.Random(0)) is None


@pytest.mark.parametrize("epoch, expected", [(0, 0.0), (4, 0.0), (5, 0.0), (10, 0.0375),
                                             (15, 0.075), (25, 0.15), (40, 0.15)])
def test_curriculum(epoch, expected):
    assert p_swap(epoch, SwapConfig()) == pytest.approx(expected)
    assert p_swap(epoch, SwapConfig(enabled=False)) == 0.0


def test_hard_negatives_are_deterministic_and_replace_other_columns():
    texts = ["a happy rock song with piano", "sad jazz with drums", "calm pop guitar"] * 4
    tags = [{"genre": ["rock"], "mood": ["happy"], "instrument": ["piano"]}] * 12
    args = (SWAPPER, texts, [spans(t) for t in texts], tags)
    first = hard_negatives(*args, 1.0, 7, 3, 12, 24)
    assert first == hard_negatives(*args, 1.0, 7, 3, 12, 24)
    assert first != hard_negatives(*args, 1.0, 7, 4, 12, 24)
    assert len(first) == 36  # p = 1: every category of every caption
    for row, column, text in zip(first.rows, first.columns, first.texts, strict=True):
        assert column != 12 + row and 0 <= column < 24
        assert text != texts[row]
    pairs = list(zip(first.rows, first.columns, strict=True))
    assert len(pairs) == len(set(pairs))
    assert len(hard_negatives(*args, 0.0, 7, 3, 0, 12)) == 0
    rate = len(hard_negatives(SWAPPER, texts * 50, [spans(t) for t in texts * 50], tags * 50,
                              0.15, 0, 0, 0, 600)) / (600 * 3)
    assert 0.12 < rate < 0.18
