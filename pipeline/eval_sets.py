"""`adswap import-eval`: a user's evaluation set (audio + human captions, e.g. Song
Describer or MusicCaps, downloaded by the user) into eval shards.

Input: CSV, TSV, JSONL or Parquet (schemas/tabular) with a caption column (`caption` or
`text`) and either an `audio` path (resolved inside --audio-root) or a `track_id` looked
up in --catalog. Optional: `track_id`, `language` (default en), `caption_id` (default:
the caption's place among its track's rows). A track may have many captions (one row
each); each becomes a query.

Output (--out): `test-{000000}.tar` shards in the sample format of `adswap shards`
(split test, the captions as views), so the shards stage's audio handling (decode,
mono, soxr resampling, clips) is the same for training and evaluation; `sizes.json`,
`manifest.json`, `captions.parquet` (schema eval_captions/1: usable as `adswap curate
--eval-set` to decontaminate training data), `rejects.jsonl` and `report.md`. A bad row
or a missing or unreadable audio file is a reject with its kind and reason, never fatal.
Each shard is written atomically and marked done in `_work/done/`; a rerun of the same
file and settings keeps the finished shards and builds the rest (anything else starts
the set over).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.parallel import map_jobs
from pipeline.rejects import Reject, count_rejects
from pipeline.shards.audio import ClipConfig
from pipeline.shards.stage import ShardJob, build_shard, write_index
from schemas.atomic import write_text_atomic
from schemas.catalog import CatalogConfig, iter_catalog
from schemas.config import Config, setting
from schemas.eval_captions import eval_captions_schema
from schemas.shard_plan import SHARD_PLAN_SCHEMA_ID, shard_plan_schema
from schemas.tabular import Row, iter_rows

EVAL_SET_SCHEMA_ID = "eval_set/1"
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
# a set's name is a folder of every run it scores (RUN/eval/<name>/) and part of the
# ablation's file names
_SET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class ImportConfig(Config):
    file: Path = setting(help="CSV, TSV, JSONL or Parquet: a caption column (`caption` or "
                         "`text`) and an `audio` path or a `track_id` (with catalog); "
                         "optional `language`, `caption_id`.")
    out: Path = setting(help="Folder for the eval shards.")
    name: str = setting("", help="The set's name in reports and its folder in each run's "
                        "eval/ (letters, digits, '_', '.', '-'; default: out's name).")
    catalog: Path | None = setting(None, help="Catalog to find audio by track_id.")
    audio_root: Path | None = setting(None, help="Folder audio paths resolve in (default: "
                                      "the file's folder, or the catalog's).")
    clips: ClipConfig = setting(factory=lambda: ClipConfig(position="all"),
                                help="How clips are cut; position all scores every window "
                                "of a track (averaged at eval).")
    max_samples: int = setting(500, help="Samples per shard, at most.")
    workers: int = setting(0, help="Worker processes; 0 = all cores.")

    def check(self) -> list[str]:
        problems = [] if self.max_samples >= 1 and self.workers >= 0 else \
            ["max_samples must be >= 1 and workers >= 0"]
        if self.name and not _SET_NAME.fullmatch(self.name):
            problems.append(f"name {self.name!r} names a folder of each run it scores "
                            "(RUN/eval/<name>): use letters, digits, '_', '.' and '-', "
                            "starting with a letter or digit")
        return problems


@dataclass
class ImportStats:
    rows: int = 0
    tracks: int = 0
    captions: int = 0
    samples: int = 0
    built: int = 0  # shards written by this run; the rest were done by an earlier one
    skipped: int = 0
    rejects: Counter = field(default_factory=Counter)


def run(config: ImportConfig) -> ImportStats:
    path = Path(config.file)
    if not path.exists():
        raise ValueError(f"eval file {path} does not exist")
    catalog_audio: dict[str, str] = {}
    root = config.audio_root or path.parent
    if config.catalog is not None:
        catalog_config = CatalogConfig(audio_root=config.audio_root)
        for track, _ in iter_catalog(config.catalog, catalog_config):
            if track is not None:
                catalog_audio[track.track_id] = track.audio
        root = config.audio_root or (config.catalog if Path(config.catalog).is_dir()
                                     else Path(config.catalog).parent)
    stats = ImportStats()
    tracks, rejects = _read_tracks(path, catalog_audio, stats)
    if not tracks:
        raise ValueError(f"{path}: no usable row (first problems: "
                         f"{[r['reason'] for r in rejects[:3]]})")
    out, work = Path(config.out), Path(config.out) / "_work"
    provenance = {"eval_file_sha256": hashlib.sha256(path.read_bytes()).hexdigest()[:16]}
    units = _plan(config, tracks, Path(root).resolve(), provenance)
    jobs = [ShardJob(unit, work / "plan" / f"unit={unit}", out / f"{unit}.tar",
                     work / "done" / f"{unit}.json", config.clips, Path(root).resolve(),
                     provenance) for unit in units]
    for stale in out.glob(".test-*.tar.tmp-*"):  # left by a killed run
        stale.unlink(missing_ok=True)
    todo = [job for job in jobs if not (job.done.exists() and job.tar.exists())]
    stats.skipped = len(jobs) - len(todo)
    for _ in map_jobs(build_shard, todo, config.workers, "import-eval", "track",
                      weights=[len(units[j.unit]) for j in todo]):
        stats.built += 1
    done = [json.loads(job.done.read_text(encoding="utf-8")) for job in jobs]
    rejects += [r for d in done for r in d["rejects"]]
    stats.rejects = count_rejects(rejects)
    # every planned track is in its shard unless its audio was rejected
    kept = set(tracks) - {r["track_id"] for d in done for r in d["rejects"]}
    stats.tracks = len(kept)
    stats.captions = sum(len(tracks[t]["captions"]) for t in kept)
    stats.samples = sum(d["samples"] for d in done)
    _write_outputs(config, out, tracks, kept, done, rejects, stats)
    return stats


def _read_tracks(path: Path, catalog_audio: dict, stats: ImportStats
                 ) -> tuple[dict[str, dict], list[dict]]:
    """{track id: {audio, captions}} from the file's rows, and the rows rejected."""
    tracks: dict[str, dict] = {}
    rejects: list[dict] = []
    for row in iter_rows(path):
        stats.rows += 1
        kind, reason, track_id, audio = _check(row, catalog_audio)
        entry = tracks.get(track_id, {"audio": audio, "captions": []})
        if not kind and entry["audio"] != audio:
            kind, reason = "conflicting_audio", f"track {track_id} already has audio " \
                f"{entry['audio']}"
        caption_id = _caption_id(row.values.get("caption_id"), len(entry["captions"]))
        if not kind and caption_id is None:
            kind, reason = "bad_caption_id", (f"caption_id {row.values['caption_id']!r} "
                                              "must be a whole number from 0")
        language, problem = row.text("language")
        if not kind and problem is not None:
            kind, reason = "unreadable_row", f"{problem.field} {problem.message}"
        if kind:
            rejects.append(Reject(track_id or "", "rows", kind, reason, row=row.number)
                           .to_json())
            continue
        tracks[track_id] = entry
        entry["captions"].append({"view_id": caption_id,
                                  "language": (language or "en").strip(),
                                  "text": " ".join(row.text("caption", "text")[0].split()),
                                  "spans": []})
    return tracks, rejects


def _caption_id(value, position: int) -> int | None:
    """A row's caption_id: its position among the track's captions when it has none;
    None when it is not a whole number from 0 (0 is a caption id, not a missing one)."""
    if value is None or (isinstance(value, str) and not value.strip()) or \
            (isinstance(value, float) and math.isnan(value)):
        return position
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    return value if isinstance(value, int) and 0 <= value < 2 ** 31 else None


def _check(row: Row, catalog_audio: dict) -> tuple[str, str, str | None, str | None]:
    """(kind, reason, track_id, audio): a kind means the row is rejected."""
    if row.problem is not None:
        return "unreadable_row", row.problem.message, None, None
    text, problem = row.text("caption", "text")
    track_id, _ = row.text("track_id")
    track_id = (track_id or "").strip() or None
    if problem is not None:
        return "no_caption", f"{problem.field} {problem.message}", track_id, None
    if text is None or not text.strip():
        return "no_caption", "no caption (column `caption` or `text`)", track_id, None
    audio, _ = row.text("audio")
    audio = (audio or "").strip() or None
    if audio is None and track_id is not None:
        audio = catalog_audio.get(track_id)
        if audio is None:
            return "no_audio", (f"track {track_id} has no `audio` column value and is not "
                                "in the catalog"), track_id, None
    if audio is None:
        return "no_audio", "needs an `audio` path or a `track_id` with --catalog", \
            track_id, None
    if track_id is None:  # keys must be safe file names and WebDataset keys
        track_id = _UNSAFE.sub("_", Path(audio).stem).strip("_")[:100] or "track"
        track_id += "-" + hashlib.sha256(audio.encode()).hexdigest()[:8]
    elif _UNSAFE.search(track_id):
        return "bad_track_id", (f"track_id {track_id!r} may only hold letters, digits, '_' "
                                "and '-'"), track_id, None
    return "", "", track_id, audio


def _plan(config: ImportConfig, tracks: dict, root: Path, provenance: dict
          ) -> dict[str, list[str]]:
    """The shards' plan: reused when an interrupted import of the same rows and settings
    left one (its finished shards are kept), else written afresh (old shards removed)."""
    out, work = Path(config.out), Path(config.out) / "_work"
    key = hashlib.sha256(json.dumps(
        {"tracks": tracks, "root": str(root), "provenance": provenance,
         "clips": asdict(config.clips), "max_samples": config.max_samples,
         "plan_schema": SHARD_PLAN_SCHEMA_ID}, sort_keys=True).encode()).hexdigest()
    marker = work / "plan.json"
    if marker.exists():
        saved = json.loads(marker.read_text(encoding="utf-8"))
        if saved.get("key") == key:
            return saved["units"]
    shutil.rmtree(work, ignore_errors=True)
    for old in out.glob("test-*.tar"):
        old.unlink()
    units = _write_plan(tracks, work / "plan", config.max_samples)
    write_text_atomic(marker, json.dumps({"key": key, "units": units}, sort_keys=True))
    return units


def _write_plan(tracks: dict, plan: Path, max_samples: int) -> dict[str, list[str]]:
    ids = sorted(tracks)
    units = {f"test-{i // max_samples:06d}": ids[i:i + max_samples]
             for i in range(0, len(ids), max_samples)}
    for unit, members in units.items():
        folder = plan / f"unit={unit}"
        folder.mkdir(parents=True, exist_ok=True)
        n = len(members)
        table = pa.Table.from_pydict({
            "position": list(range(n)), "track_id": members,
            "audio": [tracks[t]["audio"] for t in members],
            "tags": ["{}"] * n, "tags_text": [""] * n, "split": ["test"] * n,
            "views": [tracks[t]["captions"] for t in members],
            "engine": ["human"] * n, "model_id": ["reference"] * n,
            "template_id": [""] * n, "template_hash": [""] * n}, schema=shard_plan_schema())
        pq.write_table(table, folder / "part.parquet")
    return units


def _write_outputs(config: ImportConfig, out: Path, tracks: dict, kept: set[str],
                   done: list[dict], rejects: list[dict], stats: ImportStats) -> None:
    by_unit = {d["unit"]: d for d in sorted(done, key=lambda d: d["unit"])}
    write_index(out, by_unit, rejects)
    rows = [{"track_id": t, "caption_id": c["view_id"], "language": c["language"],
             "text": c["text"]} for t in sorted(kept) for c in tracks[t]["captions"]]
    pq.write_table(pa.Table.from_pylist(rows, schema=eval_captions_schema()),
                   out / "captions.parquet")
    languages = Counter(r["language"] for r in rows)
    manifest = {"schema": EVAL_SET_SCHEMA_ID, "name": config.name or out.name,
                "source": str(config.file), "settings": {"clips": asdict(config.clips)},
                "tracks": stats.tracks, "captions": stats.captions, "samples": stats.samples,
                "languages": dict(sorted(languages.items())),
                "shards": {f"{u}.tar": {k: d[k] for k in ("samples", "bytes", "sha256")}
                           for u, d in by_unit.items()}}
    write_text_atomic(out / "manifest.json", json.dumps(manifest, indent=1, sort_keys=True))
    lines = [f"# Eval set {manifest['name']}", "",
             f"From `{config.file}`: {stats.rows} rows, {stats.tracks} tracks, "
             f"{stats.captions} captions ({', '.join(f'{k} {v}' for k, v in languages.items())})"
             f", {stats.samples} clips.", "", "## Rejects", ""]
    lines += [f"- {reason}: {n}" for reason, n in stats.rejects.most_common()] or ["- none"]
    write_text_atomic(out / "report.md", "\n".join(lines) + "\n")
