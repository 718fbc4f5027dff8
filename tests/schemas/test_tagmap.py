"""Tag maps: the YAML and CSV forms, how raw tags resolve, and bad maps named by file,
line and tag. The bundled maps are checked against the datasets' documented tags."""

import pytest

from schemas.catalog import CatalogConfig
from schemas.problems import SchemaError
from schemas.tagmap import bundled_map_path, load_tag_map
from tests.public_vocabularies import MAGNATAGATUNE, MTG_JAMENDO

RUN = ("genre", "mood", "instrument")

YAML_MAP = """\
categories: [theme]
move: {mood/theme: mood, style: genre}
genre:
  hip hop: {raw: [hiphop, hip-hop, rap], synonyms: [hip-hop music]}
  R&B: {raw: [rnb], synonyms: [rhythm and blues]}
  rock:
  drum and bass: {raw: [drumnbass, dnb]}
instrument:
  electric guitar: {raw: [electricguitar]}
  vocals: {raw: [voice, genre---choir]}
theme:
  film: {raw: [mood/theme---film, movie]}
drop: [mood/theme---background, misc]
"""

CSV_MAP = """\
# a CSV map; the next line declares a category beyond the run's
# categories: theme
raw_category,raw_tag,category,tag,synonyms
genre,hiphop,,hip hop,hip-hop music
genre,hip-hop,,hip hop,
genre,rap,,hip hop,
genre,rnb,,R&B,rhythm and blues
instrument,electricguitar,,electric guitar,
genre,choir,instrument,vocals,
mood/theme,film,theme,film,
mood/theme,background,drop,,
mood/theme,*,mood,,
"""


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("name,text", [("map.yaml", YAML_MAP), ("map.csv", CSV_MAP)])
def test_yaml_and_csv_maps_resolve_alike(tmp_path, name, text):
    tag_map = load_tag_map(write(tmp_path, name, text), RUN)
    resolve = tag_map.resolve
    assert resolve("genre", "hiphop")[1:] == ("genre", "hip hop")      # display form
    assert resolve("genre", "hip-hop")[1:] == ("genre", "hip hop")     # merged
    assert resolve("genre", "rap")[1:] == ("genre", "hip hop")
    assert resolve("genre", "rnb")[1:] == ("genre", "R&B")             # capitals kept
    assert resolve("genre", "r&b")[1:] == ("genre", "R&B")  # its own name, any case
    assert resolve("instrument", "electricguitar")[1:] == ("instrument", "electric guitar")
    assert resolve("genre", "choir")[1:] == ("instrument", "vocals")   # moved
    assert resolve("mood/theme", "film")[1:] == ("theme", "film")      # to a declared one
    assert resolve("mood/theme", "background").kind == "dropped"
    assert resolve("mood/theme", "happy") == ("unmapped", "mood", "happy")  # move
    assert resolve("genre", "polka") == ("unmapped", "genre", "polka")  # passes through
    assert tag_map.declared == ("theme",)
    synonyms = tag_map.synonyms()
    assert synonyms[("genre", "hip hop")] == ("hip-hop music",)
    assert synonyms[("genre", "R&B")] == ("rhythm and blues",)


def test_yaml_only_features(tmp_path):
    tag_map = load_tag_map(write(tmp_path, "m.yaml", YAML_MAP), RUN)
    assert tag_map.resolve("style", "rock")[1:] == ("genre", "rock")   # a moved category
    assert tag_map.resolve("genre", "misc").kind == "dropped"          # plain drop: anywhere
    assert tag_map.resolve("instrument", "misc").kind == "dropped"
    # a raw category that is no category of the run looks the tag up wherever it is
    assert tag_map.resolve("tags", "electricguitar")[1:] == ("instrument", "electric guitar")
    assert tag_map.resolve("tags", "movie")[1:] == ("theme", "film")


def test_merges_chain_into_the_last_tag(tmp_path):
    text = """\
genre:
  hip hop: {raw: [hiphop]}
  hiphop: {raw: [hip-hop]}
  hip-hop: {raw: [rap music]}
"""
    tag_map = load_tag_map(write(tmp_path, "m.yaml", text), RUN)
    for raw in ("rap music", "hip-hop", "hiphop", "hip hop"):
        assert tag_map.resolve("genre", raw)[1:] == ("genre", "hip hop")
    assert [t.display for t in tag_map.tags] == ["hip hop"]


def problems_of(tmp_path, name, text, run=RUN) -> str:
    with pytest.raises(SchemaError) as err:
        load_tag_map(write(tmp_path, name, text), run)
    return str(err.value)


def test_a_tag_in_two_places_names_file_line_and_tag(tmp_path):
    text = """\
genre:
  hip hop: {raw: [hiphop]}
  rap: {raw: [hiphop]}
drop: [rock]
instrument:
  rock guitar: {raw: [rock]}
"""
    message = problems_of(tmp_path, "two.yaml", text)
    assert "two.yaml: line 3: tag 'hiphop': is in two places: 'rap' (genre) and " \
           "'hip hop' (genre) (line 2)" in message
    assert "two.yaml: line 4: tag 'rock': is in two places: dropped and 'rock guitar' " \
           "(instrument) (line 6)" in message


def test_a_repeated_yaml_key_is_caught(tmp_path):
    message = problems_of(tmp_path, "dup.yaml", "genre:\n  rock:\n  pop:\n  rock:\n")
    assert "dup.yaml: line 4: tag 'rock': is listed twice (also at line 2)" in message


def test_unknown_category(tmp_path):
    message = problems_of(tmp_path, "cat.yaml", "genre:\n  rock:\ntempo:\n  fast:\n")
    assert "cat.yaml: line 4: tag 'fast': unknown category 'tempo'" in message
    assert "declare it under 'categories:'" in message
    csv_message = problems_of(tmp_path, "cat.csv",
                              "raw_category,raw_tag,category,tag\ngenre,x,era,eighties\n")
    assert "cat.csv: line 2: tag 'eighties': unknown category 'era'" in csv_message


def test_merge_cycle(tmp_path):
    text = "genre:\n  hip hop: {raw: [hiphop]}\n  hiphop: {raw: [hip hop]}\n"
    message = problems_of(tmp_path, "cycle.yaml", text)
    assert "cycle.yaml: line 2: tag 'hip hop': merges form a cycle: 'hip hop' (line 2) " \
           "-> 'hiphop' (line 3) -> 'hip hop' (line 2)" in message


def test_display_form_collisions(tmp_path):
    text = """\
genre:
  hip hop:
  hip-hop music:
  heavy: {synonyms: [hiphop]}
mood:
  heavy metal: {}
  Hip-Hop Music:
"""
    message = problems_of(tmp_path, "collide.yaml", text)
    assert "collide.yaml: line 4: tag 'heavy': its form 'hiphop' collides with 'hip hop' " \
           "(genre, line 2)" in message
    assert "collide.yaml: line 7: tag 'Hip-Hop Music': its form 'Hip-Hop Music' collides " \
           "with 'hip-hop music' (genre, line 3)" in message
    assert "heavy metal" not in message  # different words are no collision


def test_every_problem_is_listed_at_once(tmp_path):
    text = "genre:\n  a: {raw: [x]}\n  b: {raw: [x]}\nera:\n  c:\n"
    message = problems_of(tmp_path, "all.yaml", text)
    assert "has 2 problem(s)" in message and "line 3" in message and "line 5" in message


def test_bad_csv_header_and_drop_with_tag(tmp_path):
    assert "the header needs" in problems_of(tmp_path, "h.csv", "raw,tag\nx,y\n")
    message = problems_of(tmp_path, "d.csv",
                          "raw_category,raw_tag,category,tag\ngenre,x,drop,y\n")
    assert "d.csv: line 2: tag 'x': a dropped tag takes no 'tag'" in message


def test_catalog_config_checks_the_map_on_construction(tmp_path):
    bad = write(tmp_path, "bad.yaml", "genre:\n  a: {raw: [x]}\n  b: {raw: [x]}\n")
    with pytest.raises(ValueError, match="bad.yaml: line 3"):
        CatalogConfig(tag_map=str(bad))
    with pytest.raises(ValueError, match="does not exist"):
        CatalogConfig(tag_map=str(tmp_path / "missing.yaml"))
    with pytest.raises(ValueError, match="format must be one of auto, adswap"):
        CatalogConfig(format="mp3")


def test_bundled_mtg_jamendo_map_covers_the_documented_vocabulary():
    tag_map = load_tag_map(bundled_map_path("mtg-jamendo"), RUN)
    for category, tags in MTG_JAMENDO.items():
        for tag in tags:
            outcome = tag_map.resolve(category, tag)
            assert outcome.kind == "mapped", (category, tag)
    resolve = tag_map.resolve
    # the examples: display forms, and uses moved out of mood
    assert resolve("genre", "hiphop").tag == "hip hop"
    assert resolve("genre", "rnb").tag == "R&B"
    assert resolve("genre", "drumnbass").tag == "drum and bass"
    assert resolve("genre", "easylistening").tag == "easy listening"
    assert resolve("instrument", "electricguitar").tag == "electric guitar"
    assert resolve("instrument", "drummachine").tag == "drum machine"
    assert resolve("mood/theme", "happy")[1:] == ("mood", "happy")
    for use in ("film", "advertising", "corporate", "christmas"):
        assert resolve("mood/theme", use).category == "theme", use


def test_bundled_magnatagatune_map_covers_all_188_columns():
    tag_map = load_tag_map(bundled_map_path("magnatagatune"), RUN)
    kinds = {tag: tag_map.resolve("magnatagatune", tag) for tag in MAGNATAGATUNE}
    assert all(o.kind in ("mapped", "dropped") for o in kinds.values()), \
        [t for t, o in kinds.items() if o.kind == "unmapped"]
    assert kinds["male voice"][1:] == kinds["man singing"][1:] == ("instrument", "male vocals")
    assert kinds["no piano"].kind == kinds["not rock"].kind == "dropped"
    assert kinds["harpsicord"].tag == "harpsichord"
    assert {o.category for o in kinds.values() if o.kind == "mapped"} == {
        "genre", "mood", "instrument", "other"}
