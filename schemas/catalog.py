"""The catalog: one row per track, its audio, and its tags grouped by category.

Accepted inputs: every format of schemas/catalog_readers/ (adswap's own Parquet, CSV,
JSONL or `datasets` folder; MTG-Jamendo; MagnaTagATune; one module each), recognised
from the file or chosen with `CatalogConfig.format`, all validated row by row here,
every problem reported with file, row and field.

A tag map (`schemas/tagmap`; by default the bundled one of the format) turns raw
tags into canonical tags as rows are read, so every stage sees the same tags; each
track keeps its raw tags. Rows with a problem are rejected with their reason; a
file-level problem (unreadable file, missing column, bad tag map) raises `SchemaError`.
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from schemas.atomic import atomic_path
from schemas.catalog_readers import NATIVE, READERS, formats_help, recognise
from schemas.config import Config, setting
from schemas.problems import Problem, SchemaError, with_schema_id
from schemas.tagmap import Outcome, TagMap, load_tag_map, normalise_tag

CATALOG_SCHEMA_ID = "catalog/1"
DEFAULT_CATEGORIES = ("genre", "mood", "instrument")
SPLITS = ("train", "valid", "test")
TAG_SEPARATOR = ";"
# WebDataset splits a sample key at its first '.', and keys become file names, so ids
# are restricted to characters that are safe in both.
TRACK_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]{0,127}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_URI_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
_BAD_BYTES = re.compile("[\udc80-\udcff]")  # undecodable bytes kept by surrogateescape
CATALOG_FORMATS = ("auto", *READERS)
NO_TAG_MAP = "none"
_TAG_CACHE_LIMIT = 200_000  # distinct raw tags remembered per read; vocabularies are smaller


def categories_setting() -> tuple[str, ...]:
    """The `categories` setting of a catalog reader."""
    return setting(DEFAULT_CATEGORIES, help="Tag categories the run uses; tags of other "
                   "categories are refused, or dropped when a tag map declares them.")


@dataclass(frozen=True)
class CatalogConfig(Config):
    categories: tuple[str, ...] = categories_setting()
    audio_root: Path | None = setting(None, help="Folder relative audio paths resolve in "
                                      "(default: the catalog's folder); nothing outside it "
                                      "is read.")
    max_tags_per_category: int = setting(64, help="A row with more raw tags than this in "
                                         "one category is rejected.")
    max_tag_chars: int = setting(64, help="A tag longer than this is rejected.")
    format: str = setting("auto", choices=CATALOG_FORMATS, help="Catalog format: auto "
                          "(recognised from the file), or " + formats_help() + ".")
    # a string, not None: on the command line 'none' would read as null, the default
    tag_map: str = setting("", help="Tag map (YAML or CSV) applied as the catalog is read. "
                           "Empty: the bundled map of its format (the public formats have "
                           "one; adswap catalogs none); 'none' reads the raw tags.")
    min_tag_tracks: int = setting(1, help="Tags on fewer tracks than this are dropped as "
                                  "the catalog is read, before views are planned (1 keeps "
                                  "every tag; above 1 costs one more pass over the "
                                  "catalog).")

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
        if self.min_tag_tracks < 1:
            problems.append("min_tag_tracks must be >= 1")
        if self.tag_map not in ("", NO_TAG_MAP):
            if not Path(self.tag_map).is_file():
                problems.append(f"tag_map: {self.tag_map} does not exist")
            elif not problems:
                try:  # a bad map fails here, every problem listed with its line and tag
                    load_tag_map(self.tag_map, self.categories)
                except SchemaError as err:
                    problems.append(f"tag_map: {err}")
        return problems


def read_setting() -> CatalogConfig:
    """The `read` section of every config that reads a catalog: all stages read it
    through one CatalogConfig, so all of them see the same tracks and tags."""
    return setting(factory=CatalogConfig, help="How the catalog is read: categories, "
                   "audio root, format, tag map, min_tag_tracks.")


@dataclass(frozen=True)
class ValidateConfig(Config):
    catalog: Path = setting(help="Catalog, in any format --format names (recognised from "
                            "the file).", argument=True)
    read: CatalogConfig = read_setting()


@dataclass(frozen=True)
class Track:
    track_id: str
    audio: str
    tags: Mapping[str, tuple[str, ...]]
    duration_s: float | None = None
    artist: str | None = None
    license: str | None = None
    split: str | None = None
    # The tags as the catalog wrote them (raw category -> tags, before the tag map and
    # min_tag_tracks), for provenance; None for tracks built in code. Not compared: a
    # track is its tags, however they were spelled.
    raw_tags: Mapping[str, tuple[str, ...]] | None = field(default=None, compare=False)

    def all_tags(self) -> list[tuple[str, str]]:
        return [(cat, tag) for cat, tags in self.tags.items() for tag in tags]


@dataclass
class Catalog:
    source: str
    categories: tuple[str, ...]
    tracks: list[Track] = field(default_factory=list)
    rejects: list[Problem] = field(default_factory=list)
    format: str = NATIVE
    tag_map: TagMap | None = None


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


def catalog_format(path: str | Path, config: CatalogConfig) -> str:
    """The format a catalog is read in: the configured one, or recognised from it."""
    if config.format != "auto":
        return config.format
    return recognise(Path(path))


def tag_map_for(path: str | Path, config: CatalogConfig) -> TagMap | None:
    """The tag map a read applies: the configured file, else the bundled map of the
    catalog's format, else none."""
    if config.tag_map == NO_TAG_MAP:
        return None
    if config.tag_map:
        return load_tag_map(config.tag_map, config.categories)
    bundled = READERS[catalog_format(path, config)].tag_map
    return load_tag_map(bundled, config.categories) if bundled else None


def iter_catalog(path: str | Path, config: CatalogConfig = CatalogConfig()
                 ) -> Iterator[tuple[Track | None, list[Problem]]]:
    """Stream a catalog row by row: (track, []) for a valid row, (None, problems) for a
    rejected one. Memory stays flat however large the catalog (only ids are kept, to
    find duplicates, and with min_tag_tracks > 1 the tag counts of a first pass)."""
    path = Path(path)
    if not path.exists():
        raise SchemaError(f"catalog {path} does not exist", [])
    root = config.audio_root or (path if path.is_dir() else path.parent)
    fmt = catalog_format(path, config)
    tag_map = tag_map_for(path, config)
    rare = _rare_tags(path, config, root, fmt, tag_map) if config.min_tag_tracks > 1 else None
    validator = _RowValidator(str(path), config, root, tag_map, rare)
    for row_number, row in _rows(path, config, fmt, tag_map is not None):
        yield validator.check(row_number, row)


def _rare_tags(path: Path, config: CatalogConfig, root: Path, fmt: str,
               tag_map: TagMap | None) -> frozenset[tuple[str, str]]:
    """(category, tag key) of the tags on fewer than min_tag_tracks valid tracks."""
    counts: Counter = Counter()
    validator = _RowValidator(str(path), config, root, tag_map, None)
    for row_number, row in _rows(path, config, fmt, tag_map is not None):
        track, _ = validator.check(row_number, row)
        if track is not None:
            counts.update((c, normalise_tag(t)) for c, t in track.all_tags())
    return frozenset(key for key, n in counts.items() if n < config.min_tag_tracks)


def read_catalog(path: str | Path, config: CatalogConfig = CatalogConfig()) -> Catalog:
    """Read and validate a whole catalog file or `datasets` directory."""
    catalog = Catalog(source=str(path), categories=config.categories,
                      format=catalog_format(path, config) if Path(path).exists()
                      else NATIVE,
                      tag_map=tag_map_for(path, config) if Path(path).exists() else None)
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
    if path.suffix.lower() in (".jsonl", ".ndjson", ".csv", ".tsv"):
        with path.open("rb") as f:
            lines = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
        return lines - (path.suffix.lower() in (".csv", ".tsv"))  # the header
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

def _rows(path: Path, config: CatalogConfig, fmt: str, mapped: bool
          ) -> Iterator[tuple[int, dict]]:
    yield from READERS[fmt].rows(path, config, mapped)


# --- validation ---------------------------------------------------------------------

class _RowValidator:
    def __init__(self, file: str, config: CatalogConfig, root: Path, tag_map: TagMap | None,
                 rare: frozenset[tuple[str, str]] | None):
        self.file, self.config, self.root = file, config, root
        self.tag_map, self.rare = tag_map, rare or frozenset()
        self.categories = frozenset(config.categories)
        self.first_seen: dict[str, int] = {}
        # (raw category, raw value) -> problem text, None (empty), or (category, display,
        # key) with category None for a dropped tag: a catalog repeats a few thousand tags
        # millions of times, so each is normalised, checked and mapped once.
        self._resolved: dict[tuple[str, str], str | tuple | None] = {}

    def check(self, row_number: int, row: dict) -> tuple[Track | None, list[Problem]]:
        problems: list[Problem] = []

        def problem(field_name: str | None, message: str) -> None:
            problems.append(Problem(self.file, row_number, field_name, message))

        if "__error__" in row:
            problem(row.get("__field__"), row["__error__"])
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
        tags, raw_tags = self._tags(row, problem)

        if problems:
            return None, problems
        return Track(track_id=track_id, audio=audio, tags=tags, duration_s=duration,
                     artist=artist, license=license_, split=split, raw_tags=raw_tags), problems

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

    def _tags(self, row: dict, problem) -> tuple[dict[str, tuple[str, ...]],
                                                dict[str, tuple[str, ...]]]:
        tag_problems = 0

        def tag_problem(where: str, message: str) -> None:
            nonlocal tag_problems
            tag_problems += 1
            problem(where, message)

        tags: dict[str, list[str]] = {c: [] for c in self.config.categories}
        seen: set[tuple[str, str]] = set()
        raw_tags: dict[str, tuple[str, ...]] = {}
        removed = Counter()  # why tags went: the message of a track left with none
        for category, values in _raw_tag_columns(row, tag_problem).items():
            if values is None:
                continue
            kept_raw = self._category_tags(category, values, tag_problem, tags, seen, removed)
            if kept_raw is not None:
                raw_tags[category] = kept_raw
        if not tag_problems and not any(tags.values()):
            why = "; ".join(f"{n} {reason}" for reason, n in removed.items())
            problem("tags", "the track has no tags in any category"
                    + (f" ({why})" if why else ""))
        return {c: tuple(v) for c, v in tags.items()}, raw_tags

    def _category_tags(self, category: str, values: object, tag_problem,
                       tags: dict[str, list[str]], seen: set[tuple[str, str]],
                       removed: Counter) -> tuple[str, ...] | None:
        """Adds one raw category's mapped tags to `tags`; returns the raw tags it kept,
        or None when the whole category is refused."""
        where = f"tags.{category}"
        if isinstance(values, str):
            values = values.split(TAG_SEPARATOR)
        if not isinstance(values, (list, tuple)):
            tag_problem(where, f"must be a list of tags, got {type(values).__name__}")
            return None
        if len(values) > self.config.max_tags_per_category:
            tag_problem(where, f"has {len(values)} tags; the limit is "
                        f"{self.config.max_tags_per_category} (max_tags_per_category)")
            return None
        kept_raw: list[str] = []
        outside: str | None = None
        for value in values:
            if not isinstance(value, str):
                tag_problem(where, f"tags must be strings, got {type(value).__name__}")
                break
            resolved = self._resolved.get((category, value), False)
            if resolved is False:
                resolved = self._resolve(category, value)
            if resolved is None:
                continue
            if isinstance(resolved, str):
                tag_problem(where, resolved)
                continue
            kept_raw.append(value.strip())
            outside = self._place_tag(*resolved, tags, seen, removed) or outside
        if outside is not None:
            moved = "" if outside == category else f"its tags go to '{outside}', which is "
            tag_problem(where, f"{moved}unknown tag category; known: "
                        f"{', '.join(self.config.categories)} (add it with --categories)")
        return tuple(kept_raw)

    def _place_tag(self, target: str | None, display: str, key: str,
                   tags: dict[str, list[str]], seen: set[tuple[str, str]],
                   removed: Counter) -> str | None:
        """Adds one mapped tag to its category once, or counts why it went; returns its
        category when that is unknown to both the run and the tag map."""
        if target is None:
            removed["dropped by the tag map"] += 1
        elif target not in self.categories:
            if self.tag_map is not None and target in self.tag_map.declared:
                removed[f"in category {target}, which this run does not use"] += 1
            else:
                return target
        elif (target, key) in self.rare:
            removed[f"on fewer than {self.config.min_tag_tracks} tracks "
                    "(min_tag_tracks)"] += 1
        elif (target, key) not in seen:
            seen.add((target, key))
            tags[target].append(display)
        return None

    def _resolve(self, category: str, value: str) -> str | tuple | None:
        """Check, normalise and map one raw tag (cached per raw category and value)."""
        tag = normalise_tag(value)
        if _CONTROL.search(tag):
            resolved = f"tag {tag[:40]!r} contains control characters"
        elif len(tag) > self.config.max_tag_chars:
            resolved = (f"tag '{tag[:40]}...' is {len(tag)} characters; the limit "
                        f"is {self.config.max_tag_chars} (max_tag_chars)")
        elif not tag:
            resolved = None
        else:
            outcome = self.tag_map.resolve(category, tag) if self.tag_map is not None \
                else Outcome("unmapped", category, tag)
            resolved = (outcome.category, outcome.tag,
                        None if outcome.tag is None else normalise_tag(outcome.tag))
        if len(self._resolved) >= _TAG_CACHE_LIMIT:
            self._resolved.clear()
        self._resolved[(category, value)] = resolved
        return resolved


def _raw_tag_columns(row: dict, tag_problem) -> dict[str, object]:
    """A row's raw tags by category, from a `tags` object and from `tags.<category>`
    columns (a later column replaces the object's category)."""
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
    return raw


def _has_bad_bytes(value: object) -> bool:
    if isinstance(value, str):
        return _BAD_BYTES.search(value) is not None
    if isinstance(value, Mapping):
        return any(_has_bad_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_has_bad_bytes(v) for v in value)
    return False
