"""`adswap import-eval`: a user's evaluation set (audio + human captions, e.g. Song
Describer or MusicCaps, downloaded by the user) into eval shards.

Input: CSV, JSONL or Parquet with a caption column (`caption` or `text`) and either an
`audio` path (resolved inside --audio-root) or a `track_id` looked up in --catalog.
Optional: `track_id`, `language` (default en), `caption_id`. A track may have many
captions (one row each); each becomes a query.

Output (--out): `test-{000000}.tar` shards in the sample format of `adswap shards`
(split test, the captions as views), so the shards stage's audio handling (decode,
mono, soxr resampling, clips) is the same for training and evaluation; `sizes.json`,
`manifest.json`, `captions.parquet` (schema eval_captions/1: usable as `adswap curate
--eval-set` to decontaminate training data), `rejects.jsonl` and `report.md`. A bad row
or a missing or unreadable audio file is a reject with its reason, never fatal.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.parallel import map_jobs
from pipeline.shards.audio import ClipConfig
from pipeline.shards.stage import ShardJob, build_shard, write_index
from schemas.atomic import write_text_atomic
from schemas.catalog import CatalogConfig, iter_catalog
from schemas.config import Config, setting
from schemas.eval_captions import eval_captions_schema
from schemas.shard_plan import shard_plan_schema
from schemas.tabular import iter_rows

EVAL_SET_SCHEMA_ID = "eval_set/1"
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


@dataclass(frozen=True)
class ImportConfig(Config):
    file: Path = setting(help="CSV, TSV, JSONL or Parquet: a caption column (`caption` or "
                         "`text`) and an `audio` path or a `track_id` (with catalog); "
                         "optional `language`, `caption_id`.")
    out: Path = setting(help="Folder for the eval shards.")
    name: str = setting("", help="The set's name in reports (default: out's name).")
    catalog: Path | None = setting(None, help="Catalog to find audio by track_id.")
    audio_root: Path | None = setting(None, help="Folder audio paths resolve in (default: "
                                      "the file's folder, or the catalog's).")
    clips: ClipConfig = setting(factory=lambda: ClipConfig(position="all"),
                                help="How clips are cut; position all scores every window "
                                "of a track (averaged at eval).")
    max_samples: int = setting(500, help="Samples per shard, at most.")
    workers: int = setting(0, help="Worker processes; 0 = all cores.")

    def check(self) -> list[str]:
        return [] if self.max_samples >= 1 and self.workers >= 0 else \
            ["max_samples must be >= 1 and workers >= 0"]


@dataclass
class ImportStats:
    rows: int = 0
    tracks: int = 0
    captions: int = 0
    samples: int = 0
    rejects: Counter = None


def run(config: ImportConfig) -> ImportStats:
    path = Path(config.file)
    if not path.exists():
        raise ValueError(f"eval file {path} does not exist")
    rows = [r.values if r.problem is None else {"__error__": r.problem.message}
            for r in iter_rows(path)]
    catalog_audio: dict[str, str] = {}
    root = config.audio_root or path.parent
    if config.catalog is not None:
        catalog_config = CatalogConfig(audio_root=config.audio_root)
        for track, _ in iter_catalog(config.catalog, catalog_config):
            if track is not None:
                catalog_audio[track.track_id] = track.audio
        root = config.audio_root or (config.catalog if Path(config.catalog).is_dir()
                                     else Path(config.catalog).parent)
    tracks: dict[str, dict] = {}
    rejects: list[dict] = []
    for number, row in enumerate(rows, 1):
        reason, track_id, audio = _check(row, catalog_audio)
        if reason:
            rejects.append({"row": number, "track_id": track_id or "", "stage": "rows",
                            "reason": reason})
            continue
        entry = tracks.setdefault(track_id, {"audio": audio, "captions": []})
        if entry["audio"] != audio:
            rejects.append({"row": number, "track_id": track_id, "stage": "rows",
                            "reason": f"track {track_id} already has audio {entry['audio']}"})
            continue
        caption_id = row.get("caption_id")
        caption_id = int(caption_id) if str(caption_id or "").strip().isdigit() else \
            len(entry["captions"])
        entry["captions"].append({"view_id": caption_id,
                                  "language": str(row.get("language") or "en").strip(),
                                  "text": " ".join(str(row.get("caption") or row.get(
                                      "text")).split()), "spans": []})
    if not tracks:
        raise ValueError(f"{path}: no usable row (first problems: "
                         f"{[r['reason'] for r in rejects[:3]]})")
    out = Path(config.out)
    if out.exists():
        shutil.rmtree(out / "_work", ignore_errors=True)
        for old in out.glob("test-*.tar"):
            old.unlink()
    units = _write_plan(tracks, out / "_work" / "plan", config.max_samples)
    provenance = {"eval_file_sha256": hashlib.sha256(path.read_bytes()).hexdigest()[:16]}
    jobs = [ShardJob(unit, out / "_work" / "plan" / f"unit={unit}", out / f"{unit}.tar",
                     out / "_work" / "done" / f"{unit}.json", config.clips,
                     Path(root).resolve(), provenance) for unit in units]
    done = list(map_jobs(build_shard, jobs, config.workers, "import-eval", "track",
                         weights=[len(units[j.unit]) for j in jobs]))
    rejects += [r for d in done for r in d["rejects"]]
    stats = ImportStats(rows=len(rows), rejects=Counter(r["reason"].split(":")[0]
                                                         for r in rejects))
    # every planned track is in its shard unless its audio was rejected
    kept = set(tracks) - {r["track_id"] for d in done for r in d["rejects"]}
    stats.tracks = len(kept)
    stats.captions = sum(len(tracks[t]["captions"]) for t in kept)
    stats.samples = sum(d["samples"] for d in done)
    _write_outputs(config, out, tracks, kept, done, rejects, stats)
    return stats


def _check(row: dict, catalog_audio: dict) -> tuple[str, str | None, str | None]:
    """(reason, track_id, audio): a reason means the row is rejected."""
    if "__error__" in row:
        return row["__error__"], None, None
    text = row.get("caption") if row.get("caption") is not None else row.get("text")
    if not isinstance(text, str) or not text.strip():
        return "no caption (column `caption` or `text`)", row.get("track_id"), None
    track_id = str(row.get("track_id") or "").strip() or None
    audio = str(row.get("audio") or "").strip() or None
    if audio is None and track_id is not None:
        audio = catalog_audio.get(track_id)
        if audio is None:
            return (f"track {track_id} has no `audio` column value and is not in the "
                    "catalog"), track_id, None
    if audio is None:
        return "needs an `audio` path or a `track_id` with --catalog", track_id, None
    if track_id is None:  # keys must be safe file names and WebDataset keys
        track_id = _UNSAFE.sub("_", Path(audio).stem).strip("_")[:100] or "track"
        track_id += "-" + hashlib.sha256(audio.encode()).hexdigest()[:8]
    elif _UNSAFE.search(track_id):
        return (f"track_id {track_id!r} may only hold letters, digits, '_' and '-'",
                track_id, None)
    return "", track_id, audio


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
