"""Audio for shards: decode, downmix, resample, cut clips, encode.

Shared by the shards stage and the eval-set importer, so training and evaluation
clips go through exactly the same steps.
"""

from __future__ import annotations

import hashlib
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from schemas.config import Config, setting

POSITIONS = ("start", "centre", "random", "all")
FORMATS = {"flac": ("FLAC", "PCM_16"), "wav": ("WAV", "PCM_16")}


class AudioReject(Exception):
    """A track that cannot give a clip: its kind (pipeline/rejects.KINDS) and, as the
    message, the reason recorded in rejects."""

    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind = kind


@dataclass(frozen=True)
class ClipConfig(Config):
    sample_rate: int = setting(16_000, help="Clip sample rate in Hz: the model's input rate "
                               "(HTS-AT 48000, MERT 24000).")
    clip_seconds: float = setting(10.0, help="Clip length in seconds: the model's input.")
    clips_per_track: int = setting(1, help="Clips per track for start, centre and random "
                                   "(position 'all' takes every window instead).")
    position: str = setting("centre", choices=POSITIONS, help="Where clips are cut: "
                            "start, centre, random (seeded) or all (every non-overlapping "
                            "window).")
    audio_format: str = setting("flac", choices=tuple(FORMATS), help="Clip encoding "
                                "(16-bit).")
    seed: int = setting(0, help="Seed for random clip positions (and the shards' track "
                        "order).")
    silence_db: float = setting(-60.0, help="A clip whose peak is below this (dBFS) is "
                                "silence, not music, and is left out.")

    def check(self) -> list[str]:
        problems = []
        if not 1_000 <= self.sample_rate <= 192_000:
            problems.append(f"sample_rate {self.sample_rate} must be in [1000, 192000] Hz")
        if not 0.1 <= self.clip_seconds <= 600:
            problems.append(f"clip_seconds {self.clip_seconds} must be in [0.1, 600]")
        if self.clips_per_track < 1:
            problems.append("clips_per_track must be >= 1")
        if self.silence_db >= 0:
            problems.append("silence_db must be negative (dB below full scale)")
        return problems

    @property
    def clip_frames(self) -> int:
        return round(self.clip_seconds * self.sample_rate)


@dataclass(frozen=True)
class Clip:
    index: int
    start_s: float
    end_s: float
    data: bytes  # the encoded clip (FLAC or WAV)


def load_mono(path: Path, sample_rate: int) -> np.ndarray:
    """Decode any format libsndfile reads, downmix to mono and resample (soxr, HQ)."""
    if not path.is_file():
        raise AudioReject("missing_audio", "audio file is missing")
    try:
        with sf.SoundFile(path) as audio:
            expected, rate = audio.frames, audio.samplerate
            data = audio.read(dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as err:
        reason = getattr(err, "error_string", None) or str(err)
        raise AudioReject("unreadable_audio", f"unreadable audio: {reason.strip()}") from err
    if expected > 0 and len(data) < expected:
        raise AudioReject("truncated_audio",
                          f"truncated audio: {len(data)} of {expected} frames decoded")
    if len(data) == 0:
        raise AudioReject("empty_audio", "audio file has no samples")
    mono = data[:, 0] if data.shape[1] == 1 else data.mean(axis=1)
    if not np.isfinite(mono).all():
        raise AudioReject("non_finite_audio", "audio holds NaN or infinite samples")
    if rate != sample_rate:
        mono = soxr.resample(mono, rate, sample_rate, quality="HQ").astype(np.float32)
    return mono


def clip_starts(n_frames: int, config: ClipConfig, track_id: str) -> list[int]:
    """Where each clip starts, in frames; the policy decides, the track id seeds 'random'."""
    length = config.clip_frames
    fit = n_frames // length
    if fit == 0:
        raise AudioReject("too_short", f"audio is {n_frames / config.sample_rate:.2f} s, "
                          f"shorter than one {config.clip_seconds:g} s clip")
    if config.position == "all":
        return [i * length for i in range(fit)]
    count = min(config.clips_per_track, fit)
    if config.position == "start":
        return [i * length for i in range(count)]
    if config.position == "centre":
        first = (n_frames - count * length) // 2
        return [first + i * length for i in range(count)]
    digest = hashlib.sha256(f"{config.seed}:{track_id}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    # random clips may overlap; each start is uniform over the valid range
    return sorted(int(s) for s in rng.integers(0, n_frames - length + 1,
                                               size=config.clips_per_track))


def encode(samples: np.ndarray, sample_rate: int, audio_format: str) -> bytes:
    container, subtype = FORMATS[audio_format]
    buffer = io.BytesIO()
    sf.write(buffer, samples, sample_rate, format=container, subtype=subtype)
    return buffer.getvalue()


def make_clips(path: Path, config: ClipConfig, track_id: str) -> list[Clip]:
    """The track's clips, encoded; raises AudioReject with the reason if there are none."""
    mono = load_mono(path, config.sample_rate)
    floor = 10 ** (config.silence_db / 20)
    clips = []
    for start in clip_starts(len(mono), config, track_id):
        window = mono[start:start + config.clip_frames]
        if float(np.abs(window).max()) < floor:
            continue
        # Clamp before 16-bit encoding: resampling can overshoot full scale slightly.
        window = np.clip(window, -1.0, 1.0)
        clips.append(Clip(index=len(clips), start_s=round(start / config.sample_rate, 6),
                          end_s=round((start + config.clip_frames) / config.sample_rate, 6),
                          data=encode(window, config.sample_rate, config.audio_format)))
    if not clips:
        peak = float(np.abs(mono).max())
        level = "digital silence" if peak == 0 else f"peak {20 * math.log10(peak):.1f} dBFS"
        raise AudioReject("silent", f"silent: every clip is below {config.silence_db:g} dBFS "
                          f"({level})")
    return clips
