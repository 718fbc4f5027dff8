"""Render the demo catalog (goal: the default 400 train/valid + 500 test tracks of 10-15 s
in < 3 min on 2 cores).

Gives the wall time, tracks/s and the audio realtime factor with 1 worker and with all
cores, the ratio to the 180 s budget, and the ratio to a floor measured in the same run:
a bare loop that only encodes the same seconds of audio to FLAC.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.harness import Outcome, measure
from schemas.config import Config, setting

BUDGET_S = 180.0


@dataclass(frozen=True)
class Settings(Config):
    tracks: int = setting(400, help="train and valid tracks to render")
    test_tracks: int = setting(500, help="held-out test tracks to render")
    duration_s: tuple[float, ...] = setting((10.0, 15.0), help="shortest and longest track")

    def check(self) -> list[str]:
        return [] if len(self.duration_s) == 2 else ["duration_s must be two values"]


def encode_floor(audio_seconds: float, sample_rate: int, folder: Path) -> float:
    """Seconds to FLAC-encode `audio_seconds` of noise in 12.5 s files, one process."""
    import numpy as np
    import soundfile

    rng = np.random.default_rng(0)
    clip = (0.1 * rng.standard_normal(int(12.5 * sample_rate))).astype(np.float32)
    with measure() as floor:
        for i in range(int(np.ceil(audio_seconds / 12.5))):
            soundfile.write(folder / f"{i}.flac", clip, sample_rate, format="FLAC",
                            subtype="PCM_16")
    return floor.wall_s


def run(settings: Settings) -> Outcome:
    from pipeline.demo_data import DemoConfig
    from pipeline.demo_data import run as render

    cores = os.cpu_count() or 1
    figures: dict = {"tracks": settings.tracks + settings.test_tracks, "cores": cores}
    shortest, longest = settings.duration_s
    with tempfile.TemporaryDirectory() as tmp:
        for workers in sorted({1, cores}):
            with measure() as measured:
                stats = render(DemoConfig(out=Path(tmp) / f"w{workers}", tracks=settings.tracks,
                                          test_tracks=settings.test_tracks, workers=workers,
                                          min_duration_s=shortest, max_duration_s=longest))
            figures[f"workers_{workers}"] = {
                "seconds": round(stats.seconds, 2),
                "tracks_per_s": round(stats.tracks / stats.seconds, 1),
                "realtime_factor": round(stats.audio_seconds / stats.seconds, 1),
                **measured.as_dict()}
        floor_dir = Path(tmp) / "floor"
        floor_dir.mkdir()
        floor = encode_floor(stats.audio_seconds, 22050, floor_dir)
    best = figures[f"workers_{cores}"]["seconds"]
    figures["audio_hours"] = round(stats.audio_seconds / 3600, 2)
    figures["budget_ratio"] = round(best / BUDGET_S, 3)
    figures["floor_encode_only_s"] = round(floor, 2)
    figures["ratio_to_floor_1_worker"] = round(figures["workers_1"]["seconds"] / floor, 2)
    return Outcome(figures, {
        "budget_ratio": f"the {BUDGET_S:.0f} s budget (all cores)",
        "ratio_to_floor_1_worker": "FLAC-encoding the same seconds of noise, one process, "
                                   "same run"},
        f"demo render: {figures['tracks']} tracks in {best:.1f} s on {cores} cores "
        f"({best / BUDGET_S:.1%} of the 180 s budget); 1 worker takes "
        f"{figures['ratio_to_floor_1_worker']}x the FLAC-encode-only floor")
