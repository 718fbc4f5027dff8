"""Stage `captions`: plan views (Drop), prompt an engine (Augment), write Parquet shards.

Output folder:
  views-r{rank}-of{world}-{chunk}.parquet   schemas/views, one row per (track, view, language)
  _layout.json                              chunking settings; a rerun must match them
  _stats/r{rank}-of{world}.json             counts, tokens, time and failures of the last run

The catalog is streamed; its valid tracks are split as tracks[rank::world_size], then
into chunks of `chunk_tracks` (rejected catalog rows are counted in the stats). A
chunk file is written atomically once its views are generated, and doubles as the
chunk's done marker: a rerun reads the content keys already on disk and generates only
the views whose key is missing, so a killed run resumes without duplicating rows, and
a changed prompt, model or sampling setting regenerates exactly the views it affects.
Requests that failed (after the engine's retries) are left out and retried next time.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow.parquet as pq
from tqdm import tqdm

from pipeline.captions.engine_api import Result
from pipeline.captions.engines import ENGINES, Engine, EngineConfig, Request, Sampling, make_engine
from pipeline.captions.faithful import BannedWords, FaithfulConfig, build_banned_words
from pipeline.captions.memory import peak_resident_mb
from pipeline.captions.models import default_cache_dir, model_identity
from pipeline.captions.parse import MAX_WORDS, parse_caption
from pipeline.captions.plan import DropConfig, plan_views
from pipeline.captions.prompts import DEFAULT_TEMPLATE, LANGUAGES, Template, load_template
from pipeline.captions.ray_executor import ActorsConfig
from pipeline.captions.worker import EngineWorkerDied, WorkerEngine
from pipeline.ray_cluster import executor_setting
from pipeline.sharding import check_rank, rank_setting, resolve_rank, world_size_setting
from schemas.atomic import atomic_path, write_text_atomic
from schemas.catalog import CatalogConfig, Track, count_rows, iter_catalog, read_setting
from schemas.config import Config, setting
from schemas.problems import SchemaError
from schemas.views import View, read_table, records_to_table, table_to_records, views_schema


@dataclass(frozen=True)
class CaptionsConfig(Config):
    catalog: Path = setting(help="Catalog to caption (see `adswap validate`).")
    out: Path = setting(help="Folder for the views Parquet shards.")
    read: CatalogConfig = read_setting()
    template: str = setting(DEFAULT_TEMPLATE, help="Prompt template id or YAML path.")
    languages: tuple[str, ...] = setting(("en",), help="Language codes, "
                                         f"comma-separated; known: {', '.join(LANGUAGES)}.")
    drop: DropConfig = setting(factory=DropConfig, help="View Dropout planning.")
    sampling: Sampling = setting(factory=Sampling, help="LLM sampling.")
    engine: EngineConfig = setting(factory=EngineConfig, help="The caption engine.")
    faithful: FaithfulConfig = setting(factory=FaithfulConfig, help="Faithful decoding "
                                       "(banned words).")
    chunk_tracks: int = setting(128, help="Tracks per output file (a unit of resume).")
    # Enough to fill a GPU batch, few enough that the progress bar moves.
    batch_requests: int = setting(256, help="Requests handed to the engine at once.")
    rank: int | None = rank_setting()
    world_size: int | None = world_size_setting()
    include_test: bool = setting(False, help="Also caption tracks of the catalog's test "
                                 "split. Off: test tracks need reference captions only, and "
                                 "LLM captions of them must not reach training.")
    max_words: int = setting(MAX_WORDS, help="Captions longer than this are flagged "
                             "too_long.")
    cache_dir: Path = setting(factory=default_cache_dir, help="Where the bundled model "
                              "is converted to ($ADSWAP_CACHE moves it).")
    executor: str = executor_setting()
    ray: ActorsConfig = setting(factory=ActorsConfig, help="The Ray cluster and its engine "
                                "actors (executor ray).")

    def check(self) -> list[str]:
        problems = check_rank(self)
        unknown = [code for code in self.languages if code not in LANGUAGES]
        if unknown or not self.languages:
            problems.append(f"languages: unknown codes {unknown}; known: "
                            f"{', '.join(LANGUAGES)}")
        if len(set(self.languages)) != len(self.languages):
            problems.append("languages repeat a code")
        supported = self.engine.spec.languages if self.engine.engine in ENGINES else None
        beyond = [code for code in self.languages if code in LANGUAGES and supported
                  and code not in supported]
        if beyond:
            problems.append(f"languages: the {self.engine.engine} engine writes "
                            f"{', '.join(supported)}, not {', '.join(beyond)}; an LLM "
                            "engine writes every known language")
        if self.chunk_tracks < 1:
            problems.append("chunk_tracks must be >= 1")
        if self.batch_requests < 1:
            problems.append("batch_requests must be >= 1")
        if self.max_words < 1:
            problems.append("max_words must be >= 1")
        return problems

    @property
    def categories(self) -> tuple[str, ...]:
        return self.read.categories


@dataclass
class CaptionStats:
    tracks: int = 0
    chunks: int = 0
    chunks_skipped: int = 0
    views_planned: int = 0
    views_reused: int = 0
    views_generated: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0       # of those, served by the engine's prefix cache
    completion_tokens: int = 0
    seconds: float = 0.0
    catalog_rejects: int = 0
    test_skipped: int = 0
    banned_words_cut: int = 0           # banned words a server's caps left unsent
    peak_rss_mb: int = 0                # this process's highest RSS so far, plus its
                                        # engine workers' (or Ray actors') highest
    flags: Counter = field(default_factory=Counter)
    failure_examples: list[str] = field(default_factory=list)
    reject_examples: list[str] = field(default_factory=list)
    executor: str = "local"
    actors: int = 0                     # Ray actors started (executor ray)
    actor_restarts: int = 0             # actors that died during a chunk, replaced; the
                                        # chunk was redone
    actor_start_failures: int = 0       # actors whose engine did not start
    failed_chunks: list[str] = field(default_factory=list)  # given up, left for a rerun


@dataclass(frozen=True)
class _Planned:
    track: Track
    view_id: int
    language: str
    tags: dict[str, tuple[str, ...]]
    key: str

    @property
    def request_id(self) -> str:
        return f"{self.track.track_id}/{self.view_id}/{self.language}"


class _Identity:
    """What a view's content key depends on besides the track: engine, model, prompt."""

    def __init__(self, config: CaptionsConfig, template: Template,
                 banned: BannedWords | None):
        self.engine = config.engine.engine
        if config.engine.spec.uses_model:
            self.model_id, self.revision = model_identity(config.engine.model,
                                                          config.engine.revision)
        else:  # its rules are its model: the class says which version
            engine = config.engine.spec.engine
            self.model_id, self.revision = engine.model_id, engine.model_revision
        self.template = template
        self.sampling = _sampling_json(config, banned)
        self.seed = config.drop.seed

    def key(self, track_id: str, view_id: int, language: str, tags: dict) -> str:
        # Fields joined by a separator no field can contain (catalog rejects control
        # characters), cheaper than JSON at tens of thousands of views per second.
        tag_text = "\x1e".join(f"{c}={chr(0x1d).join(v)}" for c, v in tags.items())
        body = "\x1f".join((
            track_id, str(view_id), language, tag_text, self.template.content_hash,
            self.engine, self.model_id, str(self.revision), self.sampling, str(self.seed)))
        return hashlib.sha256(body.encode()).hexdigest()


def _sampling_json(config: CaptionsConfig, banned: BannedWords | None) -> str:
    """The sampling settings as rows record them; faithful decoding changes what is
    sampled, so its dictionary fingerprint is part of them (and of the content key)."""
    if banned is None:
        return config.sampling.to_json()
    return json.dumps({**json.loads(config.sampling.to_json()),
                       "banned_words": banned.fingerprint}, sort_keys=True)


def chunk_path(out: Path, rank: int, world_size: int, chunk: int) -> Path:
    return out / f"views-r{rank:05d}-of{world_size:05d}-{chunk:06d}.parquet"


def run(config: CaptionsConfig, engine_factory=make_engine) -> CaptionStats:
    started = time.perf_counter()
    config = resolve_rank(config)
    out = Path(config.out)
    template = load_template(config.template)
    banned = build_banned_words(config.catalog, config.categories, config.faithful) \
        if config.faithful.enabled and config.engine.spec.uses_model else None
    identity = _Identity(config, template, banned)
    _check_layout(out, config)
    stats = CaptionStats(executor=config.executor)
    per_track, total = _views_expected(config)
    with tqdm(total=total, desc="captions", unit="view", file=sys.stderr) as bar:
        context = _Context(config, template, banned, views_schema(config.categories), stats,
                           bar, started)
        chunks = _chunks_to_do(context, identity, per_track)
        if config.executor == "ray":
            _generate_on_ray(chunks, context, engine_factory)
        else:
            _generate_locally(chunks, context, engine_factory)
        bar.total = bar.n  # the template engine's estimate counted test and rejected rows
        bar.refresh()
    if stats.tracks == 0 and config.rank == 0:
        raise ValueError(f"catalog {config.catalog} has no valid track to caption "
                         f"({stats.catalog_rejects} rejected rows, {stats.test_skipped} "
                         "test-split tracks skipped: --include-test captions them)")
    _remove_stale_chunks(out, config, stats.chunks)
    stats.seconds = round(time.perf_counter() - started, 3)
    _write_stats(out, config, identity, stats)
    return stats


@dataclass(frozen=True)
class _Context:
    """What every chunk's generation and writing reads, whichever executor runs it."""

    config: CaptionsConfig
    template: Template
    banned: BannedWords | None
    schema: object
    stats: CaptionStats
    bar: tqdm
    started: float


@dataclass
class _ChunkWork:
    """A chunk with views to generate: its file, its plan, the rows already in it."""

    path: Path
    planned: list[_Planned]
    existing: dict[str, View]
    todo: list[_Planned]


def _chunks_to_do(context: _Context, identity: _Identity,
                  per_track: int) -> Iterator[_ChunkWork]:
    """This rank's chunks in order, planned; those whose views are all on disk are
    counted and skipped, the others yielded with the views they lack."""
    config, stats, bar = context.config, context.stats, context.bar
    for index, chunk in enumerate(_my_chunks(config, stats)):
        stats.tracks += len(chunk)
        stats.chunks += 1
        planned = _plan_chunk(chunk, config, identity)
        stats.views_planned += len(planned)
        path = chunk_path(Path(config.out), config.rank, config.world_size, index)
        existing = _existing_rows(path, context.schema)
        todo = [p for p in planned if p.key not in existing]
        if bar.total is not None:
            # the bar counts the work to do: views already on disk are done (so the
            # rate, and the ETA, are those of generation alone), and the estimate
            # without an LLM counted views that tracks with few tag subsets lack
            planned_before = len(planned) if config.engine.spec.uses_model \
                else per_track * len(chunk)
            bar.total -= planned_before - len(todo)
            bar.refresh()
        if not todo and len(existing) == len(planned):
            stats.chunks_skipped += 1
            stats.views_reused += len(planned)
            continue
        yield _ChunkWork(path, planned, existing, todo)


def _generate_locally(chunks: Iterator[_ChunkWork], context: _Context,
                      engine_factory) -> None:
    session = _EngineSession(engine_factory, context.config, context.stats)
    with session:
        for work in chunks:
            engine = session.engine()
            new_rows = _generate_batches(engine, work.todo, context)
            _write_chunk(work, new_rows, context)
    context.stats.peak_rss_mb = _peak_rss_mb(session.started)


def _generate_on_ray(chunks: Iterator[_ChunkWork], context: _Context,
                     engine_factory) -> None:
    """The chunks' requests built here, generated by Ray actors, written here."""
    from pipeline.captions.ray_executor import Chunk, EngineJob, generate_on_ray

    config, stats = context.config, context.stats

    def done(chunk: Chunk, results: list, engine: tuple, actor_peak_mb: float) -> None:
        work = chunk.payload
        new_rows = _rows(work.todo, chunk.requests, results, engine, context)
        _write_chunk(work, new_rows, context)
        stats.peak_rss_mb = round(peak_resident_mb() + actor_peak_mb)
        _show_progress(context, len(chunk.requests))

    def failed(chunk: Chunk, why: str) -> None:
        stats.failures += len(chunk.requests)
        if len(stats.failure_examples) < 20:
            stats.failure_examples.append(f"{chunk.name}: {len(chunk.requests)} views: {why}")
        print(f"captions: {chunk.name} failed {config.ray.attempts} times ({why}); it is "
              "left for the next run", file=sys.stderr)

    first = next(chunks, None)
    if first is None:  # every view is on disk: no cluster to start
        return
    job = EngineJob(engine_factory, config.engine, config.cache_dir, config.sampling,
                    config.batch_requests)
    report = generate_on_ray(
        (Chunk(work.path.name, _requests(work.todo, context), work)
         for work in itertools.chain([first], chunks)),
        job, config.ray, done, failed)
    stats.actors, stats.actor_restarts = report.actors, report.actor_restarts
    stats.actor_start_failures = report.start_failures
    stats.failed_chunks = report.failed_chunks
    stats.peak_rss_mb = round(peak_resident_mb() + report.peak_rss_mb)


def _write_chunk(work: _ChunkWork, new_rows: dict[str, View], context: _Context) -> None:
    rows = _merge_rows(work.planned, work.existing, new_rows, context.stats)
    with atomic_path(work.path) as tmp:
        pq.write_table(records_to_table(rows, context.schema), tmp)


def _views_expected(config: CaptionsConfig) -> tuple[int, int | None]:
    """Views planned per track at most, and this rank's total for the progress bar
    (None when the catalog's rows cannot be counted without reading it). With an LLM
    the views of this rank's tracks are planned first, in one pass over the catalog
    (the test split and rejected rows left out, and tracks with fewer tag subsets than
    views given their own count), so the total and the ETA are the work to be done;
    the template engine, done in seconds, is given an estimate from the rows."""
    per_track = (config.drop.n_views + config.drop.full_view) * len(config.languages)
    if not config.engine.spec.uses_model:
        rows = count_rows(config.catalog)
        return per_track, None if rows is None else per_track * len(
            range(config.rank, rows, config.world_size))
    # the tracks the run will take, chosen as it chooses them (its stats are its own)
    total = sum(len(plan_views(track.track_id, track.tags, config.drop))
                for chunk in _my_chunks(config, CaptionStats()) for track in chunk)
    return per_track, total * len(config.languages)


def _plan_chunk(chunk: list[Track], config: CaptionsConfig,
                identity: _Identity) -> list[_Planned]:
    return [
        _Planned(track, view_id, language, tags,
                 identity.key(track.track_id, view_id, language, tags))
        for track in chunk
        for view_id, tags in enumerate(plan_views(track.track_id, track.tags, config.drop))
        for language in config.languages
    ]


def _generate_batches(engine: Engine, todo: list[_Planned],
                      context: _Context) -> dict[str, View]:
    """Generates a chunk's missing views in batches of `batch_requests`, so the
    progress bar and its rates move while a large chunk is under way."""
    new_rows: dict[str, View] = {}
    for start in range(0, len(todo), context.config.batch_requests):
        batch = todo[start:start + context.config.batch_requests]
        requests = _requests(batch, context)
        results = engine.generate(requests, context.config.sampling)
        identity = (engine.name, engine.model_id, engine.model_revision)
        new_rows.update(_rows(batch, requests, results, identity, context))
        context.stats.peak_rss_mb = _peak_rss_mb(engine)
        _show_progress(context, len(batch))
    return new_rows


def _show_progress(context: _Context, views: int) -> None:
    stats, bar = context.stats, context.bar
    bar.update(views)
    elapsed = max(time.perf_counter() - context.started, 1e-9)
    bar.set_postfix(views_s=f"{stats.views_generated / elapsed:.1f}",
                    tok_s=f"{stats.completion_tokens / elapsed:.1f}",
                    failed=stats.failures, peak_rss=f"{stats.peak_rss_mb:,.0f}MB")


def _merge_rows(planned: list[_Planned], existing: dict[str, View],
                new_rows: dict[str, View], stats: CaptionStats) -> list[View]:
    """The chunk's rows in plan order, each kept from the file or freshly generated; a
    view whose request failed has neither and is left out, for the next run to retry."""
    rows = []
    for p in planned:
        if p.key in existing:
            rows.append(existing[p.key])
            stats.views_reused += 1
        elif p.key in new_rows:
            rows.append(new_rows[p.key])
    return rows


class _EngineSession:
    """Starts the engine when a chunk first needs it (`engine()`), in a worker process
    replaced every `recycle_after` requests where the settings ask for one (by default
    for vllm only: the openai and template engines hold nothing that grows, and the
    template engine's 20,000 views/s would mostly go to the pipe); ends that worker with
    the run, and turns its death into an error that says what is kept."""

    def __init__(self, factory, config: CaptionsConfig, stats: CaptionStats):
        self.factory, self.config, self.stats = factory, config, stats
        self.started: Engine | None = None

    def engine(self) -> Engine:
        if self.started is None:
            engine = self.config.engine
            self.started = (WorkerEngine(self.factory, engine, self.config.cache_dir,
                                         engine.recycle_after) if engine.recycle_after
                            else self.factory(engine, self.config.cache_dir))
        return self.started

    def __enter__(self) -> _EngineSession:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if isinstance(self.started, WorkerEngine):
            self.started.close()
        if isinstance(error, EngineWorkerDied):
            advice = (" (if it ran out of memory: with a smaller --recycle-requests or "
                      "--batch-requests)" if error.killed else "")
            raise RuntimeError(
                f"{error}. The {self.stats.chunks - 1} chunk files before this one in "
                f"{self.config.out} are complete and kept: rerun the same command to resume "
                f"from them{advice}.") from None


def _peak_rss_mb(engine: Engine | None) -> int:
    """This process's peak RSS, plus the highest its engine workers reached."""
    worker = engine.peak_rss_mb if isinstance(engine, WorkerEngine) else 0
    return round(peak_resident_mb() + worker)


def _my_chunks(config: CaptionsConfig, stats: CaptionStats) -> Iterator[list[Track]]:
    """This rank's valid tracks (every world_size-th), streamed in chunks; rejected rows
    are counted with their reasons, never dropped silently, and test-split tracks are
    counted and skipped unless `include_test`."""
    chunk: list[Track] = []
    valid = 0
    for track, problems in iter_catalog(config.catalog, config.read):
        if track is None:
            stats.catalog_rejects += 1
            if len(stats.reject_examples) < 20:
                stats.reject_examples += [str(p) for p in problems]
            continue
        if track.split == "test" and not config.include_test:
            stats.test_skipped += 1
            continue
        if valid % config.world_size == config.rank:
            chunk.append(track)
            if len(chunk) == config.chunk_tracks:
                yield chunk
                chunk = []
        valid += 1
    if chunk:
        yield chunk


def _requests(todo: list[_Planned], context: _Context) -> list[Request]:
    template, banned = context.template, context.banned
    return [Request(p.request_id, template.messages(p.tags, p.language), p.tags,
                    p.language, seed=int(p.key[:8], 16),
                    banned=banned.for_request(p.tags, p.track.tags) if banned else ())
            for p in todo]


def _rows(todo: list[_Planned], requests: list[Request], results: list[Result],
          engine: tuple[str, str, str | None], context: _Context) -> dict[str, View]:
    """The views of the results (matched to the plan by request id), counted in the
    stats; a failed or missing result is counted and left out. `engine`: the name,
    model id and revision of the engine that answered."""
    config, stats, template = context.config, context.stats, context.template
    by_id = {r.request_id: r for r in results}
    rows: dict[str, View] = {}
    sampling = _sampling_json(config, context.banned)
    name, model_id, revision = engine
    for p, request in zip(todo, requests, strict=True):
        result = by_id.get(p.request_id)
        if result is None or result.finish_reason == "error":
            stats.failures += 1
            if len(stats.failure_examples) < 20:
                why = result.error if result else "engine returned no result for this id"
                stats.failure_examples.append(f"{p.request_id}: {why}")
            continue
        text, flags = parse_caption(result.text, result.finish_reason, config.max_words)
        stats.flags.update(flags)
        stats.views_generated += 1
        stats.prompt_tokens += result.prompt_tokens or 0
        stats.cached_prompt_tokens += result.cached_tokens or 0
        stats.completion_tokens += result.completion_tokens or 0
        stats.banned_words_cut += result.banned_cut
        rows[p.key] = View(
            track_id=p.track.track_id, view_id=p.view_id, language=p.language,
            tags={c: list(v) for c, v in p.tags.items()}, text=text, raw_text=result.text,
            flags=flags, engine=name, model_id=model_id, model_revision=revision,
            template_id=template.template_id, template_hash=template.content_hash,
            sampling=sampling, seed=request.seed, prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens, finish_reason=result.finish_reason,
            content_key=p.key)
    return rows


def _existing_rows(path: Path, schema) -> dict[str, View]:
    if not path.exists():
        return {}
    try:
        table = read_table(str(path), schema)
    except SchemaError as err:
        print(f"captions: regenerating {path.name}: {err}", file=sys.stderr)
        return {}
    return {row.content_key: row for row in table_to_records(table, View)}


def _check_layout(out: Path, config: CaptionsConfig) -> None:
    """Chunk names depend on chunk_tracks and world_size; mixing layouts in one folder
    would duplicate rows, so a rerun must use the same ones."""
    layout = {"chunk_tracks": config.chunk_tracks, "world_size": config.world_size,
              "categories": list(config.categories)}
    path = out / "_layout.json"
    if path.exists():
        previous = json.loads(path.read_text(encoding="utf-8"))
        if previous != layout:
            raise ValueError(f"{out} holds views written with {previous}; this run asks for "
                             f"{layout}. Use the same settings or another --out.")
        return
    write_text_atomic(path, json.dumps(layout, sort_keys=True) + "\n")


def _remove_stale_chunks(out: Path, config: CaptionsConfig, n_chunks: int) -> None:
    """Chunks past the end, left by a run over a larger catalog, would add old rows;
    this rank's temporary files were left by a killed run (other ranks own theirs)."""
    mine = f"views-r{config.rank:05d}-of{config.world_size:05d}-*.parquet"
    for path in out.glob(mine):
        if int(path.stem.rsplit("-", 1)[1]) >= n_chunks:
            path.unlink()
    for stale in out.glob(f".{mine}.tmp-*"):
        stale.unlink(missing_ok=True)


def _write_stats(out: Path, config: CaptionsConfig, identity: _Identity,
                 stats: CaptionStats) -> None:
    body = asdict(stats)
    body["flags"] = dict(sorted(stats.flags.items()))
    body.update(engine=identity.engine, model_id=identity.model_id,
                model_revision=identity.revision, template_id=identity.template.template_id,
                template_hash=identity.template.content_hash,
                views_per_s=round(stats.views_generated / max(stats.seconds, 1e-9), 2),
                prefix_cache_hit=round(stats.cached_prompt_tokens / max(stats.prompt_tokens, 1),
                                       3),
                completion_tokens_per_s=round(stats.completion_tokens / max(stats.seconds, 1e-9),
                                              2))
    path = out / "_stats" / f"r{config.rank:05d}-of{config.world_size:05d}.json"
    write_text_atomic(path, json.dumps(body, indent=2, sort_keys=True) + "\n")
