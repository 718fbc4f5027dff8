"""top_p on CPU: the vllm engine's NucleusMask against vLLM's own sort (run in .venv-llm).

One vllm engine (the bundled SmolLM2-135M-Instruct), caption-v1 prompts for random tag
sets, each request seeded, sampled at the caption stage's defaults (temperature 0.7,
top_p 0.95). Each round generates the same requests twice: with the engine's nucleus
mask (its default on CPU) and with top_p handed to vLLM, which sorts the vocabulary at
every step; the modes alternate so that neither has the warmer machine. Gives views/s
per mode (best round), the ratio, and whether both wrote the same text for every view.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from bench.captions_engines import prompts
from bench.harness import Outcome
from schemas.config import Config, setting

MODES = ("sort", "nucleus")


@dataclass(frozen=True)
class Settings(Config):
    requests: int = setting(256, help="caption requests, one engine batch")
    rounds: int = setting(2, help="times each mode generates them")
    max_tokens: int = setting(64, help="completion tokens per request at most")

    def check(self) -> list[str]:
        return [f"{name} must be >= 1" for name in ("requests", "rounds", "max_tokens")
                if getattr(self, name) < 1]


def run(settings: Settings) -> Outcome:
    from pipeline.captions.engines import EngineConfig, Request, Sampling
    from pipeline.captions.engines.vllm_engine import VllmEngine
    from pipeline.captions.models import default_cache_dir

    engine = VllmEngine(EngineConfig(engine="vllm", model="smollm2"), default_cache_dir())
    if not engine.nucleus_on_host:
        raise SystemExit("nucleus: the engine masks top_p itself on CPU only; on a GPU "
                         "vLLM's own kernels do")
    requests = [Request(f"r{i}", chat, {}, "en", seed=i)
                for i, chat in enumerate(prompts(settings.requests))]
    sampling = Sampling(max_tokens=settings.max_tokens)  # the stage's temperature and top_p
    engine.generate(requests[:8], sampling)  # warm-up
    seconds: dict[str, list[float]] = {mode: [] for mode in MODES}
    texts: dict[str, list[str]] = {}
    for _ in range(settings.rounds):
        for mode in MODES:
            engine.nucleus_on_host = mode == "nucleus"
            started = time.perf_counter()
            results = engine.generate(requests, sampling)
            seconds[mode].append(time.perf_counter() - started)
            texts[mode] = [r.text for r in results]
    speed = {mode: round(settings.requests / min(s), 2) for mode, s in seconds.items()}
    same = sum(a == b for a, b in zip(texts["sort"], texts["nucleus"], strict=True))
    figures = {"views_per_s": speed,
               "seconds": {mode: [round(x, 2) for x in s] for mode, s in seconds.items()},
               "same_text": same, "views": settings.requests,
               "nucleus_over_sort": round(speed["nucleus"] / speed["sort"], 2)}
    return Outcome(figures, {
        "nucleus_over_sort": "vLLM's own top_p (a sort of the vocabulary each step): the "
                             "same engine, requests and seeds, same run"},
        f"top_p on CPU: nucleus mask {speed['nucleus']} views/s vs vLLM's sort "
        f"{speed['sort']} views/s = {figures['nucleus_over_sort']}x; the same text for "
        f"{same} of {settings.requests} views")
