"""Which track goes into which shard, decided once, before any audio is read.

Tracks are ordered per split by a seeded hash of their id, so each shard is a random
mix of artists and genres, and cut into shards by sample count and an upper-bound
estimate of bytes (16-bit PCM, which FLAC never exceeds in practice). The plan depends
only on the inputs and settings, never on worker count or timing, so every shard is
one unit of work with reproducible bytes.

The per-shard inputs (audio path, tags, curated views; schemas/shard_plan) are written
by DuckDB as one small Parquet file per shard, so a worker reads only its own tracks
and memory does not grow with the catalog.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import soundfile as sf

from pipeline.rejects import Reject
from pipeline.shards.audio import ClipConfig
from pipeline.sql import sql_string
from schemas.catalog import SPLITS, CatalogConfig, iter_catalog, resolve_audio
from schemas.problems import SCHEMA_KEY
from schemas.sample import tags_text
from schemas.shard_plan import SHARD_PLAN_SCHEMA_ID, shard_plan_schema

# Tar framing per member (header and padding), and a json estimate per sample.
_MEMBER_OVERHEAD = 1536
_JSON_BASE = 1024
_JSON_PER_VIEW = 160
# plan columns taken from the curated views; the rest come from the catalog
_FROM_VIEWS = {"split", "views", "engine", "model_id", "template_id", "template_hash"}


@dataclass(frozen=True)
class PlannedTrack:
    track_id: str
    split: str
    estimated_samples: int
    estimated_bytes: int


def curated_glob(curated: Path) -> str:
    folder = Path(curated) / "curated"
    if not any(folder.glob("*.parquet")):
        raise ValueError(f"no curated views in {folder}; run `adswap curate` first")
    return str(folder / "*.parquet")


def order_key(seed: int, track_id: str) -> bytes:
    return hashlib.sha256(f"{seed}:{track_id}".encode()).digest()


def assign_shards(tracks: list[PlannedTrack], seed: int, max_samples: int,
                  max_bytes: int) -> dict[str, list[str]]:
    """{unit name: track ids in shard order}, e.g. {'train-000000': [...], ...}."""
    units: dict[str, list[str]] = {}
    for split in SPLITS:
        members = sorted((t for t in tracks if t.split == split),
                         key=lambda t: order_key(seed, t.track_id))
        index, samples, size = 0, 0, 0
        for track in members:
            full = samples + track.estimated_samples > max_samples or \
                size + track.estimated_bytes > max_bytes
            if samples and full:
                index, samples, size = index + 1, 0, 0
            units.setdefault(f"{split}-{index:06d}", []).append(track.track_id)
            samples += track.estimated_samples
            size += track.estimated_bytes
    return units


def _estimated_clips(clips: ClipConfig, duration_s: float | None) -> int:
    if duration_s is None:
        return clips.clips_per_track
    fit = max(1, int(duration_s // clips.clip_seconds))
    if clips.position == "all":
        return fit
    return clips.clips_per_track if clips.position == "random" else min(fit,
                                                                         clips.clips_per_track)


def _probe_seconds(audio: str, root: Path) -> float | None:
    try:
        info = sf.info(resolve_audio(audio, root))
        return info.frames / info.samplerate
    except (ValueError, RuntimeError, OSError):
        return None  # the worker meets the same file and records the real reason


def build_plan(catalog: Path, curated: Path, clips: ClipConfig, catalog_config: CatalogConfig,
               seed: int, max_samples: int, max_bytes: int, target: Path
               ) -> tuple[dict[str, list[str]], list[Reject]]:
    """Write target/unit=<unit>/*.parquet; return the units and the plan's rejects."""
    con = duckdb.connect()
    summary = _view_summary(con, curated)
    planned, rows, rejects = _plan_tracks(catalog, summary, clips, catalog_config)
    units = assign_shards(planned, seed, max_samples, max_bytes)
    position = {t: (unit, i) for unit, ids in units.items() for i, t in enumerate(ids)}
    rows["unit"] = [position[t][0] for t in rows["track_id"]]
    rows["position"] = [position[t][1] for t in rows["track_id"]]
    _write_plan(con, pa.table(rows), curated, target)
    con.close()
    return units, rejects


def _view_summary(con, curated: Path) -> dict[str, tuple]:
    """{track id: (split, split, views, caption bytes)} of the curated views; a track's
    views must all be in one split."""
    summary = {row[0]: row[1:] for row in con.sql(f"""
        SELECT track_id, min(split), max(split), count(*), sum(strlen(text))
        FROM read_parquet({sql_string(curated_glob(curated))}) GROUP BY track_id""").fetchall()}
    mixed = [t for t, (low, high, *_) in summary.items() if low != high]
    if mixed:
        raise ValueError(f"curated views of {len(mixed)} tracks span several splits "
                         f"(first: {mixed[0]}); re-run `adswap curate`")
    return summary


def _plan_tracks(catalog: Path, summary: dict[str, tuple], clips: ClipConfig,
                 catalog_config: CatalogConfig
                 ) -> tuple[list[PlannedTrack], dict[str, list], list[Reject]]:
    """Each catalog track with curated views, its size estimated and its catalog columns
    of the plan (track_id, audio, tags, tags_text), in catalog order; the rejects."""
    root = catalog_config.audio_root or (catalog if catalog.is_dir() else catalog.parent)
    rejects: list[Reject] = []
    planned: list[PlannedTrack] = []
    rows: dict[str, list] = {"track_id": [], "audio": [], "tags": [], "tags_text": []}
    seen: set[str] = set()
    for track, problems in iter_catalog(catalog, catalog_config):
        if track is None:
            rejects += [Reject("", "catalog", "invalid_catalog_row", str(p))
                        for p in problems]
            continue
        seen.add(track.track_id)
        if track.track_id not in summary:
            rejects.append(Reject(track.track_id, "plan", "no_curated_views",
                                  "no curated views"))
            continue
        split, _, n_views, text_bytes = summary[track.track_id]
        duration = track.duration_s
        if duration is None and clips.position == "all":
            duration = _probe_seconds(track.audio, root)
        samples = _estimated_clips(clips, duration)
        json_bytes = _JSON_BASE + 2 * (text_bytes or 0) + _JSON_PER_VIEW * n_views
        planned.append(PlannedTrack(track.track_id, split, samples, samples * (
            clips.clip_frames * 2 + 44 + json_bytes + 2 * _MEMBER_OVERHEAD)))
        tags = {c: list(track.tags.get(c, ())) for c in catalog_config.categories}
        rows["track_id"].append(track.track_id)
        rows["audio"].append(track.audio)
        rows["tags"].append(json.dumps(tags, ensure_ascii=False))
        rows["tags_text"].append(tags_text(tags)[0])
    rejects += [Reject(t, "plan", "not_in_catalog",
                       "curated views name a track that is not in the catalog")
                for t in sorted(set(summary) - seen)]
    return planned, rows, rejects


def _write_plan(con, planned: pa.Table, curated: Path, target: Path) -> None:
    """The planned tracks joined with their curated views, one Parquet folder per unit."""
    con.register("planned", planned)
    shutil.rmtree(target, ignore_errors=True)
    # Views keep the curated order (view, language); the first view names the model
    # and template for the sample's provenance. The columns are schemas/shard_plan's.
    columns = ", ".join(("v." if name in _FROM_VIEWS else "p.") + name
                        for name in shard_plan_schema().names)
    con.execute(f"""COPY (
        SELECT p.unit, {columns}
        FROM planned p JOIN (
            SELECT track_id, any_value(split) AS split,
                   list(struct_pack(view_id := view_id, language := language, text := text,
                                    spans := spans) ORDER BY view_id, language) AS views,
                   arg_min(engine, view_id) AS engine, arg_min(model_id, view_id) AS model_id,
                   arg_min(template_id, view_id) AS template_id,
                   arg_min(template_hash, view_id) AS template_hash
            FROM read_parquet({sql_string(curated_glob(curated))}) GROUP BY track_id) v
        USING (track_id)
        ORDER BY p.unit, p.position
    ) TO {sql_string(target)} (FORMAT parquet, PARTITION_BY (unit),
         KV_METADATA {{{sql_string(SCHEMA_KEY.decode())}: {sql_string(SHARD_PLAN_SCHEMA_ID)}}})
    """).fetchall()


def unit_file(plan: Path, unit: str) -> Path:
    return plan / f"unit={unit}"
