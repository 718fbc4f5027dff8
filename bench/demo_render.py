"""Benchmark: render the demo catalog (goal: the default 400 train/valid + 500 test tracks
of 10-15 s in < 3 min on 2 cores).

Prints the wall time, tracks/s and the audio realtime factor with 1 worker and with all
cores, the ratio to the 180 s budget, and the ratio to a floor measured in the same
run: a bare loop that only encodes the same seconds of audio to FLAC.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile

from pipeline.demo_data import DemoConfig, run

BUDGET_S = 180.0


def encode_floor(audio_seconds: float, sample_rate: int, folder: Path) -> float:
    """Seconds to FLAC-encode `audio_seconds` of noise in 12.5 s files, one process."""
    rng = np.random.default_rng(0)
    clip = (0.1 * rng.standard_normal(int(12.5 * sample_rate))).astype(np.float32)
    count = int(np.ceil(audio_seconds / 12.5))
    started = time.perf_counter()
    for i in range(count):
        soundfile.write(folder / f"{i}.flac", clip, sample_rate, format="FLAC", subtype="PCM_16")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tracks", type=int, default=400)
    parser.add_argument("--test-tracks", type=int, default=500)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    results = {"tracks": args.tracks + args.test_tracks, "cores": cores}
    with tempfile.TemporaryDirectory() as tmp:
        for workers in sorted({1, cores}):
            stats = run(DemoConfig(out=Path(tmp) / f"w{workers}", tracks=args.tracks,
                                   test_tracks=args.test_tracks, workers=workers))
            results[f"workers_{workers}"] = {
                "seconds": stats.seconds, "tracks_per_s": round(stats.tracks / stats.seconds, 1),
                "realtime_factor": round(stats.audio_seconds / stats.seconds, 1)}
        floor_dir = Path(tmp) / "floor"
        floor_dir.mkdir()
        floor = encode_floor(stats.audio_seconds, 22050, floor_dir)
    best = results[f"workers_{cores}"]["seconds"]
    results["audio_hours"] = round(stats.audio_seconds / 3600, 2)
    results["budget_ratio"] = round(best / BUDGET_S, 3)
    results["floor_encode_only_s"] = round(floor, 2)
    results["ratio_to_floor_1_worker"] = round(results["workers_1"]["seconds"] / floor, 2)
    print(json.dumps(results, indent=2))
    print(f"demo render: {results['tracks']} tracks in {best:.1f} s on {cores} cores "
          f"({best / BUDGET_S:.1%} of the 180 s budget); 1 worker takes "
          f"{results['ratio_to_floor_1_worker']}x the FLAC-encode-only floor")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "demo_render.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
