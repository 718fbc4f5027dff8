"""LLM engines behind one small interface: requests with ids in, results with the same
ids out. Engines are imported lazily, so the planning and template paths never need
vLLM installed."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Protocol

from schemas.config import Config, setting

ENGINES = ("vllm", "openai", "template")
# Requests per vLLM worker process: on CPU (~6 views/s with SmolLM2) a worker lives about
# 15 minutes against ~15 s to start one (issue 17).
RECYCLE_VLLM = 5000


@dataclass(frozen=True)
class Sampling(Config):
    temperature: float = setting(0.7, help="Sampling temperature.")
    top_p: float = setting(0.95, help="Nucleus sampling: the smallest set of tokens whose "
                           "probability reaches top_p.")
    max_tokens: int = setting(64, help="Longest answer, in tokens.")

    def check(self) -> list[str]:
        problems = []
        if not 0 <= self.temperature <= 5:
            problems.append("temperature must be in [0, 5]")
        if not 0 < self.top_p <= 1:
            problems.append("top_p must be in (0, 1]")
        if not 1 <= self.max_tokens <= 4096:
            problems.append("max_tokens must be in [1, 4096]")
        return problems

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
class EngineConfig(Config):
    engine: str = setting("vllm", choices=ENGINES, help="vllm (offline batch), openai (an "
                          "OpenAI-compatible server) or template (rule-based, no model).")
    model: str = setting("smollm2", help="'smollm2' (bundled SmolLM2-135M-Instruct), a "
                         "local folder or a hub id; for openai, the served model name.")
    revision: str | None = setting(None, help="Model revision (hub models).")
    tensor_parallel_size: int = setting(1, help="GPUs per model (vllm).")
    dtype: str = setting("auto", help="Model dtype (vllm); auto = float32 on CPU.")
    max_model_len: int = setting(2048, help="Context length in tokens (vllm).")
    url: str = setting("http://127.0.0.1:8000", help="Server address (openai).")
    concurrency: int = setting(8, help="Requests in flight (openai).")
    timeout_s: float = setting(60.0, flag="timeout", help="Seconds per request (openai).")
    retries: int = setting(3, help="Retries per request on timeouts, 429 and 5xx (openai).")
    trim_memory: bool = setting(True, help="After each batch, hand the pages the C "
                                "allocator holds free back to the system (glibc "
                                "malloc_trim; vllm). Without it the in-process vLLM engine "
                                "on CPU gains about 0.45 MB of RSS per view, memory it has "
                                "already freed.")
    recycle_requests: int | None = setting(None, help="Generate in a worker process that "
                                           "is replaced after this many requests, which "
                                           "gives back all the memory the engine gathered "
                                           "(outputs do not change); 0 = in this process. "
                                           f"Unset: {RECYCLE_VLLM:,} for vllm (whose memory "
                                           "on CPU climbs), 0 for openai and template.")

    def check(self) -> list[str]:
        problems = []
        if self.tensor_parallel_size < 1:
            problems.append("tensor_parallel_size must be >= 1")
        if self.concurrency < 1:
            problems.append("concurrency must be >= 1")
        if self.timeout_s <= 0:
            problems.append("timeout_s must be > 0")
        if self.retries < 0:
            problems.append("retries must be >= 0")
        if self.recycle_requests is not None and self.recycle_requests < 0:
            problems.append("recycle_requests must be >= 0 (0: no worker process)")
        return problems

    @property
    def recycle_after(self) -> int:
        """Requests per worker process; 0 runs the engine in the calling process."""
        if self.recycle_requests is not None:
            return self.recycle_requests
        return RECYCLE_VLLM if self.engine == "vllm" else 0


def make_engine(config: EngineConfig, cache_dir) -> Engine:
    if config.engine == "template":
        from pipeline.captions.engines.template import TemplateEngine

        return TemplateEngine()
    if config.engine == "openai":
        from pipeline.captions.engines.openai_engine import OpenAIEngine

        return OpenAIEngine(config)
    from pipeline.captions.engines.vllm_engine import VllmEngine

    return VllmEngine(config, cache_dir)
