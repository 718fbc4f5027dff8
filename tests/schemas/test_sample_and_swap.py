import json

import pytest

from schemas.problems import SchemaError
from schemas.sample import Sample, SampleView, tags_text, validate_sample_json
from schemas.swap_dictionary import Descriptor, SwapDictionary
from schemas.views import Span


def make_sample():
    return Sample(
        track_id="t1", clip_index=0, start_s=0.0, end_s=10.0, sample_rate=32000, split="train",
        tags={"genre": ["rock"], "mood": ["happy"], "instrument": ["drums"]},
        tags_text="rock, happy, drums",
        views=[SampleView(0, "en", "A happy rock song.", [Span("genre", "rock", 8, 12)]),
               SampleView(1, "de", "Ein fröhlicher Rocksong.", [])],
        provenance={"views": "views/1"},
    )


def test_sample_json_round_trip_and_clap_text_field():
    body = json.loads(json.dumps(make_sample().to_json()))
    assert body["text"] == ["A happy rock song.", "Ein fröhlicher Rocksong."]
    assert validate_sample_json(body, "x.json") == []
    assert Sample.from_json(body) == make_sample()
    assert make_sample().key == "t1-0"


def test_sample_json_problems_are_listed():
    body = make_sample().to_json()
    body["schema"] = "sample/0"
    del body["tags_text"]
    problems = {p.field for p in validate_sample_json(body, "a.tar:t1-0.json")}
    assert problems == {"schema", "tags_text"}

    body = make_sample().to_json()
    body["views"][0]["spans"][0]["end"] = 99
    body["split"] = "dev"
    body["text"] = ["other"]
    problems = {p.field for p in validate_sample_json(body, "a.tar:t1-0.json")}
    assert problems == {"views[0].spans[0]", "split", "text"}
    with pytest.raises(ValueError, match="outside the caption"):
        Sample.from_json(body)


def test_swap_dictionary_save_load(tmp_path):
    d = SwapDictionary((Descriptor("genre", "hip hop", ("hip-hop",)),
                        Descriptor("genre", "rock"), Descriptor("mood", "happy")))
    d.save(tmp_path / "swap.json")
    loaded = SwapDictionary.load(tmp_path / "swap.json")
    assert sorted(loaded.descriptors, key=str) == sorted(d.descriptors, key=str)
    assert loaded.terms("genre") == ["hip hop", "rock"]
    assert loaded.categories() == ["genre", "mood"]


def test_swap_dictionary_rejects_a_term_in_two_categories(tmp_path):
    body = {"schema": "swap_dictionary/1", "categories": {
        "genre": [{"term": "Ambient"}], "mood": [{"term": "calm", "synonyms": ["ambient"]}],
        "instrument": [{"term": ""}]}}
    (tmp_path / "s.json").write_text(json.dumps(body))
    with pytest.raises(SchemaError) as err:
        SwapDictionary.load(tmp_path / "s.json")
    messages = [str(p) for p in err.value.problems]
    assert any("'ambient' is already defined by genre[0]" in m for m in messages)
    assert any("instrument[0]" in m and "non-empty" in m for m in messages)


def test_swap_dictionary_wrong_version_and_bad_json(tmp_path):
    (tmp_path / "s.json").write_text(json.dumps({"schema": "swap_dictionary/9"}))
    with pytest.raises(SchemaError, match="swap_dictionary/9"):
        SwapDictionary.load(tmp_path / "s.json")
    (tmp_path / "b.json").write_text("{")
    with pytest.raises(SchemaError, match="cannot be read as JSON"):
        SwapDictionary.load(tmp_path / "b.json")


def test_tags_text_spans_every_tag_even_one_that_holds_the_separator():
    # ';'-separated CSV catalogs allow a tag such as "rock, live"
    tags = {"genre": ["hip hop", "rock, live"], "mood": ["dark"],
            "instrument": ["acoustic guitar"]}
    text, spans = tags_text(tags)
    assert text == "hip hop, rock, live, dark, acoustic guitar"
    assert [text[s["start"]:s["end"]] for s in spans] == ["hip hop", "rock, live", "dark",
                                                         "acoustic guitar"]
    assert [(s["category"], s["term"]) for s in spans] == [
        ("genre", "hip hop"), ("genre", "rock, live"), ("mood", "dark"),
        ("instrument", "acoustic guitar")]
    assert tags_text({"genre": []}) == ("", [])
