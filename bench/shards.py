"""Benchmark: `adswap shards` against a bare decode-resample-encode loop.

Goals (issue 5): at least 0.8 of the floor's speed per worker, near-linear scaling
from 1 to 2 workers, and peak memory that does not grow with the catalog. Measured on
the demo catalog (400 tracks) and a 2,000-track synthetic one, both rendered by
`adswap demo-data`, captioned by the template engine and curated.

The floor, measured in the same run on the same tracks and settings, only decodes each
file, downmixes, resamples with soxr and encodes the same clips to FLAC: the work no
shard writer can skip. Each stage run is a child process, so its peak memory (the
largest of its processes) is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

CLIP_ARGS = ["--sample-rate", "16000", "--clip-seconds", "10", "--clips-per-track", "1",
             "--position", "centre", "--max-samples", "50"]


def prepare(work: Path, tracks: int) -> Path:
    """Demo audio, template captions and curation, reused between bench runs."""
    from pipeline.captions.engines import EngineConfig
    from pipeline.captions.stage import CaptionsConfig
    from pipeline.captions.stage import run as captions
    from pipeline.curate.stage import CurateConfig
    from pipeline.curate.stage import run as curate
    from pipeline.demo_data import DemoConfig
    from pipeline.demo_data import run as demo

    folder = work / f"demo-{tracks}"
    demo(DemoConfig(out=folder, tracks=tracks, seed=0, workers=0))
    if not (folder / "curated" / "report.json").exists():
        captions(CaptionsConfig(catalog=folder / "catalog.parquet", out=folder / "views",
                                engine=EngineConfig(engine="template")))
        curate(CurateConfig(views=folder / "views", catalog=folder / "catalog.parquet",
                            out=folder / "curated"))
    return folder


# Runs a command and prints the peak RSS (KiB) of its largest process, workers included.
_PEAK = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, "
         "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
         "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


def stage(folder: Path, workers: int, out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    peak = subprocess.run([sys.executable, "-c", _PEAK, sys.executable, "-m", "adswap.cli",
                           "shards", "--curated", str(folder / "curated"), "--catalog",
                           str(folder / "catalog.parquet"), "--out", str(out), "--workers",
                           str(workers), *CLIP_ARGS], check=True, capture_output=True,
                          text=True).stdout
    seconds = time.perf_counter() - started
    report = json.loads((out / "report.json").read_text())
    return {"seconds": round(seconds, 2), "tracks": report["totals"]["tracks"],
            "tracks_per_s": round(report["totals"]["tracks"] / seconds, 1),
            # the stage's own time, without the interpreter start and imports
            "stage_seconds": report["this_run"]["seconds"],
            "clip_hours": report["totals"]["audio_hours"],
            "peak_rss_mb": round(int(peak) / 1024, 1)}


def floor(folder: Path) -> dict:
    """Decode, resample, encode the same clips in one process: nothing else."""
    import numpy as np
    import soundfile as sf

    from pipeline.shards.audio import ClipConfig, clip_starts, encode, load_mono
    from schemas.catalog import read_catalog

    config = ClipConfig(sample_rate=16_000, clip_seconds=10)
    catalog = read_catalog(folder / "catalog.parquet")
    started = time.perf_counter()
    source_seconds = 0.0
    for track in catalog.tracks:
        path = folder / track.audio
        source_seconds += sf.info(path).duration
        mono = load_mono(path, config.sample_rate)
        for start in clip_starts(len(mono), config, track.track_id):
            encode(np.clip(mono[start:start + config.clip_frames], -1, 1), config.sample_rate,
                   "flac")
    seconds = time.perf_counter() - started
    return {"seconds": round(seconds, 2), "tracks": len(catalog.tracks),
            "tracks_per_s": round(len(catalog.tracks) / seconds, 1),
            "source_hours": round(source_seconds / 3600, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", type=Path, default=Path("bench/results/shards-work"))
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[400, 2000])
    args = parser.parse_args()
    results: dict = {"cores": os.cpu_count()}
    for tracks in args.sizes:
        folder = prepare(args.work, tracks)
        bare = floor(folder)
        entry = {"floor": bare}
        for workers in (1, 2):
            run = stage(folder, workers, args.work / f"shards-{tracks}-{workers}")
            run["audio_hours_per_s"] = round(bare["source_hours"] / run["seconds"], 3)
            run["ratio_to_floor_per_worker"] = round(
                run["tracks_per_s"] / (bare["tracks_per_s"] * workers), 3)
            run["stage_ratio_to_floor_per_worker"] = round(
                bare["seconds"] / (run["stage_seconds"] * workers), 3)
            entry[f"workers_{workers}"] = run
        entry["scaling_1_to_2"] = round(entry["workers_2"]["tracks_per_s"] /
                                        entry["workers_1"]["tracks_per_s"], 3)
        results[f"tracks_{tracks}"] = entry
        print(json.dumps({f"tracks_{tracks}": entry}, indent=1))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "shards.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
