import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.curate.rules_config import read_rule
from pipeline.curate.splits import assign_split
from pipeline.curate.stage import CurateConfig, run
from schemas.catalog import Track
from schemas.config import ConfigError, load_config
from schemas.problems import SchemaError
from schemas.views import View, curated_schema, read_table, records_to_table, views_schema

TRACKS = {
    "t1": ("Ann", {"genre": ["rock"], "mood": ["happy"], "instrument": ["drums", "bass"]}),
    "t2": ("Bob", {"genre": ["jazz"], "mood": ["calm"], "instrument": ["piano"]}),
    "t3": ("Cat", {"genre": ["pop"], "mood": [], "instrument": []}),            # one tag
    "t4": ("Dan", {"genre": ["funk"], "mood": ["dark"], "instrument": ["organ"]}),
    "t5": ("Eve", {"genre": ["blues"], "mood": ["sad"], "instrument": ["flute"]}),
    "t6": ("Fay", {"genre": ["reggae"], "mood": ["happy"], "instrument": ["organ"]}),
}


def view(track, view_id, text, tags=None, language="en", flags=(), finish="stop"):
    tags = tags or TRACKS.get(track, ("", {"genre": ["rock"], "mood": [], "instrument": []}))[1]
    return View(track_id=track, view_id=view_id, language=language, tags=tags, text=text,
                raw_text=text, flags=list(flags), engine="template", model_id="rules",
                model_revision="1", template_id="caption-v1", template_hash="h",
                sampling="{}", seed=0, prompt_tokens=1, completion_tokens=1,
                finish_reason=finish, content_key=f"{track}/{view_id}/{language}")


# (view, the rule that must reject it, or None if it must pass)
CASES = [
    (view("t1", 0, "A happy rock song with drums and bass."), None),
    (view("t1", 1, "A happy rock song with drums and bass!"), "duplicates"),
    (view("t1", 2, "A happy rock song with drums, bass and a piano."), "hallucination"),
    (view("t1", 3, "A song with drums that people like a lot."), "tag_recall"),
    (view("t1", 4, "Rock."), "length"),
    (view("t1", 5, "A happy rосk song with drums and bass."), "script"),  # Cyrillic o, c
    (view("t1", 6, "A happy rock song with the drums and the bass.", language="de"),
     "language"),
    (view("t1", 7, "Ein fröhlicher Rock-Song mit Drums und Bass.", language="de"), None),
    (view("t1", 8, "A happy rock song with drums and bass, cut", finish="length"),
     "finish_reason"),
    (view("t1", 9, "I'm sorry, I cannot describe rock drums bass.", flags=["refusal"]),
     "flags"),
    (view("t2", 0, "A calm jazz piece led by a gentle piano."), None),
    (view("t3", 0, "A catchy pop tune for a sunny day."), "min_tags"),
    (view("t4", 0, "A dark funk groove on a churning organ."), "decontamination"),  # by id
    (view("t5", 0, "A sad blues lament carried by a flute."), "decontamination"),  # by artist
    (view("t6", 0, "A happy reggae tune with a bubbling organ."), "decontamination"),
    (view("t6", 1, "Happy reggae on a skanking organ, all sunshine."), "decontamination"),
    (view("zz", 0, "A rock song from nowhere at all."), "unknown_track"),
]


@pytest.fixture
def curated(tmp_path):
    with (tmp_path / "catalog.jsonl").open("w") as f:
        for track_id, (artist, tags) in TRACKS.items():
            f.write(json.dumps({"track_id": track_id, "audio": f"{track_id}.flac",
                                "artist": artist, "tags": tags}) + "\n")
    (tmp_path / "views").mkdir()
    pq.write_table(records_to_table([v for v, _ in CASES], views_schema()),
                   tmp_path / "views" / "views-0.parquet")
    # eval set: t4 by id, Eve by artist, and t6 because one of its captions (up to case
    # and punctuation) is an eval caption: the whole track goes
    (tmp_path / "eval.csv").write_text("track_id,artist,caption\nt4,,\n,EVE,\n"
                                       ",,\"a HAPPY reggae tune, with a bubbling organ\"\n")
    stats = run(CurateConfig(views=tmp_path / "views", catalog=tmp_path / "catalog.jsonl",
                             out=tmp_path / "out", eval_sets=(tmp_path / "eval.csv",)))
    return tmp_path / "out", stats


def test_every_rule_rejects_its_rows_and_passes_the_rest(curated):
    out, stats = curated
    rejected = pq.read_table(out / "rejected").to_pylist()
    got = {(r["track_id"], r["view_id"], r["language"]): r["rule"] for r in rejected}
    want = {(v.track_id, v.view_id, v.language): rule for v, rule in CASES if rule}
    assert got == want
    kept = {(r["track_id"], r["view_id"]) for r in pq.read_table(out / "curated").to_pylist()}
    assert kept == {(v.track_id, v.view_id) for v, rule in CASES if rule is None}
    assert stats.by_rule["duplicates"] == 1 and stats.by_rule["decontamination"] == 4
    reasons = {r["rule"]: r["reason"] for r in rejected}
    assert reasons["hallucination"] == "mentions what the track lacks: piano (instrument)"
    assert reasons["duplicates"] == "same text as view 0"
    assert "CYRILLIC" in reasons["script"]
    assert reasons["language"] == "asked for de, the caption reads as en"
    by_track = {(r["track_id"], r["view_id"]): r["reason"] for r in rejected}
    assert by_track[("t4", 0)] == "track id is in evaluation set eval.csv"
    assert by_track[("t5", 0)] == "artist is in evaluation set eval.csv"
    assert by_track[("t6", 1)] == "a caption of this track appears in an evaluation set"


def test_outputs_follow_the_schemas_and_load_with_datasets(curated):
    import datasets

    out, _ = curated
    (part,) = sorted((out / "curated").glob("*.parquet"))
    table = read_table(str(part), curated_schema())
    row = table.to_pylist()[0]
    assert row["track_id"] == "t1" and row["tag_recall"] == 1.0
    assert [s["term"] for s in row["spans"]] == ["happy", "rock", "drums", "bass"]
    curated_ds = datasets.load_dataset("parquet", data_files=str(out / "curated" / "*.parquet"),
                                       split="train")
    rejected_ds = datasets.load_dataset("parquet", split="train",
                                        data_files=str(out / "rejected" / "*.parquet"))
    assert curated_ds.num_rows == 3 and rejected_ds.num_rows == 14
    assert set(rejected_ds["rule"]) >= {"length", "script", "duplicates"}
    swap = json.loads((out / "swap_dictionary.json").read_text())
    assert [e["term"] for e in swap["categories"]["instrument"]] == [
        "bass", "drums", "flute", "organ", "piano"]


def test_report_counts_match_the_parquet(curated):
    out, _ = curated
    report = json.loads((out / "report.json").read_text())
    rejected = pq.read_table(out / "rejected").to_pylist()
    assert report["totals"] == {"views": 17, "curated": 3, "rejected": 14}
    assert sum(n for n in report["rejected_by_rule"].values() if n) == len(rejected)
    assert report["hallucinated_by_category"] == {"instrument": 1}
    assert report["rejected_examples"]["length"][0]["text"] == "Rock."
    split_total = sum(c["curated"] + c["rejected"] for c in report["per_split"].values())
    assert split_total == 17
    assert "| hallucination | 1 |" in (out / "report.md").read_text()


def test_rules_can_be_switched_off_and_bad_settings_are_reported(tmp_path):
    base = ["views=v", "catalog=c", "out=o"]
    settings = tmp_path / "s.yaml"  # a curation YAML of earlier versions reads as --config
    settings.write_text("rules:\n  hallucination: {enabled: false}\n"
                        "  tag_recall: {min_tag_recall: 0.0}\n")
    config = load_config(CurateConfig, settings, base + ["rules.length.min_words=5"])
    assert config.rules.hallucination.enabled is False
    assert config.rules.tag_recall.min_tag_recall == 0.0 and config.rules.length.min_words == 5
    assert config.rules.length.max_words == 60  # the rest keep the rule file's defaults
    settings.write_text("rules:\n  vibes: {enabled: true}\n  length: {max_lines: 3}\n"
                        "splits: {valid_fraction: 0.6, test_fraction: 0.5}\n")
    with pytest.raises(ConfigError) as err:
        load_config(CurateConfig, settings, base)
    assert "rules.vibes: unknown setting" in str(err.value)
    assert "rules.length.max_lines: unknown setting" in str(err.value)
    assert "splits.valid_fraction and test_fraction" in str(err.value)
    settings.write_text("settings: mine.yaml\n")  # a curate config of earlier versions
    with pytest.raises(ConfigError, match="settings: unknown setting \\(the curation YAML's "
                       "rules: and splits: sections are sections of this file now"):
        load_config(CurateConfig, settings, base)


def test_a_rule_declares_the_settings_it_uses(tmp_path):
    rule = tmp_path / "11_short.sql"
    rule.write_text("-- Short captions.\n-- $min_jazz_words (int, 3): fewest words.\n"
                    "SELECT row_id, 'short' AS reason FROM candidates "
                    "WHERE n_words < $min_jazz_words")
    read = read_rule(rule)
    assert (read.name, read.help) == ("short", "Short captions.")
    assert read.settings == (("min_jazz_words", int, 3, "fewest words."),)
    rule.write_text("SELECT row_id, 'short' AS reason FROM candidates WHERE n_words < $n\n")
    with pytest.raises(ValueError, match=r"11_short.sql: uses \$n without declaring it"):
        read_rule(rule)
    rule.write_text("-- $n (int, many): x.\nSELECT row_id, '' AS reason FROM candidates "
                    "WHERE n_words < $n")
    with pytest.raises(ValueError, match="line 1: default 'many' is not int"):
        read_rule(rule)


def test_bad_stage_settings():
    with pytest.raises(ValueError, match="memory_limit") as err:
        CurateConfig(views=Path("v"), catalog=Path("c"), out=Path("o"),
                     memory_limit="3GB'; DROP TABLE rows; --", workers=-1)
    assert "workers" in str(err.value)


def test_the_old_settings_flag_names_the_new_way(tmp_path):
    from typer.testing import CliRunner

    from adswap.cli import app

    result = CliRunner().invoke(app, ["curate", "--views", "v", "--catalog", "c", "--out",
                                      "o", "--settings", "mine.yaml"])
    assert result.exit_code == 1
    assert "pass it as --config mine.yaml" in result.output


def test_splits_are_deterministic_and_keep_artists_together():
    tracks = [Track(f"t{i}", "a.flac", {"genre": ("rock",)}, artist=f"Artist {i % 37}")
              for i in range(2000)]
    splits = [assign_split(t, 0.1, 0.1) for t in tracks]
    assert splits == [assign_split(t, 0.1, 0.1) for t in tracks]
    by_artist = {}
    for track, split in zip(tracks, splits, strict=True):
        by_artist.setdefault(track.artist, set()).add(split)
    assert all(len(s) == 1 for s in by_artist.values())
    assert {"train", "valid", "test"} <= set(splits)
    assert assign_split(Track("x", "a", {}, split="test"), 0.1, 0.1) == "test"  # catalog wins
    assert assign_split(Track("x", "a", {}), 0.1, 0.1, seed=1) in ("train", "valid", "test")


def test_views_of_another_schema_version_are_refused(tmp_path):
    (tmp_path / "catalog.jsonl").write_text(json.dumps(
        {"track_id": "t1", "audio": "a.flac", "tags": {"genre": ["rock", "pop"]}}) + "\n")
    (tmp_path / "views").mkdir()
    table = records_to_table([view("t1", 0, "A rock and pop song.")], views_schema())
    pq.write_table(table.replace_schema_metadata({b"adswap.schema": b"views/0"}),
                   tmp_path / "views" / "v.parquet")
    with pytest.raises(SchemaError, match="views/0"):
        run(CurateConfig(views=tmp_path / "views", catalog=tmp_path / "catalog.jsonl",
                         out=tmp_path / "out"))


def test_cli_curate(tmp_path, curated):
    from typer.testing import CliRunner

    from adswap.cli import app

    out, _ = curated
    result = CliRunner().invoke(app, ["curate", "--views", str(out.parent / "views"),
                                      "--catalog", str(out.parent / "catalog.jsonl"),
                                      "--out", str(tmp_path / "again")])
    assert result.exit_code == 0, result.output
    assert "17 views" in result.output
    bad = CliRunner().invoke(app, ["curate", "--views", str(tmp_path / "none"), "--catalog",
                                   str(out.parent / "catalog.jsonl"), "--out", str(tmp_path)])
    assert bad.exit_code == 1 and "no views Parquet files" in bad.output


def test_eval_sets_in_any_tabular_format_and_bad_rows_named_before_any_work(tmp_path,
                                                                          curated):
    out, _ = curated
    base = out.parent
    tsv = tmp_path / "eval.tsv"
    tsv.write_bytes("\ufefftrack_id\tartist\tcaption\nt4\t\t\n".encode())  # with a BOM
    stats = run(CurateConfig(views=base / "views", catalog=base / "catalog.jsonl",
                             out=tmp_path / "tsv", eval_sets=(tsv,)))
    assert stats.by_rule["decontamination"] == 1
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"track_id": "t4"}\n{"caption": ["a", "list"]}\n[1]\n')
    with pytest.raises(SchemaError) as err:
        run(CurateConfig(views=base / "views", catalog=base / "catalog.jsonl",
                         out=tmp_path / "bad", eval_sets=(bad,)))
    assert f"{bad}: row 2: caption: must be text, got list" in str(err.value)
    assert f"{bad}: row 3: expected a JSON object, got list" in str(err.value)
    assert not (tmp_path / "bad").exists()  # nothing was analysed
    (tmp_path / "ids.csv").write_text("id,name\n1,x\n")
    with pytest.raises(SchemaError, match="names no track_id, artist, artist_id or caption"):
        run(CurateConfig(views=base / "views", catalog=base / "catalog.jsonl",
                         out=tmp_path / "bad", eval_sets=(tmp_path / "ids.csv",)))


def test_rerun_reuses_the_analysis_and_applies_new_thresholds(tmp_path, curated):
    out, first = curated
    cached = sorted((out / "_analysed").glob("*.parquet"))
    assert len(cached) == 1
    stamp = cached[0].stat().st_mtime_ns
    (out / ".curated.tmp-999999").mkdir()  # as a killed run leaves it
    second = run(load_config(CurateConfig, None, [
        f"views={out.parent / 'views'}", f"catalog={out.parent / 'catalog.jsonl'}",
        f"out={out}", f"eval_sets={out.parent / 'eval.csv'}",
        "rules.hallucination.enabled=false"]))
    assert cached[0].stat().st_mtime_ns == stamp  # analysis was not redone
    assert not list(out.glob(".*.tmp-*"))  # the killed run's half-written parts are gone
    assert second.by_rule["hallucination"] is None
    assert second.curated == first.curated + 1
    kept = {(r["track_id"], r["view_id"]) for r in pq.read_table(out / "curated").to_pylist()}
    assert ("t1", 2) in kept


def test_outputs_keep_the_views_order_in_parts_and_do_not_depend_on_threads(
        tmp_path, monkeypatch):
    import pipeline.curate.stage as stage

    with (tmp_path / "catalog.jsonl").open("w") as f:
        for track_id in ("t1", "t2"):
            artist, tags = TRACKS[track_id]
            f.write(json.dumps({"track_id": track_id, "audio": "a.flac", "artist": artist,
                                "tags": tags}) + "\n")
    (tmp_path / "views").mkdir()
    texts = {"t1": "A happy rock song with drums and bass, take {}.",
             "t2": "A calm jazz piece led by a gentle piano, take {}."}
    takes = "one two three four five six seven eight nine ten eleven twelve".split()
    written = []
    for number, size in enumerate((3, 4, 2, 3)):  # parts of <= 5 rows: [3], [4], [2, 3]
        views = [view(track, len(written) + i, texts[track].format(takes[len(written) + i])
                      if i != 1 else "Rock.")  # each file's second view is too short
                 for i, track in enumerate(["t2", "t1", "t2", "t1"][:size])]
        written += views
        pq.write_table(records_to_table(views, views_schema()),
                       tmp_path / "views" / f"views-{number}.parquet")
    monkeypatch.setattr(stage, "PART_ROWS", 5)
    outs = []
    for threads in (1, 2):
        out = tmp_path / f"out{threads}"
        stats = run(CurateConfig(views=tmp_path / "views", catalog=tmp_path / "catalog.jsonl",
                                 out=out, threads=threads))
        assert (stats.curated, stats.rejected) == (8, 4)
        outs.append(out)
    for folder in ("curated", "rejected"):
        parts = sorted((outs[0] / folder).glob("*.parquet"))
        assert [p.name for p in parts] == ["part-00000.parquet", "part-00001.parquet",
                                           "part-00002.parquet"]
        for part in parts:
            assert part.read_bytes() == (outs[1] / folder / part.name).read_bytes()
    kept = [(r["track_id"], r["view_id"]) for r in pq.read_table(outs[0] / "curated").to_pylist()]
    assert kept == [(v.track_id, v.view_id) for v in written if v.text != "Rock."]
    rejected = pq.read_table(outs[0] / "rejected").to_pylist()
    assert [r["view_id"] for r in rejected] == [v.view_id for v in written if v.text == "Rock."]
    assert {r["rule"] for r in rejected} == {"length"}
    curated = read_table(str(outs[0] / "curated" / "part-00002.parquet"), curated_schema())
    assert curated.num_rows == 3 and set(curated.column("split").to_pylist()) <= {
        "train", "valid", "test"}


def test_a_rule_from_another_package_is_one_file(tmp_path, curated):
    from tests.plugins import adswap, plugin_env

    out, first = curated
    env = plugin_env(tmp_path / "plugin", "adswap.curation_rules", "jazz", "jazz_rules", "",
                     {"11_no_jazz.sql": """\
                         -- Captions that name a genre this catalog does not want.
                         -- $genre (str, '%jazz%'): the pattern (ILIKE) a caption must not match.
                         SELECT row_id, 'names ' || $genre AS reason FROM candidates
                         WHERE text ILIKE $genre
                         """})
    args = ["curate", "--views", str(out.parent / "views"), "--catalog",
            str(out.parent / "catalog.jsonl"), "--eval-set", str(out.parent / "eval.csv")]
    shown = adswap(env, "curate", "--help")
    assert "--genre" in shown.stdout and "--rule-no-jazz" in shown.stdout
    done = adswap(env, *args, "--out", str(tmp_path / "a"))
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    assert report["rejected_by_rule"]["no_jazz"] == 1
    assert report["totals"]["curated"] == first.curated - 1
    assert report["settings"]["rules"]["no_jazz"] == {"enabled": True, "genre": "%jazz%"}
    rejected = pq.read_table(tmp_path / "a" / "rejected").to_pylist()
    assert [r["track_id"] for r in rejected if r["rule"] == "no_jazz"] == ["t2"]
    other = adswap(env, *args, "--out", str(tmp_path / "b"), "--set",
                   "rules.no_jazz.genre=%polka%")
    assert other.returncode == 0, other.stderr
    assert json.loads((tmp_path / "b" / "report.json").read_text())["rejected_by_rule"][
        "no_jazz"] == 0
