"""Reading and mapping a 1M-track catalog against today's read (issue 14).

Goal: reading a catalog with a tag map costs at most 10% more than reading it before
tag maps existed. The baseline is that code itself: `schemas/catalog.py` as of
`before` (the commit before tag maps), loaded from git and run in the same process, on
the same machine, in the same run, on the same native Parquet catalog. Then:
- native:        today's code, the same Parquet catalog, no tag map (the default path);
- native+map:    the same catalog read through a tag map (MTG-Jamendo's bundled one,
                 whose vocabulary the tags are drawn from: display forms, merges, moves);
- mtg-jamendo:   the same tracks as an MTG-Jamendo autotagging.tsv, bundled map.
Each read is repeated `rounds` times, interleaved, and the fastest counts (the machine
is shared). Tracks carry 1-2 genres, 2-4 moods/themes and 3-5 instruments.
"""

from __future__ import annotations

import importlib.util
import random
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from bench.harness import ROOT, Outcome, measure
from schemas.catalog import CatalogConfig, catalog_schema, iter_catalog
from schemas.config import Config, setting
from schemas.tagmap import bundled_map_path
from tests.public_vocabularies import MTG_JAMENDO

BATCH = 50_000


@dataclass(frozen=True)
class Settings(Config):
    tracks: int = setting(1_000_000, help="catalog tracks")
    rounds: int = setting(2, help="reads of each kind, interleaved; the fastest counts")
    before: str = setting("ed3d0a8", help="the baseline's commit: the last whose catalog "
                          "reader had no tag maps")
    work: Path | None = setting(None, help="folder for the catalogs, kept and reused "
                                "(default: a temporary one)")

    def check(self) -> list[str]:
        return [] if self.tracks >= 1 and self.rounds >= 1 else \
            ["tracks and rounds must be >= 1"]


def track_tags(i: int) -> dict[str, list[str]]:
    rng = random.Random(i)
    return {"genre": rng.sample(MTG_JAMENDO["genre"], rng.randint(1, 2)),
            "mood/theme": rng.sample(MTG_JAMENDO["mood/theme"], rng.randint(2, 4)),
            "instrument": rng.sample(MTG_JAMENDO["instrument"], rng.randint(3, 5))}


def write_catalogs(work: Path, tracks: int) -> tuple[Path, Path]:
    native, tsv = work / "catalog.parquet", work / "autotagging.tsv"
    if native.exists() and tsv.exists():
        return native, tsv
    schema = catalog_schema()
    with pq.ParquetWriter(native, schema) as writer, tsv.open("w", encoding="utf-8") as out:
        out.write("TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS\n")
        for start in range(0, tracks, BATCH):
            rows = []
            for i in range(start, min(start + BATCH, tracks)):
                tags = track_tags(i)
                rows.append({"track_id": f"track_{i:07d}", "audio": f"{i % 100:02d}/{i}.mp3",
                             "duration_s": 180.0 + i % 60, "artist": f"artist_{i // 8:06d}",
                             "license": None, "split": None,
                             "tags": {"genre": tags["genre"], "mood": tags["mood/theme"],
                                      "instrument": tags["instrument"]}})
                out.write("\t".join([f"track_{i:07d}", f"artist_{i // 8:06d}",
                                     f"album_{i // 8:06d}", f"{i % 100:02d}/{i}.mp3",
                                     str(180.0 + i % 60)]
                                    + [f"{c}---{t}" for c, ts in tags.items() for t in ts])
                          + "\n")
            writer.write_table(pa.Table.from_pylist(rows, schema=schema))
    return native, tsv


def load_before(commit: str, work: Path):
    """schemas/catalog.py as it was at `commit`, as a module of its own."""
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:schemas/catalog.py"],
                            check=True, capture_output=True, text=True).stdout
    path = work / "catalog_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("catalog_before", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while defining
    spec.loader.exec_module(module)
    return module


def timed_read(read, path: Path, config) -> tuple[float, int, int]:
    valid = rejected = 0
    with measure() as measured:
        for track, _ in read(path, config):
            if track is None:
                rejected += 1
            else:
                valid += 1
    return measured.wall_s, valid, rejected


def run(settings: Settings) -> Outcome:
    work = settings.work or Path(tempfile.mkdtemp(prefix="bench-catalog-"))
    work.mkdir(parents=True, exist_ok=True)
    with measure() as generated:
        native, tsv = write_catalogs(work, settings.tracks)
    before = load_before(settings.before, work)
    mapped = CatalogConfig(tag_map=str(bundled_map_path("mtg-jamendo")))
    runs = {
        "before (today's read)": (before.iter_catalog, native, before.CatalogConfig()),
        "native": (iter_catalog, native, CatalogConfig()),
        "native+map": (iter_catalog, native, mapped),
        "mtg-jamendo": (iter_catalog, tsv, CatalogConfig()),
    }
    best: dict[str, float] = {}
    counts: dict[str, tuple[int, int]] = {}
    for _ in range(settings.rounds):
        for name, (read, path, config) in runs.items():
            seconds, valid, rejected = timed_read(read, path, config)
            best[name] = min(best.get(name, seconds), seconds)
            counts[name] = (valid, rejected)
            print(f"  {name}: {seconds:.1f} s ({valid:,} valid, {rejected:,} rejected)",
                  file=sys.stderr)
    baseline = best["before (today's read)"]
    figures = {"generation_s": round(generated.wall_s, 1),
               "seconds": {k: round(v, 2) for k, v in best.items()},
               "tracks_per_s": {k: round(settings.tracks / v) for k, v in best.items()},
               "ratio_to_before": {k: round(v / baseline, 3) for k, v in best.items()},
               "valid_rejected": counts, "goal": "ratio <= 1.10"}
    if settings.work is None:  # a gigabyte at the default size
        shutil.rmtree(work, ignore_errors=True)
    return Outcome(figures, {
        f"ratio_to_before.{k}": f"schemas/catalog.py at {settings.before} reading the same "
                                "Parquet catalog, same run (goal <= 1.10)"
        for k in list(runs)[1:]},
        f"catalog read, {settings.tracks:,} tracks: before {baseline:.1f} s; " + "; ".join(
            f"{k} {best[k]:.1f} s ({best[k] / baseline:.2f}x)" for k in list(runs)[1:])
        + " (goal <= 1.10x)")
