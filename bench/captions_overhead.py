"""Benchmark: the caption stage's own cost, with the rule-based `template` engine.

Goal (issue 3): at least 20,000 views/s on one core for planning, prompts, parsing and
Parquet, so the LLM is always the bottleneck. Pinned to one core. Prints views/s, the
ratio to the goal, and the ratio to a floor measured in the same run: a bare loop that
writes the same number of rows to Parquet and does nothing else. Peak memory is taken
in a fresh process per catalog size, to show it does not grow with the catalog.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

GOAL = 20_000
GENRES = ["rock", "pop", "jazz", "blues", "funk", "reggae", "country", "ambient"]
MOODS = ["happy", "sad", "calm", "dark", "tense", "playful", "dreamy", "energetic"]
INSTRUMENTS = ["drums", "bass", "piano", "flute", "violin", "organ", "synthesizer", "cello"]


def make_catalog(path: Path, tracks: int) -> None:
    import random

    rng = random.Random(0)
    with path.open("w") as f:
        for i in range(tracks):
            f.write(json.dumps({
                "track_id": f"t{i:07d}", "audio": f"a/{i}.flac",
                "tags": {"genre": rng.sample(GENRES, rng.randint(1, 2)),
                         "mood": rng.sample(MOODS, rng.randint(2, 4)),
                         "instrument": rng.sample(INSTRUMENTS, rng.randint(3, 5))}}) + "\n")


def stage(catalog: Path, out: Path) -> dict:
    from pipeline.captions.engines import EngineConfig
    from pipeline.captions.stage import CaptionsConfig, run

    started = time.perf_counter()
    stats = run(CaptionsConfig(catalog=catalog, out=out, engine=EngineConfig(engine="template"),
                               chunk_tracks=512))
    seconds = time.perf_counter() - started
    return {"views": stats.views_generated, "seconds": round(seconds, 3),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def floor(out: Path, views: int) -> float:
    """Write `views` rows of the same width to Parquet in 5,120-row files."""
    import hashlib

    text = "A calm jazz piece where piano and saxophone trade gentle phrases"
    rows = 5120
    started = time.perf_counter()
    for i in range(views // rows):
        ids = range(i * rows, (i + 1) * rows)
        table = pa.table({
            "track_id": [f"t{n // 10:07d}" for n in ids],
            "text": [f"{text} {n}." for n in ids], "raw_text": [f"{text} {n}." for n in ids],
            "content_key": [hashlib.sha256(str(n).encode()).hexdigest() for n in ids]})
        pq.write_table(table, out / f"floor-{i}.parquet")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tracks", type=int, default=5000)
    parser.add_argument("--child", nargs=2, metavar=("CATALOG", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    if args.child:
        print(json.dumps(stage(Path(args.child[0]), Path(args.child[1]))))
        return

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for tracks in (args.tracks // 5, args.tracks, args.tracks * 4):
            catalog = tmp / f"catalog-{tracks}.jsonl"
            make_catalog(catalog, tracks)
            child = subprocess.run(
                [sys.executable, __file__, "--child", str(catalog), str(tmp / f"v{tracks}")],
                check=True, capture_output=True, text=True)
            results[tracks] = json.loads(child.stdout.strip().splitlines()[-1])
            shutil.rmtree(tmp / f"v{tracks}")
        main_run = results[args.tracks]
        (tmp / "floor").mkdir()
        floor_s = floor(tmp / "floor", main_run["views"])
    rate = main_run["views"] / main_run["seconds"]
    floor_rate = main_run["views"] / floor_s
    report = {"views_per_s_one_core": round(rate), "goal": GOAL,
              "ratio_to_goal": round(rate / GOAL, 2),
              "parquet_floor_views_per_s": round(floor_rate),
              "ratio_to_floor": round(rate / floor_rate, 3),
              "by_catalog_size": results}
    print(json.dumps(report, indent=2))
    sizes = sorted(results)
    print(f"captions overhead: {rate:,.0f} views/s on one core ({rate / GOAL:.2f}x the "
          f"{GOAL:,} goal; {rate / floor_rate:.2f}x a Parquet-only floor); peak RSS "
          + ", ".join(f"{results[s]['peak_rss_mb']} MB at {s} tracks" for s in sizes))
    out = Path("bench/results")
    out.mkdir(parents=True, exist_ok=True)
    (out / "captions_overhead.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
