import pytest

from pipeline.curate.dictionary import build_dictionary
from schemas.descriptors import DescriptorMatcher
from schemas.problems import SchemaError

CATS = ("genre", "mood", "instrument")
TAGS = [("genre", "hip hop"), ("genre", "Rock"), ("mood", "calm"), ("instrument", "drums")]


def test_catalog_vocabulary_and_extras(tmp_path):
    extras = tmp_path / "extras.yaml"
    extras.write_text("genre:\n  - term: hip hop\n    synonyms: [rap, Hip-Hop]\n"
                      "  - synthwave\nmood:\n  - term: upbeat\n")
    d = build_dictionary(TAGS, CATS, extras)
    assert d.terms("genre") == ["hip hop", "rock", "synthwave"]
    assert d.terms("mood") == ["calm", "upbeat"]
    hip = next(x for x in d.descriptors if x.term == "hip hop")
    assert hip.synonyms == ("hip-hop", "rap")
    d.save(tmp_path / "swap.json")
    matches = DescriptorMatcher(type(d).load(tmp_path / "swap.json")).find("Rap over drums")
    assert [(m.category, m.term) for m in matches] == [("genre", "hip hop"),
                                                      ("instrument", "drums")]


def test_bad_extras_are_reported(tmp_path):
    extras = tmp_path / "extras.yaml"
    extras.write_text("tempo:\n  - fast\ngenre:\n  - term: ''\n  - {synonyms: [x]}\n")
    with pytest.raises(SchemaError) as err:
        build_dictionary(TAGS, CATS, extras)
    assert {p.field for p in err.value.problems} == {"tempo", "genre[0]", "genre[1]"}


def test_a_synonym_claimed_by_two_categories_is_refused(tmp_path):
    extras = tmp_path / "extras.yaml"
    extras.write_text("mood:\n  - term: calm\n    synonyms: [rock]\n")
    with pytest.raises(SchemaError, match="'rock' is already defined"):
        build_dictionary(TAGS, CATS, extras)
