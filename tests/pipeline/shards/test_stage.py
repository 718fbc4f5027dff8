"""`adswap shards` end to end: tars read back by webdataset, checked against the source
audio and the curated Parquet; reproducible bytes; resume after SIGKILL; faults."""

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import soxr
import torch
import webdataset as wds
from typer.testing import CliRunner

from adswap.cli import app
from pipeline.card import update_card
from pipeline.curate.rules_config import SplitsConfig
from pipeline.rejects import KINDS
from pipeline.shards.audio import ClipConfig
from pipeline.shards.stage import ShardsConfig, card_facts, run
from schemas.catalog import Track, write_catalog
from schemas.problems import SCHEMA_KEY, SchemaError
from schemas.sample import validate_sample_json
from schemas.shard_plan import SHARD_PLAN_SCHEMA_ID, read_plan_unit

CLIPS = ClipConfig(sample_rate=16_000, clip_seconds=2, clips_per_track=2, position="centre")


def shard_config(demo_catalog, demo_curated, out, **overrides):
    demo, _ = demo_catalog
    settings = {"clips": CLIPS, "max_samples": 8, "workers": 2, **overrides}
    return ShardsConfig(curated=demo_curated, catalog=demo / "catalog.parquet", out=out,
                        **settings)


@pytest.fixture(scope="module")
def shards(demo_catalog, demo_curated, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    stats = run(shard_config(demo_catalog, demo_curated, out))
    return out, stats


def tars(folder):
    return sorted(Path(folder).glob("*.tar"))


def test_plain_webdataset_reads_every_sample_as_written(shards, demo_curated):
    out, stats = shards
    sizes = json.loads((out / "sizes.json").read_text())
    assert sorted(sizes) == [p.name for p in tars(out)]
    seen = 0
    for path in tars(out):
        samples = list(wds.WebDataset(str(path), shardshuffle=False))
        assert len(samples) == sizes[path.name]
        for sample in samples:
            assert set(sample) >= {"__key__", "flac", "json"}
            assert sample["__key__"].startswith(json.loads(sample["json"])["track_id"])
        seen += len(samples)
    assert seen == stats.samples == sum(sizes.values()) > 0


def test_decoded_samples_match_source_audio_and_curated_views(shards, demo_catalog,
                                                              demo_curated):
    out, _ = shards
    demo, catalog = demo_catalog
    tracks = {t.track_id: t for t in catalog.tracks}
    curated = defaultdict(list)
    for row in pq.read_table(demo_curated / "curated").to_pylist():
        curated[row["track_id"]].append(row)
    dataset = wds.WebDataset([str(p) for p in tars(out)], shardshuffle=False).decode()
    clips_of = defaultdict(list)
    for sample in dataset:
        body = sample["json"]
        assert validate_sample_json(body, sample["__key__"]) == []
        track = tracks[body["track_id"]]
        rows = sorted(curated[track.track_id], key=lambda r: (r["view_id"], r["language"]))
        assert [v["text"] for v in body["views"]] == [r["text"] for r in rows] == body["text"]
        assert [v["spans"] for v in body["views"]] == [r["spans"] for r in rows]
        assert body["split"] == rows[0]["split"]
        assert body["tags"] == {c: list(track.tags[c]) for c in ("genre", "mood", "instrument")}
        assert body["tags_text"] == ", ".join(t for _, t in track.all_tags())
        assert body["provenance"]["model_id"] == rows[0]["model_id"]

        audio, rate = sf.read(io.BytesIO(sample["flac"]), dtype="float32")
        assert rate == 16_000 and audio.shape == (32_000,)
        source, source_rate = sf.read(demo / track.audio, dtype="float32")
        expected = soxr.resample(source, source_rate, 16_000, quality="HQ")
        start = round(body["start_s"] * 16_000)
        assert np.abs(audio - np.clip(expected[start:start + 32_000], -1, 1)).max() < 1e-4
        clips_of[track.track_id].append((body["start_s"], body["end_s"]))
    for track_id, clips in clips_of.items():
        # two adjacent 2 s windows around the middle of the track
        (a0, a1), (b0, b1) = sorted(clips)
        duration = sf.info(demo / tracks[track_id].audio).duration
        assert a1 == pytest.approx(b0) and a1 - a0 == pytest.approx(2)
        assert (a0 + b1) / 2 == pytest.approx(duration / 2, abs=1e-3)
    assert set(clips_of) == set(curated)


def test_multi_worker_dataloader_sees_every_sample_once(shards):
    out, stats = shards
    dataset = wds.WebDataset([str(p) for p in tars(out)], shardshuffle=False,
                             workersplitter=wds.split_by_worker).decode()
    loader = torch.utils.data.DataLoader(dataset.to_tuple("__key__", "json"), batch_size=None,
                                         num_workers=2)
    keys = [key for key, _ in loader]
    assert len(keys) == len(set(keys)) == stats.samples


def test_shards_mix_artists_and_genres(shards, demo_catalog):
    out, _ = shards
    _, catalog = demo_catalog
    train = [p for p in tars(out) if p.name.startswith("train-")]
    assert len(train) >= 3
    per_shard = [[s["json"] for s in wds.WebDataset(str(p), shardshuffle=False).decode()]
                 for p in train]
    mixed = [len({b["tags"]["genre"][0] for b in bodies}) >= 2 for bodies in per_shard]
    assert sum(mixed) >= len(train) - 1
    order = [b["track_id"] for bodies in per_shard for b in bodies][::2]
    catalog_order = [t.track_id for t in catalog.tracks if t.track_id in set(order)]
    assert order != catalog_order and sorted(order) == sorted(catalog_order)


def test_same_bytes_with_one_or_two_workers(shards, demo_catalog, demo_curated, tmp_path):
    out, _ = shards
    run(shard_config(demo_catalog, demo_curated, tmp_path, workers=1))
    assert [p.name for p in tars(out)] == [p.name for p in tars(tmp_path)]
    for a, b in zip(tars(out), tars(tmp_path), strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name
    for name in ("sizes.json", "manifest.json", "rejects.jsonl", "swap_dictionary.json"):
        assert (out / name).read_bytes() == (tmp_path / name).read_bytes()


def test_manifest_and_report_agree_with_the_tars(shards):
    out, stats = shards
    manifest = json.loads((out / "manifest.json").read_text())
    report = json.loads((out / "report.json").read_text())
    for path in tars(out):
        entry = manifest["shards"][path.name]
        assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert entry["bytes"] == path.stat().st_size
    assert sum(s["samples"] for s in manifest["splits"].values()) == stats.samples
    assert report["totals"]["samples"] == stats.samples
    assert report["totals"]["audio_hours"] == pytest.approx(stats.samples * 2 / 3600, abs=1e-3)
    assert manifest["settings"]["clips"]["sample_rate"] == 16_000


def test_resume_after_sigkill_gives_the_same_bytes(demo_catalog, demo_curated, tmp_path):
    demo, _ = demo_catalog
    many = ["--clip-seconds", "0.25", "--position", "all", "--max-samples", "40",
            "--curated", str(demo_curated), "--catalog", str(demo / "catalog.parquet")]
    reference = tmp_path / "reference"
    result = CliRunner().invoke(app, ["shards", *many, "--out", str(reference),
                                      "--workers", "1"])
    assert result.exit_code == 0, result.output
    total = len(tars(reference))

    killed = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-m", "adswap.cli", "shards", *many, "--out",
                                str(killed), "--workers", "1"], start_new_session=True,
                               stderr=subprocess.DEVNULL)
    done = killed / "_work" / "done"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(done.glob("*.json"))) < 2:
        time.sleep(0.005)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    finished = len(list(done.glob("*.json")))
    assert 2 <= finished < total, "the run must be killed part-way"
    assert not (killed / "sizes.json").exists()

    result = CliRunner().invoke(app, ["shards", *many, "--out", str(killed), "--workers", "2"])
    assert result.exit_code == 0, result.output
    assert f"{total - finished} built, {finished} already done" in result.output
    assert [p.name for p in tars(killed)] == [p.name for p in tars(reference)]
    for a, b in zip(tars(killed), tars(reference), strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name
    assert not list(killed.glob(".*tmp*"))


def test_bad_audio_is_rejected_with_its_reason_and_never_stops_the_stage(demo_catalog,
                                                                         tmp_path):
    from pipeline.captions.engines import EngineConfig
    from pipeline.captions.stage import CaptionsConfig
    from pipeline.captions.stage import run as captions
    from pipeline.curate.stage import CurateConfig
    from pipeline.curate.stage import run as curate

    demo, catalog = demo_catalog
    root = tmp_path / "audio"
    root.mkdir()
    good = catalog.tracks[:4]
    source, rate = sf.read(demo / good[0].audio, dtype="float32")
    faults = {
        "missing": None,
        "garbage": lambda p: p.write_bytes(os.urandom(4096)),
        "truncated": lambda p: p.write_bytes((demo / good[1].audio).read_bytes()[:30_000]),
        "silent": lambda p: sf.write(p, np.zeros(rate * 4, np.float32), rate, format="FLAC"),
        "short": lambda p: sf.write(p, source[:rate], rate, format="FLAC"),
        "shorter": lambda p: sf.write(p, source[:rate // 2], rate, format="FLAC"),
    }
    tracks = []
    for name, make in faults.items():
        if make is not None:
            make(root / f"{name}.flac")
        tracks.append(Track(track_id=name, audio=f"audio/{name}.flac", tags=good[0].tags,
                            artist=name))
    for i, (container, subtype) in enumerate([("WAV", "PCM_16"), ("OGG", "VORBIS"),
                                              ("MP3", "MPEG_LAYER_III"), ("FLAC", "PCM_24")]):
        name = f"good-{container.lower()}"
        audio, rate_i = sf.read(demo / good[i].audio, dtype="float32")
        sf.write(root / f"{name}.{container.lower()}", np.stack([audio, audio], 1), rate_i,
                 format=container, subtype=subtype)
        tracks.append(Track(track_id=name, audio=f"audio/{name}.{container.lower()}",
                            tags=good[i].tags, artist=name))
    outside = tmp_path.parent / f"{tmp_path.name}-outside.flac"
    shutil.copy(demo / good[0].audio, outside)
    (root / "link.flac").symlink_to(outside)
    tracks.append(Track(track_id="escapes", audio="audio/link.flac", tags=good[0].tags))
    write_catalog(tracks, tmp_path / "catalog.parquet")

    captions(CaptionsConfig(catalog=tmp_path / "catalog.parquet", out=tmp_path / "views",
                            engine=EngineConfig(engine="template")))
    curate(CurateConfig(views=tmp_path / "views", catalog=tmp_path / "catalog.parquet",
                        out=tmp_path / "curated", splits=ALL_TRAIN))
    stats = run(ShardsConfig(curated=tmp_path / "curated", catalog=tmp_path / "catalog.parquet",
                             out=tmp_path / "shards", clips=CLIPS, workers=1))
    rejects = {r["track_id"] or r["reason"]: r for r in map(
        json.loads, (tmp_path / "shards" / "rejects.jsonl").read_text().splitlines())}
    reasons = {k: r["reason"] for k, r in rejects.items()}
    assert reasons["missing"] == "audio file is missing"
    assert reasons["garbage"].startswith("unreadable audio")
    assert "truncated" in reasons["truncated"] or "unreadable" in reasons["truncated"]
    assert reasons["silent"].startswith("silent")
    assert "shorter than one 2 s clip" in reasons["short"]
    assert any("outside the audio root" in r for r in reasons)  # refused by the catalog
    kinds = {k: r["kind"] for k, r in rejects.items()}
    assert {kinds[k] for k in ("missing", "garbage", "silent", "short", "shorter")} == \
        {"missing_audio", "unreadable_audio", "silent", "too_short"}
    assert kinds["truncated"] in ("truncated_audio", "unreadable_audio")
    assert all(kind in KINDS for kind in kinds.values())
    assert stats.tracks == 4 and stats.samples == 8
    report = (tmp_path / "shards" / "report.md").read_text()
    assert "audio: audio file is missing: 1" in report and "audio: silent: 1" in report
    # counted by kind, not by message: 1.00 s and 0.50 s are one line
    assert "audio: shorter than one clip: 2" in report
    assert "catalog: invalid catalog row: 1" in report
    keys = [s["__key__"] for p in tars(tmp_path / "shards")
            for s in wds.WebDataset(str(p), shardshuffle=False)]
    assert sorted(keys) == sorted(f"good-{c}-{i}" for c in ("wav", "ogg", "mp3", "flac")
                                  for i in (0, 1))


ALL_TRAIN = SplitsConfig(valid_fraction=0, test_fraction=0)


def test_the_plan_is_written_in_its_declared_schema_and_checked_when_read(shards,
                                                                          tmp_path):
    out, _ = shards
    units = sorted((out / "_work" / "plan-r0").glob("unit=*"))
    assert units
    for unit in units:
        (part,) = unit.glob("*.parquet")
        assert pq.read_schema(part).metadata[SCHEMA_KEY] == SHARD_PLAN_SCHEMA_ID.encode()
        rows = read_plan_unit(unit)
        assert [r["position"] for r in rows] == list(range(len(rows)))
    old = tmp_path / "unit=train-000000"
    old.mkdir()
    pq.write_table(pq.read_table(units[0]).drop_columns(["views"]).replace_schema_metadata(),
                   old / "part.parquet")
    with pytest.raises(SchemaError) as err:
        read_plan_unit(old)
    assert "adswap shards --overwrite" in str(err.value)
    assert "no schema id" in str(err.value) and "views: column is missing" in str(err.value)


def test_a_plan_of_another_version_is_made_again_with_its_shards(demo_catalog, demo_curated,
                                                                  tmp_path):
    first = run(shard_config(demo_catalog, demo_curated, tmp_path))
    before = {p.name: p.read_bytes() for p in tars(tmp_path)}
    marker = tmp_path / "_work" / "plan-r0.json"
    saved = json.loads(marker.read_text())
    del saved["plan_schema"]  # as the version before schemas/shard_plan wrote it
    marker.write_text(json.dumps(saved))
    again = run(shard_config(demo_catalog, demo_curated, tmp_path))
    assert again.built == first.built == len(before) and again.skipped == 0
    assert {p.name: p.read_bytes() for p in tars(tmp_path)} == before


def test_other_settings_in_the_same_folder_are_refused(shards, demo_catalog, demo_curated,
                                                       tmp_path):
    run(shard_config(demo_catalog, demo_curated, tmp_path))
    with pytest.raises(ValueError, match="other inputs or settings"):
        run(shard_config(demo_catalog, demo_curated, tmp_path, max_samples=9))
    stats = run(shard_config(demo_catalog, demo_curated, tmp_path, max_samples=1000,
                             overwrite=True))
    # one shard per split; the demo's test tracks are not captioned, so have no shards
    assert stats.complete and len(tars(tmp_path)) == 2


def test_bad_settings_list_every_problem(demo_catalog, demo_curated, tmp_path):
    with pytest.raises(ValueError) as err:
        shard_config(demo_catalog, demo_curated, tmp_path, max_samples=0, workers=-1, rank=3,
                     world_size=2)
    for word in ("max_samples", "workers", "rank"):
        assert word in str(err.value)
    result = CliRunner().invoke(app, ["shards", "--curated", str(tmp_path), "--catalog",
                                      str(demo_catalog[0] / "catalog.parquet"), "--out",
                                      str(tmp_path / "o")])
    assert result.exit_code == 1 and "run `adswap curate` first" in result.output


def test_ranks_split_the_shards_and_the_last_one_finishes(demo_catalog, demo_curated,
                                                          shards, tmp_path):
    out, _ = shards
    first = run(shard_config(demo_catalog, demo_curated, tmp_path, rank=0, world_size=2))
    assert not first.complete and not (tmp_path / "sizes.json").exists()
    second = run(shard_config(demo_catalog, demo_curated, tmp_path, rank=1, world_size=2))
    assert second.complete and first.built + second.built == len(tars(out))
    for a, b in zip(tars(out), tars(tmp_path), strict=True):
        assert a.read_bytes() == b.read_bytes()


def test_card_gains_a_shards_section(shards, tmp_path):
    out, stats = shards
    readme = update_card(tmp_path / "demo", "shards", card_facts(out)).read_text()
    assert "## Shards" in readme
    assert f"{stats.samples} samples from {stats.tracks} tracks" in readme
    manifest = json.loads((out / "manifest.json").read_text())
    for split, entry in manifest["splits"].items():
        assert f"| {split} | {len(entry['shards'])} | {entry['tracks']} | " \
               f"{entry['samples']} |" in readme
