"""Descriptor matching, tag recall, hallucinations and TextSwap on a real catalog's
vocabulary: MTG-Jamendo's tags through the bundled tag map (compound and joined tags,
display forms with capitals)."""

import random

import pytest

from pipeline.curate.dictionary import build_dictionary
from schemas.descriptors import DescriptorMatcher, tag_recall
from schemas.swap_dictionary import SwapDictionary
from schemas.tagmap import bundled_map_path, load_tag_map
from trainer.swap import Swapper

RUN = ("genre", "mood", "instrument")


@pytest.fixture(scope="module")
def dictionary():
    tag_map = load_tag_map(bundled_map_path("mtg-jamendo"), RUN)
    return build_dictionary([], RUN, tag_map=tag_map)


@pytest.fixture(scope="module")
def matcher(dictionary):
    return DescriptorMatcher(dictionary)


def found(matcher, text):
    return [(m.category, m.term) for m in matcher.find(text)]


@pytest.mark.parametrize("text", ["electric guitar", "electric-guitar", "electricguitar",
                                  "Electric Guitars", "ELECTRIC  GUITAR"])
def test_electric_guitar_in_any_spelling_is_never_guitar(matcher, text):
    assert found(matcher, f"A song with {text}.") == [("instrument", "electric guitar")]


def test_guitar_alone_is_guitar(matcher):
    assert found(matcher, "a guitar and two guitars") == [("instrument", "guitar")] * 2


@pytest.mark.parametrize("text", ["hip-hop", "hip hop", "HipHop", "hiphop"])
def test_hip_hop_spellings(matcher, text):
    assert found(matcher, f"an old-school {text} beat") == [("genre", "hip hop")]


@pytest.mark.parametrize("text", ["drum and bass", "drum & bass", "drum 'n' bass", "DnB",
                                  "drum-and-bass"])
def test_drum_and_bass_is_neither_drums_nor_bass(matcher, text):
    assert found(matcher, f"fast {text} with a bass line") == [
        ("mood", "fast"), ("genre", "drum and bass"), ("instrument", "bass")]


def test_punk_rock_is_not_rock_and_compounds_win_everywhere(matcher):
    assert found(matcher, "punk rock, punk-rock and plain rock") == [
        ("genre", "punk rock"), ("genre", "punk rock"), ("genre", "rock")]
    assert found(matcher, "an electric piano over a drum machine") == [
        ("instrument", "electric piano"), ("instrument", "drum machine")]
    assert found(matcher, "deep house, not just deep") == [("genre", "deep house"),
                                                          ("mood", "deep")]


def test_plurals_of_compounds(matcher):
    assert found(matcher, "two drum machines and acoustic guitars") == [
        ("instrument", "drum machine"), ("instrument", "acoustic guitar")]


def test_the_issue_caption_gets_full_recall_and_no_hallucination(matcher):
    """A faithful caption of tags {hiphop, electricguitar, drummachine} (as mapped)."""
    view = {"genre": ["hip hop"], "mood": [], "instrument": ["electric guitar", "drum machine"]}
    matches = matcher.find("An energetic hip-hop track with electric guitar and a drum machine.")
    assert tag_recall(matches, view) == 1.0
    named = {(m.category, m.term) for m in matches}
    own = {(c, t) for c, tags in view.items() for t in tags}
    assert named - own == {("mood", "energetic")}  # the only descriptor the view lacks
    assert ("instrument", "guitar") not in named and ("instrument", "drums") not in named


def test_recall_compares_display_forms_without_case(matcher):
    view = {"genre": ["R&B", "EDM"], "mood": [], "instrument": ["Rhodes"]}
    matches = matcher.find("smooth r&b meets edm, with a rhodes")
    assert tag_recall(matches, view) == 1.0


def test_the_dictionary_keeps_display_forms_and_synonyms(dictionary, tmp_path):
    by_term = {d.term: d for d in dictionary.descriptors}
    assert by_term["r&b"].written == "R&B"
    assert "rhythm and blues" in by_term["r&b"].synonyms
    assert by_term["hip hop"].written == "hip hop"
    dictionary.save(tmp_path / "swap.json")  # the display survives the file
    again = {d.term: d for d in SwapDictionary.load(tmp_path / "swap.json").descriptors}
    assert again["r&b"].written == "R&B" and again["idm"].written == "IDM"


def test_textswap_writes_display_forms_and_swaps_whole_compounds(dictionary, matcher):
    swapper = Swapper(dictionary, RUN)
    text = "A hip-hop track with electric guitar."
    spans = [m._asdict() for m in matcher.find(text)]
    tags = {"genre": ["hip hop"], "mood": [], "instrument": ["electric guitar"]}
    joined = {d.term.replace(" ", "") for d in dictionary.descriptors if " " in d.term}
    written = {d.written for d in dictionary.descriptors if d.category == "instrument"}
    for seed in range(200):
        swapped = swapper.swap(text, spans, "instrument", tags, random.Random(seed))
        assert swapped.startswith("A hip-hop track with ") and swapped.endswith(".")
        inserted = swapped[len("A hip-hop track with "):-1]
        assert inserted in written and inserted != "electric guitar"
        assert inserted not in joined  # never a raw joined tag such as 'electricguitar'
        assert "electric" not in swapped or inserted.startswith("electric ")
    genres = {swapper.swap(text, spans, "genre", tags, random.Random(s)) for s in range(400)}
    assert "A R&B track with electric guitar." in genres  # capitals as displayed


def test_a_display_form_must_spell_its_term():
    body = {"schema": "swap_dictionary/1", "categories": {"genre": [
        {"term": "r&b", "synonyms": [], "display": "R&B"},
        {"term": "hip hop", "synonyms": [], "display": "trip hop"}]}}
    with pytest.raises(ValueError, match=r"genre\[1\]: 'display' 'trip hop' must spell"):
        SwapDictionary.from_json(body, "swap.json")
