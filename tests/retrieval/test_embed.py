"""`adswap embed`: the folder it promises, a kill and a resume ending in the bytes of an
uninterrupted run, what it refuses, and bad audio recorded instead of fatal."""

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from adswap.cli import app
from retrieval.embed import EmbedConfig, embed
from schemas.catalog import write_catalog
from trainer.inference import Encoder, read_audio

torch.set_num_threads(1)


def folder_bytes(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def test_shards_index_holds_every_track_with_pooled_clip_embeddings(demo_indexes, demo_shards,
                                                                    trained_runs):
    index = demo_indexes[0]
    manifest = json.loads((index / "manifest.json").read_text())
    sizes = json.loads((demo_shards / "sizes.json").read_text())
    assert manifest["complete"] and len(manifest["parts"]) == sum(1 for n in sizes.values() if n)
    tracks = pq.read_table(index / "tracks").to_pylist()
    clips = pq.read_table(index / "clips").to_pylist()
    # the demo's 32 train/valid tracks: its 8 test tracks are never captioned or sharded
    assert manifest["tracks"] == len(tracks) == 32 and manifest["clips"] == len(clips)
    # 2 s shard clips and a 1.5 s model input: one window per clip, two clips per track
    assert all(t["clips"] == 2 for t in tracks)
    first = tracks[0]
    own = np.array([c["embedding"] for c in clips if c["track_id"] == first["track_id"]],
                   np.float32)
    pooled = own.mean(0) / np.linalg.norm(own.mean(0))
    assert np.allclose(np.array(first["embedding"], np.float32), pooled, atol=2e-3)  # float16
    assert abs(np.linalg.norm(np.array(first["embedding"], np.float32)) - 1) < 2e-3
    assert first["audio"].startswith("audio/") and dict(first["tags"])["genre"]
    encoder = Encoder.from_run(trained_runs[0])
    assert manifest["checkpoint_sha256"] == encoder.identity["checkpoint_sha256"]


def _embed_command(run, catalog, out):
    return [sys.executable, "-m", "adswap.cli", "embed", str(run), "--catalog", str(catalog),
            "--out", str(out), "--part-tracks", "4", "--max-clips", "0", "--batch-size", "1",
            "--dtype", "float32", "--device", "cpu"]


@pytest.mark.slow
def test_a_killed_embed_resumes_to_the_bytes_of_an_uninterrupted_run(trained_runs,
                                                                     demo_catalog, tmp_path):
    demo, _ = demo_catalog
    catalog = demo / "catalog.parquet"
    whole = tmp_path / "whole"
    # the uninterrupted run in this process (one thread, as the subprocesses below)
    embed(EmbedConfig(run=trained_runs[0], out=whole, catalog=catalog, part_tracks=4,
                      max_clips=0, batch_size=1, dtype="float32", device="cpu"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    killed = tmp_path / "killed"
    process = subprocess.Popen(_embed_command(trained_runs[0], catalog, killed), env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (killed / "tracks" / "part-000001.parquet").exists():
        assert process.poll() is None and time.monotonic() < deadline, "embed never started"
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    parts = sorted(p.name for p in (killed / "tracks").glob("part-*.parquet"))
    assert 2 <= len(parts) < 10, parts  # stopped part-way through 10 parts of 4 tracks
    assert not json.loads((killed / "manifest.json").read_text())["complete"]

    again = subprocess.run(_embed_command(trained_runs[0], catalog, killed), env=env,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"({len(parts)} already done)" in again.stdout
    ours, theirs = folder_bytes(killed), folder_bytes(whole)
    assert sorted(ours) == sorted(theirs)
    for name in ours:
        if name != "manifest.json":  # its paths differ: the out folder is in it
            assert ours[name] == theirs[name], name
    a, b = (json.loads(x["manifest.json"]) for x in (ours, theirs))
    assert a["content_sha256"] == b["content_sha256"] and a["parts"] == b["parts"]


def test_embed_refuses_other_settings_and_runs_without_checkpoints(trained_runs, demo_shards,
                                                                   tmp_path):
    out = tmp_path / "index"
    # the demo's test tracks are never captioned, so its shards hold train and valid only
    embed(EmbedConfig(run=trained_runs[0], out=out, shards=demo_shards, splits=("valid",),
                      device="cpu"))
    with pytest.raises(ValueError, match="other settings; pass --overwrite"):
        embed(EmbedConfig(run=trained_runs[0], out=out, shards=demo_shards,
                          splits=("train",), device="cpu"))
    with pytest.raises(ValueError, match="another model"):
        embed(EmbedConfig(run=trained_runs[1], out=out, shards=demo_shards,
                          splits=("valid",), device="cpu"))
    stats = embed(EmbedConfig(run=trained_runs[1], out=out, shards=demo_shards,
                              splits=("train",), device="cpu", overwrite=True))
    assert not list((out / "tracks").glob("valid-*"))
    assert stats.tracks == json.loads((out / "manifest.json").read_text())["tracks"]

    bare = tmp_path / "bare_run"
    bare.mkdir()
    (bare / "config.yaml").write_text((trained_runs[0] / "config.yaml").read_text())
    result = CliRunner().invoke(app, ["embed", str(bare), "--shards", str(demo_shards),
                                      "--out", str(tmp_path / "never")])
    assert result.exit_code == 1 and "has no checkpoint" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "never").exists()
    result = CliRunner().invoke(app, ["embed", str(trained_runs[0]), "--out",
                                      str(tmp_path / "never")])
    assert result.exit_code == 1 and "give --shards, --catalog, or both" in result.output
    with pytest.raises(ValueError, match=r"dtype must be one of float16, float32, got "
                       r"'int8'\n.*splits \['dev'\]"):
        EmbedConfig(run=bare, out=out, shards=demo_shards, dtype="int8", splits=("dev",))


def test_a_catalog_with_broken_audio_is_embedded_with_the_rejects_recorded(
        trained_runs, demo_catalog, tmp_path):
    demo, catalog = demo_catalog
    tracks = catalog.tracks[:5]
    (tmp_path / "audio").mkdir()
    for track in tracks:
        shutil.copy(demo / track.audio, tmp_path / track.audio)
    (tmp_path / "audio" / "broken.flac").write_bytes(b"not audio at all")
    broken = dataclasses.replace(tracks[1], track_id="broken", audio="audio/broken.flac")
    escaping = dataclasses.replace(tracks[2], track_id="escaping", audio="../../etc/passwd")
    path = write_catalog([*tracks, broken, escaping], tmp_path / "catalog.parquet")
    stats = embed(EmbedConfig(run=trained_runs[0], out=tmp_path / "index", catalog=path,
                              device="cpu", max_clips=2))
    assert stats.tracks == 5 and stats.rejected == 2
    rejects = [json.loads(line) for line in
               (tmp_path / "index" / "rejects" / "part-000000.jsonl").read_text().splitlines()]
    reasons = " | ".join(r["reason"] for r in rejects)
    assert "not readable as audio" in reasons and "outside the audio root" in reasons
    rows = pq.read_table(tmp_path / "index" / "tracks").to_pylist()
    assert all(r["clips"] <= 2 for r in rows)
    # a track's embedding is what the encoder gives the whole file
    encoder = Encoder.from_run(trained_runs[0])
    data, rate = read_audio(demo / tracks[0].audio)
    expected = encoder.embed_audio(data, rate, max_windows=2)
    assert np.abs(np.array(rows[0]["embedding"], np.float32) - expected).max() < 2e-3
