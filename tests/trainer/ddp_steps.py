"""Run a few real optimizer steps on a fixed, seeded global batch and write the losses.

Started directly (one process, the whole batch) or by torchrun (each process takes its
slice of the same global batch); test_distributed.py compares the two. A third
argument `text` trains the text encoder too."""

import json
import sys
from pathlib import Path

import torch

from schemas.descriptors import DescriptorMatcher
from schemas.swap_dictionary import Descriptor, SwapDictionary
from trainer.config import load_config
from trainer.distributed import setup
from trainer.model import DuetMC
from trainer.swap import Swapper
from trainer.train import Learner, RunContext, train_step

GLOBAL_BATCH, STEPS = 8, 4
DICTIONARY = SwapDictionary(tuple(
    [Descriptor("genre", g) for g in ("rock", "jazz", "pop", "blues")] +
    [Descriptor("mood", m) for m in ("happy", "sad", "calm")] +
    [Descriptor("instrument", i) for i in ("guitar", "piano", "drums")]))
CAPTIONS = ["a happy rock song with guitar", "sad jazz on piano", "calm pop with drums",
            "blues guitar, sad", "happy jazz drums", "rock piano, calm", "pop guitar happy",
            "sad blues with drums"]


def main(out: Path, accumulate: int, train_text: bool) -> None:
    info = setup("cpu")
    config = load_config(None, [f"model.text.trainable={str(train_text).lower()}",
        "model.audio.clip_seconds=0.5", "model.audio.cnn.channels=[4, 8]", "model.dim=32",
        "model.layers=1", "model.dropout=0.0", "model.learn_temperature=true",
        "model.max_positions=64", f"data.accumulate={accumulate}", "run.device=cpu",
        f"data.batch_size={GLOBAL_BATCH // info.world // accumulate}"])
    torch.manual_seed(0)
    model = DuetMC(config.model)
    for module in model.text.modules():  # MiniLM's own dropout: each process draws its own
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    learner = Learner.wrap(model, torch.optim.AdamW(model.trainable_parameters(), lr=1e-3,
                                                    weight_decay=0.05), info)
    matcher = DescriptorMatcher(DICTIONARY)
    run = RunContext(config, info, Swapper(DICTIONARY, ("genre", "mood", "instrument")),
                     lambda: torch.autocast("cpu", enabled=False))
    per_rank = GLOBAL_BATCH // info.world
    losses, hard = [], []
    for step in range(STEPS):
        g = torch.Generator().manual_seed(step)
        audio = torch.randn(GLOBAL_BATCH, 8_000, generator=g) * 0.1
        mine = range(info.rank * per_rank, (info.rank + 1) * per_rank)
        parts = []
        for j in range(accumulate):
            rows = list(mine)[j * config.data.batch_size:(j + 1) * config.data.batch_size]
            parts.append({"audio": audio[rows], "text": [CAPTIONS[i] for i in rows],
                          "spans": [[m._asdict() for m in matcher.find(CAPTIONS[i])]
                                    for i in rows],
                          "tags": [{"genre": ["rock"]} for _ in rows]})
        torch.manual_seed(1000 + step)  # the same dropout stream as train() seeds per step
        loss, n_hard = train_step(learner, run, parts, 0.5, step)
        losses.append(loss)
        hard.append(n_hard)
    if info.rank == 0:
        out.write_text(json.dumps({"losses": losses, "hard_negatives": hard}))
    info.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:] == ["text"])
