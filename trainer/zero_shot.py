"""Zero-shot baselines: a pretrained model scored as it is, with no training.

`clap:DIR` (a transformers ClapModel folder) names one wherever a run folder is taken:
`adswap eval clap:DIR`, `--compare clap:DIR`, `adswap ablation --baseline clap:DIR`. It
becomes a run folder without training (config.yaml of kind clap, and
checkpoints/pretrained.pt, which holds no weights but the revision of DIR's files), so
the evaluation, its cache, its saved per-query ranks and every paired comparison are a
trained run's. `embed`, `search`, `serve` and `export` take that folder too.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
import yaml

from schemas.atomic import write_text_atomic
from schemas.config import as_dict
from trainer.config import load_config
from trainer.revision import encoder_revision

PREFIX = "clap:"
CHECKPOINT = "pretrained.pt"


def is_baseline(spec: str | Path) -> bool:
    return str(spec).startswith(PREFIX)


def baseline_path(spec: str | Path) -> Path:
    """The ClapModel folder `clap:DIR` names, checked."""
    folder = Path(str(spec)[len(PREFIX):]).expanduser()
    if not (folder / "config.json").exists():
        raise ValueError(f"{spec}: {folder} is not a transformers model folder (no "
                         "config.json); give a ClapModel folder saved with save_pretrained")
    model_type = json.loads((folder / "config.json").read_text()).get("model_type")
    if model_type != "clap":
        raise ValueError(f"{spec}: {folder} holds a {model_type!r} model, not a ClapModel")
    return folder.resolve()


def baseline_run(spec: str | Path, root: Path) -> Path:
    """The run folder of `spec` under `root` (made, or brought up to date with DIR's
    files); a plain run folder is returned as it is."""
    if not is_baseline(spec):
        return Path(spec)
    folder = baseline_path(spec)
    run = Path(root) / f"{folder.name}-{hashlib.sha256(str(folder).encode()).hexdigest()[:8]}"
    revision = encoder_revision(str(folder))
    marker = run / "checkpoints" / CHECKPOINT
    if marker.exists() and torch.load(marker, weights_only=True)["pretrained"] == \
            {"path": str(folder), "revision": revision}:
        return run
    from transformers import ClapFeatureExtractor

    extractor = ClapFeatureExtractor.from_pretrained(folder)
    config = load_config(None, [
        "model.kind=clap", f"model.clap.path={folder}", "model.clap.train_audio=false",
        f"model.audio.sample_rate={extractor.sampling_rate}",
        f"model.audio.clip_seconds={extractor.nb_max_samples / extractor.sampling_rate}",
        f"run.out={run}"])
    marker.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run / "config.yaml", yaml.safe_dump(as_dict(config), sort_keys=False))
    tmp = marker.with_name(f".{marker.name}.tmp-{os.getpid()}")
    torch.save({"model": {}, "pretrained": {"path": str(folder), "revision": revision}}, tmp)
    os.replace(tmp, marker)
    return run


def check_pretrained(body: dict, path: Path, model_path: str) -> None:
    """A zero-shot checkpoint still names the files the model was built from."""
    saved = body["pretrained"]
    if encoder_revision(model_path) != saved["revision"]:
        raise ValueError(f"{path} was made from {saved['path']} as it was then; its files "
                         f"have changed since, so name it again (clap:{saved['path']})")
