"""The vocabulary report (`adswap tags`) on catalogs with known counts, and its starter
map, which must load and fix what the report found."""

import json

from typer.testing import CliRunner

from adswap.cli import app
from pipeline.tags import TagsConfig, run
from schemas.catalog import CatalogConfig, read_catalog
from schemas.tagmap import load_tag_map

# (genre, mood, instrument) per track; the counts below follow from these rows
TRACKS = [
    (["hiphop"], ["happy"], ["drums", "electricguitar"]),
    (["hiphop"], ["happy"], ["drum"]),
    (["hiphop", "jazz"], ["ambient"], ["electricguitar"]),
    (["hip-hop"], ["happy", "sad"], ["drums"]),
    (["hip-hop"], [], ["piano"]),
    (["Hip Hop"], ["calm"], ["piano", "drums"]),
    (["ambient"], ["no vocals"], ["piano"]),
    (["polka"], ["sad"], ["drummachine"]),
]


def write_catalog(path):
    rows = [{"track_id": f"t{i}", "audio": f"a/{i}.flac",
             "tags": {"genre": g, "mood": m, "instrument": ins}}
            for i, (g, m, ins) in enumerate(TRACKS)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def tags_of(report, category):
    return {t["tag"]: t["tracks"] for t in report["categories"][category]}


def test_counts_histograms_rare_tags_and_duplicates(tmp_path):
    catalog = write_catalog(tmp_path / "c.jsonl")
    report = run(TagsConfig(catalog=catalog, out=tmp_path / "report", rare_tracks=2))
    assert report["tracks"] == 8 and report["rejected_rows"] == 0
    assert tags_of(report, "genre") == {"hiphop": 3, "hip-hop": 2, "hip hop": 1, "jazz": 1,
                                        "ambient": 1, "polka": 1}
    assert tags_of(report, "instrument") == {"drums": 3, "electricguitar": 2, "drum": 1,
                                             "piano": 3, "drummachine": 1}
    assert report["tags_per_track"]["genre"] == {1: 7, 2: 1}
    assert report["tags_per_track"]["mood"] == {0: 1, 1: 6, 2: 1}
    assert report["tags_per_track"]["instrument"] == {1: 6, 2: 2}
    rare = {t["tag"] for t in report["rare"]["tags"]}
    assert rare == {"hip hop (genre)", "jazz (genre)", "ambient (genre)", "polka (genre)",
                    "drum (instrument)", "drummachine (instrument)", "ambient (mood)",
                    "calm (mood)", "no vocals (mood)"}
    # no tag map: everything passes through, and is listed as such
    assert len(report["unmapped"]) == 16 and report["changes"]["counts"] == {"unmapped": 16}
    groups = {tuple(d["tags"]): d["why"] for d in report["duplicates"]}
    assert groups[("hip hop (genre)", "hip-hop (genre)", "hiphop (genre)")].startswith("differ")
    assert groups[("drum (instrument)", "drums (instrument)")].startswith("differ")
    assert groups[("ambient (genre)", "ambient (mood)")] == "the same words in two categories"
    text = (tmp_path / "report" / "tags.md").read_text()
    assert "hiphop (3)" in text and "## Suspected duplicates" in text


def test_starter_map_loads_and_fixes_what_the_report_found(tmp_path):
    catalog = write_catalog(tmp_path / "c.jsonl")
    run(TagsConfig(catalog=catalog, out=tmp_path / "report"))
    starter = tmp_path / "report" / "starter_map.yaml"
    text = starter.read_text()
    assert "suggested" in text and "no vocals" in text
    load_tag_map(starter, ("genre", "mood", "instrument"))  # a valid map as written
    tracks = read_catalog(catalog, CatalogConfig(tag_map=str(starter))).tracks
    genres = [t for track in tracks for t in track.tags["genre"]]
    assert genres.count("hiphop") + genres.count("hip hop") == 6  # one tag, merged
    assert len({g for g in genres if g.replace(" ", "").replace("-", "") == "hiphop"}) == 1
    instruments = {t for track in tracks for t in track.tags["instrument"]}
    assert "electric guitar" in instruments and "drum machine" in instruments  # words
    assert "drum" not in instruments  # merged into drums, the commoner spelling
    assert all("no vocals" not in track.tags["mood"] for track in tracks)  # a negation


def test_what_a_tag_map_changed(tmp_path):
    catalog = write_catalog(tmp_path / "c.jsonl")
    tag_map = tmp_path / "map.yaml"
    tag_map.write_text("categories: [extra]\n"
                       "genre:\n  hip hop: {raw: [hiphop, hip-hop]}\n"
                       "instrument:\n  electric guitar: {raw: [electricguitar]}\n"
                       "  ambient pads: {raw: [mood---ambient]}\n"
                       "extra:\n  polka: {raw: [genre---polka]}\n"
                       "drop: [no vocals]\n")
    report = run(TagsConfig(catalog=catalog, out=tmp_path / "r",
                            read=CatalogConfig(tag_map=str(tag_map))))
    assert tags_of(report, "genre")["hip hop"] == 6
    counts = report["changes"]["counts"]
    assert counts == {"dropped": 1, "merged": 3, "moved": 1, "renamed": 1, "unmapped": 9,
                      "unused": 1}
    examples = report["changes"]["examples"]
    assert {"raw": "mood---ambient", "tag": "ambient pads (instrument)", "tracks": 1} \
        in examples["moved"]
    assert report["unused_categories"] == {"extra": 1}
    assert report["changes"]["tag_map"] == str(tag_map)


def test_cli_tags_command(tmp_path):
    catalog = write_catalog(tmp_path / "c.jsonl")
    result = CliRunner().invoke(app, ["tags", str(catalog), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "8 tracks" in result.output and "starter_map.yaml" in result.output
    assert (tmp_path / "out" / "tags.json").exists()
    bad = tmp_path / "bad.yaml"
    bad.write_text("genre:\n  a: {raw: [x]}\n  b: {raw: [x]}\n")
    result = CliRunner().invoke(app, ["tags", str(catalog), "--tag-map", str(bad)])
    assert result.exit_code == 1
    assert "bad.yaml: line 3: tag 'x': is in two places" in result.output
