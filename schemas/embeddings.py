"""A catalog's embeddings: the folder `adswap embed` writes and `search`/`serve` read.

  manifest.json            run, checkpoint sha256, model facts, settings, audio root,
                           parts, counts, the content hash of all parts
  tracks/<part>.parquet    one row per track: id, split, audio path (relative to the
                           audio root), tags, the pooled track embedding
  clips/<part>.parquet     one row per model-input window: track id, window, start and
                           end in the track, its embedding
  rejects/<part>.jsonl     tracks left out, each with its reason
  ann/                     the approximate index, when built (`adswap embed --index`)

Embeddings are l2-normalised, float16 or float32, in a fixed-size list column.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from schemas.problems import Problem, SchemaError, check_arrow_schema, with_schema_id

MANIFEST_SCHEMA_ID = "embeddings/1"
TRACKS_SCHEMA_ID = "embeddings-tracks/1"
CLIPS_SCHEMA_ID = "embeddings-clips/1"
DTYPES = {"float16": pa.float16(), "float32": pa.float32()}


def embedding_type(dtype: str, dim: int) -> pa.DataType:
    return pa.list_(DTYPES[dtype], dim)


def tracks_schema(dtype: str, dim: int) -> pa.Schema:
    return with_schema_id(pa.schema([
        pa.field("track_id", pa.string(), nullable=False),
        pa.field("split", pa.string()),
        pa.field("audio", pa.string()),  # relative to the manifest's audio_root
        pa.field("tags", pa.map_(pa.string(), pa.list_(pa.string()))),
        pa.field("tags_text", pa.string()),
        pa.field("clips", pa.int32(), nullable=False),
        pa.field("embedding", embedding_type(dtype, dim), nullable=False),
    ]), TRACKS_SCHEMA_ID)


def clips_schema(dtype: str, dim: int) -> pa.Schema:
    return with_schema_id(pa.schema([
        pa.field("track_id", pa.string(), nullable=False),
        pa.field("clip_index", pa.int32(), nullable=False),
        pa.field("start_s", pa.float64(), nullable=False),
        pa.field("end_s", pa.float64(), nullable=False),
        pa.field("embedding", embedding_type(dtype, dim), nullable=False),
    ]), CLIPS_SCHEMA_ID)


def embedding_column(matrix: np.ndarray, dtype: str) -> pa.FixedSizeListArray:
    values = np.ascontiguousarray(matrix, dtype=np.dtype(dtype))
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), matrix.shape[1])


def read_manifest(folder: Path) -> dict:
    """The manifest of a finished embeddings folder, or a SchemaError saying what to run."""
    path = Path(folder) / "manifest.json"
    if not path.exists():
        raise SchemaError(f"{folder} is not an embeddings folder (no manifest.json); build "
                          "one with `adswap embed RUN --shards DIR --out FOLDER`", [])
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise SchemaError(f"{path} is unreadable: {err}", []) from err
    if manifest.get("schema") != MANIFEST_SCHEMA_ID:
        raise SchemaError(f"{path} has schema {manifest.get('schema')!r}; this version reads "
                          f"'{MANIFEST_SCHEMA_ID}' (rebuild it with `adswap embed`)", [])
    if not manifest.get("complete"):
        raise SchemaError(f"{folder} is unfinished: `adswap embed` was stopped before the "
                          "end; rerun the same command to finish it", [])
    return manifest


def read_tracks(folder: Path, manifest: dict) -> pa.Table:
    """Every part's tracks, in part order, checked against the schema."""
    expected = tracks_schema(manifest["settings"]["dtype"], manifest["model"]["dim"])
    tables, problems = [], []
    for part in manifest["parts"]:
        path = Path(folder) / "tracks" / f"{part['name']}.parquet"
        if not path.exists():
            problems.append(Problem(str(path), None, None, "is missing"))
            continue
        table = pq.read_table(path)
        found = check_arrow_schema(table.schema, expected, str(path))
        problems += found
        if not found:
            tables.append(table.select(expected.names))
    if problems:
        raise SchemaError(f"{folder}: embeddings do not match the manifest; rebuild them "
                          "with `adswap embed`", problems)
    if not tables:
        return expected.empty_table()
    return pa.concat_tables(tables)


def matrix(column: pa.ChunkedArray, dim: int) -> np.ndarray:
    """A fixed-size list column as a float32 [rows, dim] matrix."""
    flat = pa.concat_arrays([c.flatten() for c in column.chunks]) if column.num_chunks \
        else pa.array([], pa.float32())
    return flat.to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, dim)
