"""The caption stage on Ray (`--executor ray`) against the local stage, same run.

With the rule-based `template` engine, generation costs next to nothing, so what is
measured is what Ray adds: the views/s of the whole stage with 1 and 2 actors against
the local stage on the same catalog, the cluster's and the actors' start-up, and the
cost per chunk (the round trip of a chunk's requests and results), from two chunk sizes:
((ray - local) at small chunks - (ray - local) at large chunks) / (extra chunks). Each
figure is the best of `rounds`. Everything runs in one child process with a local
cluster of `cpus` CPUs (no dashboard, usage stats off). With an LLM the per-chunk cost is
set against seconds of generation per chunk (SmolLM2 on CPU: ~6 views/s).

`engine=vllm` (run it in .venv-llm; `ray_captions_vllm` in the registry) measures the
bundled SmolLM2 instead, at the first chunk size only: the views/s of 1 and 2 actors
against the local stage, each actor taking `cpus / actors` of the cluster's CPUs. On a
2-core machine the actors share the cores the local run has to itself, so the ratio is
Ray's overhead, not the scaling a node with one GPU per actor gets.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.captions_overhead import make_catalog
from bench.harness import Outcome, in_child
from schemas.config import Config, setting


@dataclass(frozen=True)
class Settings(Config):
    tracks: int = setting(2000, help="catalog tracks (10 views each)")
    chunk_tracks: tuple[int, ...] = setting((200, 20), help="two chunk sizes: the first "
                                            "for the views/s, both for the cost per chunk")
    actors: tuple[int, ...] = setting((1, 2), help="pool sizes to measure")
    cpus: int = setting(2, help="CPUs of the local Ray cluster")
    rounds: int = setting(2, help="runs of each configuration; the best counts")
    engine: str = setting("template", choices=("template", "vllm"), help="caption engine "
                          "(vllm: the bundled SmolLM2, in .venv-llm)")
    n_views: int = setting(10, help="views per track")
    max_tokens: int = setting(32, help="longest caption in tokens (vllm)")

    def check(self) -> list[str]:
        problems = []
        if self.tracks < 2:
            problems.append("tracks must be >= 2")
        if len(self.chunk_tracks) != 2 or self.chunk_tracks[0] <= self.chunk_tracks[1] or \
                min(self.chunk_tracks) < 1:
            problems.append("chunk_tracks: two sizes, the larger first")
        if not self.actors or min(self.actors) < 1:
            problems.append("actors must be >= 1")
        if self.rounds < 1 or self.cpus < 1 or self.n_views < 1:
            problems.append("rounds, cpus and n_views must be >= 1")
        return problems


def measure(catalog: str, work: str, chunk_sizes: list[int], actors: list[int], cpus: int,
            rounds: int, engine_name: str, n_views: int, max_tokens: int) -> dict:
    """In a child process: a local cluster, then every configuration `rounds` times."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    import ray

    from pipeline.captions.engines import EngineConfig, Sampling
    from pipeline.captions.plan import DropConfig
    from pipeline.captions.ray_executor import ActorsConfig
    from pipeline.captions.stage import CaptionsConfig
    from pipeline.captions.stage import run as captions

    started = time.perf_counter()
    ray.init(num_cpus=cpus, include_dashboard=False, logging_level="WARNING",
             _temp_dir=str(Path(work) / "ray"))
    cluster_s = time.perf_counter() - started

    # vllm in the calling process (locally) or in the actor's: no worker process
    engine = EngineConfig(engine=engine_name, recycle_requests=0)
    sampling = Sampling(max_tokens=max_tokens)

    def best(executor: str, chunk: int, pool: int = 1) -> dict:
        times = []
        for _ in range(rounds):
            out = Path(work) / "views"
            shutil.rmtree(out, ignore_errors=True)
            began = time.perf_counter()
            stats = captions(CaptionsConfig(
                catalog=Path(catalog), out=out, chunk_tracks=chunk, engine=engine,
                drop=DropConfig(n_views=n_views), sampling=sampling, executor=executor,
                ray=ActorsConfig(actors=pool, cpus_per_actor=cpus / pool)))
            times.append(time.perf_counter() - began)
        return {"seconds": round(min(times), 3), "views": stats.views_generated,
                "chunks": stats.chunks}

    found = {"cluster_start_s": round(cluster_s, 2)}
    for chunk in chunk_sizes if engine_name == "template" else chunk_sizes[:1]:
        found[f"local-{chunk}"] = best("local", chunk)
        for pool in actors:
            found[f"ray{pool}-{chunk}"] = best("ray", chunk, pool)
    # an actor's start-up alone: one chunk of one track
    tiny = Path(work) / "tiny.jsonl"
    tiny.write_text(Path(catalog).read_text().splitlines()[0] + "\n")
    began = time.perf_counter()
    captions(CaptionsConfig(catalog=tiny, out=Path(work) / "tiny", chunk_tracks=1,
                            engine=engine, sampling=sampling, executor="ray",
                            ray=ActorsConfig(actors=1, cpus_per_actor=cpus)))
    found["one_track_run_s"] = round(time.perf_counter() - began, 3)
    ray.shutdown()
    return found


def run(settings: Settings) -> Outcome:
    large, small = settings.chunk_tracks
    with tempfile.TemporaryDirectory(prefix="rb", dir="/tmp") as tmp:
        catalog = Path(tmp) / "catalog.jsonl"
        make_catalog(catalog, settings.tracks)
        found, measured = in_child(measure, catalog, tmp, [large, small],
                                   list(settings.actors), settings.cpus, settings.rounds,
                                   settings.engine, settings.n_views, settings.max_tokens)
    local = found[f"local-{large}"]
    views = local["views"]
    rates = {"local": round(views / local["seconds"], 2)}
    for pool in settings.actors:
        rates[f"ray_{pool}_actors"] = round(views / found[f"ray{pool}-{large}"]["seconds"], 2)
    per_chunk_ms = None
    if settings.engine == "template":
        extra_chunks = found[f"local-{small}"]["chunks"] - local["chunks"]
        first = settings.actors[0]
        added_small = (found[f"ray{first}-{small}"]["seconds"]
                       - found[f"local-{small}"]["seconds"])
        added_large = found[f"ray{first}-{large}"]["seconds"] - local["seconds"]
        per_chunk_ms = round(1000 * (added_small - added_large) / max(extra_chunks, 1), 2)
    figures = {
        "engine": settings.engine, "views": views, "views_per_s": rates,
        "ratio_to_local": {k: round(v / rates["local"], 3) for k, v in rates.items()
                           if k != "local"},
        "ray_per_chunk_ms": per_chunk_ms,
        "cluster_start_s": found["cluster_start_s"],
        "one_track_run_s": found["one_track_run_s"],
        "runs": {k: v for k, v in found.items() if isinstance(v, dict)},
        "peak_rss_mb": round(measured.peak_rss_mb, 1),
    }
    baseline = {f"ratio_to_local.{k}": "the local stage on the same catalog and chunks, "
                "same run" for k in figures["ratio_to_local"]}
    overhead = f"; Ray adds {per_chunk_ms:.1f} ms a chunk" if per_chunk_ms is not None else ""
    summary = (f"captions on Ray ({settings.engine} engine, {views:,} views, chunks of "
               f"{large} tracks): " + ", ".join(f"{k} {v:,} views/s" for k, v in rates.items())
               + f"{overhead}; cluster start {found['cluster_start_s']} s, a one-track run "
               f"{found['one_track_run_s']} s")
    return Outcome(figures, baseline, summary)
