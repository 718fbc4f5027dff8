"""Checkpoints: RUN/checkpoints/last.pt and best.pt.

A checkpoint keeps the trainable weights (frozen encoders come from their own files),
the optimizer, the training progress (`State`), the resolved config and every random
generator, so a resumed run repeats the steps of an uninterrupted one. Files are
written whole (a temporary file, then a rename): a kill leaves the previous checkpoint.
Only rank 0 writes; the training loop holds the other ranks until the file is on disk.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from schemas.config import as_dict
from trainer.config import TrainConfig, load_config
from trainer.model import DualEncoder, build_model


@dataclass
class State:
    """How far training has come; saved in every checkpoint."""

    epoch: int = 0
    step: int = 0  # optimizer steps so far
    step_in_epoch: int = 0
    best_valid_loss: float = math.inf
    bad_epochs: int = 0
    stopped: str = ""  # why training ended early, if it did


def save_checkpoint(path: Path, model: DualEncoder, optimizer, state: State,
                    config: TrainConfig) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    numpy_state = np.random.get_state()
    body = {
        "model": model.trainable_state(),
        "optimizer": optimizer.state_dict(),
        "state": asdict(state),
        "config": as_dict(config),
        "rng": {"python": random.getstate(), "torch": torch.get_rng_state(),
                "numpy": [numpy_state[0], torch.from_numpy(numpy_state[1].astype(np.int64)),
                          *numpy_state[2:]],
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
    }
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(body, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, model: DualEncoder, optimizer) -> State:
    """Weights, optimizer and random generators back as they were saved; the progress.
    The weights and the optimizer's state go to the device the model is on."""
    if not path.exists():
        raise ValueError(f"nothing to resume: {path} does not exist")
    body = _load_weights(path, model)
    optimizer.load_state_dict(body["optimizer"])  # moves each state to its parameter
    rng = body["rng"]
    random.setstate((rng["python"][0], tuple(rng["python"][1]), rng["python"][2]))
    torch.set_rng_state(rng["torch"].cpu())
    np.random.set_state((rng["numpy"][0], rng["numpy"][1].numpy().astype(np.uint32),
                         *rng["numpy"][2:]))
    if rng["cuda"] and torch.cuda.is_available():
        # one state per GPU rank 0 saw; a node with fewer GPUs restores the ones it has
        for index, cuda_state in enumerate(rng["cuda"][:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, index)
    return State(**body["state"])


def checkpoint_path(run: Path, which: str) -> Path:
    """RUN/checkpoints/<which>.pt, or last.pt where the run has no such checkpoint, or
    the pretrained.pt of a zero-shot baseline (trainer/zero_shot.py)."""
    for name in (which, "last", "pretrained"):
        path = Path(run) / "checkpoints" / f"{name}.pt"
        if path.exists():
            return path
    raise ValueError(f"{run} has no checkpoint; train it first (`adswap train`)")


def load_model(run: Path, checkpoint: Path, device: str = "cpu") -> tuple[DualEncoder,
                                                                          TrainConfig]:
    """A trained model from a run folder and one of its checkpoints (for evaluation)."""
    config = load_config(Path(run) / "config.yaml")
    model = build_model(config.model)
    _load_weights(checkpoint, model)
    return model.to(device).eval(), config


def file_sha256(path: Path) -> str:
    """What names a checkpoint (or any file) in reports and embedding caches."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _load_weights(path: Path, model: DualEncoder) -> dict:
    """Load a checkpoint's trainable weights into the model wherever it lives; frozen
    encoders come from their own files. Everything is read onto the CPU first: the
    random generators' states must stay there (numpy cannot read a GPU tensor, and
    torch's CPU generator takes only a CPU state), and load_state_dict copies each
    weight onto its parameter's device."""
    body = torch.load(path, map_location="cpu", weights_only=True)
    if "pretrained" in body:  # a zero-shot baseline: the weights are the model's own
        from trainer.zero_shot import check_pretrained

        check_pretrained(body, path, model.config.clap.path)
        return body
    missing, unexpected = model.load_state_dict(body["model"], strict=False)
    trainable = set(model.trainable_state())
    if unexpected or [k for k in missing if k in trainable]:
        raise ValueError(f"{path} does not fit this model (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]}); was the model config changed?")
    return body
