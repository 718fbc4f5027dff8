import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile
from typer.testing import CliRunner

from adswap.cli import app
from pipeline.demo.references import PARAPHRASES, reference_captions
from pipeline.demo.vocabulary import GENRES, INSTRUMENTS, MOODS
from pipeline.demo_data import DemoConfig, plan_tracks, run
from schemas.catalog import read_catalog
from schemas.eval_captions import eval_captions_schema
from schemas.problems import check_arrow_schema

ROOT = Path(__file__).resolve().parents[2]
SMALL = dict(tracks=7, test_tracks=3, seed=3, min_duration_s=2.0, max_duration_s=3.0)


def digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_vocabulary_is_big_enough():
    assert len(GENRES) >= 8 and len(MOODS) >= 10 and len(INSTRUMENTS) >= 12


def test_same_seed_same_bytes_whatever_the_worker_count(tmp_path):
    run(DemoConfig(out=tmp_path / "a", workers=1, **SMALL))
    run(DemoConfig(out=tmp_path / "b", workers=2, **SMALL))
    a, b = digests(tmp_path / "a"), digests(tmp_path / "b")
    assert len([k for k in a if k.endswith(".flac")]) == 10  # 7 train/valid + 3 test
    assert a == b
    run(DemoConfig(out=tmp_path / "c", workers=1, **{**SMALL, "seed": 4}))
    c = digests(tmp_path / "c")
    assert a["audio/demo-00000.flac"] != c["audio/demo-00000.flac"]


def test_rerun_resumes_and_keeps_bytes(tmp_path):
    out = tmp_path / "demo"
    first = run(DemoConfig(out=out, workers=1, **SMALL))
    assert (first.rendered, first.skipped) == (10, 0)
    before = digests(out)
    (out / "audio" / "demo-00004.flac").unlink()
    (out / "audio" / ".demo-00005.flac.tmp-123").write_bytes(b"half a file")  # crash leftover
    second = run(DemoConfig(out=out, workers=1, **SMALL))
    assert (second.rendered, second.skipped) == (1, 9)
    after = {k: v for k, v in digests(out).items() if ".tmp-" not in k}
    assert after == before


def test_other_settings_refuse_an_existing_folder(tmp_path):
    run(DemoConfig(out=tmp_path, workers=1, **SMALL))
    with pytest.raises(ValueError, match="made with other settings"):
        run(DemoConfig(out=tmp_path, workers=1, **{**SMALL, "seed": 99}))


def test_config_reports_all_problems():
    with pytest.raises(ValueError) as err:
        DemoConfig(out=Path("x"), tracks=0, sample_rate=100, min_duration_s=5, max_duration_s=2)
    assert "tracks" in str(err.value) and "sample_rate" in str(err.value) \
        and "min_duration_s" in str(err.value)


def test_catalog_shape(demo_catalog):
    out, catalog = demo_catalog
    assert catalog.rejects == [] and len(catalog.tracks) == 40
    for track in catalog.tracks:
        assert 1 <= len(track.tags["genre"]) <= 2
        assert 2 <= len(track.tags["mood"]) <= 4
        assert 3 <= len(track.tags["instrument"]) <= 5
        assert set(track.tags["genre"]) <= set(GENRES)
        assert set(track.tags["mood"]) <= set(MOODS)
        assert set(track.tags["instrument"]) <= set(INSTRUMENTS)
        info = soundfile.info(str(out / track.audio))
        assert (info.samplerate, info.channels, info.format, info.subtype) == \
            (22050, 1, "FLAC", "PCM_16")
        assert info.frames == round(track.duration_s * 22050)
        assert 6 <= track.duration_s <= 8


def test_splits_are_artist_disjoint(demo_catalog):
    _, catalog = demo_catalog
    split_of_artist = {}
    for track in catalog.tracks:
        split_of_artist.setdefault(track.artist, set()).add(track.split)
    assert all(len(s) == 1 for s in split_of_artist.values())
    assert Counter(t.split for t in catalog.tracks).keys() == {"train", "valid", "test"}


def test_artists_have_a_style(tmp_path):
    """Tracks of one artist share genres far more often than tracks of different ones."""
    tracks = plan_tracks(DemoConfig(out=tmp_path, tracks=400))
    same, other = [], []
    for i, a in enumerate(tracks):
        for b in tracks[i + 1:i + 60]:
            shared = bool(set(a.genres) & set(b.genres))
            (same if a.artist == b.artist else other).append(shared)
    assert sum(same) / len(same) > 2 * sum(other) / len(other)


def test_tracks_often_differ_in_one_attribute(tmp_path):
    """Hard negatives need near neighbours: pairs whose tags differ by a single swap."""
    tracks = plan_tracks(DemoConfig(out=tmp_path, tracks=400))
    one_swap = 0
    for i, a in enumerate(tracks):
        for b in tracks[i + 1:]:
            diffs = [(set(x) ^ set(y)) for x, y in
                     ((a.genres, b.genres), (a.moods, b.moods), (a.instruments, b.instruments))]
            if sum(len(d) for d in diffs) == 2 and sum(bool(d) for d in diffs) == 1:
                one_swap += 1
    assert one_swap >= 60, one_swap


def test_reference_captions_cover_the_test_split(demo_catalog):
    out, catalog = demo_catalog
    table = pq.read_table(out / "reference_captions.parquet")
    assert check_arrow_schema(table.schema, eval_captions_schema(), "refs") == []
    test_ids = {t.track_id for t in catalog.tracks if t.split == "test"}
    assert Counter(r["track_id"] for r in table.to_pylist()) == {t: 2 for t in test_ids}


def _named(caption: str, tag: str) -> bool:
    return any(word.lower() in caption.lower() for word in PARAPHRASES[tag])


def test_reference_captions_read_like_people_write(tmp_path):
    """A subset of the tags (1 genre, 1-2 moods, 1-3 instruments), mostly in paraphrases
    the caption prompts never see, in shapes of varied order and length."""
    tracks = plan_tracks(DemoConfig(out=tmp_path, tracks=8, test_tracks=200))
    captions = [(t, c) for t in tracks if t.split == "test"
                for c in reference_captions(t, np.random.default_rng([0, t.index]), 2)]
    assert len(captions) == 400
    exact, lengths, openings = 0, [], Counter()
    for track, caption in captions:
        named = {category: [tag for tag in tags if _named(caption, tag)]
                 for category, tags in (("genre", track.genres), ("mood", track.moods),
                                        ("instrument", track.instruments))}
        assert len(named["genre"]) >= 1 and len(named["mood"]) >= 1, caption
        assert 1 <= len(named["instrument"]) <= 3 + 1, caption  # +1: "bass" in "bass guitar"
        exact += sum(tag in caption.lower() for tag in track.genres + track.moods)
        lengths.append(len(caption.split()))
        openings[caption.split()[0].lower()] += 1
    # most tags of a caption are not said in the catalog's own word
    own_words = sum(len(t.genres) + len(t.moods) for t, _ in captions)
    assert exact < 0.5 * own_words, (exact, own_words)
    assert min(lengths) <= 6 and max(lengths) >= 16     # fragments and long sentences
    assert len(openings) >= 10                            # no one fixed opening
    # the paraphrase table is the grammar's own: no caption template uses its words
    prompt = (ROOT / "pipeline" / "captions" / "templates" / "caption-v1.yaml").read_text()
    assert not any(w in prompt for w in ("sorrowful", "Rhodes", "boom-bap", "fiddle"))


def test_reference_captions_are_deterministic(tmp_path):
    tracks = plan_tracks(DemoConfig(out=tmp_path, tracks=8, test_tracks=20))
    again = plan_tracks(DemoConfig(out=tmp_path, tracks=8, test_tracks=20))
    assert tracks == again
    for track in tracks[8:]:
        assert reference_captions(track, np.random.default_rng([1, track.index]), 2) == \
            reference_captions(track, np.random.default_rng([1, track.index]), 2)


def test_test_tracks_come_beside_the_train_and_valid_catalog(tmp_path):
    tracks = plan_tracks(DemoConfig(out=tmp_path, tracks=400, test_tracks=500))
    splits = Counter(t.split for t in tracks)
    assert splits["test"] == 500 and splits["train"] + splits["valid"] == 400
    assert all(t.split == "test" for t in tracks[400:])
    test_artists = {t.artist.name for t in tracks if t.split == "test"}
    assert not test_artists & {t.artist.name for t in tracks if t.split != "test"}


def test_cli_demo_data(tmp_path):
    result = CliRunner().invoke(app, ["demo-data", "--out", str(tmp_path / "d"), "--tracks", "3",
                                      "--test-tracks", "0",
                                      "--min-duration", "2", "--max-duration", "2",
                                      "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "3 tracks" in result.output
    assert read_catalog(tmp_path / "d" / "catalog.parquet").tracks[2].track_id == "demo-00002"
    bad = CliRunner().invoke(app, ["demo-data", "--out", str(tmp_path / "e"),
                                   "--min-duration", "9", "--max-duration", "3"])
    assert bad.exit_code == 1 and "min_duration_s" in bad.output
    assert bad.exception is None or isinstance(bad.exception, SystemExit)


@pytest.mark.parametrize("stage", ["shards", "train", "eval", "import-eval", "ablation"])
def test_every_stage_explains_itself(stage):
    result = CliRunner().invoke(app, [stage, "--help"])
    assert result.exit_code == 0 and "Usage" in result.output and len(result.output) > 400
