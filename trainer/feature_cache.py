"""What the text and audio feature caches share: a cache's folder is named by the hash of
its identity (everything its states depend on), so a changed encoder, shard set or
setting never reads stale states; a run that finds only caches of other identities is
told what differs; each built shard (a unit) has a done marker, so a killed build
resumes; manifest.json is written when every unit is done.

Layout: FEATURES/<tower>-<identity hash>/ with identity.json, per train shard its
states (`<shard>.npy`) and its index (`<shard>.parquet`, written last: the unit's done
marker), then manifest.json.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from schemas.atomic import write_text_atomic
from trainer.config import TrainConfig, flatten

REBUILD = "run `adswap features` with this training config (`make features`)"


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cache_folder(config: TrainConfig, tower: str, identity: dict) -> Path:
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
    return Path(config.features.dir) / f"{tower}-{key}"


def open_cache(config: TrainConfig, tower: str, identity: dict) -> Path:
    """The finished cache of `identity`, or an error saying what the caches that are
    there were built for."""
    folder = cache_folder(config, tower, identity)
    if (folder / "manifest.json").exists():
        return folder
    if folder.exists():
        raise ValueError(f"the {tower} feature cache {folder} is not finished (a build was "
                         f"stopped); {REBUILD} to finish it")
    others = sorted(Path(config.features.dir).glob(f"{tower}-*/identity.json"))
    if not others:
        raise ValueError(f"no {tower} feature cache in {config.features.dir}; {REBUILD}")
    ours = flatten(identity)
    differences = []
    for other in others:
        theirs = flatten(json.loads(other.read_text(encoding="utf-8")))
        differences.append(f"{other.parent.name}: " + "; ".join(
            f"{k}: {theirs.get(k)} -> {ours.get(k)}" for k in sorted(ours | theirs)
            if theirs.get(k) != ours.get(k)))
    raise ValueError(f"the {tower} feature caches in {config.features.dir} were built for "
                     "other settings than this run's (" + " | ".join(differences) +
                     f"); {REBUILD}")


@dataclass
class FeatureStats:
    """One tower's build: `items` texts or clips, over `units` train shards."""

    tower: str
    folder: Path
    items: int = 0
    units: int = 0
    units_done_before: int = 0
    estimated_gb: float = 0.0
    seconds: float = 0.0


def start_folder(folder: Path, identity: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(folder / "identity.json", json.dumps(identity, indent=1, sort_keys=True))


def finish_folder(folder: Path, identity: dict, units: list[str], **facts) -> None:
    write_text_atomic(folder / "manifest.json", json.dumps(
        {"identity": identity, "units": units, **facts}, indent=1))


def read_manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
