"""Stage `demo-data`: render the demo catalog, its audio and its reference captions.

Output folder:
  catalog.parquet              schemas/catalog: `tracks` train/valid tracks, then
                               `test_tracks` held-out test tracks; split by artist
  audio/<track_id>.flac        mono, 16-bit FLAC
  reference_captions.parquet   schemas/eval_captions, test split only
  demo.json                    the settings and counts; a rerun with the same settings
                               resumes (finished tracks are kept), other settings refuse
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile

from pipeline.demo.arrangement import arrange
from pipeline.demo.references import reference_captions
from pipeline.demo.render import render
from pipeline.demo.tracks import (
    DemoTrack,
    assign_splits,
    make_artists,
    make_track,
    make_variant,
)
from pipeline.demo.vocabulary import GENRES, INSTRUMENTS, MOODS
from pipeline.parallel import map_jobs
from schemas.atomic import atomic_path, write_text_atomic
from schemas.catalog import DEFAULT_CATEGORIES, Track, write_catalog
from schemas.config import Config, setting
from schemas.eval_captions import eval_captions_schema

DEMO_FORMAT = 2  # bump when the same settings would render different bytes


@dataclass(frozen=True)
class DemoConfig(Config):
    out: Path = setting(Path("data/demo"), help="Folder to write the demo catalog into.")
    tracks: int = setting(400, help="Train and valid tracks to render (the ones the "
                          "caption stage writes views of).")
    test_tracks: int = setting(500, help="Held-out test tracks, by artists of their own, "
                               "with reference captions: the eval set (500 gives the "
                               "paper's 500-track subsets, R@10 chance 2%). `adswap "
                               "captions` skips them.")
    seed: int = setting(0, help="Seed; the same seed gives the same bytes.")
    sample_rate: int = setting(22050, help="Audio sample rate in Hz.")
    min_duration_s: float = setting(10.0, flag="min-duration", help="Shortest track, in "
                                    "seconds.")
    max_duration_s: float = setting(15.0, flag="max-duration", help="Longest track, in "
                                    "seconds.")
    tracks_per_artist: int = setting(8, help="Tracks per synthetic artist, on average.")
    variant_fraction: float = setting(0.3, help="Share of tracks made as a same-artist "
                                      "variant of an earlier one with one tag swapped.")
    valid_fraction: float = setting(0.1, help="Share of the train/valid artists in the "
                                    "valid split.")
    captions_per_test_track: int = setting(2, help="Reference captions per test track.")
    workers: int = setting(0, help="Render processes; 0 = all cores.")

    def check(self) -> list[str]:
        problems = []
        if self.tracks < 1 or self.test_tracks < 0:
            problems.append("tracks must be >= 1 and test_tracks >= 0")
        if not 8000 <= self.sample_rate <= 48000:
            problems.append("sample_rate must be between 8000 and 48000 Hz")
        if not 1.0 <= self.min_duration_s <= self.max_duration_s <= 120:
            problems.append("min_duration_s, max_duration_s: need 1 <= min <= max <= 120")
        if not 0 <= self.variant_fraction <= 1:
            problems.append("variant_fraction must be in [0, 1]")
        if self.tracks_per_artist < 1:
            problems.append("tracks_per_artist must be >= 1")
        if not 0 <= self.valid_fraction < 1:
            problems.append("valid_fraction must be in [0, 1)")
        if not 1 <= self.captions_per_test_track <= 5:
            problems.append("captions_per_test_track must be between 1 and 5")
        if self.workers < 0:
            problems.append("workers must be >= 0")
        return problems

    def fingerprint(self) -> str:
        """Everything that changes the output bytes (not `out` or `workers`)."""
        settings = {k: v for k, v in asdict(self).items() if k not in ("out", "workers")}
        settings["format"] = DEMO_FORMAT
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class DemoStats:
    tracks: int
    rendered: int
    skipped: int
    audio_seconds: float
    seconds: float
    splits: dict


def plan_tracks(config: DemoConfig) -> list[DemoTrack]:
    """The train/valid tracks (ids 0..tracks-1), then the test tracks, whose artists
    appear in no other split."""
    rng = np.random.default_rng([config.seed, 0])
    n_train_artists = -(-config.tracks // config.tracks_per_artist)
    n_test_artists = -(-config.test_tracks // config.tracks_per_artist)
    artists = make_artists(n_train_artists + n_test_artists, rng)
    splits = assign_splits(artists[:n_train_artists], rng, config.valid_fraction)
    splits.update({a.artist_id: "test" for a in artists[n_train_artists:]})
    tracks: list[DemoTrack] = []
    durations = (config.min_duration_s, config.max_duration_s)
    for first, count, group in ((0, config.tracks, artists[:n_train_artists]),
                                (config.tracks, config.test_tracks,
                                 artists[n_train_artists:])):
        for index in range(first, first + count):
            artist = group[index - first] if index - first < len(group) \
                else group[int(rng.integers(len(group)))]
            track_rng = np.random.default_rng([config.seed, 1, index])
            own = [t for t in tracks if t.artist == artist]
            if own and track_rng.random() < config.variant_fraction:
                base = own[int(track_rng.integers(len(own)))]
                tracks.append(make_variant(index, base, track_rng, durations))
            else:
                tracks.append(make_track(index, artist, splits[artist.artist_id], track_rng,
                                         durations))
    return tracks


def track_tags(track: DemoTrack) -> dict[str, list[str]]:
    return {"genre": list(track.genres), "mood": list(track.moods),
            "instrument": list(track.instruments)}


def render_track(track: DemoTrack, seed: int, sample_rate: int) -> np.ndarray:
    rng = np.random.default_rng([seed, 2, track.index])
    return render(arrange(track_tags(track), rng, track.duration_s), track.duration_s,
                  sample_rate)


def _render_to_file(job: tuple[DemoTrack, int, int, str]) -> None:
    track, seed, sample_rate, path = job
    audio = render_track(track, seed, sample_rate)
    with atomic_path(path) as tmp:
        soundfile.write(tmp, audio, sample_rate, format="FLAC", subtype="PCM_16")


def run(config: DemoConfig) -> DemoStats:
    started = time.perf_counter()
    out = Path(config.out)
    manifest_path = out / "demo.json"
    if manifest_path.exists():
        previous = json.loads(manifest_path.read_text(encoding="utf-8")).get("fingerprint")
        if previous != config.fingerprint():
            raise ValueError(f"{out} holds demo data made with other settings; choose another "
                             "--out or delete the folder")
    out.mkdir(parents=True, exist_ok=True)
    _write_manifest(manifest_path, config, status="rendering", stats=None)

    tracks = plan_tracks(config)
    audio_dir = out / "audio"
    audio_dir.mkdir(exist_ok=True)
    jobs = [(t, config.seed, config.sample_rate, str(audio_dir / f"{t.track_id}.flac"))
            for t in tracks]
    todo = [job for job in jobs if not Path(job[3]).exists()]
    list(map_jobs(_render_to_file, todo, config.workers, "demo-data: rendering", "track",
                  chunksize=4))

    write_catalog([catalog_track(t) for t in tracks], out / "catalog.parquet",
                  DEFAULT_CATEGORIES)
    _write_references(tracks, config, out / "reference_captions.parquet")
    splits = {s: sum(t.split == s for t in tracks) for s in ("train", "valid", "test")}
    stats = DemoStats(tracks=len(tracks), rendered=len(todo), skipped=len(jobs) - len(todo),
                      audio_seconds=round(sum(t.duration_s for t in tracks), 1),
                      seconds=round(time.perf_counter() - started, 2), splits=splits)
    _write_manifest(manifest_path, config, status="done", stats=stats)
    return stats


def catalog_track(track: DemoTrack) -> Track:
    return Track(track_id=track.track_id, audio=f"audio/{track.track_id}.flac",
                 tags={k: tuple(v) for k, v in track_tags(track).items()},
                 duration_s=track.duration_s, artist=track.artist.name,
                 license="CC0-1.0", split=track.split)


def _write_references(tracks: list[DemoTrack], config: DemoConfig, path: Path) -> None:
    rows = []
    for track in tracks:
        if track.split != "test":
            continue
        rng = np.random.default_rng([config.seed, 3, track.index])
        for caption_id, text in enumerate(
                reference_captions(track, rng, config.captions_per_test_track)):
            rows.append({"track_id": track.track_id, "caption_id": caption_id,
                         "language": "en", "text": text})
    table = pa.Table.from_pylist(rows, schema=eval_captions_schema())
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def _write_manifest(path: Path, config: DemoConfig, status: str,
                    stats: DemoStats | None) -> None:
    """Only what the settings determine goes here, so the file is the same bytes on
    every run; timings are returned and printed instead."""
    settings = {k: v for k, v in asdict(config).items() if k not in ("out", "workers")}
    body = {
        "fingerprint": config.fingerprint(), "status": status, "settings": settings,
        "vocabulary": {"genre": sorted(GENRES), "mood": sorted(MOODS),
                       "instrument": sorted(INSTRUMENTS)},
        "counts": None if stats is None else {
            "tracks": stats.tracks, "audio_seconds": stats.audio_seconds, "splits": stats.splits},
    }
    write_text_atomic(path, json.dumps(body, indent=2, sort_keys=True) + "\n")
