"""What every caption engine implements and declares: requests with ids in, results
with the same ids out, and the row (`EngineSpec`) its module puts in the engine table
(pipeline/captions/engines/). Nothing here imports an LLM library."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Protocol

from schemas.config import Config, setting


@dataclass(frozen=True)
class EngineSpec:
    """An engine module's row of the engine table (its constant `ENGINE`):
    - `name`: what `--engine` takes; `engine`: the class, built by
      `engine.from_config(config, cache_dir)`; its module must import its libraries
      (vLLM, a client) inside the class, so the table loads without them;
    - `settings`: its own config section (`engine.<name>.*`, one flag per field), or None;
    - `languages`: those it writes (None: every language of schemas/languages, as an LLM
      is asked for it by name);
    - `uses_model`: it runs a model (`--model`, `--revision`, faithful decoding);
    - `translates`: `translate-captions` may use it;
    - `recycle_requests`: requests a worker process serves when `recycle_requests` is
      unset (0: no worker);
    - `gpus`: GPUs one engine takes where the cluster has any (`--executor ray` gives
      each actor that many unless `ray.gpus_per_actor` says otherwise), as a function of
      the engine section (vllm: its tensor_parallel_size); None: it needs none."""

    name: str
    help: str
    engine: type
    settings: type[Config] | None = None
    languages: tuple[str, ...] | None = None
    uses_model: bool = True
    translates: bool = True
    recycle_requests: int = 0
    gpus: Callable[[Config], int] | None = None


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
    cached_tokens: int | None = None    # prompt tokens the engine's prefix cache served
    error: str | None = None
    banned_cut: int = 0                 # banned words left out to fit a server's caps


class Engine(Protocol):
    name: str
    model_id: str
    model_revision: str | None

    def generate(self, requests: Sequence[Request], sampling: Sampling) -> list[Result]:
        """One result per request, with the same request_id, in any order."""
        ...
