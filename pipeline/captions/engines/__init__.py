"""LLM engines behind one small interface: requests with ids in, results with the same
ids out, and one table of them (`ENGINES`). Engines are imported lazily, so the planning
and template paths never need vLLM installed."""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Protocol

from schemas.config import Config, setting


@dataclass(frozen=True)
class EngineSpec:
    """A row of the engine table: where its class is, what it is, which languages it
    writes (None: every language of schemas/languages, as an LLM is asked for it by
    name), whether it runs a model (`--model`, `--revision`) and how many requests a
    worker process serves when `recycle_requests` is unset (0: no worker)."""

    target: str                             # "module:Class"; imported only when made
    help: str
    languages: tuple[str, ...] | None = None
    uses_model: bool = True
    recycle_requests: int = 0

    def engine_class(self) -> type:
        """The engine's class, its module imported now."""
        module, _, name = self.target.partition(":")
        return getattr(importlib.import_module(module), name)


# Requests per vLLM worker process: on CPU (~6 views/s with SmolLM2) a worker lives about
# 7 minutes against ~13 s to start one. With trimming, one process held its peak as low
# but its batches ran ~5% slower after 4,000 views; a fresh worker starts clean (issue
# 17). The other engines hold nothing that grows, and a pipe would cost the template
# engine most of its speed.
RECYCLE_VLLM = 2500
ENGINES: dict[str, EngineSpec] = {
    "vllm": EngineSpec("pipeline.captions.engines.vllm_engine:VllmEngine",
                       "offline batch generation (vLLM)", recycle_requests=RECYCLE_VLLM),
    "openai": EngineSpec("pipeline.captions.engines.openai_engine:OpenAIEngine",
                         "an OpenAI-compatible server"),
    "template": EngineSpec("pipeline.captions.engines.template:TemplateEngine",
                           "rule-based, no model", languages=("en", "de", "fr", "es", "it"),
                           uses_model=False),
}


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
    banned: tuple[str, ...] = ()        # words the engine must not write (faithful decoding)


@dataclass(frozen=True)
class Result:
    request_id: str
    text: str
    finish_reason: str                  # "stop", "length" or "error"
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    error: str | None = None
    banned_cut: int = 0                 # banned words left out to fit a server's caps


class Engine(Protocol):
    name: str
    model_id: str
    model_revision: str | None

    def generate(self, requests: Sequence[Request], sampling: Sampling) -> list[Result]:
        """One result per request, with the same request_id, in any order."""
        ...


@dataclass(frozen=True)
class VllmSettings(Config):
    tensor_parallel_size: int = setting(1, help="GPUs per model (vllm).")
    dtype: str = setting("auto", help="Model dtype (vllm); auto = float32 on CPU.")
    max_model_len: int = setting(2048, help="Context length in tokens (vllm).")
    batch_invariant: bool = setting(True, help="On GPUs, make each answer depend on its "
                                    "request's seed alone, not on the requests batched "
                                    "with it (vLLM's VLLM_BATCH_INVARIANT), so a rerun or "
                                    "a fresh worker writes the same text; off is faster. "
                                    "On CPU the engine's settings are invariant already.")
    trim_memory: bool = setting(True, help="Hand the pages the C allocator holds free "
                                "back to the system (glibc malloc_trim; vllm): during a "
                                "batch whenever RSS has risen 256 MB since the last trim, "
                                "and after it. Without it the vLLM engine on CPU gains "
                                "about 0.45 MB of RSS per view, memory it has already "
                                "freed.")

    def check(self) -> list[str]:
        return [] if self.tensor_parallel_size >= 1 else ["tensor_parallel_size must be >= 1"]


@dataclass(frozen=True)
class OpenAISettings(Config):
    url: str = setting("http://127.0.0.1:8000", help="Server address (openai).")
    concurrency: int = setting(8, help="Requests in flight (openai).")
    timeout_s: float = setting(60.0, flag="timeout", help="Seconds per request (openai).")
    retries: int = setting(3, help="Retries per request on timeouts, 429 and 5xx (openai).")
    max_bad_words: int = setting(128, help="Token sequences of banned words a request may "
                                 "carry: the server's VLLM_MAX_NUM_BAD_WORDS (openai; a "
                                 "word counts as two, bare and after a space).")
    max_bad_word_tokens: int = setting(1024, help="Tokens of those sequences together: the "
                                       "server's VLLM_MAX_BAD_WORDS_TOTAL_TOKENS (openai). "
                                       "Past either cap the rarest banned words are left "
                                       "out, and counted (banned_words_cut).")

    def check(self) -> list[str]:
        problems = []
        if self.max_bad_words < 2 or self.max_bad_word_tokens < 2:
            problems.append("max_bad_words and max_bad_word_tokens must be >= 2")
        if self.concurrency < 1:
            problems.append("concurrency must be >= 1")
        if self.timeout_s <= 0:
            problems.append("timeout_s must be > 0")
        if self.retries < 0:
            problems.append("retries must be >= 0")
        return problems


@dataclass(frozen=True)
class EngineConfig(Config):
    engine: str = setting("vllm", help="; ".join(f"{name}: {spec.help}"
                                                 for name, spec in ENGINES.items()) + ".")
    model: str = setting("smollm2", help="'smollm2' (bundled SmolLM2-135M-Instruct), a "
                         "local folder or a hub id; for openai, the served model name.")
    revision: str | None = setting(None, help="Model revision (hub models).")
    recycle_requests: int | None = setting(None, help="Generate in a worker process that "
                                           "is replaced after this many requests, which "
                                           "gives back all the memory the engine gathered "
                                           "(outputs do not change; on GPUs, with "
                                           "batch_invariant); 0 = in this process. "
                                           f"Unset: {RECYCLE_VLLM:,} for vllm (whose memory "
                                           "on CPU climbs), 0 for openai and template.")
    vllm: VllmSettings = setting(factory=VllmSettings, help="Settings of the vllm engine.")
    openai: OpenAISettings = setting(factory=OpenAISettings, help="Settings of the openai "
                                     "engine.")

    def check(self) -> list[str]:
        # read at check time, not import time, so a row added to the table is accepted
        problems = [] if self.engine in ENGINES else [
            f"engine must be one of {', '.join(ENGINES)}, got {self.engine!r}"]
        if self.recycle_requests is not None and self.recycle_requests < 0:
            problems.append("recycle_requests must be >= 0 (0: no worker process)")
        return problems

    @property
    def recycle_after(self) -> int:
        """Requests per worker process; 0 runs the engine in the calling process."""
        if self.recycle_requests is not None:
            return self.recycle_requests
        return self.spec.recycle_requests

    @property
    def spec(self) -> EngineSpec:
        return ENGINES[self.engine]


def make_engine(config: EngineConfig, cache_dir) -> Engine:
    """The configured engine: its table row's class, built from this config."""
    return config.spec.engine_class().from_config(config, cache_dir)
