"""The caption stage's own cost, with the rule-based `template` engine.

Goal (issue 3): at least 20,000 views/s on one core for planning, prompts, parsing and
Parquet, so the LLM is always the bottleneck. Each run is a fresh process pinned to one
core. Gives views/s, the ratio to the goal, and the ratio to a floor measured in the same
run: a bare loop that writes the same number of rows to Parquet and does nothing else.
The stage's peak memory at a fifth, once and four times the catalog shows it does not
grow with the catalog.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.harness import Outcome, in_child
from schemas.config import Config, setting

GOAL = 20_000
GENRES = ["rock", "pop", "jazz", "blues", "funk", "reggae", "country", "ambient"]
MOODS = ["happy", "sad", "calm", "dark", "tense", "playful", "dreamy", "energetic"]
INSTRUMENTS = ["drums", "bass", "piano", "flute", "violin", "organ", "synthesizer", "cello"]


@dataclass(frozen=True)
class Settings(Config):
    tracks: int = setting(5000, help="catalog tracks (10 views each) of the throughput run; "
                          "memory is also taken at a fifth and four times as many")

    def check(self) -> list[str]:
        return [] if self.tracks >= 5 else ["tracks must be >= 5"]


def make_catalog(path: Path, tracks: int) -> None:
    rng = random.Random(0)
    with path.open("w") as f:
        for i in range(tracks):
            f.write(json.dumps({
                "track_id": f"t{i:07d}", "audio": f"a/{i}.flac",
                "tags": {"genre": rng.sample(GENRES, rng.randint(1, 2)),
                         "mood": rng.sample(MOODS, rng.randint(2, 4)),
                         "instrument": rng.sample(INSTRUMENTS, rng.randint(3, 5))}}) + "\n")


def _one_core() -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})


def stage(catalog: str, out: str) -> dict:
    """The caption stage with the template engine, in this (child) process."""
    from pipeline.captions.engines import EngineConfig
    from pipeline.captions.stage import CaptionsConfig
    from pipeline.captions.stage import run as captions

    _one_core()
    started = time.perf_counter()
    stats = captions(CaptionsConfig(catalog=Path(catalog), out=Path(out), chunk_tracks=512,
                                    engine=EngineConfig(engine="template")))
    return {"views": stats.views_generated, "seconds": round(time.perf_counter() - started, 3)}


def floor(out: str, views: int) -> float:
    """Write `views` rows of the same width to Parquet in 5,120-row files, one core."""
    import hashlib

    import pyarrow as pa
    import pyarrow.parquet as pq

    _one_core()
    text = "A calm jazz piece where piano and saxophone trade gentle phrases"
    rows = min(5120, views)
    started = time.perf_counter()
    for i in range(views // rows):
        ids = range(i * rows, (i + 1) * rows)
        table = pa.table({
            "track_id": [f"t{n // 10:07d}" for n in ids],
            "text": [f"{text} {n}." for n in ids], "raw_text": [f"{text} {n}." for n in ids],
            "content_key": [hashlib.sha256(str(n).encode()).hexdigest() for n in ids]})
        pq.write_table(table, Path(out) / f"floor-{i}.parquet")
    return time.perf_counter() - started


def run(settings: Settings) -> Outcome:
    sizes: dict[int, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for tracks in (settings.tracks // 5, settings.tracks, settings.tracks * 4):
            catalog = tmp / f"catalog-{tracks}.jsonl"
            make_catalog(catalog, tracks)
            result, measured = in_child(stage, catalog, tmp / f"v{tracks}")
            sizes[tracks] = {**result, "peak_rss_mb": round(measured.peak_rss_mb, 1)}
            shutil.rmtree(tmp / f"v{tracks}")
        main_run = sizes[settings.tracks]
        (tmp / "floor").mkdir()
        floor_s, _ = in_child(floor, tmp / "floor", main_run["views"])
    rate = main_run["views"] / main_run["seconds"]
    floor_rate = main_run["views"] / floor_s
    figures = {"views_per_s_one_core": round(rate), "goal": GOAL,
               "ratio_to_goal": round(rate / GOAL, 2),
               "parquet_floor_views_per_s": round(floor_rate),
               "ratio_to_floor": round(rate / floor_rate, 3),
               "by_catalog_size": {str(k): v for k, v in sizes.items()}}
    return Outcome(figures, {
        "ratio_to_goal": f"the goal of {GOAL:,} views/s on one core",
        "ratio_to_floor": "writing as many rows of the same width to Parquet, one core, "
                          "same run"},
        f"captions overhead: {rate:,.0f} views/s on one core ({rate / GOAL:.2f}x the "
        f"{GOAL:,} goal; {rate / floor_rate:.2f}x a Parquet-only floor); peak RSS "
        + ", ".join(f"{v['peak_rss_mb']} MB at {k} tracks" for k, v in sorted(sizes.items())))
