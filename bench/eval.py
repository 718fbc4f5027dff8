"""Benchmark: evaluation throughput and memory.

1. Ranking 10,000 captions against 10,000 clips (256-d embeddings): queries/s and the
   peak memory of the process doing it, chunked (what `adswap eval` does) against one
   unchunked queries x items score matrix, in the same run; and how peak memory grows
   from 2,500 to 20,000 (chunked: linearly; unchunked: with the square).
2. Embedding with the default CPU model (log-mel CNN, frozen MiniLM): clips/s and
   captions/s, on 1,000 clips of 5 s and 2,000 captions (10,000 of each take about
   ten times as long).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

_RANK = """
import resource, time, torch
import torch.nn.functional as F
from trainer.metrics import ranks
n, chunk = {n}, {chunk}
g = torch.Generator().manual_seed(0)
items = F.normalize(torch.randn(n, 256, generator=g), dim=1)
queries = F.normalize(items + 0.5 * torch.randn(n, 256, generator=g), dim=1)
targets = torch.arange(n)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
if chunk:
    r = ranks(queries, items, targets, chunk=chunk)
else:
    scores = queries @ items.T
    r = (scores >= scores.gather(1, targets[:, None])).sum(1)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(seconds, (peak - before) / 1024, float((r <= 10).float().mean()))
"""


def ranking(n: int, chunk: int) -> dict:
    out = subprocess.run([sys.executable, "-c", _RANK.format(n=n, chunk=chunk)], check=True,
                         capture_output=True, text=True).stdout.split()
    seconds, extra_mb, r10 = map(float, out)
    return {"seconds": round(seconds, 3), "queries_per_s": round(n / seconds),
            "extra_peak_mb": round(extra_mb, 1), "R@10": round(r10, 4)}


def embedding(clips: int, captions: int) -> dict:
    import torch

    from trainer.config import load_config
    from trainer.model import DuetMC

    config = load_config("trainer/configs/demo.yaml")
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    results = {"ranking_10k": {"chunked": ranking(10_000, 1024),
                               "unchunked": ranking(10_000, 0)}}
    chunked, full = results["ranking_10k"]["chunked"], results["ranking_10k"]["unchunked"]
    results["ranking_10k"]["speed_ratio_to_unchunked"] = round(
        chunked["queries_per_s"] / full["queries_per_s"], 3)
    results["memory_growth_mb"] = {
        f"n_{n}": {"chunked": ranking(n, 1024)["extra_peak_mb"],
                   "unchunked": ranking(n, 0)["extra_peak_mb"]}
        for n in (2_500, 5_000, 10_000, 20_000)}
    results["embedding"] = embedding(1_000, 2_000)
    print(json.dumps(results, indent=1))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "eval.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
