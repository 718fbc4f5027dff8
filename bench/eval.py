"""Evaluation throughput and memory.

1. Ranking `items` captions against as many clips (256-d embeddings): queries/s and the
   peak memory of the process doing it, chunked (what `adswap eval` does) against one
   unchunked queries x items score matrix, in the same run; and how peak memory grows
   over `growth` (chunked: linearly; unchunked: with the square).
2. Embedding with the default CPU model (log-mel CNN, frozen MiniLM): clips/s and
   captions/s, on 1,000 clips of 5 s and 2,000 captions (10,000 of each take about
   ten times as long). Each ranking runs in a fresh process, so its peak is its own.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from bench.harness import ROOT, Outcome, in_child
from schemas.config import Config, setting


@dataclass(frozen=True)
class Settings(Config):
    items: int = setting(10_000, help="captions and clips of the speed comparison")
    chunk: int = setting(1024, help="queries per chunk, as `adswap eval` ranks them")
    growth: tuple[int, ...] = setting((2_500, 5_000, 10_000, 20_000), help="sizes whose "
                                      "peak memory is compared")
    clips: int = setting(1_000, help="5 s clips to embed")
    captions: int = setting(2_000, help="captions to embed")

    def check(self) -> list[str]:
        return [f"{name} must be >= 1" for name in ("items", "chunk", "clips", "captions")
                if getattr(self, name) < 1]


def ranking_child(n: int, chunk: int) -> tuple[float, float, float]:
    """Seconds, the peak memory it added (MB) and R@10 of ranking n queries against n
    items; chunk 0: one unchunked queries x items score matrix."""
    import torch
    import torch.nn.functional as F

    from pipeline.captions.memory import peak_resident_mb
    from trainer.metrics import ranks

    g = torch.Generator().manual_seed(0)
    items = F.normalize(torch.randn(n, 256, generator=g), dim=1)
    queries = F.normalize(items + 0.5 * torch.randn(n, 256, generator=g), dim=1)
    targets = torch.arange(n)
    before = peak_resident_mb()
    started = time.perf_counter()
    if chunk:
        r = ranks(queries, items, targets, chunk=chunk)
    else:
        scores = queries @ items.T
        r = (scores >= scores.gather(1, targets[:, None])).sum(1)
    seconds = time.perf_counter() - started
    return seconds, peak_resident_mb() - before, float((r <= 10).float().mean())


def ranking(n: int, chunk: int) -> dict:
    (seconds, extra_mb, r10), _ = in_child(ranking_child, n, chunk)
    return {"seconds": round(seconds, 3), "queries_per_s": round(n / seconds),
            "extra_peak_mb": round(extra_mb, 1), "R@10": round(r10, 4)}


def embedding(clips: int, captions: int) -> dict:
    import torch

    from trainer.config import load_config
    from trainer.model import DuetMC

    config = load_config(ROOT / "trainer" / "configs" / "demo.yaml")
    torch.manual_seed(0)
    model = DuetMC(config.model).eval()
    frames = round(config.model.audio.sample_rate * config.model.audio.clip_seconds)
    texts = [f"a calm jazz piece number {i} with piano, double bass and soft drums"
             for i in range(captions)]
    with torch.no_grad():
        model.encode_audio(torch.randn(8, frames) * 0.1)  # warm-up
        started = time.perf_counter()
        for i in range(0, clips, 64):
            model.encode_audio(torch.randn(min(64, clips - i), frames) * 0.1)
        audio_s = time.perf_counter() - started
        started = time.perf_counter()
        for i in range(0, captions, 256):
            model.encode_text(model.tokenize(texts[i:i + 256]))
        text_s = time.perf_counter() - started
    return {"clips_per_s": round(clips / audio_s, 1), "captions_per_s": round(
        captions / text_s, 1), "clip_seconds": config.model.audio.clip_seconds}


def run(settings: Settings) -> Outcome:
    done: dict[tuple[int, int], dict] = {}

    def ranked(n: int, chunk: int) -> dict:  # the speed run's sizes recur in `growth`
        if (n, chunk) not in done:
            done[n, chunk] = ranking(n, chunk)
        return done[n, chunk]

    n = settings.items
    chunked, full = ranked(n, settings.chunk), ranked(n, 0)
    figures = {"ranking": {"items": n, "chunked": chunked, "unchunked": full,
                           "speed_ratio_to_unchunked": round(
                               chunked["queries_per_s"] / full["queries_per_s"], 3)}}
    figures["memory_growth_mb"] = {
        f"n_{size}": {"chunked": ranked(size, settings.chunk)["extra_peak_mb"],
                      "unchunked": ranked(size, 0)["extra_peak_mb"]}
        for size in settings.growth}
    figures["embedding"] = embedding(settings.clips, settings.captions)
    embed = figures["embedding"]
    return Outcome(figures, {
        "ranking.speed_ratio_to_unchunked": "one unchunked score matrix of the same "
                                            "queries and items, same run"},
        f"eval: ranking {n:,} x {n:,}: {chunked['queries_per_s']:,} queries/s chunked "
        f"({figures['ranking']['speed_ratio_to_unchunked']}x unchunked), peak +"
        f"{chunked['extra_peak_mb']} MB against +{full['extra_peak_mb']} MB; embedding "
        f"{embed['clips_per_s']} clips/s, {embed['captions_per_s']} captions/s")
