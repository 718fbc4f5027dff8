"""Benchmark: the vllm engine against a plain transformers `generate` loop (run in .venv-llm).

Same model (the bundled SmolLM2-135M-Instruct), same few-shot prompts, same batch size
(vLLM's max_num_seqs = the loop's batch), greedy decoding. Each mode runs in a fresh
process after a warm-up batch; only generation is timed. Prints completion tokens/s,
the vLLM / transformers ratio (goal: at least 2x) and prefix caching on / off.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

MODES = ("transformers", "vllm", "vllm-no-prefix-cache")


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
             prefix_cache: bool) -> tuple[float, int]:
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    import torch
    from vllm import LLM, SamplingParams

    cpu = not torch.cuda.is_available()
    llm = LLM(model=folder, dtype="float32" if cpu else "auto", enforce_eager=cpu,
              enable_prefix_caching=prefix_cache, max_num_seqs=batch, max_model_len=2048,
              seed=0)
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens)
    llm.chat(chats[:batch], params, use_tqdm=False)
    if prefix_cache:
        llm.reset_prefix_cache()  # the timed run pays for its shared prefix once, not zero
    started = time.perf_counter()
    outputs = llm.chat(chats, params, use_tqdm=False)
    seconds = time.perf_counter() - started
    return seconds, sum(len(o.outputs[0].token_ids) for o in outputs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    from pipeline.captions.models import bundled_model_folder, default_cache_dir

    folder = str(bundled_model_folder(default_cache_dir()))
    if args.mode:
        chats = prompts(args.prompts)
        if args.mode == "transformers":
            seconds, tokens = run_transformers(folder, chats, args.batch, args.max_tokens)
        else:
            seconds, tokens = run_vllm(folder, chats, args.batch, args.max_tokens,
                                       prefix_cache=args.mode == "vllm")
        print(json.dumps({"seconds": round(seconds, 3), "tokens": tokens}))
        return

    results = {}
    for mode in MODES:
        child = subprocess.run([sys.executable, __file__, "--mode", mode, "--prompts",
                                str(args.prompts), "--batch", str(args.batch), "--max-tokens",
                                str(args.max_tokens)], check=True, capture_output=True,
                               text=True)
        result = json.loads(child.stdout.strip().splitlines()[-1])
        result["tokens_per_s"] = round(result["tokens"] / result["seconds"], 1)
        results[mode] = result
    speed = {m: r["tokens_per_s"] for m, r in results.items()}
    report = {"prompts": args.prompts, "batch": args.batch, "max_tokens": args.max_tokens,
              "results": results,
              "vllm_over_transformers": round(speed["vllm"] / speed["transformers"], 2),
              "prefix_cache_on_over_off": round(speed["vllm"] / speed["vllm-no-prefix-cache"],
                                                2)}
    print(json.dumps(report, indent=2))
    print(f"caption engines: vLLM {speed['vllm']} tok/s vs transformers "
          f"{speed['transformers']} tok/s = {report['vllm_over_transformers']}x (goal 2x); "
          f"prefix cache on/off = {report['prefix_cache_on_over_off']}x")
    out = Path("bench/results")
    out.mkdir(parents=True, exist_ok=True)
    (out / "captions_engines.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
