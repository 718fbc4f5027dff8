"""`adswap embed`: the embeddings of every track of a catalog or of shards, as a Parquet
folder (schemas/embeddings) that `adswap search` and `adswap serve` read.

Sources: `--shards` (the clips `adswap shards` or `import-eval` cut, one part per shard)
and/or `--catalog` (with shards: only for each track's audio path, so the page can play
it; alone: the catalog's audio files are decoded, one part per `part_tracks` tracks).
Each clip is cut into the model's input windows; a track's embedding is the normalised
mean of its windows'.

Resumable: each part is written atomically (clips, rejects, then tracks, the marker
that the part is done) and batches never cross parts, so a killed run continues where
it stopped and ends with the same bytes as an uninterrupted one. Memory holds one
batch of audio and one part's embeddings, whatever the catalog's size.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from retrieval.config import EmbedConfig
from schemas.atomic import atomic_path, write_text_atomic
from schemas.catalog import SPLITS, Track, count_rows, iter_catalog, resolve_audio
from schemas.embeddings import (
    MANIFEST_SCHEMA_ID,
    clips_schema,
    embedding_column,
    tracks_schema,
)
from schemas.sample import read_sample_json
from trainer.checkpoint import file_sha256
from trainer.inference import AudioError, Encoder, pool, read_audio, to_mono


@dataclass
class EmbedStats:
    tracks: int = 0
    clips: int = 0
    rejected: int = 0
    parts: int = 0
    parts_done_before: int = 0
    seconds: float = 0.0
    load_seconds: float = 0.0  # of `seconds`, loading the model
    manifest: dict = field(default_factory=dict)


@dataclass
class _Track:
    track_id: str
    split: str | None
    audio: str | None
    tags: dict
    tags_text: str
    clips: list[tuple[float, float]] = field(default_factory=list)  # window start, end (s)


def embed(config: EmbedConfig) -> EmbedStats:
    started = time.perf_counter()
    encoder = Encoder.from_run(config.run, config.checkpoint, config.device, config.batch_size)
    loaded = time.perf_counter() - started
    out = Path(config.out)
    root = _audio_root(config)
    settings = _settings(config, encoder)
    manifest = {"schema": MANIFEST_SCHEMA_ID, **encoder.identity,
                "model": _model_facts(encoder), "settings": settings,
                "audio_root": str(root) if root else None, "complete": False}
    _prepare(out, manifest, config.overwrite)
    stats = EmbedStats()
    parts = []
    units = _shard_units(config, encoder) if config.shards else \
        _catalog_units(config, encoder, root)
    bar = tqdm(total=_total(config), desc="embed", unit="clip" if config.shards else "track",
               mininterval=1.0)
    for name, make in units:
        done = out / "tracks" / f"{name}.parquet"
        if done.exists():
            stats.parts_done_before += 1
            bar.update(_units_in(out, name, config))
        else:
            tracks, clip_vectors, rejects = make(bar)
            _write_part(out, name, tracks, clip_vectors, rejects, config.dtype, encoder.dim)
        parts.append(_part_entry(out, name))
    bar.close()
    if not parts:
        raise ValueError("nothing to embed: no tracks in the chosen splits "
                         f"{list(config.splits) or list(SPLITS)}")
    digest = hashlib.sha256("".join(p["name"] + p["sha256"] for p in parts).encode())
    manifest.update(parts=parts, tracks=sum(p["tracks"] for p in parts),
                    clips=sum(p["clips"] for p in parts),
                    rejected=sum(p["rejected"] for p in parts),
                    content_sha256=digest.hexdigest(), complete=True)
    write_text_atomic(out / "manifest.json", json.dumps(manifest, indent=1))
    stats.tracks, stats.clips, stats.rejected = manifest["tracks"], manifest["clips"], \
        manifest["rejected"]
    stats.parts, stats.manifest = len(parts), manifest
    stats.seconds, stats.load_seconds = time.perf_counter() - started, loaded
    return stats


def _audio_root(config: EmbedConfig) -> Path | None:
    if config.catalog is None:
        return None
    root = config.read.audio_root or Path(config.catalog).parent
    return Path(os.path.realpath(root))


def _settings(config: EmbedConfig, encoder: Encoder) -> dict:
    """What decides the bytes (not where they go, nor the device)."""
    return {"shards": str(Path(config.shards).resolve()) if config.shards else None,
            "catalog": str(Path(config.catalog).resolve()) if config.catalog else None,
            "splits": list(config.splits), "dtype": config.dtype,
            "batch_size": config.batch_size, "part_tracks": config.part_tracks,
            "max_clips": config.max_clips, "categories": list(config.read.categories),
            "clip_seconds": encoder.clip_seconds, "sample_rate": encoder.sample_rate}


def _model_facts(encoder: Encoder) -> dict:
    model = encoder.model.config
    towers = {"clap": model.clap.path} if model.kind == "clap" else \
        {"audio": model.audio.kind, "text": model.text.path}
    return {"dim": encoder.dim, "sample_rate": encoder.sample_rate,
            "clip_seconds": encoder.clip_seconds, "kind": model.kind, **towers}


def _prepare(out: Path, manifest: dict, overwrite: bool) -> None:
    """Resume a run with the same settings and model; refuse (or, with overwrite, clear)
    one with others. Temporary files of a killed run are removed."""
    path = out / "manifest.json"
    if path.exists():
        old = json.loads(path.read_text(encoding="utf-8"))
        same = {k: old.get(k) for k in ("checkpoint_sha256", "settings")} == \
            {k: manifest[k] for k in ("checkpoint_sha256", "settings")}
        if not same and not overwrite:
            raise ValueError(f"{out} holds embeddings made with another model or other "
                             "settings; pass --overwrite to replace them or choose another "
                             "--out")
        if not same:
            for sub in ("tracks", "clips", "rejects", "ann"):
                shutil.rmtree(out / sub, ignore_errors=True)
    elif out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} exists and is not an embeddings folder; choose an empty "
                         "or new --out")
    for tmp in out.rglob(".*.tmp-*"):
        tmp.unlink()
    write_text_atomic(path, json.dumps(manifest, indent=1))


def _total(config: EmbedConfig) -> int | None:
    if config.shards:
        return sum(_shard_sizes(config).values())
    return count_rows(config.catalog)


def _shard_sizes(config: EmbedConfig) -> dict[str, int]:
    sizes_file = Path(config.shards) / "sizes.json"
    if not sizes_file.exists():
        raise ValueError(f"{sizes_file} is missing; run `adswap shards` (or `adswap "
                         "import-eval`) first and let it finish")
    sizes = json.loads(sizes_file.read_text(encoding="utf-8"))
    splits = config.splits or SPLITS
    return {name: n for name, n in sorted(sizes.items())
            if n > 0 and name.split("-")[0] in splits}


def _units_in(out: Path, name: str, config: EmbedConfig) -> int:
    """Progress a finished part stands for: its clips' samples (shards) or rows (catalog)."""
    if config.shards:
        return _shard_sizes(config).get(f"{name}.tar", 0)
    tracks = pq.ParquetFile(out / "tracks" / f"{name}.parquet").metadata.num_rows
    rejects = out / "rejects" / f"{name}.jsonl"
    return tracks + (len(rejects.read_text().splitlines()) if rejects.exists() else 0)


def _catalog_audio(config: EmbedConfig) -> dict[str, str]:
    """track id -> audio path, for shards embedded with --catalog."""
    return {track.track_id: track.audio for track, _ in iter_catalog(config.catalog, config.read)
            if track is not None}


def _shard_units(config: EmbedConfig, encoder: Encoder):
    import webdataset as wds

    from trainer.data import decode_audio, sample_name

    audio_paths = _catalog_audio(config) if config.catalog else {}

    def unit(url: str):
        def make(bar):
            batcher = _Batcher(encoder)
            tracks: list[_Track] = []
            for sample in wds.WebDataset([url], shardshuffle=False, empty_check=False):
                meta = read_sample_json(sample["json"], sample_name(sample))
                if meta["sample_rate"] != encoder.sample_rate:
                    raise ValueError(f"{url}: clips are {meta['sample_rate']} Hz but the model "
                                     f"takes {encoder.sample_rate} Hz; make shards at its rate")
                if not tracks or tracks[-1].track_id != meta["track_id"]:
                    tracks.append(_Track(meta["track_id"], meta["split"],
                                         audio_paths.get(meta["track_id"]), meta["tags"],
                                         meta["tags_text"]))
                for start, window in encoder.windows(decode_audio(sample)):
                    offset = meta["start_s"] + start / encoder.sample_rate
                    tracks[-1].clips.append((offset, offset + encoder.clip_seconds))
                    batcher.add(window)
                bar.update()
            return tracks, batcher.finish(), []
        return make

    for file in _shard_sizes(config):
        yield file.removesuffix(".tar"), unit(str(Path(config.shards) / file))


def _catalog_units(config: EmbedConfig, encoder: Encoder, root: Path | None):
    rows = iter_catalog(config.catalog, config.read)
    index = 0
    while True:
        chunk, problems, skipped = _next_chunk(rows, config)
        if not chunk and not problems and not skipped:
            return
        yield f"part-{index:06d}", _catalog_part(chunk, problems, skipped, encoder, root,
                                                  config)
        index += 1


def _next_chunk(rows: Iterator, config: EmbedConfig
                ) -> tuple[list[Track], list[dict], int]:
    """The next `part_tracks` valid tracks of the chosen splits, the rows rejected on the
    way (invalid catalog rows) and how many rows of other splits were passed over."""
    chunk, problems, skipped = [], [], 0
    for track, found in rows:
        if track is None:
            problems += [{"track_id": None, "reason": str(p)} for p in found]
        elif not config.splits or track.split in config.splits:
            chunk.append(track)
        else:
            skipped += 1
        if len(chunk) == config.part_tracks:
            break
    return chunk, problems, skipped


def _catalog_part(chunk: list[Track], problems: list[dict], skipped: int, encoder: Encoder,
                  root: Path, config: EmbedConfig):
    def make(bar):
        batcher = _Batcher(encoder)
        tracks, rejects = [], list(problems)
        bar.update(len(problems) + skipped)
        for track in chunk:
            try:
                data, rate = read_audio(resolve_audio(track.audio, root))
                mono = to_mono(data, rate, encoder.sample_rate)
            except (AudioError, ValueError) as err:
                rejects.append({"track_id": track.track_id, "reason": f"audio: {err}"})
                bar.update()
                continue
            tags = {c: list(t) for c, t in track.tags.items()}
            entry = _Track(track.track_id, track.split, track.audio, tags,
                           ", ".join(t for ts in tags.values() for t in ts))
            for start, window in encoder.windows(mono, config.max_clips):
                entry.clips.append((start / encoder.sample_rate,
                                    start / encoder.sample_rate + encoder.clip_seconds))
                batcher.add(window)
            tracks.append(entry)
            bar.update()
        return tracks, batcher.finish(), rejects
    return make


class _Batcher:
    """Windows embedded as soon as a batch is full, so a part's audio is never all held;
    batches start afresh in each part, so a resumed part computes what an uninterrupted
    one would."""

    def __init__(self, encoder: Encoder):
        self.encoder, self.pending, self.done = encoder, [], []

    def add(self, window: np.ndarray) -> None:
        self.pending.append(window)
        if len(self.pending) == self.encoder.batch_size:
            self.done.append(self.encoder.embed_windows(self.pending))
            self.pending = []

    def finish(self) -> np.ndarray:
        if self.pending:
            self.done.append(self.encoder.embed_windows(self.pending))
        return np.concatenate(self.done) if self.done else \
            np.zeros((0, self.encoder.dim), np.float32)


def _write_part(out: Path, name: str, tracks: list[_Track], clip_vectors: np.ndarray,
                rejects: list[dict], dtype: str, dim: int) -> None:
    clip_rows = [(t.track_id, i, start, end) for t in tracks
                 for i, (start, end) in enumerate(t.clips)]
    clips = pa.Table.from_arrays([
        pa.array([r[0] for r in clip_rows], pa.string()),
        pa.array([r[1] for r in clip_rows], pa.int32()),
        pa.array([r[2] for r in clip_rows], pa.float64()),
        pa.array([r[3] for r in clip_rows], pa.float64()),
        embedding_column(clip_vectors.reshape(-1, dim), dtype)], schema=clips_schema(dtype, dim))
    pooled, offset = [], 0
    for track in tracks:
        pooled.append(pool(clip_vectors[offset:offset + len(track.clips)]))
        offset += len(track.clips)
    vectors = np.stack(pooled) if pooled else np.zeros((0, dim), np.float32)
    table = pa.Table.from_arrays([
        pa.array([t.track_id for t in tracks], pa.string()),
        pa.array([t.split for t in tracks], pa.string()),
        pa.array([t.audio for t in tracks], pa.string()),
        pa.array([list(t.tags.items()) for t in tracks],
                 pa.map_(pa.string(), pa.list_(pa.string()))),
        pa.array([t.tags_text for t in tracks], pa.string()),
        pa.array([len(t.clips) for t in tracks], pa.int32()),
        embedding_column(vectors, dtype)], schema=tracks_schema(dtype, dim))
    _write_parquet(clips, out / "clips" / f"{name}.parquet")
    body = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rejects)
    write_text_atomic(out / "rejects" / f"{name}.jsonl", body)
    _write_parquet(table, out / "tracks" / f"{name}.parquet")  # last: the part is done


def _write_parquet(table: pa.Table, path: Path) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def _part_entry(out: Path, name: str) -> dict:
    tracks = out / "tracks" / f"{name}.parquet"
    rejects = out / "rejects" / f"{name}.jsonl"
    return {"name": name, "tracks": pq.ParquetFile(tracks).metadata.num_rows,
            "clips": pq.ParquetFile(out / "clips" / f"{name}.parquet").metadata.num_rows,
            "rejected": len(rejects.read_text(encoding="utf-8").splitlines()),
            "sha256": file_sha256(tracks)}

