"""Bring your own catalog: every stage from `validate` to `shards` on an MTG-Jamendo and
a MagnaTagATune catalog written here in their formats, with small MP3 files. Captions
by the template engine name every tag of their view by its display form, so curation
must find tag recall 1.0 and no hallucination in every one of them."""

import json
import tarfile

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from typer.testing import CliRunner

from adswap.cli import app
from tests.public_vocabularies import write_magnatagatune, write_mtg_jamendo

MTG_TAGS = [
    ["genre---punkrock", "genre---rock", "instrument---electricguitar", "mood/theme---energetic"],
    ["genre---hiphop", "instrument---drummachine", "instrument---synthesizer",
     "mood/theme---dark", "mood/theme---film"],
    ["genre---drumnbass", "genre---electronic", "instrument---bass", "mood/theme---fast"],
    ["genre---rnb", "genre---soul", "instrument---electricpiano", "instrument---voice",
     "mood/theme---romantic"],
    ["genre---easylistening", "genre---lounge", "instrument---acousticguitar",
     "mood/theme---relaxing", "mood/theme---advertising"],
    ["genre---classical", "instrument---piano", "instrument---classicalguitar",
     "mood/theme---calm", "mood/theme---meditative"],
]
MTT_TAGS = [
    {"rock", "hard rock", "electric guitar", "male vocal", "loud", "no piano"},
    {"classical", "clasical", "harpsichord", "harpsicord", "baroque", "solo"},
    {"techno", "electronic", "synth", "beats", "fast", "no vocals"},
    {"ambient", "new age", "flute", "calm", "quiet", "airy"},
    {"jazz", "jazzy", "piano", "sax", "mellow", "no singer"},
    {"pop", "female vocal", "woman singing", "guitar", "happy", "english"},
]


def mp3(path, seconds=3.0, rate=16_000, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    tone = 0.2 * np.sin(2 * np.pi * (220 + 40 * seed) * t).astype("float32")
    sf.write(path, tone, rate, format="MP3")


def mtg_catalog(tmp_path):
    rows = [(100 + i, i // 2 + 1, 3.0, MTG_TAGS[i % len(MTG_TAGS)]) for i in range(12)]
    write_mtg_jamendo(tmp_path / "autotagging.tsv", rows)
    for number, *_ in rows:
        mp3(tmp_path / "audio" / f"{number % 100:02d}" / f"{number}.mp3", seed=number % 7)
    return tmp_path / "autotagging.tsv"


def mtt_catalog(tmp_path):
    rows = [(i + 1, f"{i % 16:x}/artist{i // 2}-album-0{i}-song-30-59.mp3",
             MTT_TAGS[i % len(MTT_TAGS)]) for i in range(12)]
    write_magnatagatune(tmp_path / "annotations_final.csv", rows)
    for _, path, _ in rows:
        mp3(tmp_path / "audio" / path, seed=len(path) % 7)
    return tmp_path / "annotations_final.csv"


def cli(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("make,expected", [
    (mtg_catalog, {"instrument": {"electric guitar", "drum machine", "electric piano"},
                   "genre": {"punk rock", "hip hop", "drum and bass", "R&B"}}),
    (mtt_catalog, {"instrument": {"harpsichord", "male vocals", "female vocals"},
                   "genre": {"hard rock", "classical"}}),
])
def test_every_stage_runs_on_a_public_catalog(tmp_path, make, expected):
    catalog = make(tmp_path)
    assert "12 valid tracks, 0 problems" in cli("validate", catalog)
    cli("tags", catalog, "--out", tmp_path / "tags")
    report = json.loads((tmp_path / "tags" / "tags.json").read_text())
    for category, tags in expected.items():
        assert tags <= {t["tag"] for t in report["categories"][category]}
    assert report["unmapped"] == []  # the bundled map knows every documented tag

    cli("captions", "--catalog", catalog, "--out", tmp_path / "views", "--engine", "template",
        "--n-views", 3)
    cli("curate", "--views", tmp_path / "views", "--catalog", catalog,
        "--out", tmp_path / "curated")
    curated = pq.read_table(tmp_path / "curated" / "curated").to_pylist()
    assert curated, "curation kept nothing"
    for row in curated:  # every caption names its view's tags by their display forms
        assert row["tag_recall"] == 1.0 and row["hallucinated"] == [], row["text"]
    curate_report = json.loads((tmp_path / "curated" / "report.json").read_text())
    assert curate_report["rejected_by_rule"]["tag_recall"] == 0
    assert curate_report["rejected_by_rule"]["hallucination"] == 0
    texts = " ".join(row["text"] for row in curated)
    for tags in expected.values():
        assert any(tag in texts for tag in tags)
    assert "electricguitar" not in texts and "harpsicord" not in texts

    out = cli("shards", "--curated", tmp_path / "curated", "--catalog", catalog,
              "--out", tmp_path / "shards", "--audio-root", tmp_path / "audio",
              "--clip-seconds", 2, "--max-samples", 8, "--workers", 1)
    assert "12 samples from 12 tracks" in out and "rejected: none" in out
    samples = []
    for tar_path in sorted((tmp_path / "shards").glob("*.tar")):
        with tarfile.open(tar_path) as tar:
            samples += [json.loads(tar.extractfile(m).read()) for m in tar.getmembers()
                        if m.name.endswith(".json")]
    assert {s["track_id"] for s in samples} == {r["track_id"] for r in curated}
    shard_tags = {t for s in samples for t in s["tags"]["instrument"]}
    assert shard_tags & expected["instrument"]  # display forms reach the trainer


def test_mtg_jamendo_card_and_song_describer_decontamination(tmp_path):
    catalog = mtg_catalog(tmp_path)
    cli("captions", "--catalog", catalog, "--out", tmp_path / "views", "--engine", "template",
        "--n-views", 2, "--categories", "genre,mood,instrument,theme")
    # Song Describer numbers MTG-Jamendo's tracks without prefix and zeros
    (tmp_path / "song_describer.csv").write_text(
        "caption_id,track_id,caption,artist_id\n1,103,a calm piano piece,99\n")
    cli("curate", "--views", tmp_path / "views", "--catalog", catalog,
        "--out", tmp_path / "curated", "--eval-set", tmp_path / "song_describer.csv",
        "--categories", "genre,mood,instrument,theme")
    rejected = pq.read_table(tmp_path / "curated" / "rejected").to_pylist()
    decontaminated = {r["track_id"] for r in rejected if r["rule"] == "decontamination"}
    assert decontaminated == {"track_0000103"}
    curated = pq.read_table(tmp_path / "curated" / "curated").to_pylist()
    assert any("film" in r["tags"]["theme"] for r in curated)  # the theme category, kept
    assert all(r["tag_recall"] == 1.0 and not r["hallucinated"] for r in curated)
    cli("card", "--dataset", "mtg", "--catalog", catalog, "--views", tmp_path / "views",
        "--curated", tmp_path / "curated", "--cards-dir", tmp_path / "cards",
        "--categories", "genre,mood,instrument,theme")
    card = (tmp_path / "cards" / "mtg" / "README.md").read_text()
    assert "### Tag map" in card and "mtg-jamendo.yaml" in card
    assert "| renamed |" in card and "genre---hiphop -> hip hop (genre)" in card
    facts = json.loads((tmp_path / "cards" / "mtg" / "card.json").read_text())
    assert facts["catalog"]["tag_map"]["counts"]["renamed"] >= 5
    assert facts["catalog"]["format"] == "mtg-jamendo"


def test_a_bad_tag_map_stops_every_command_with_file_line_and_tag(tmp_path):
    catalog = mtg_catalog(tmp_path)
    bad = tmp_path / "map.yaml"
    bad.write_text("genre:\n  hip hop: {raw: [hiphop]}\n  hiphop: {raw: [hip hop]}\n")
    for args in (["validate", catalog], ["tags", catalog],
                 ["captions", "--catalog", catalog, "--out", tmp_path / "v",
                  "--engine", "template"],
                 ["curate", "--views", tmp_path / "v", "--catalog", catalog, "--out",
                  tmp_path / "c"]):
        result = CliRunner().invoke(app, [str(a) for a in args] + ["--tag-map", str(bad)])
        assert result.exit_code == 1, args
        assert "map.yaml: line 2: tag 'hip hop': merges form a cycle" in result.output, args
