"""Stage `curate`: analyse views, run the SQL rules in DuckDB, write curated and
rejected views, the swap dictionary and a report.

Output folder:
  curated/part-*.parquet     schemas/curated: views + split, tag recall, hallucinations, spans
  rejected/part-*.parquet    schemas/rejected: views + the rule and the reason
  swap_dictionary.json       schemas/swap_dictionary
  report.json, report.md     counts per rule, category and split; distributions; examples
  _analysed/                 cached descriptor analysis, one file per views file

Each rule is one SQL file in pipeline/curate/rules/ (pipeline/curate/rules_config.py),
run in name order over the rows still standing; a rule selects (row_id, reason) of the
rows it rejects, and its settings (`rules.<name>.*`, declared in its header) come in
as $parameters. Nothing is dropped without a rule and a reason.

Only the columns rules decide on enter DuckDB (RULE_EXCLUDED stay out): at 10M rows
the full views would not fit its memory and the table would spill to disk. The
outputs are then written part by part with Arrow: each part is a run of consecutive
views files, read again and given its verdicts by row id, so the outputs keep the
views files' order without sorting wide rows, and the same inputs give the same bytes.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from pipeline.curate.analysis import ROWS_PER_FILE, analyse_file, analysed_name
from pipeline.curate.dictionary import build_dictionary
from pipeline.curate.language import normalise_text
from pipeline.curate.report import write_report
from pipeline.curate.rules_config import RULES, RulesConfig, SplitsConfig, rule_values
from pipeline.curate.splits import assign_split
from pipeline.parallel import map_jobs
from pipeline.sql import sql_string
from schemas.catalog import CatalogConfig, iter_catalog, read_setting, tag_map_for
from schemas.config import Config, as_dict, setting
from schemas.problems import SchemaError
from schemas.tabular import iter_rows
from schemas.views import curated_schema, rejected_schema, views_schema

PART_ROWS = 250_000  # rows per output part, whole views files each; bounds writer memory
ROW_GROUP_ROWS = 100_000  # several row groups per part, so readers can split a part
# Views columns no rule needs, kept out of DuckDB; the outputs take them from the files.
RULE_EXCLUDED = ("tags", "raw_text", "sampling", "template_hash", "content_key")
VERDICT_COLUMNS = "row_id, split, hallucinated, rule, reason"
_PARAM = re.compile(r"\$([a-z_]+)")


@dataclass(frozen=True)
class CurateConfig(Config):
    views: Path = setting(help="Folder of views Parquet files (from `captions`).")
    catalog: Path = setting(help="The catalog the views were written from.")
    out: Path = setting(help="Folder for curated/, rejected/, the swap dictionary and the "
                        "report.")
    rules: RulesConfig = setting(factory=RulesConfig, help="Each rule's switch and "
                                 "thresholds, one section per rule file.")
    splits: SplitsConfig = setting(factory=SplitsConfig, help="How tracks without a "
                                   "split of their own are assigned one.")
    extras: Path | None = setting(None, help="YAML of extra descriptors and synonyms for "
                                  "the swap dictionary.")
    eval_sets: tuple[Path, ...] = setting((), flag="eval-set", help="Evaluation sets to "
                                          "decontaminate against (CSV, TSV, JSONL or "
                                          "Parquet with track_id, artist or caption).")
    read: CatalogConfig = read_setting()
    # with Python beside it, the stage stays under 4 GB
    memory_limit: str = setting("2.5GB", help="DuckDB memory limit.")
    threads: int = setting(0, help="DuckDB threads; 0 = all cores.")
    workers: int = setting(0, help="Analysis processes; 0 = all cores.")

    @classmethod
    def moved(cls, key: str, where: str) -> str:
        if key == "settings":  # the curation YAML of earlier versions
            return ("the curation YAML's rules: and splits: sections are sections of this "
                    "file now")
        return super().moved(key, where)

    def check(self) -> list[str]:
        problems = []
        if not re.fullmatch(r"\d+(\.\d+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)", self.memory_limit):
            problems.append(f"memory_limit {self.memory_limit!r} must look like '3GB'")
        if self.threads < 0 or self.workers < 0:
            problems.append("threads and workers must be >= 0")
        return problems

    @property
    def categories(self) -> tuple[str, ...]:
        return self.read.categories


@dataclass
class CurateStats:
    views: int = 0
    curated: int = 0
    rejected: int = 0
    by_rule: dict = field(default_factory=dict)
    catalog_seconds: float = 0.0  # reading the catalog, building the dictionary
    analysis_seconds: float = 0.0
    sql_seconds: float = 0.0  # rules and outputs
    seconds: float = 0.0


def run(config: CurateConfig) -> CurateStats:
    started = time.perf_counter()
    eval_lists = _read_eval_sets(config.eval_sets)
    out = Path(config.out)
    cache = out / "_analysed"
    cache.mkdir(parents=True, exist_ok=True)

    tracks, tags = _tracks(config, config.splits)
    dictionary_path, dictionary_hash = _write_dictionary(config, tags, out)
    catalog_done = time.perf_counter()

    jobs = _analysis_jobs(config, cache, dictionary_path, dictionary_hash)
    stats = CurateStats(catalog_seconds=round(catalog_done - started, 3))
    sizes = _analyse(jobs, config.workers)
    stats.views = sum(sizes)
    analysis_done = time.perf_counter()
    stats.analysis_seconds = round(analysis_done - catalog_done, 3)

    con = _connect(config, out)
    _load_rows(con, tracks, [job[3] for job in jobs])
    _load_eval_sets(con, eval_lists)
    stats.by_rule = _apply_rules(con, config.rules)
    stats.curated, stats.rejected = _write_outputs(
        con, [(job[3], job[1], n) for job, n in zip(jobs, sizes, strict=True)], out,
        config.categories, config.threads)
    stats.sql_seconds = round(time.perf_counter() - analysis_done, 3)
    stats.seconds = round(time.perf_counter() - started, 3)
    write_report(con, out, stats, {"rules": rule_values(config.rules),
                                   "splits": as_dict(config.splits)}, config)
    con.close()
    shutil.rmtree(out / "_duckdb_tmp", ignore_errors=True)
    return stats


def _write_dictionary(config: CurateConfig, tags: set[tuple[str, str]], out: Path
                      ) -> tuple[Path, str]:
    """The swap dictionary of the catalog's tags, written to out; its path and sha256
    (which names the analysis cache files made with it)."""
    dictionary = build_dictionary(tags, config.categories, config.extras,
                                  tag_map_for(config.catalog, config.read))
    path = out / "swap_dictionary.json"
    dictionary.save(path)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def _analysis_jobs(config: CurateConfig, cache: Path, dictionary_path: Path,
                   dictionary_hash: str) -> list[tuple]:
    """One analysis job per views file: (views file, index, dictionary, cache file,
    categories). Cache files no job names (older views or dictionary) are removed."""
    files = sorted(Path(config.views).glob("*.parquet"))
    if not files:
        raise ValueError(f"no views Parquet files in {config.views}; run `adswap captions` first")
    jobs = [(str(f), i, str(dictionary_path), str(cache / analysed_name(f, dictionary_hash)),
             config.categories) for i, f in enumerate(files)]
    targets = {Path(job[3]).name for job in jobs}
    for stale in cache.glob("*"):
        if stale.name not in targets:
            stale.unlink()
    return jobs


def _sql(con, text: str, params: dict | None = None) -> list:
    # DuckDB 2 streams results: a statement's result must be read before the next one.
    return con.execute(text, params).fetchall()


def _connect(config: CurateConfig, out: Path):
    """A DuckDB connection within the configured memory and threads, spilling to out."""
    con = duckdb.connect()
    _sql(con, f"SET memory_limit = '{config.memory_limit}'")
    _sql(con, f"SET temp_directory = {sql_string(out / '_duckdb_tmp')}")
    if config.threads:
        _sql(con, f"SET threads = {int(config.threads)}")
    return con


def _load_rows(con, tracks: pa.Table, analysed: list[str]) -> None:
    """Table `rows`: every analysed view with its track's catalog facts and no verdict
    yet; view `candidates`: the rows no rule has rejected, as the rules see them."""
    con.register("tracks_arrow", tracks)
    _sql(con, "CREATE TABLE tracks AS SELECT * FROM tracks_arrow")
    con.unregister("tracks_arrow")
    files = "[" + ", ".join(sql_string(path) for path in analysed) + "]"
    _sql(con, f"""CREATE TABLE rows AS
        SELECT a.* EXCLUDE ({", ".join(RULE_EXCLUDED + ("found", "spans"))}),
               t.track_id IS NOT NULL AS track_known,
               coalesce(t.n_tags, 0) AS track_n_tags,
               coalesce(t.min_category_tags, 0) AS track_min_category_tags,
               t.artist_norm, coalesce(t.split, 'train') AS split,
               -- a track missing from the catalog has nothing to compare with
               CASE WHEN t.track_id IS NULL THEN a.found[1:0]
                    ELSE list_filter(a.found, lambda d: NOT list_contains(
                        t.tag_keys, d.category || ':' || d.term)) END AS hallucinated,
               CAST(NULL AS VARCHAR) AS rule, CAST(NULL AS VARCHAR) AS reason
        FROM read_parquet({files}) a LEFT JOIN tracks t USING (track_id)""")
    _sql(con, """CREATE VIEW candidates AS
        SELECT *, len(hallucinated) AS n_hallucinated,
               array_to_string(list_transform(hallucinated,
                   lambda d: d.term || ' (' || d.category || ')'), ', ') AS hallucinated_text
        FROM rows WHERE rule IS NULL""")


def _apply_rules(con, rules: RulesConfig) -> dict[str, int | None]:
    """Run each enabled rule in name order, marking the rows it rejects; returns the rows
    each rule rejected (None for a rule turned off)."""
    by_rule: dict[str, int | None] = {}
    for rule in RULES:
        name, values = rule.name, rule_values(rules)[rule.name]
        if not values["enabled"]:
            by_rule[name] = None
            continue
        rule_sql = rule.sql
        params = {p: values[p] for p in set(_PARAM.findall(rule_sql))}
        _sql(con, f"CREATE TEMP TABLE hits AS SELECT row_id, any_value(reason) AS reason "
             f"FROM ({rule_sql}) GROUP BY row_id", params)
        by_rule[name] = _sql(con, "SELECT count(*) FROM hits")[0][0]
        _sql(con, f"UPDATE rows SET rule = '{name}', reason = hits.reason FROM hits "
             "WHERE rows.row_id = hits.row_id")
        _sql(con, "DROP TABLE hits")
    return by_rule


def _analyse(jobs: list, workers: int) -> list[int]:
    """Descriptor analysis of every views file, in worker processes, cached: files
    analysed by an earlier run only have their rows counted. Returns each file's rows."""
    todo = [job for job in jobs if not Path(job[3]).exists()]
    done = dict(zip([job[3] for job in todo],
                    map_jobs(analyse_file, todo, workers, "curate: analysing", "file"),
                    strict=True))
    return [done[job[3]] if job[3] in done else pq.ParquetFile(job[3]).metadata.num_rows
            for job in jobs]


TRACK_FACTS = pa.schema([
    ("track_id", pa.string()), ("artist_norm", pa.string()), ("split", pa.string()),
    ("n_tags", pa.int32()), ("min_category_tags", pa.int32()),
    ("tag_keys", pa.list_(pa.string()))])
TRACK_BATCH = 50_000  # tracks per Arrow batch: the Python lists stay small at 1M tracks


def _tracks(config: CurateConfig, splits: SplitsConfig
            ) -> tuple[pa.Table, set[tuple[str, str]]]:
    """The catalog facts the rules join on, one row per valid track. Rejected catalog
    rows were reported by `captions`; their views fall to the unknown_track rule."""
    batches: list[pa.RecordBatch] = []
    columns: dict[str, list] = {name: [] for name in TRACK_FACTS.names}
    tags: set[tuple[str, str]] = set()
    for track, _ in iter_catalog(config.catalog, config.read):
        if track is None:
            continue
        pairs = track.all_tags()
        columns["track_id"].append(track.track_id)
        columns["artist_norm"].append(track.artist.strip().lower() if track.artist else None)
        columns["split"].append(assign_split(track, splits.valid_fraction,
                                             splits.test_fraction, splits.seed))
        columns["n_tags"].append(len(pairs))
        columns["min_category_tags"].append(min(len(v) for v in track.tags.values()))
        # display forms ('R&B') against the dictionary's lower-cased terms
        columns["tag_keys"].append([f"{c}:{t.lower()}" for c, t in pairs])
        tags.update(pairs)
        if len(columns["track_id"]) == TRACK_BATCH:
            batches.append(pa.record_batch(columns, schema=TRACK_FACTS))
            columns = {name: [] for name in TRACK_FACTS.names}
    batches.append(pa.record_batch(columns, schema=TRACK_FACTS))
    table = pa.Table.from_batches(batches)
    if not table.num_rows:
        raise ValueError(f"catalog {config.catalog} has no valid track")
    return table, tags


def _read_eval_sets(paths) -> dict[str, list[tuple[str, str]]]:
    """Decontamination lists: (track id | artist | normalised caption, file name) of eval
    sets (CSV, TSV, JSONL or Parquet with any of track_id, artist, artist_id,
    caption/text columns); read before any work, so a bad file stops the stage at once.
    Song Describer numbers MTG-Jamendo's tracks and artists without their prefix and
    zeros (1350 for track_0001350), so a numeric id also stands for its MTG-Jamendo form."""
    ids, artists, texts = [], [], []
    for path in paths:
        name, problems, useful = Path(path).name, [], 0
        for row in iter_rows(path):
            found = [row.problem] if row.problem else []
            track_id, bad_id = row.text("track_id")
            artist, bad_artist = row.text("artist")
            artist_id, bad_artist_id = row.text("artist_id")
            text, bad_text = row.text("caption", "text")
            found += [p for p in (bad_id, bad_artist, bad_artist_id, bad_text) if p]
            if found:
                problems += found
                continue
            if track_id:
                ids += [(form, name) for form in _id_forms(track_id, "track", 7)]
            if artist:
                artists.append((artist.strip().lower(), name))
            if artist_id:
                artists += [(form.lower(), name) for form in _id_forms(artist_id, "artist", 6)]
            if text:
                texts.append((normalise_text(text), name))
            useful += bool(track_id or artist or artist_id or text)
        if problems:
            raise SchemaError(f"evaluation set {path} has rows that cannot be read; fix "
                              "them so every eval item is checked", problems)
        if not useful:
            raise SchemaError(f"evaluation set {path} names no track_id, artist, artist_id "
                              "or caption (or text); nothing to decontaminate against", [])
    return {"eval_tracks": ids, "eval_artists": artists, "eval_texts": texts}


def _id_forms(value: str, prefix: str, digits: int) -> list[str]:
    """An eval set's id as written, and for a number (Song Describer) also its
    MTG-Jamendo form: 1350 -> track_0001350."""
    text = value.strip()
    return [text, f"{prefix}_{int(text):0{digits}d}"] if text.isdigit() else [text]


def _load_eval_sets(con, lists: dict[str, list[tuple[str, str]]]) -> None:
    for table, column in (("eval_tracks", "track_id"), ("eval_artists", "artist"),
                          ("eval_texts", "text")):
        rows = lists[table]
        data = pa.table({column: [r[0] for r in rows], "source": [r[1] for r in rows]},
                        schema=pa.schema([(column, pa.string()), ("source", pa.string())]))
        con.register(f"{table}_arrow", data)
        _sql(con, f"CREATE TABLE {table} AS SELECT * FROM {table}_arrow")


def _parts(analysed: list[tuple[str, int, int]]) -> list[list[tuple[str, int, int]]]:
    """Consecutive analysed files (path, file index, rows) grouped into output parts of
    at most PART_ROWS rows (a larger file is a part of its own)."""
    parts: list[list[tuple[str, int, int]]] = [[]]
    part_rows = 0
    for file in analysed:
        if parts[-1] and part_rows + file[2] > PART_ROWS:
            parts.append([])
            part_rows = 0
        parts[-1].append(file)
        part_rows += file[2]
    return parts


def _write_outputs(con, analysed: list[tuple[str, int, int]], out: Path,
                   categories: tuple[str, ...], threads: int) -> tuple[int, int]:
    """curated/ and rejected/ as part-NNNNN.parquet, one pair per run of consecutive
    analysed files (path, file index, rows); each folder is swapped in whole, so a crash
    leaves the old one. Returns the curated and rejected row counts."""
    parts = _parts(analysed)
    folders = {name: out / f".{name}.tmp-{os.getpid()}" for name in ("curated", "rejected")}
    for name, folder in folders.items():
        for stale in out.glob(f".{name}.tmp-*"):  # left by a run that was killed
            shutil.rmtree(stale, ignore_errors=True)
        folder.mkdir(parents=True)
    schemas = curated_schema(categories), rejected_schema(categories)
    view_names = views_schema(categories).names
    columns = ", ".join(f'"{name}"' for name in ["row_id", *view_names, "tag_recall", "spans"])

    def write(numbered: tuple[int, list[tuple[str, int, int]]]) -> tuple[int, int]:
        number, files = numbered
        with con.cursor() as cursor:
            # a plain scan keeps the files' row order (DuckDB's insertion order)
            table = cursor.sql(f"SELECT {columns} FROM read_parquet("
                               f"[{', '.join(sql_string(path) for path, _, _ in files)}])"
                               ).to_arrow_table()
            verdicts = cursor.sql(
                f"SELECT {VERDICT_COLUMNS} FROM rows WHERE row_id >= $lo AND row_id < $hi "
                "ORDER BY row_id", params={"lo": files[0][1] * ROWS_PER_FILE,
                                           "hi": (files[-1][1] + 1) * ROWS_PER_FILE}
            ).to_arrow_table()
        if not table.column("row_id").equals(verdicts.column("row_id")):
            raise RuntimeError(f"curate: verdicts do not line up with {files[0][0]}")
        views = [table.column(name) for name in view_names]
        kept = pc.is_null(verdicts.column("rule"))
        curated = pa.Table.from_arrays(
            [*views, verdicts.column("split"), table.column("tag_recall"),
             verdicts.column("hallucinated"), table.column("spans")], schema=schemas[0])
        rejected = pa.Table.from_arrays(
            [*views, verdicts.column("rule"), verdicts.column("reason")], schema=schemas[1])
        counts = []
        for name, rows_out in (("curated", curated.filter(kept)),
                               ("rejected", rejected.filter(pc.invert(kept)))):
            pq.write_table(rows_out, folders[name] / f"part-{number:05d}.parquet",
                           row_group_size=ROW_GROUP_ROWS)
            counts.append(rows_out.num_rows)
        return counts[0], counts[1]

    totals = [0, 0]
    with ThreadPoolExecutor(threads or os.cpu_count() or 1) as pool, \
            tqdm(total=sum(n for _, _, n in analysed), desc="curate: writing", unit="row",
                 file=sys.stderr) as bar:
        for kept, dropped in pool.map(write, enumerate(parts)):
            totals[0] += kept
            totals[1] += dropped
            bar.update(kept + dropped)
    for name, folder in folders.items():
        shutil.rmtree(out / name, ignore_errors=True)
        os.replace(folder, out / name)
    return totals[0], totals[1]
