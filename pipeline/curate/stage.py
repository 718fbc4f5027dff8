"""Stage `curate`: analyse views, run the SQL rules in DuckDB, write curated and
rejected views, the swap dictionary and a report.

Output folder:
  curated/part-*.parquet     schemas/curated: views + split, tag recall, hallucinations, spans
  rejected/part-*.parquet    schemas/rejected: views + the rule and the reason
  swap_dictionary.json       schemas/swap_dictionary
  report.json, report.md     counts per rule, category and split; distributions; examples

Each rule is one SQL file in pipeline/curate/rules/, run in name order over the rows
still standing; a rule selects (row_id, reason) of the rows it rejects, and its
settings come from the curation config as $parameters. Nothing is dropped without a
rule and a reason.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from tqdm import tqdm

from pipeline.curate.analysis import TrackFacts, analyse_batches
from pipeline.curate.dictionary import build_dictionary
from pipeline.curate.language import normalise_text
from pipeline.curate.report import write_report
from pipeline.curate.splits import assign_split
from schemas.atomic import atomic_path
from schemas.catalog import DEFAULT_CATEGORIES, CatalogConfig, iter_catalog
from schemas.descriptors import DescriptorMatcher
from schemas.views import curated_schema, read_table, rejected_schema, views_schema

RULES_DIR = Path(__file__).parent / "rules"
DEFAULT_SETTINGS = Path(__file__).parent / "curation.yaml"
PART_ROWS = 500_000
_PARAM = re.compile(r"\$([a-z_]+)")


@dataclass(frozen=True)
class CurateConfig:
    views: Path
    catalog: Path
    out: Path
    settings: Path = DEFAULT_SETTINGS
    extras: Path | None = None
    eval_sets: tuple[Path, ...] = ()
    categories: tuple[str, ...] = DEFAULT_CATEGORIES
    memory_limit: str = "3GB"
    threads: int = 0  # 0 = DuckDB's default (all cores)


@dataclass
class CurateStats:
    views: int = 0
    curated: int = 0
    rejected: int = 0
    by_rule: dict = field(default_factory=dict)
    seconds: float = 0.0


def load_settings(path: Path) -> dict:
    """The curation YAML, checked against the rules that exist, all problems at once."""
    try:
        body = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ValueError(f"cannot read curation settings {path}: {err}") from err
    defaults = yaml.safe_load(DEFAULT_SETTINGS.read_text(encoding="utf-8"))
    problems = []
    rules = {name: dict(values) for name, values in defaults["rules"].items()}
    for name, values in (body.get("rules") or {}).items():
        if name not in rules:
            problems.append(f"unknown rule {name!r}; rules: {', '.join(rules)}")
            continue
        unknown = set(values or {}) - set(rules[name])
        if unknown:
            problems.append(f"rule {name!r} has no settings {sorted(unknown)}")
        rules[name].update(values or {})
    splits = {**defaults["splits"], **(body.get("splits") or {})}
    if not 0 <= splits["valid_fraction"] + splits["test_fraction"] < 1:
        problems.append("splits: valid_fraction + test_fraction must be in [0, 1)")
    if problems:
        raise ValueError(f"{path}: " + "; ".join(problems))
    return {"rules": rules, "splits": splits}


def rule_files() -> list[tuple[str, Path]]:
    return [(p.stem.split("_", 1)[1], p) for p in sorted(RULES_DIR.glob("*.sql"))]


def run(config: CurateConfig) -> CurateStats:
    started = time.perf_counter()
    settings = load_settings(config.settings)
    out = Path(config.out)
    work = out / ".work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)

    tracks, tags = _track_facts(config, settings["splits"])
    dictionary = build_dictionary(tags, config.categories, config.extras)
    dictionary.save(out / "swap_dictionary.json")
    matcher = DescriptorMatcher(dictionary)

    files = sorted(Path(config.views).glob("*.parquet"))
    if not files:
        raise ValueError(f"no views Parquet files in {config.views}; run `adswap captions` first")
    stats = CurateStats()
    schema = views_schema(config.categories)
    with tqdm(total=len(files), desc="curate: analysing", unit="file", file=sys.stderr) as bar:
        for index, path in enumerate(files):
            table = read_table(str(path), schema)
            for part, analysed in enumerate(analyse_batches(table, tracks, matcher,
                                                            stats.views)):
                pq.write_table(analysed, work / f"analysed-{index:06d}-{part:04d}.parquet")
                stats.views += analysed.num_rows
            bar.update()

    con = duckdb.connect()
    # DuckDB 2 streams results: a statement's result must be read before the next one.
    con.execute(f"SET memory_limit = '{config.memory_limit}'").fetchall()
    con.execute(f"SET temp_directory = '{work / 'duckdb'}'").fetchall()
    if config.threads:
        con.execute(f"SET threads = {int(config.threads)}").fetchall()
    analysed_glob = str(work / "analysed-*.parquet")
    con.execute(f"CREATE TABLE candidates AS SELECT * FROM read_parquet('{analysed_glob}')"
                ).fetchall()
    con.execute("CREATE TABLE rejected (row_id BIGINT, rule VARCHAR, reason VARCHAR)").fetchall()
    _load_eval_sets(con, config.eval_sets)
    for name, path in rule_files():
        values = settings["rules"].get(name, {"enabled": True})
        if not values.get("enabled", True):
            stats.by_rule[name] = None
            continue
        sql = path.read_text(encoding="utf-8")
        params = {p: values[p] for p in set(_PARAM.findall(sql))}
        before = con.execute("SELECT count(*) FROM rejected").fetchall()[0][0]
        con.execute(f"INSERT INTO rejected SELECT row_id, '{name}', reason FROM ({sql})",
                    params).fetchall()
        con.execute("DELETE FROM candidates WHERE row_id IN "
                    "(SELECT row_id FROM rejected WHERE rule = ?)", [name]).fetchall()
        stats.by_rule[name] = con.execute("SELECT count(*) FROM rejected").fetchall()[0][0] - before

    view_columns = ", ".join(f'"{n}"' for n in schema.names)
    stats.curated = _write_parts(
        con, f"SELECT {view_columns}, split, tag_recall, hallucinated, spans FROM candidates "
             "ORDER BY track_id, view_id, language", curated_schema(config.categories),
        out / "curated")
    stats.rejected = _write_parts(
        con, f"SELECT {', '.join('a.' + c for c in view_columns.split(', '))}, r.rule, r.reason "
             f"FROM read_parquet('{analysed_glob}') a JOIN rejected r USING (row_id) "
             "ORDER BY a.track_id, a.view_id, a.language", rejected_schema(config.categories),
        out / "rejected")
    stats.seconds = round(time.perf_counter() - started, 3)
    write_report(con, analysed_glob, out, stats, settings, config)
    con.close()
    shutil.rmtree(work, ignore_errors=True)
    return stats


def _track_facts(config: CurateConfig, splits: dict):
    tracks: dict[str, TrackFacts] = {}
    tags: set[tuple[str, str]] = set()
    for track, _ in iter_catalog(config.catalog, CatalogConfig(categories=config.categories)):
        if track is None:
            continue  # rejected catalog rows were reported by `captions`; their views go
            # to the unknown_track rule here
        split = assign_split(track, splits["valid_fraction"], splits["test_fraction"],
                             splits["seed"])
        tracks[track.track_id] = TrackFacts(
            artist_norm=track.artist.strip().lower() if track.artist else None, split=split,
            tags=track.tags)
        tags.update(track.all_tags())
    if not tracks:
        raise ValueError(f"catalog {config.catalog} has no valid track")
    return tracks, tags


def _load_eval_sets(con, paths) -> None:
    """Decontamination lists: track ids, artists and normalised captions of eval sets
    (CSV, JSONL or Parquet with any of track_id, artist, caption/text columns)."""
    ids, artists, texts = [], [], []
    for path in paths:
        for row in _eval_rows(Path(path)):
            name = Path(path).name
            if row.get("track_id"):
                ids.append((str(row["track_id"]), name))
            if row.get("artist"):
                artists.append((str(row["artist"]).strip().lower(), name))
            text = row.get("caption") or row.get("text")
            if text:
                texts.append((normalise_text(str(text)), name))
    for table, column, rows in (("eval_tracks", "track_id", ids),
                                ("eval_artists", "artist", artists),
                                ("eval_texts", "text", texts)):
        data = pa.table({column: [r[0] for r in rows], "source": [r[1] for r in rows]},
                        schema=pa.schema([(column, pa.string()), ("source", pa.string())]))
        con.register(f"{table}_arrow", data)
        con.execute(f"CREATE TABLE {table} AS SELECT * FROM {table}_arrow").fetchall()


def _eval_rows(path: Path):
    if not path.exists():
        raise ValueError(f"evaluation set {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        yield from pq.read_table(path).to_pylist()
    elif suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as f:
            yield from csv.DictReader(f)
    elif suffix in (".jsonl", ".ndjson"):
        with path.open(encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if line.strip():
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError as err:
                        raise ValueError(f"{path}: line {number} is not JSON: {err.msg}") from err
    else:
        raise ValueError(f"evaluation set {path}: use .csv, .jsonl or .parquet")


def _write_parts(con, sql: str, schema: pa.Schema, folder: Path) -> int:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    reader = con.sql(sql).to_arrow_reader(batch_size=PART_ROWS)
    total, part = 0, 0
    for batch in reader:
        table = pa.Table.from_batches([batch]).cast(schema)
        with atomic_path(folder / f"part-{part:05d}.parquet") as tmp:
            pq.write_table(table, tmp)
        total += table.num_rows
        part += 1
    if part == 0:  # an empty but readable output
        with atomic_path(folder / "part-00000.parquet") as tmp:
            pq.write_table(schema.empty_table(), tmp)
    return total

