"""The run folder (run.out), as rank 0 keeps it: config.yaml (the resolved config),
metrics.jsonl and tensorboard/ (`Log`), loss.png and validation.png (`plot_metrics`),
and what the data card says of a run (`card_facts`); checkpoints/ is
trainer/checkpoint.py's."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import yaml

from schemas.config import as_dict
from trainer.checkpoint import State
from trainer.config import TrainConfig

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter


@dataclass(frozen=True)
class Log:
    """Rank 0's metrics.jsonl and TensorBoard writer."""

    file: TextIO
    writer: SummaryWriter

    def write(self, row: dict) -> None:
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        for key, value in row.items():
            if key not in ("type", "epoch", "step") and isinstance(value, (int, float)):
                self.writer.add_scalar(f"{row['type']}/{key}", value, row["step"])

    def close(self) -> None:
        self.file.close()
        self.writer.close()


def open_run_folder(config: TrainConfig, state: State, resume: bool) -> Log:
    """Rank 0 writes the resolved config and opens the logs; a resumed run first drops
    the rows of steps it will repeat."""
    out = Path(config.run.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(as_dict(config), sort_keys=False))
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(out / "tensorboard"), purge_step=state.step or None)
    if resume:
        _drop_rows_after(out / "metrics.jsonl", state.step)
    return Log((out / "metrics.jsonl").open("a", encoding="utf-8"), writer)


def card_facts(config: TrainConfig, state: State) -> dict:
    """What the data card's `training` section says of a run."""
    rows = [json.loads(line) for line in (config.run.out / "metrics.jsonl").read_text()
            .splitlines()]
    last = [r for r in rows if r["type"] == "epoch"][-1:] or [{}]
    return {"epochs": state.epoch, "steps": state.step, "stopped": state.stopped or None,
            "audio": config.model.audio.kind, "text": config.model.text.path,
            "p_cap": config.data.p_cap, "textswap": config.swap.enabled,
            "best_valid_loss": None if state.best_valid_loss == math.inf
            else round(state.best_valid_loss, 4),
            "last_valid_R@10": last[0].get("valid_R@10")}


def _drop_rows_after(path: Path, step: int) -> None:
    """A run killed after its last checkpoint logged steps it will now repeat."""
    if not path.exists():
        return
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = [line for line in lines if json.loads(line)["step"] <= step]
    if len(kept) != len(lines):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        os.replace(tmp, path)


def plot_metrics(out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if r["type"] == "step"]
    epochs = [r for r in rows if r["type"] == "epoch" and r.get("valid_loss") is not None]
    for name, xlabel, ylabel, lines in (
            ("loss.png", "step", "InfoNCE loss",
             [("train", "-", [r["step"] for r in steps], [r["loss"] for r in steps]),
              ("valid", "o-", [r["step"] for r in epochs], [r["valid_loss"] for r in epochs])]),
            ("validation.png", "epoch", "R@10 (%)",
             [("valid R@10", "o-", [r["epoch"] for r in epochs],
               [r["valid_R@10"] for r in epochs])])):
        fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
        for label, style, x, y in lines:
            ax.plot(x, y, style, label=label)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / name, metadata={"Software": None})
        plt.close(fig)
