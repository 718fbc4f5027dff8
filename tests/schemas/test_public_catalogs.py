"""Readers for MTG-Jamendo and MagnaTagATune files written here in their formats, the
tag map applied as they are read, and the catalog-level tag settings."""

from collections import Counter

import pytest

from schemas.catalog import CatalogConfig, catalog_format, count_rows, iter_catalog, read_catalog
from schemas.problems import SchemaError
from tests.public_vocabularies import write_magnatagatune, write_mtg_jamendo

MTG_ROWS = [
    (214, 14, 124.6, ["genre---punkrock", "genre---rock", "instrument---electricguitar",
                      "mood/theme---film", "mood/theme---happy"]),
    (215, 14, 200.0, ["genre---hiphop", "instrument---drummachine", "instrument---drums",
                      "mood/theme---energetic"]),
    (216, 15, 90.5, ["genre---drumnbass", "genre---electronic", "mood/theme---advertising"]),
]
MTT_ROWS = [
    (2, "f/american_bach_soloists-j_s__bach_solo_cantatas-01-bwv54__i_aria-30-59.mp3",
     {"classical", "clasical", "violin", "female opera", "no piano", "solo"}),
    (6, "f/some_band-an_album-02-a_song-0-29.mp3",
     {"rock", "hard rock", "electric guitar", "male vocal", "man singing", "loud"}),
]


def test_mtg_jamendo_rows_are_read_with_the_bundled_map(tmp_path):
    path = tmp_path / "autotagging.tsv"
    write_mtg_jamendo(path, MTG_ROWS)
    catalog = read_catalog(path)
    assert catalog.format == "mtg-jamendo" and catalog.rejects == []
    assert "mtg-jamendo.yaml" in catalog.tag_map.source
    first, second, third = catalog.tracks
    assert first.track_id == "track_0000214" and first.artist == "artist_000014"
    assert first.audio == "14/214.mp3" and first.duration_s == 124.6
    assert dict(first.tags) == {"genre": ("punk rock", "rock"), "mood": ("happy",),
                                "instrument": ("electric guitar",)}
    assert dict(first.raw_tags) == {"genre": ("punkrock", "rock"),
                                    "instrument": ("electricguitar",),
                                    "mood/theme": ("film", "happy")}
    assert second.tags["instrument"] == ("drum machine", "drums")
    assert third.tags["genre"] == ("drum and bass", "electronic")
    assert third.tags["mood"] == ()  # advertising is a use: the theme category
    assert count_rows(path) == 3


def test_theme_tags_are_kept_when_the_run_uses_the_category(tmp_path):
    path = tmp_path / "autotagging.tsv"
    write_mtg_jamendo(path, MTG_ROWS)
    config = CatalogConfig(categories=("genre", "mood", "instrument", "theme"))
    tracks = {t.track_id: t for t in read_catalog(path, config).tracks}
    assert tracks["track_0000214"].tags["theme"] == ("film",)
    assert tracks["track_0000216"].tags["theme"] == ("advertising",)


def test_mtg_jamendo_malformed_rows_are_rejected_with_their_row(tmp_path):
    path = tmp_path / "raw_30s_cleantags.tsv"
    write_mtg_jamendo(path, MTG_ROWS)
    with path.open("a", encoding="utf-8") as f:
        f.write("track_0000300\tartist_000001\n")                          # row 4
        f.write("track_0000301\tartist_000001\talbum_1\t01/301.mp3\t12\tgenre-rock\n")
        f.write("track_0000302\tartist_000001\talbum_1\t02/302.mp3\tlong\tgenre---rock\n")
        f.write("track 303\tartist_000001\talbum_1\t03/303.mp3\t12\tgenre---rock\n")
        f.write("track_0000304\tartist_000001\talbum_1\t../../etc/passwd\t12\tgenre---rock\n")
        f.write("track_0000214\tartist_000001\talbum_1\t04/214.mp3\t12\tgenre---rock\n")
        f.write("track_0000305\tartist_000001\talbum_1\t05/305.mp3\t12\tmood/theme---film\n")
    catalog = read_catalog(path)
    assert len(catalog.tracks) == 3
    found = {p.row: str(p) for p in catalog.rejects}
    assert "has 2 tab-separated fields" in found[4]
    assert "tag entry 'genre-rock' is not category---tag" in found[5]
    assert "duration_s: must be a positive number" in found[6]
    assert "track_id: 'track 303' is not a valid id" in found[7]
    assert "audio:" in found[8] and "outside the audio root" in found[8]
    assert "duplicate of row 1" in found[9]
    # every tag of the last row is in a category this run does not use
    assert "no tags in any category (1 in category theme, which this run does not use)" \
        in found[10]


def test_a_file_in_the_wrong_format_is_refused_with_the_expected_header(tmp_path):
    path = tmp_path / "c.tsv"
    path.write_text("track\tpath\nt1\ta.mp3\n")
    with pytest.raises(SchemaError, match="unknown format '.tsv'"):
        read_catalog(path)
    with pytest.raises(SchemaError, match="header must start with TRACK_ID"):
        read_catalog(path, CatalogConfig(format="mtg-jamendo"))


def test_magnatagatune_rows_are_read_with_the_bundled_map(tmp_path):
    path = tmp_path / "annotations_final.csv"
    write_magnatagatune(path, MTT_ROWS)
    assert catalog_format(path, CatalogConfig()) == "magnatagatune"
    catalog = read_catalog(path)
    assert catalog.rejects == []
    bach, band = catalog.tracks
    assert bach.track_id == "2" and bach.artist == "american_bach_soloists"
    assert dict(bach.tags) == {"genre": ("classical", "opera"), "mood": (),
                               "instrument": ("violin",)}  # solo: `other`; no piano: dropped
    assert dict(band.tags) == {"genre": ("hard rock", "rock"), "mood": ("loud",),
                               "instrument": ("male vocals", "electric guitar")}  # file order
    assert set(band.raw_tags["magnatagatune"]) == MTT_ROWS[1][2]


def test_magnatagatune_bad_cells_and_rows(tmp_path):
    path = tmp_path / "annotations_final.csv"
    write_magnatagatune(path, MTT_ROWS)
    lines = path.read_text().splitlines()
    cells = lines[1].split("\t")
    cells[5] = '"2"'
    lines.append("\t".join(cells))                     # row 3: a tag cell that is not 0/1
    lines.append('"9"\t"1"\t"a.mp3"')                  # row 4: too few fields
    path.write_text("\n".join(lines) + "\n")
    catalog = read_catalog(path)
    found = {p.row: str(p) for p in catalog.rejects}
    assert "column 'hard rock' is '2'; tag columns hold 0 or 1" in found[3]
    assert "has 3 fields; the header has 190" in found[4]


def test_unquoted_magnatagatune_is_read_too(tmp_path):
    path = tmp_path / "annotations.csv"
    columns = ["rock", "guitar", "no voice"]
    path.write_text("clip_id\trock\tguitar\tno voice\tmp3_path\n5\t1\t1\t0\ta/x-y-1-0-29.mp3\n")
    (track,) = read_catalog(path).tracks
    assert track.tags["genre"] == ("rock",) and track.tags["instrument"] == ("guitar",)
    assert columns  # the documented columns need not all be present


def test_user_tag_map_replaces_the_bundled_one_and_none_reads_raw(tmp_path):
    path = tmp_path / "autotagging.tsv"
    write_mtg_jamendo(path, MTG_ROWS)
    with pytest.raises(SchemaError) as err:  # every row has mood/theme tags, no category
        read_catalog(path, CatalogConfig(tag_map="none"))
    assert all("tags.mood/theme: unknown tag category" in str(p) for p in err.value.problems)
    own = tmp_path / "map.csv"
    own.write_text("raw_category,raw_tag,category,tag\nmood/theme,*,mood,\n"
                   "genre,punkrock,,punk\n")
    tracks = read_catalog(path, CatalogConfig(tag_map=str(own))).tracks
    assert tracks[0].tags["genre"] == ("punk", "rock")
    assert tracks[0].tags["mood"] == ("film", "happy")
    assert tracks[0].tags["instrument"] == ("electricguitar",)  # passes through


def test_min_tag_tracks_drops_rare_tags_before_anything_sees_them(tmp_path):
    path = tmp_path / "autotagging.tsv"
    rows = [(i, i, 60.0, ["genre---rock", "instrument---guitar"] +
             (["genre---polka"] if i == 0 else []) + (["genre---jazz"] if i < 2 else []))
            for i in range(5)]
    write_mtg_jamendo(path, rows)
    tracks = read_catalog(path, CatalogConfig(min_tag_tracks=2)).tracks
    assert tracks[0].tags["genre"] == ("rock", "jazz")  # polka is on one track
    assert "polka" in tracks[0].raw_tags["genre"]       # but still in the provenance
    counts = Counter(t for track in tracks for t in track.tags["genre"])
    assert counts == {"rock": 5, "jazz": 2}
    only_rare = tmp_path / "rare.tsv"
    write_mtg_jamendo(only_rare, rows + [(9, 9, 60.0, ["genre---polka", "genre---ska"])])
    (reject,) = [p for _, ps in iter_catalog(only_rare, CatalogConfig(min_tag_tracks=3))
                 for p in ps]
    assert reject.row == 6 and "on fewer than 3 tracks (min_tag_tracks)" in reject.message
