"""Faithful decoding on and off (run in .venv-llm).

Same model (the bundled SmolLM2-135M-Instruct by default), same prompts, same seeds:
the first `tracks` train/valid tracks of the demo catalog, `views` dropout views
plus the all-tags view each, captioned by the vllm engine with and without banned
words, each curated with the default rules. One engine serves both modes (its prefix
cache reset in between); only time inside the engine's `generate` counts as LLM time.

Gives per mode: views, LLM seconds, views kept by curation, kept views per
LLM-second, mean tag recall (all views, and kept views), hallucination rejects and
rejects in all; then the ratio of kept views per LLM-second, on / off.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from bench.harness import ROOT, Outcome
from pipeline.captions.engines import EngineConfig
from pipeline.captions.faithful import FaithfulConfig
from pipeline.captions.plan import DropConfig
from pipeline.captions.stage import CaptionsConfig
from pipeline.captions.stage import run as captions
from pipeline.curate.stage import CurateConfig
from pipeline.curate.stage import run as curate
from pipeline.demo_data import DemoConfig, catalog_track, plan_tracks
from schemas.catalog import read_catalog, write_catalog
from schemas.config import Config, setting
from schemas.descriptors import DescriptorMatcher, tag_recall
from schemas.swap_dictionary import SwapDictionary


@dataclass(frozen=True)
class Settings(Config):
    catalog: Path = setting(ROOT / "data" / "demo" / "catalog.parquet", help="catalog whose "
                            "first train/valid tracks are captioned (only it is read); "
                            "default: the demo's, planned when it is not there")
    tracks: int = setting(100, help="tracks to caption")
    views: int = setting(4, help="dropout views per track, plus the all-tags view")
    model: str = setting("smollm2", help="the vllm engine's model")

    def check(self) -> list[str]:
        return [f"{name} must be >= 1" for name in ("tracks", "views")
                if getattr(self, name) < 1]


class Timed:
    """An engine whose generate calls are timed."""

    def __init__(self, engine):
        self.engine, self.seconds = engine, 0.0
        self.name, self.model_id = engine.name, engine.model_id
        self.model_revision = engine.model_revision

    def generate(self, requests, sampling):
        started = time.perf_counter()
        try:
            return self.engine.generate(requests, sampling)
        finally:
            self.seconds += time.perf_counter() - started


def subset_catalog(source: Path, tracks: int, out: Path) -> Path:
    catalog = read_catalog(source)
    chosen = [t for t in catalog.tracks if t.split != "test"][:tracks]
    return write_catalog(chosen, out, catalog.categories)


def recall(folder: Path, dictionary: SwapDictionary) -> float:
    matcher = DescriptorMatcher(dictionary)
    rows = [r for path in sorted(folder.glob("*.parquet"))
            for r in pq.read_table(path, columns=["text", "tags"]).to_pylist()]
    if not rows:
        return 0.0
    return sum(tag_recall(matcher.find(r["text"]), dict(r["tags"])) for r in rows) / len(rows)


def run(settings: Settings) -> Outcome:
    from pipeline.captions.engines.vllm_engine import VllmEngine
    from pipeline.captions.models import default_cache_dir

    results: dict = {"views_per_track": settings.views + 1}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        source = settings.catalog
        if not source.exists():  # the demo's catalog, planned: no audio is needed here
            source = write_catalog([catalog_track(t) for t in plan_tracks(DemoConfig())],
                                   work / "demo.parquet")
        catalog = subset_catalog(source, settings.tracks, work / "catalog.parquet")
        engine = VllmEngine(EngineConfig(engine="vllm", model=settings.model), default_cache_dir())
        for mode in ("off", "on"):
            engine.llm.reset_prefix_cache()
            timed = Timed(engine)
            config = CaptionsConfig(
                catalog=catalog, out=work / mode / "views",
                # in process: both modes share the one timed engine
                engine=EngineConfig(engine="vllm", model=settings.model, recycle_requests=0),
                drop=DropConfig(n_views=settings.views, full_view=True),
                faithful=FaithfulConfig(enabled=mode == "on"))
            stats = captions(config, engine_factory=lambda *_, t=timed: t)
            curated = curate(CurateConfig(views=work / mode / "views", catalog=catalog,
                                          out=work / mode / "curated"))
            dictionary = SwapDictionary.load(work / mode / "curated" / "swap_dictionary.json")
            kept = curated.curated
            results[mode] = {
                "views": stats.views_generated, "llm_seconds": round(timed.seconds, 1),
                "completion_tokens": stats.completion_tokens, "kept": kept,
                "kept_share": round(kept / max(stats.views_generated, 1), 3),
                "kept_per_llm_second": round(kept / timed.seconds, 3),
                "tag_recall_all": round(recall(work / mode / "views", dictionary), 3),
                "tag_recall_kept": round(recall(work / mode / "curated" / "curated",
                                                dictionary), 3),
                "hallucination_rejects": curated.by_rule.get("hallucination", 0),
                "rejected_by_rule": {k: v for k, v in curated.by_rule.items() if v}}
    on, off = results["on"], results["off"]
    results["kept_per_llm_second_on_over_off"] = round(
        on["kept_per_llm_second"] / off["kept_per_llm_second"], 2)
    results["views_per_llm_second"] = {m: round(results[m]["views"] / results[m]["llm_seconds"],
                                                2) for m in ("off", "on")}
    summary = "; ".join(
        f"faithful {mode}: {r['views']} views in {r['llm_seconds']} LLM-s, {r['kept']} kept "
        f"({r['kept_share']:.0%}), {r['kept_per_llm_second']} kept/s, tag recall "
        f"{r['tag_recall_all']:.2f} (kept {r['tag_recall_kept']:.2f}), "
        f"{r['hallucination_rejects']} hallucination rejects"
        for mode, r in (("off", off), ("on", on)))
    return Outcome(results, {
        "kept_per_llm_second_on_over_off": "faithful decoding off: the same model, prompts "
                                           "and seeds, same run"},
        f"{summary}; kept views per LLM-second, on / off: "
        f"{results['kept_per_llm_second_on_over_off']}x")
