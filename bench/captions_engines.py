"""The vllm engine against a plain transformers `generate` loop (run in .venv-llm).

Same model (the bundled SmolLM2-135M-Instruct), same few-shot prompts, same batch size
(vLLM's max_num_seqs = the loop's batch), greedy decoding. Each mode runs in a fresh
process after a warm-up batch; only generation is timed. Gives completion tokens/s,
the vLLM / transformers ratio (goal: at least 2x), prefix caching on / off, and the
engine's KV blocks on CPU (32 tokens) against vLLM's CPU default (128), whose prefix
cache reuses only 128 of the prompt's ~230 shared tokens.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass

from bench.harness import Outcome, in_child
from schemas.config import Config, setting

MODES = ("transformers", "vllm", "vllm-no-prefix-cache", "vllm-128-blocks")


@dataclass(frozen=True)
class Settings(Config):
    prompts: int = setting(64, help="caption prompts, each mode the same")
    batch: int = setting(16, help="the loop's batch and vLLM's max_num_seqs")
    max_tokens: int = setting(48, help="completion tokens per prompt at most")

    def check(self) -> list[str]:
        return [f"{name} must be >= 1" for name in ("prompts", "batch", "max_tokens")
                if getattr(self, name) < 1]


def prompts(count: int) -> list[list[dict]]:
    from pipeline.captions.prompts import load_template

    rng = random.Random(0)
    genres = ["rock", "pop", "jazz", "blues", "funk", "reggae", "country", "ambient"]
    moods = ["happy", "sad", "calm", "dark", "tense", "playful", "dreamy", "energetic"]
    instruments = ["drums", "bass", "piano", "flute", "violin", "organ", "synthesizer"]
    template = load_template("caption-v1")
    return [template.messages({"genre": rng.sample(genres, rng.randint(1, 2)),
                               "mood": rng.sample(moods, rng.randint(1, 3)),
                               "instrument": rng.sample(instruments, rng.randint(1, 4))}, "en")
            for _ in range(count)]


def run_transformers(folder: str, chats: list, batch: int, max_tokens: int) -> tuple[float, int]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    texts = [tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
             for c in chats]

    def generate(items):
        tokens = 0
        for start in range(0, len(items), batch):
            enc = tokenizer(items[start:start + batch], return_tensors="pt", padding=True)
            with torch.inference_mode():
                out = model.generate(**enc, max_new_tokens=max_tokens, do_sample=False,
                                     pad_token_id=tokenizer.pad_token_id)
            new = out[:, enc["input_ids"].shape[1]:]
            for row in new:  # count up to and including the first end-of-sequence token
                ends = (row == tokenizer.eos_token_id).nonzero()
                tokens += int(ends[0]) + 1 if len(ends) else len(row)
        return tokens

    generate(texts[:batch])
    started = time.perf_counter()
    tokens = generate(texts)
    return time.perf_counter() - started, tokens


def run_vllm(folder: str, chats: list, batch: int, max_tokens: int,
             prefix_cache: bool, block_size: int | None) -> tuple[float, int]:
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    import torch
    from vllm import LLM, SamplingParams

    from pipeline.captions.engines.vllm_engine import CPU_BLOCK_TOKENS

    cpu = not torch.cuda.is_available()
    blocks = block_size or (CPU_BLOCK_TOKENS if cpu else None)  # as the engine runs it
    llm = LLM(model=folder, dtype="float32" if cpu else "auto", enforce_eager=cpu,
              enable_prefix_caching=prefix_cache, max_num_seqs=batch, max_model_len=2048,
              seed=0, **({"block_size": blocks} if blocks else {}))
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens)
    llm.chat(chats[:batch], params, use_tqdm=False)
    if prefix_cache:
        llm.reset_prefix_cache()  # the timed run pays for its shared prefix once, not zero
    started = time.perf_counter()
    outputs = llm.chat(chats, params, use_tqdm=False)
    seconds = time.perf_counter() - started
    return seconds, sum(len(o.outputs[0].token_ids) for o in outputs)


def generate_child(mode: str, count: int, batch: int, max_tokens: int) -> dict:
    """One mode in this fresh process: seconds and completion tokens of the timed run."""
    from pipeline.captions.models import bundled_model_folder, default_cache_dir

    folder = str(bundled_model_folder(default_cache_dir()))
    chats = prompts(count)
    if mode == "transformers":
        seconds, tokens = run_transformers(folder, chats, batch, max_tokens)
    else:
        seconds, tokens = run_vllm(folder, chats, batch, max_tokens,
                                   prefix_cache=mode != "vllm-no-prefix-cache",
                                   block_size=128 if mode == "vllm-128-blocks" else None)
    return {"seconds": round(seconds, 3), "tokens": tokens}


def run(settings: Settings) -> Outcome:
    results = {}
    for mode in MODES:
        result, measured = in_child(generate_child, mode, settings.prompts, settings.batch,
                                    settings.max_tokens, sample_s=0.5)
        result["tokens_per_s"] = round(result["tokens"] / result["seconds"], 1)
        result["process_peak_rss_mb"] = round(measured.peak_rss_mb)
        results[mode] = result
    speed = {m: r["tokens_per_s"] for m, r in results.items()}
    figures = {"results": results,
               "vllm_over_transformers": round(speed["vllm"] / speed["transformers"], 2),
               "prefix_cache_on_over_off": round(speed["vllm"] /
                                                 speed["vllm-no-prefix-cache"], 2),
               "engine_blocks_over_128": round(speed["vllm"] / speed["vllm-128-blocks"], 2)}
    return Outcome(figures, {
        "vllm_over_transformers": "a transformers generate loop on the same model, prompts "
                                  "and batch, same run (goal 2x)",
        "prefix_cache_on_over_off": "vLLM with prefix caching off, same run",
        "engine_blocks_over_128": "vLLM with 128-token KV blocks (its CPU default), same run"},
        f"caption engines: vLLM {speed['vllm']} tok/s vs transformers "
        f"{speed['transformers']} tok/s = {figures['vllm_over_transformers']}x (goal 2x); "
        f"prefix cache on/off = {figures['prefix_cache_on_over_off']}x; the engine's KV "
        f"blocks / 128-token blocks = {figures['engine_blocks_over_128']}x")
