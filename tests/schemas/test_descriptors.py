import pytest

from schemas.descriptors import DescriptorMatcher, tag_recall
from schemas.swap_dictionary import Descriptor, SwapDictionary

DICTIONARY = SwapDictionary((
    Descriptor("genre", "hip hop", ("rap",)), Descriptor("genre", "rock"),
    Descriptor("genre", "pop"), Descriptor("genre", "bossa nova"),
    Descriptor("instrument", "guitar"), Descriptor("instrument", "acoustic guitar"),
    Descriptor("instrument", "drums"), Descriptor("instrument", "bass"),
    Descriptor("mood", "dark"), Descriptor("mood", "happy"),
))
MATCHER = DescriptorMatcher(DICTIONARY)


def found(text):
    return [(m.category, m.term, text[m.start:m.end]) for m in MATCHER.find(text)]


@pytest.mark.parametrize("text, expected", [
    ("A hip hop beat", [("genre", "hip hop", "hip hop")]),
    ("A Hip-Hop beat", [("genre", "hip hop", "Hip-Hop")]),
    ("HIPHOP forever", [("genre", "hip hop", "HIPHOP")]),
    ("rap and rock", [("genre", "hip hop", "rap"), ("genre", "rock", "rock")]),
    ("rocket science and rockabilly", []),                 # substring of another word
    ("a rocking tune", []),
    ("two rocks", [("genre", "rock", "rocks")]),           # plural
    ("a drum solo", [("instrument", "drums", "drum")]),    # singular of a plural tag
    ("basses and bass", [("instrument", "bass", "basses"), ("instrument", "bass", "bass")]),
    ("acoustic guitars and a guitar", [("instrument", "acoustic guitar", "acoustic guitars"),
                                       ("instrument", "guitar", "guitar")]),  # longest first
    ("pop-rock, guitar-driven", [("genre", "pop", "pop"), ("genre", "rock", "rock"),
                                 ("instrument", "guitar", "guitar")]),
    ("Bossa-Nova", [("genre", "bossa nova", "Bossa-Nova")]),
    ("darker than dark.", [("mood", "dark", "dark")]),
    ("", []),
    ("Ça sonne très ROCK, façon Hip-Hop", [("genre", "rock", "ROCK"),
                                          ("genre", "hip hop", "Hip-Hop")]),  # non-ASCII
])
def test_matching_edge_cases(text, expected):
    assert found(text) == expected


def test_tag_recall_and_spans():
    text = "A happy rock song with drums and a piano-like acoustic guitar."
    matches = MATCHER.find(text)
    assert [text[m.start:m.end] for m in matches] == ["happy", "rock", "drums",
                                                      "acoustic guitar"]
    view = {"genre": ["rock"], "mood": ["happy", "dark"], "instrument": []}
    assert tag_recall(matches, view) == pytest.approx(2 / 3)
    assert tag_recall(matches, {"genre": []}) == 0.0


def test_an_empty_dictionary_finds_nothing():
    assert DescriptorMatcher(SwapDictionary(())).find("anything") == []
