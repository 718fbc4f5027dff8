"""The catalog: one row per track, its audio, and its tags grouped by category.

Accepted inputs (all validated row by row, every problem reported with file, row, field):
- Parquet or JSONL with a `tags` column/object mapping category -> list of tags;
- CSV (and Parquet) with one `tags.<category>` column per category, tags separated by `;`;
- a `datasets` directory saved with `save_to_disk` (a DatasetDict's split names fill
  an empty `split` column).

Rows with a problem are rejected with their reason; a file-level problem (unreadable
file, missing column) raises `SchemaError`.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from schemas.atomic import atomic_path
from schemas.config import Config, setting
from schemas.problems import Problem, SchemaError, with_schema_id

CATALOG_SCHEMA_ID = "catalog/1"
DEFAULT_CATEGORIES = ("genre", "mood", "instrument")
SPLITS = ("train", "valid", "test")
TAG_SEPARATOR = ";"
# WebDataset splits a sample key at its first '.', and keys become file names, so ids
# are restricted to characters that are safe in both.
TRACK_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]{0,127}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_SPACES = re.compile(r"\s+")
_URI_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
_BAD_BYTES = re.compile("[\udc80-\udcff]")  # undecodable bytes kept by surrogateescape


def categories_setting() -> tuple[str, ...]:
    """The `categories` field every command that reads a catalog has."""
    return setting(DEFAULT_CATEGORIES, help="Tag categories, comma-separated.")


def audio_root_setting() -> Path | None:
    return setting(None, help="Folder audio paths resolve in (default: the catalog's "
                   "folder); nothing outside it is read.")


@dataclass(frozen=True)
class CatalogConfig(Config):
    categories: tuple[str, ...] = categories_setting()
    audio_root: Path | None = audio_root_setting()
    max_tags_per_category: int = setting(64, help="Most tags a track may have in one "
                                         "category; a longer list rejects the row.")
    max_tag_chars: int = setting(64, help="Longest tag, in characters.")

    def check(self) -> list[str]:
        problems = []
        if not self.categories:
            problems.append("categories must name at least one category")
        bad = [c for c in self.categories if not re.fullmatch(r"[a-z][a-z0-9_]*", c)]
        if bad:
            problems.append(f"categories must be lowercase identifiers: {bad}")
        if len(set(self.categories)) != len(self.categories):
            problems.append(f"categories repeat a name: {list(self.categories)}")
        if self.max_tags_per_category < 1:
            problems.append("max_tags_per_category must be >= 1")
        if self.max_tag_chars < 1:
            problems.append("max_tag_chars must be >= 1")
        return problems


@dataclass(frozen=True)
class ValidateConfig(Config):
    catalog: Path = setting(help="Catalog: .parquet, .csv, .jsonl or a `datasets` "
                            "directory.", argument=True)
    read: CatalogConfig = setting(help="How the catalog is read.", factory=CatalogConfig)


@dataclass(frozen=True)
class Track:
    track_id: str
    audio: str
    tags: Mapping[str, tuple[str, ...]]
    duration_s: float | None = None
    artist: str | None = None
    license: str | None = None
    split: str | None = None

    def all_tags(self) -> list[tuple[str, str]]:
        return [(cat, tag) for cat, tags in self.tags.items() for tag in tags]


@dataclass
class Catalog:
    source: str
    categories: tuple[str, ...]
    tracks: list[Track] = field(default_factory=list)
    rejects: list[Problem] = field(default_factory=list)


def catalog_schema(categories: Iterable[str] = DEFAULT_CATEGORIES) -> pa.Schema:
    tags = pa.struct([pa.field(c, pa.list_(pa.string())) for c in categories])
    return with_schema_id(
        pa.schema([
            pa.field("track_id", pa.string(), nullable=False),
            pa.field("audio", pa.string(), nullable=False),
            pa.field("duration_s", pa.float64()),
            pa.field("artist", pa.string()),
            pa.field("license", pa.string()),
            pa.field("split", pa.string()),
            pa.field("tags", tags, nullable=False),
        ]),
        CATALOG_SCHEMA_ID,
    )


def normalise_tag(tag: str) -> str:
    """Tags compare case- and whitespace-insensitively: 'Hip  Hop ' == 'hip hop'."""
    return _SPACES.sub(" ", tag).strip().lower()


def resolve_audio(audio: str, root: Path) -> Path:
    """Resolve a catalog audio entry to a local path that must lie inside `root`.

    Raises ValueError with the reason otherwise; symlinks are followed, so a link
    inside the root that points outside it is refused too.
    """
    scheme = _URI_SCHEME.match(audio)
    if scheme and scheme.group(1).lower() != "file":
        raise ValueError(f"unsupported URI scheme '{scheme.group(1)}'; "
                         "download the audio and give a local path")
    local = audio[len("file://"):] if scheme else audio
    base = _real_root(root)
    # string paths: catalogs of a million rows made pathlib's parsing a third of a read
    path = os.path.realpath(os.path.join(base, local))
    if path != base and not path.startswith(base.rstrip(os.sep) + os.sep):
        raise ValueError(f"resolves outside the audio root {base}")
    return Path(path)


@lru_cache(maxsize=64)
def _real_root(root: Path) -> str:
    return os.path.realpath(root)


def iter_catalog(path: str | Path, config: CatalogConfig = CatalogConfig()
                 ) -> Iterator[tuple[Track | None, list[Problem]]]:
    """Stream a catalog row by row: (track, []) for a valid row, (None, problems) for a
    rejected one. Memory stays flat however large the catalog (only ids are kept, to
    find duplicates)."""
    path = Path(path)
    if not path.exists():
        raise SchemaError(f"catalog {path} does not exist", [])
    root = config.audio_root or (path if path.is_dir() else path.parent)
    validator = _RowValidator(str(path), config, root)
    for row_number, row in _rows(path, config):
        yield validator.check(row_number, row)


def read_catalog(path: str | Path, config: CatalogConfig = CatalogConfig()) -> Catalog:
    """Read and validate a whole catalog file or `datasets` directory."""
    catalog = Catalog(source=str(path), categories=config.categories)
    for track, problems in iter_catalog(path, config):
        catalog.rejects.extend(problems)
        if track is not None:
            catalog.tracks.append(track)
    if not catalog.tracks:
        raise SchemaError(f"catalog {path} has no valid track", catalog.rejects)
    return catalog


def count_rows(path: str | Path) -> int | None:
    """Rows in a catalog without validating them, for progress bars (None if unknown)."""
    path = Path(path)
    if not path.is_file():
        return None
    if path.suffix.lower() == ".parquet":
        return pq.ParquetFile(path).metadata.num_rows
    if path.suffix.lower() in (".jsonl", ".ndjson", ".csv"):
        with path.open("rb") as f:
            lines = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
        return lines - (path.suffix.lower() == ".csv")
    return None


def write_catalog(tracks: Iterable[Track], path: str | Path,
                  categories: Iterable[str] = DEFAULT_CATEGORIES) -> Path:
    categories = tuple(categories)
    rows = [
        {
            "track_id": t.track_id, "audio": t.audio, "duration_s": t.duration_s,
            "artist": t.artist, "license": t.license, "split": t.split,
            "tags": {c: list(t.tags.get(c, ())) for c in categories},
        }
        for t in tracks
    ]
    table = pa.Table.from_pylist(rows, schema=catalog_schema(categories))
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return Path(path)


# --- reading ------------------------------------------------------------------------

def _rows(path: Path, config: CatalogConfig) -> Iterator[tuple[int, dict]]:
    if path.is_dir():
        yield from _dataset_rows(path)
        return
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        yield from _parquet_rows(path, config)
    elif suffix == ".csv":
        yield from _csv_rows(path, config)
    elif suffix in (".jsonl", ".ndjson"):
        yield from _jsonl_rows(path)
    else:
        raise SchemaError(
            f"catalog {path}: unknown format '{suffix}'; use .parquet, .csv, .jsonl "
            "or a `datasets` directory", [])


def _require_columns(path: Path, columns: list[str], config: CatalogConfig) -> None:
    problems = [Problem(str(path), None, c, "column is missing")
                for c in ("track_id", "audio") if c not in columns]
    has_tags = "tags" in columns or any(c.startswith("tags.") for c in columns)
    if not has_tags:
        problems.append(Problem(str(path), None, "tags",
                                "column is missing (give `tags` or `tags.<category>` columns)"))
    unknown = [c for c in columns
               if c.startswith("tags.") and c[len("tags."):] not in config.categories]
    problems += [Problem(str(path), None, c,
                         f"unknown tag category; known: {', '.join(config.categories)} "
                         "(add it with --categories)") for c in unknown]
    if problems:
        raise SchemaError(f"catalog {path} cannot be read", problems)


def _parquet_rows(path: Path, config: CatalogConfig) -> Iterator[tuple[int, dict]]:
    try:
        reader = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as err:
        raise SchemaError(f"catalog {path} is not a readable Parquet file: {err}", []) from err
    _require_columns(path, reader.schema_arrow.names, config)
    row_number = 0
    for batch in reader.iter_batches(batch_size=8192):
        for row in batch.to_pylist():
            row_number += 1
            yield row_number, row


def _decode(path: Path) -> str:
    # surrogateescape keeps undecodable bytes as lone surrogates, so the row validator
    # can name the exact row and field instead of failing the whole file.
    return path.read_bytes().decode("utf-8", errors="surrogateescape")


def _csv_rows(path: Path, config: CatalogConfig) -> Iterator[tuple[int, dict]]:
    reader = csv.DictReader(io.StringIO(_decode(path), newline=""))
    _require_columns(path, list(reader.fieldnames or []), config)
    try:
        for row_number, row in enumerate(reader, start=1):
            if None in row:  # DictReader files surplus cells under the key None
                row = {"__error__": f"has {len(row[None])} more cells than the header"}
            yield row_number, row
    except csv.Error as err:
        raise SchemaError(f"catalog {path} is not valid CSV at line {reader.line_num}: {err}",
                          []) from err


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict]]:
    row_number = 0
    for line in _decode(path).splitlines():
        if not line.strip():
            continue
        row_number += 1
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            row = {"__error__": f"not valid JSON: {err.msg} at column {err.colno}"}
        if not isinstance(row, dict):
            row = {"__error__": f"expected a JSON object, got {type(row).__name__}"}
        yield row_number, row


def _dataset_rows(path: Path) -> Iterator[tuple[int, dict]]:
    import datasets  # slow to import; only needed for this format

    try:
        loaded = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as err:
        raise SchemaError(f"catalog {path} is not a `datasets` directory: {err}", []) from err
    parts = loaded.items() if isinstance(loaded, datasets.DatasetDict) else [(None, loaded)]
    row_number = 0
    for split_name, part in parts:
        split = {"validation": "valid", "val": "valid"}.get(split_name, split_name)
        for row in part:
            row_number += 1
            if split and not row.get("split"):
                row = {**row, "split": split}
            yield row_number, row


# --- validation ---------------------------------------------------------------------

class _RowValidator:
    def __init__(self, file: str, config: CatalogConfig, root: Path):
        self.file, self.config, self.root = file, config, root
        self.first_seen: dict[str, int] = {}

    def check(self, row_number: int, row: dict) -> tuple[Track | None, list[Problem]]:
        problems: list[Problem] = []

        def problem(field_name: str | None, message: str) -> None:
            problems.append(Problem(self.file, row_number, field_name, message))

        if "__error__" in row:
            problem(None, row["__error__"])
            return None, problems
        for key, value in row.items():
            if _has_bad_bytes(value):
                problem(key, "is not valid UTF-8 text")
        if problems:
            return None, problems

        track_id = self._string(row, "track_id", problem, required=True)
        if track_id is not None:
            if not TRACK_ID_PATTERN.fullmatch(track_id):
                problem("track_id", f"'{track_id[:80]}' is not a valid id: use 1-128 letters, "
                        "digits, '_' or '-', starting with a letter or digit")
            elif track_id in self.first_seen:
                problem("track_id", f"duplicate of row {self.first_seen[track_id]}")
            else:
                self.first_seen[track_id] = row_number
        audio = self._string(row, "audio", problem, required=True)
        if audio is not None:
            try:
                resolve_audio(audio, self.root)
            except ValueError as err:
                problem("audio", f"'{audio[:200]}' {err}")
        duration = row.get("duration_s")
        if duration in ("", None):
            duration = None
        else:
            try:
                duration = float(duration)
                if not math.isfinite(duration) or duration <= 0:
                    raise ValueError
            except (TypeError, ValueError):
                problem("duration_s", f"must be a positive number of seconds, got {duration!r}")
        artist = self._string(row, "artist", problem)
        license_ = self._string(row, "license", problem)
        split = self._string(row, "split", problem)
        if split is not None and split not in SPLITS:
            problem("split", f"'{split}' is not one of {', '.join(SPLITS)}")
        tags = self._tags(row, problem)

        if problems:
            return None, problems
        return Track(track_id=track_id, audio=audio, tags=tags, duration_s=duration,
                     artist=artist, license=license_, split=split), problems

    @staticmethod
    def _string(row: dict, name: str, problem, required: bool = False) -> str | None:
        value = row.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            if required:
                problem(name, "is missing or empty")
            return None
        if not isinstance(value, str):
            problem(name, f"must be a string, got {type(value).__name__}")
            return None
        return value.strip()

    def _tags(self, row: dict, problem) -> dict[str, tuple[str, ...]]:
        tag_problems = 0

        def tag_problem(where: str, message: str) -> None:
            nonlocal tag_problems
            tag_problems += 1
            problem(where, message)

        raw: dict[str, object] = {}
        nested = row.get("tags")
        if isinstance(nested, str):
            tag_problem("tags", "must be an object of category -> list of tags, got a string")
        elif isinstance(nested, Mapping):
            raw.update(nested)
        elif nested is not None:
            tag_problem("tags",
                        f"must be an object of category -> list, got {type(nested).__name__}")
        for key, value in row.items():
            if key.startswith("tags."):
                raw[key[len("tags."):]] = value

        tags: dict[str, tuple[str, ...]] = {}
        for category, values in raw.items():
            where = f"tags.{category}"
            if category not in self.config.categories:
                if values:
                    tag_problem(where, "unknown tag category; known: "
                            f"{', '.join(self.config.categories)} (add it with --categories)")
                continue
            if values is None:
                continue
            if isinstance(values, str):
                values = values.split(TAG_SEPARATOR)
            if not isinstance(values, (list, tuple)):
                tag_problem(where, f"must be a list of tags, got {type(values).__name__}")
                continue
            if len(values) > self.config.max_tags_per_category:
                tag_problem(where, f"has {len(values)} tags; the limit is "
                        f"{self.config.max_tags_per_category} (max_tags_per_category)")
                continue
            kept: list[str] = []
            for value in values:
                if not isinstance(value, str):
                    tag_problem(where, f"tags must be strings, got {type(value).__name__}")
                    break
                tag = normalise_tag(value)
                if _CONTROL.search(tag):
                    tag_problem(where, f"tag {tag[:40]!r} contains control characters")
                elif len(tag) > self.config.max_tag_chars:
                    tag_problem(where, f"tag '{tag[:40]}...' is {len(tag)} characters; the limit "
                            f"is {self.config.max_tag_chars} (max_tag_chars)")
                elif tag and tag not in kept:
                    kept.append(tag)
            tags[category] = tuple(kept)
        if not tag_problems and not any(tags.values()):
            problem("tags", "the track has no tags in any category")
        return {c: tags.get(c, ()) for c in self.config.categories}


def _has_bad_bytes(value: object) -> bool:
    if isinstance(value, str):
        return _BAD_BYTES.search(value) is not None
    if isinstance(value, Mapping):
        return any(_has_bad_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_has_bad_bytes(v) for v in value)
    return False
