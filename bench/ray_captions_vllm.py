"""The caption stage on Ray with the vLLM engine (the bundled SmolLM2): bench/ray_captions.py
with `engine=vllm` and settings a 2-core machine runs in minutes (in .venv-llm)."""

from __future__ import annotations

from dataclasses import dataclass

from bench import ray_captions
from bench.harness import Outcome
from schemas.config import setting


@dataclass(frozen=True)
class Settings(ray_captions.Settings):
    tracks: int = setting(24, help="catalog tracks")
    chunk_tracks: tuple[int, ...] = setting((6, 3), help="chunk sizes (the first is used)")
    rounds: int = setting(1, help="runs of each configuration; the best counts")
    engine: str = setting("vllm", choices=("template", "vllm"), help="caption engine")
    n_views: int = setting(2, help="views per track")


def run(settings: Settings) -> Outcome:
    return ray_captions.run(settings)
