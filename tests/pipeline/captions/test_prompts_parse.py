import pytest

from pipeline.captions.parse import parse_caption
from pipeline.captions.prompts import format_tags, load_template, sanitise_tag


def test_template_has_id_hash_and_shared_prefix():
    template = load_template("caption-v1")
    assert template.template_id == "caption-v1" and len(template.content_hash) == 16
    a = template.messages({"genre": ["rock"], "mood": [], "instrument": ["drums"]}, "en")
    b = template.messages({"genre": ["jazz"], "mood": ["calm"], "instrument": []}, "de")
    assert a[:-1] == b[:-1]  # system + few-shot examples: the cacheable prefix
    assert a[0]["role"] == "system" and len(a) == 2 + 2 * len(template.shots)
    assert a[-1]["content"] == "Tags: genre: rock; instrument: drums"
    assert b[-1]["content"].endswith("Write the caption in German.")


def test_edited_template_changes_hash(tmp_path):
    source = load_template("caption-v1")
    from pipeline.captions.prompts import TEMPLATE_DIR

    text = (TEMPLATE_DIR / "caption-v1.yaml").read_text()
    path = tmp_path / "mine.yaml"
    path.write_text(text.replace("one-sentence", "short"))
    mine = load_template(str(path))
    assert mine.content_hash != source.content_hash and mine.system != source.system


def test_bad_templates(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        load_template("caption-v99")
    (tmp_path / "t.yaml").write_text("id: x\nsystem: s\n")
    with pytest.raises(ValueError, match="'shots' is missing"):
        load_template(str(tmp_path / "t.yaml"))
    (tmp_path / "u.yaml").write_text("id: x\nsystem: s\nshots: []\nquery: q\nlanguage: l\n")
    with pytest.raises(ValueError, match="needs \\{tags\\}"):
        load_template(str(tmp_path / "u.yaml"))


def test_tags_are_sanitised_before_prompting():
    assert sanitise_tag("ro\x00ck\n\x1b[31m") == "ro ck [31m"
    assert len(sanitise_tag("x" * 500)) == 64
    assert format_tags({"genre": ["a\u2028b", "  "], "mood": ["m"] * 100}).count("m") == 32 + 1


@pytest.mark.parametrize("raw, text, flags", [
    ("A calm jazz piece.", "A calm jazz piece.", []),
    ('Sure! Here is a caption: "A happy pop song."', "A happy pop song.", ["boilerplate_stripped"]),
    ("Certainly!\n\n“A rock song.”", "A rock song.", ["boilerplate_stripped"]),
    ("Caption: A sad tune.\nIt mentions every tag.", "A sad tune.", []),
    ("**Caption:** 'A dark track.'", "A dark track.", []),
    ("", "", ["empty"]),
    ("I'm sorry, but I can't help with that.", "I'm sorry, but I can't help with that.",
     ["refusal"]),
    ("Okay-ish music about sure things.", "Okay-ish music about sure things.", []),
])
def test_parse_caption(raw, text, flags):
    assert parse_caption(raw, "stop") == (text, flags)


def test_parse_flags_truncated_and_too_long_without_deleting():
    raw = "A " + "very " * 80 + "long caption"
    text, flags = parse_caption(raw, "length", max_words=60)
    assert text == raw and flags == ["truncated", "too_long"]
