"""`adswap shards` against a bare decode-resample-encode loop.

Goals (issue 5): at least 0.8 of the floor's speed per worker, near-linear scaling
from 1 to 2 workers, and peak memory that does not grow with the catalog. Measured on
the demo catalog (400 tracks) and a 2,000-track synthetic one, both rendered by
`adswap demo-data`, captioned by the template engine and curated.

The floor, measured in the same run on the same tracks and settings, only decodes each
file, downmixes, resamples with soxr and encodes the same clips to FLAC: the work no
shard writer can skip. Each stage run is a child process, so its peak memory (the
largest of its processes) is its own. The catalogs stay in `work` for the next run
(and bench/train.py's) to reuse.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.data import check_demo, curated_demo
from bench.harness import WORK, Outcome, measure, run_measured
from schemas.config import Config, setting


@dataclass(frozen=True)
class Settings(Config):
    sizes: tuple[int, ...] = setting((400, 2000), help="train/valid tracks of each catalog")
    test_tracks: int = setting(500, help="held-out test tracks rendered beside them (the "
                               "floor decodes these too; the stage packs curated views "
                               "only)")
    duration_s: tuple[float, ...] = setting((10.0, 15.0), help="shortest and longest track")
    clip_seconds: float = setting(10.0, help="clip length at 16 kHz, one centred clip "
                                  "per track")
    work: Path = setting(WORK, help="folder for the catalogs and shards, kept and reused")

    def check(self) -> list[str]:
        return check_demo(min(self.sizes, default=0), self.test_tracks, self.duration_s)


def stage(folder: Path, workers: int, out: Path, clip_seconds: float) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    _, measured = run_measured([
        sys.executable, "-m", "adswap.cli", "shards", "--curated", str(folder / "curated"),
        "--catalog", str(folder / "catalog.parquet"), "--out", str(out), "--workers",
        str(workers), "--sample-rate", "16000", "--clip-seconds", str(clip_seconds),
        "--clips-per-track", "1", "--position", "centre", "--max-samples", "50"])
    report = json.loads((out / "report.json").read_text())
    return {"seconds": round(measured.wall_s, 2), "tracks": report["totals"]["tracks"],
            "tracks_per_s": round(report["totals"]["tracks"] / measured.wall_s, 1),
            # the stage's own time, without the interpreter start and imports
            "stage_seconds": report["this_run"]["seconds"],
            "clip_hours": report["totals"]["audio_hours"],
            "cpu_s": round(measured.cpu_s, 2),
            "peak_rss_mb": round(measured.peak_rss_mb, 1)}


def floor(folder: Path, clip_seconds: float) -> dict:
    """Decode, resample, encode the same clips in one process: nothing else."""
    import numpy as np
    import soundfile as sf

    from pipeline.shards.audio import ClipConfig, clip_starts, encode, load_mono
    from schemas.catalog import read_catalog

    config = ClipConfig(sample_rate=16_000, clip_seconds=clip_seconds)
    catalog = read_catalog(folder / "catalog.parquet")
    source_seconds = 0.0
    with measure() as measured:
        for track in catalog.tracks:
            path = folder / track.audio
            source_seconds += sf.info(path).duration
            mono = load_mono(path, config.sample_rate)
            for start in clip_starts(len(mono), config, track.track_id):
                encode(np.clip(mono[start:start + config.clip_frames], -1, 1),
                       config.sample_rate, "flac")
    seconds = measured.wall_s
    return {"seconds": round(seconds, 2), "tracks": len(catalog.tracks),
            "tracks_per_s": round(len(catalog.tracks) / seconds, 1),
            "source_hours": round(source_seconds / 3600, 3)}


def run(settings: Settings) -> Outcome:
    figures: dict = {"cores": os.cpu_count()}
    baseline: dict[str, str] = {}
    for tracks in settings.sizes:
        folder = curated_demo(settings.work, tracks, settings.test_tracks, settings.duration_s)
        bare = floor(folder, settings.clip_seconds)
        entry = {"floor": bare}
        for workers in (1, 2):
            result = stage(folder, workers, settings.work / f"shards-{tracks}-{workers}",
                           settings.clip_seconds)
            result["audio_hours_per_s"] = round(bare["source_hours"] / result["seconds"], 3)
            result["ratio_to_floor_per_worker"] = round(
                result["tracks_per_s"] / (bare["tracks_per_s"] * workers), 3)
            result["stage_ratio_to_floor_per_worker"] = round(
                bare["seconds"] / (result["stage_seconds"] * workers), 3)
            entry[f"workers_{workers}"] = result
            baseline[f"tracks_{tracks}.workers_{workers}.ratio_to_floor_per_worker"] = (
                "decode, resample and FLAC-encode of the same clips in one process, same run "
                "(goal >= 0.8)")
        entry["scaling_1_to_2"] = round(entry["workers_2"]["tracks_per_s"] /
                                        entry["workers_1"]["tracks_per_s"], 3)
        baseline[f"tracks_{tracks}.scaling_1_to_2"] = "the same stage with 1 worker"
        figures[f"tracks_{tracks}"] = entry
    return Outcome(figures, baseline, "shards: " + "; ".join(
        f"{tracks} tracks: {e['workers_1']['tracks_per_s']} tracks/s with 1 worker "
        f"({e['workers_1']['ratio_to_floor_per_worker']}x the floor), "
        f"{e['workers_2']['tracks_per_s']} with 2 ({e['scaling_1_to_2']}x), peak RSS "
        f"{e['workers_2']['peak_rss_mb']} MB"
        for tracks, e in ((t, figures[f"tracks_{t}"]) for t in settings.sizes)))
