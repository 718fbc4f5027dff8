"""`adswap shards`: audio clips and curated views into WebDataset tars.

Out folder:
  {split}-{000000}.tar    samples `{track_id}-{clip}` with `.flac` (or `.wav`) and `.json`
  sizes.json              samples per shard (what open_clip and our loader read)
  manifest.json           settings, their hash, input fingerprints, counts, shard sha256
  swap_dictionary.json    copied from the curation output, for TextSwap
  rejects.jsonl           every track left out, with its reason
  report.json, report.md  counts per split, hours, clips per track, bytes, speed
  _work/                  the plan and one done marker per shard (resume state)

Each shard is one unit of work written atomically, then marked done; a rerun does only
the shards without a marker, and the plan is fixed by the inputs, so the bytes match
an uninterrupted run whatever the worker count, and whether the shards were built by
local workers or as Ray tasks (`--executor ray`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pipeline.parallel import map_jobs, map_jobs_on_ray
from pipeline.ray_cluster import RayConfig, connected, executor_setting
from pipeline.rejects import Reject, count_rejects
from pipeline.sharding import check_rank, rank_setting, resolve_rank, world_size_setting
from pipeline.shards.audio import AudioReject, ClipConfig, make_clips
from pipeline.shards.plan import build_plan, curated_glob, unit_file
from pipeline.shards.tar import write_tar
from schemas.atomic import write_text_atomic
from schemas.catalog import CatalogConfig, read_setting, resolve_audio, tag_map_for
from schemas.config import Config, setting
from schemas.sample import SAMPLE_SCHEMA_ID, Sample, SampleView
from schemas.shard_plan import SHARD_PLAN_SCHEMA_ID, read_plan_unit
from schemas.views import Span

MANIFEST_SCHEMA_ID = "shards/1"


@dataclass(frozen=True)
class ShardsConfig(Config):
    curated: Path = setting(help="Output folder of `adswap curate` (curated/ and "
                            "swap_dictionary.json).")
    catalog: Path = setting(help="The catalog the views were written from.")
    out: Path = setting(help="Folder for the tars, sizes.json and manifest.json.")
    clips: ClipConfig = setting(factory=ClipConfig, help="How clips are cut.")
    read: CatalogConfig = read_setting()
    max_samples: int = setting(1000, help="Samples per shard, at most.")
    max_bytes: int = setting(1 << 30, help="Bytes per shard, at most (estimated from "
                             "16-bit PCM size, an upper bound for FLAC).")
    workers: int = setting(0, help="Worker processes; 0 = all cores (executor local; on "
                           "Ray each shard is a task of one CPU).")
    executor: str = executor_setting()
    ray: RayConfig = setting(factory=RayConfig, help="The Ray cluster (executor ray).")
    rank: int | None = rank_setting()
    world_size: int | None = world_size_setting()
    overwrite: bool = setting(False, help="Replace shards made from other inputs or "
                              "settings (one rank only).")

    def check(self) -> list[str]:
        problems = check_rank(self)
        if self.max_samples < 1:
            problems.append("max_samples must be >= 1")
        if self.max_bytes < 1 << 20:
            problems.append("max_bytes must be at least 1 MiB")
        if self.workers < 0:
            problems.append("workers must be >= 0")
        return problems

    @property
    def categories(self) -> tuple[str, ...]:
        return self.read.categories

    def settings(self) -> dict:
        """What decides the bytes of the shards (not where they go, nor how many workers)."""
        settings = {"clips": asdict(self.clips), "categories": list(self.categories),
                    "max_samples": self.max_samples, "max_bytes": self.max_bytes,
                    "seed": self.clips.seed}
        # the samples carry the tags as read: a new tag map must rebuild them
        tag_map = tag_map_for(self.catalog, self.read) \
            if Path(self.catalog).exists() else None
        if tag_map is not None or self.read.min_tag_tracks > 1:
            settings["tags"] = {"tag_map_sha256": tag_map and tag_map.sha256,
                                "min_tag_tracks": self.read.min_tag_tracks}
        return settings


@dataclass
class ShardsStats:
    shards: int = 0
    built: int = 0
    skipped: int = 0
    samples: int = 0
    tracks: int = 0
    rejects: Counter = field(default_factory=Counter)
    audio_hours: float = 0.0
    bytes: int = 0
    seconds: float = 0.0
    complete: bool = False


@dataclass(frozen=True)
class ShardJob:
    unit: str
    plan: Path
    tar: Path
    done: Path
    clips: ClipConfig
    audio_root: Path
    provenance: dict


def fingerprint(paths: list[Path]) -> str:
    """Content hash of input files (every file under a folder), in a fixed order."""
    digest = hashlib.sha256()
    for path in paths:
        files = sorted(p for p in Path(path).rglob("*") if p.is_file()) \
            if Path(path).is_dir() else [Path(path)]
        for file in files:
            digest.update(file.name.encode())
            with open(file, "rb") as handle:
                for block in iter(lambda h=handle: h.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


def run(config: ShardsConfig) -> ShardsStats:
    started = time.perf_counter()
    config = resolve_rank(config)
    out, work = Path(config.out), Path(config.out) / "_work"
    catalog_config = config.read
    curated_glob(config.curated)  # fails early, with advice, if curation has not run
    if not Path(config.catalog).exists():
        raise ValueError(f"catalog {config.catalog} does not exist")
    inputs = {"catalog": fingerprint([config.catalog]),
              "curated": fingerprint([Path(config.curated) / "curated"])}
    settings_hash = hashlib.sha256(json.dumps(
        {"settings": config.settings(), "inputs": inputs}, sort_keys=True).encode()).hexdigest()
    # Each rank plans into its own folder: the plan is deterministic, so ranks agree
    # without coordinating, and never write the same file at once.
    plan = work / f"plan-r{config.rank}"
    units, plan_rejects = _plan(config, catalog_config, settings_hash, plan)

    root = catalog_config.audio_root or (config.catalog if config.catalog.is_dir()
                                         else config.catalog.parent)
    provenance = {"catalog_sha256": inputs["catalog"][:16],
                  "curated_sha256": inputs["curated"][:16],
                  "shards_config": settings_hash[:16]}
    mine = sorted(units)[config.rank::config.world_size]
    jobs = [ShardJob(unit, unit_file(plan, unit), out / f"{unit}.tar",
                     work / "done" / f"{unit}.json", config.clips, Path(root).resolve(),
                     provenance) for unit in mine]
    for stale in out.glob(".*.tar.tmp-*"):  # left by a killed run
        stale.unlink(missing_ok=True)
    todo = [job for job in jobs if not _is_done(job)]
    stats = ShardsStats(shards=len(units), skipped=len(jobs) - len(todo))
    written = [0]

    def speed(result: dict) -> str:
        written[0] += result["bytes"]
        return f"{written[0] / 1e6 / max(time.perf_counter() - started, 1e-9):.1f} MB/s"

    weights = [len(units[job.unit]) for job in todo]
    if config.executor == "ray":
        stats.built = _build_on_ray(todo, weights, config, speed)
    else:
        for _ in map_jobs(build_shard, todo, config.workers, "shards", "track",
                          weights=weights, postfix=speed):
            stats.built += 1
    done = {unit: json.loads(marker.read_text(encoding="utf-8"))
            for unit in units if (marker := work / "done" / f"{unit}.json").exists()}
    stats.complete = len(done) == len(units)
    if stats.complete:
        manifest = _finish(config, units, done, plan_rejects, inputs, settings_hash, stats)
        stats.seconds = round(time.perf_counter() - started, 3)
        _write_report(out, stats, manifest, config)
    else:
        stats.seconds = round(time.perf_counter() - started, 3)
    return stats


def _plan(config: ShardsConfig, catalog_config: CatalogConfig, settings_hash: str,
          plan: Path) -> tuple[dict[str, list[str]], list[Reject]]:
    """Reuse the plan of an interrupted run with the same inputs; refuse to mix runs.
    A plan written by another version of adswap (another plan schema) is made again,
    with its shards: the inputs are the same, so nothing of the user's is lost."""
    work = plan.parent
    marker = plan.with_suffix(".json")
    start_over = config.overwrite
    if marker.exists():
        saved = json.loads(marker.read_text(encoding="utf-8"))
        if saved["settings_hash"] != settings_hash and not config.overwrite:
            raise ValueError(f"{config.out} holds shards made from other inputs or settings; "
                             "use another --out folder or pass --overwrite")
        if saved["settings_hash"] == settings_hash and \
                saved.get("plan_schema") == SHARD_PLAN_SCHEMA_ID:
            return saved["units"], [Reject(**r) for r in saved["rejects"]]
        start_over = True
    if start_over and Path(config.out).exists():
        for old in Path(config.out).glob("*.tar"):
            old.unlink()
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    units, rejects = build_plan(config.catalog, config.curated, config.clips, catalog_config,
                                config.clips.seed, config.max_samples, config.max_bytes, plan)
    write_text_atomic(marker, json.dumps({
        "settings_hash": settings_hash, "plan_schema": SHARD_PLAN_SCHEMA_ID, "units": units,
        "rejects": [asdict(r) for r in rejects]}, sort_keys=True))
    return units, rejects


def _build_on_ray(todo: list[ShardJob], weights: list[int], config: ShardsConfig,
                  speed) -> int:
    """Build the shards as Ray tasks (the same function, so the same bytes and done
    markers; the out folder must be one file system for every node, as for a SLURM
    array); returns how many were built. A shard whose task keeps dying, or fails, is
    named in the error raised once the others are built."""
    given_up = []
    built = 0
    if not todo:  # every shard is done: no cluster to start
        return 0
    with connected(config.ray):
        for job, _, why in map_jobs_on_ray(build_shard, todo, "shards", "track",
                                           config.ray.attempts, weights, speed):
            if why is None:
                built += 1
            else:
                given_up.append(f"{job.unit}: {why}")
    if given_up:
        raise RuntimeError(
            f"{len(given_up)} shards were not built (a task that died was tried "
            f"{config.ray.attempts} times; one that failed, once):\n  "
            + "\n  ".join(given_up) + f"\nThe {built} shards built are kept: rerun the same "
            "command to build the rest.")
    return built


def _is_done(job: ShardJob) -> bool:
    return job.done.exists() and job.tar.exists()


def build_shard(job: ShardJob) -> dict:
    """Write one shard and its done marker; a bad track is a reject, never a half sample."""
    rows = read_plan_unit(job.plan)
    samples, rejects, seconds, clips_per_track = [], [], 0.0, Counter()
    for row in rows:
        try:
            clips = make_clips(resolve_audio(row["audio"], job.audio_root), job.clips,
                               row["track_id"])
        except AudioReject as err:
            rejects.append(Reject(row["track_id"], "audio", err.kind, str(err)).to_json())
            continue
        except ValueError as err:  # resolve_audio: outside the audio root, a URI scheme
            rejects.append(Reject(row["track_id"], "audio", "audio_path", str(err)).to_json())
            continue
        clips_per_track[len(clips)] += 1
        views = [SampleView(view_id=v["view_id"], language=v["language"], text=v["text"],
                            spans=[Span(**s) for s in v["spans"]]) for v in row["views"]]
        provenance = {**job.provenance, "engine": row["engine"], "model_id": row["model_id"],
                      "template_id": row["template_id"], "template_hash": row["template_hash"]}
        for clip in clips:
            sample = Sample(track_id=row["track_id"], clip_index=clip.index,
                            start_s=clip.start_s, end_s=clip.end_s,
                            sample_rate=job.clips.sample_rate, split=row["split"],
                            tags=json.loads(row["tags"]), tags_text=row["tags_text"],
                            views=views, provenance=provenance)
            body = json.dumps(sample.to_json(), sort_keys=True, ensure_ascii=False)
            samples.append((sample.key, {job.clips.audio_format: clip.data,
                                         "json": body.encode("utf-8")}))
            seconds += clip.end_s - clip.start_s
    size = write_tar(job.tar, samples)
    result = {"unit": job.unit, "samples": len(samples), "bytes": size,
              "tracks": len(rows) - len(rejects), "audio_seconds": round(seconds, 3),
              "clips_per_track": {str(k): v for k, v in sorted(clips_per_track.items())},
              "sha256": hashlib.sha256(job.tar.read_bytes()).hexdigest(), "rejects": rejects}
    write_text_atomic(job.done, json.dumps(result, sort_keys=True))
    return result


def write_index(out: Path, done: dict, rejects: list[dict]) -> None:
    """sizes.json (samples per shard, as open_clip reads it) and rejects.jsonl, from the
    done markers ({unit: marker}); the shards stage and the eval-set importer share it."""
    write_text_atomic(out / "sizes.json", json.dumps(
        {f"{u}.tar": d["samples"] for u, d in done.items()}, indent=1, sort_keys=True) + "\n")
    write_text_atomic(out / "rejects.jsonl", "".join(
        json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in rejects))


def _finish(config: ShardsConfig, units: dict, done: dict, plan_rejects: list[Reject],
            inputs: dict, settings_hash: str, stats: ShardsStats) -> dict:
    """Write sizes.json, manifest, rejects and the swap dictionary once every shard is in;
    return the manifest."""
    out = Path(config.out)
    names = sorted(units)
    rejects = [r.to_json() for r in plan_rejects] + [r for u in names for r in done[u]["rejects"]]
    write_index(out, done, rejects)
    splits: dict[str, dict] = {}
    for unit in names:
        split = unit.rsplit("-", 1)[0]
        entry = splits.setdefault(split, {"shards": [], "samples": 0, "tracks": 0,
                                          "audio_hours": 0.0, "bytes": 0,
                                          "clips_per_track": Counter()})
        entry["shards"].append(f"{unit}.tar")
        for key in ("samples", "tracks", "bytes"):
            entry[key] += done[unit][key]
        entry["audio_hours"] += done[unit]["audio_seconds"] / 3600
        entry["clips_per_track"].update(done[unit]["clips_per_track"])
    for entry in splits.values():
        entry["audio_hours"] = round(entry["audio_hours"], 4)
        entry["clips_per_track"] = dict(sorted(entry["clips_per_track"].items()))
    manifest = {"schema": MANIFEST_SCHEMA_ID, "sample_schema": SAMPLE_SCHEMA_ID,
                "settings": config.settings(), "settings_hash": settings_hash,
                "inputs": inputs, "splits": splits,
                "shards": {f"{u}.tar": {k: done[u][k] for k in ("samples", "bytes", "sha256")}
                           for u in names}}
    write_text_atomic(out / "manifest.json", json.dumps(manifest, indent=1, sort_keys=True))
    shutil.copyfile(Path(config.curated) / "swap_dictionary.json",
                    out / "swap_dictionary.json")
    stats.samples = sum(e["samples"] for e in splits.values())
    stats.tracks = sum(e["tracks"] for e in splits.values())
    stats.bytes = sum(e["bytes"] for e in splits.values())
    stats.audio_hours = round(sum(e["audio_hours"] for e in splits.values()), 4)
    stats.rejects = count_rejects(rejects)
    return manifest


def _write_report(out: Path, stats: ShardsStats, manifest: dict, config: ShardsConfig
                  ) -> None:
    report = {"totals": {"shards": stats.shards, "samples": stats.samples,
                         "tracks": stats.tracks, "audio_hours": stats.audio_hours,
                         "bytes": stats.bytes},
              "rejects": dict(stats.rejects.most_common()),
              "splits": {s: {k: v for k, v in e.items() if k != "shards"} |
                         {"shards": len(e["shards"])} for s, e in manifest["splits"].items()},
              "settings": config.settings(),
              "this_run": {"built": stats.built, "skipped": stats.skipped,
                           "seconds": stats.seconds, "executor": config.executor,
                           "workers": config.workers or os.cpu_count(),
                           "rank": config.rank, "world_size": config.world_size}}
    write_text_atomic(out / "report.json", json.dumps(report, indent=1, sort_keys=True))
    lines = [f"# Shards: {out}", "",
             f"{stats.samples} samples from {stats.tracks} tracks in {stats.shards} shards, "
             f"{stats.audio_hours:.2f} h of audio, {stats.bytes / 1e6:.1f} MB.", "",
             "| split | shards | tracks | samples | hours | MB | clips per track |",
             "|---|---|---|---|---|---|---|"]
    for split, e in report["splits"].items():
        lines.append(f"| {split} | {e['shards']} | {e['tracks']} | {e['samples']} | "
                     f"{e['audio_hours']:.2f} | {e['bytes'] / 1e6:.1f} | "
                     + ", ".join(f"{k}: {v}" for k, v in e["clips_per_track"].items()) + " |")
    lines += ["", "## Rejected tracks", ""]
    lines += [f"- {kind}: {n}" for kind, n in report["rejects"].items()] or ["- none"]
    lines += ["", "Every reject, with its track and full reason: `rejects.jsonl`.", ""]
    write_text_atomic(out / "report.md", "\n".join(lines))


def card_facts(out: Path) -> dict:
    """The shards section of the data card."""
    report = json.loads((Path(out) / "report.json").read_text(encoding="utf-8"))
    return {"source": str(out), "totals": report["totals"], "splits": report["splits"],
            "rejects": report["rejects"], "settings": report["settings"]}
