"""A trained DuET-MC at work: texts, and whole tracks of any length, channel count and
sample rate, to l2-normalised embeddings.

`adswap embed`, `search`, `serve` and the exported model all go through `Encoder`, so a
track is cut into model-input windows and pooled the same way everywhere: windows of
`clip_seconds` side by side (a track shorter than one is zero-padded, as training crops
pad), their embeddings averaged and normalised.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch
import torch.nn.functional as F

from trainer.checkpoint import checkpoint_path, file_sha256, load_model
from trainer.model import DualEncoder


class AudioError(ValueError):
    """Input that cannot be used as audio; the message says why."""


def read_audio(source: str | Path | bytes) -> tuple[np.ndarray, int]:
    """Decode a file (or its bytes) with libsndfile: (float32 samples, rate)."""
    try:
        data, rate = sf.read(io.BytesIO(source) if isinstance(source, bytes) else source,
                             dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError, TypeError) as err:
        reason = getattr(err, "error_string", None) or str(err)
        raise AudioError(f"not readable as audio ({reason.strip()}); use WAV, FLAC, OGG "
                         "or MP3") from err
    return data, rate


def to_mono(audio: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Downmix ([frames] or [frames, channels]) and resample to `target` Hz (soxr HQ)."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 2:
        audio = audio.mean(axis=1) if audio.shape[1] > 1 else audio[:, 0]
    if audio.ndim != 1:
        raise AudioError(f"audio must be [frames] or [frames, channels], got shape "
                         f"{audio.shape}")
    if len(audio) == 0:
        raise AudioError("audio has no samples")
    if not np.isfinite(audio).all():
        raise AudioError("audio holds NaN or infinite samples")
    if not 1000 <= rate <= 384_000:
        raise AudioError(f"sample rate {rate} Hz is out of range")
    if rate != target:
        audio = soxr.resample(audio, rate, target, quality="HQ").astype(np.float32)
    return audio


class Encoder:
    """Embeds texts and audio with a loaded model; `identity` names where it came from
    (run, checkpoint and its sha256), so embeddings can be matched to their model."""

    def __init__(self, model: DualEncoder, identity: dict, batch_size: int = 32):
        self.model = model.eval()
        self.identity = identity
        self.batch_size = batch_size
        audio = model.config.audio
        self.sample_rate = audio.sample_rate
        self.clip_seconds = audio.clip_seconds
        self.frames = round(audio.clip_seconds * audio.sample_rate)
        self.dim = model.dim
        self.device = next(model.parameters()).device

    @classmethod
    def from_run(cls, run: Path, checkpoint: str = "best", device: str = "cpu",
                 batch_size: int = 32) -> Encoder:
        run = Path(run)
        if not (run / "config.yaml").exists():
            raise ValueError(f"{run} is not a run folder (no config.yaml); give the folder "
                             "`adswap train` wrote")
        path = checkpoint_path(run, checkpoint)
        model, _ = load_model(run, path, resolve_device(device))
        identity = {"run": str(run.resolve()), "checkpoint": path.name,
                    "checkpoint_sha256": file_sha256(path)}
        return cls(model, identity, batch_size)

    @torch.no_grad()
    def embed_text(self, texts: list[str]) -> np.ndarray:
        """[len(texts), dim] float32."""
        if isinstance(texts, str):
            raise TypeError("embed_text takes a list of strings")
        out = [self.model.encode_text(self.model.tokenize(list(texts[i:i + self.batch_size]))
                                      .to(self.device)).float().cpu()
               for i in range(0, len(texts), self.batch_size)]
        return torch.cat(out).numpy() if out else np.zeros((0, self.dim), np.float32)

    def windows(self, audio: np.ndarray, max_windows: int = 0) -> list[tuple[int, np.ndarray]]:
        """(start frame, samples) of the model-input windows of a mono track at the
        model's rate; with `max_windows`, that many spread evenly over the track."""
        count = max(1, len(audio) // self.frames)
        starts = [i * self.frames for i in range(count)]
        if max_windows and count > max_windows:
            picks = np.linspace(0, count - 1, max_windows).round().astype(int)
            starts = [starts[i] for i in picks]
        return [(s, _fit(audio[s:s + self.frames], self.frames)) for s in starts]

    @torch.no_grad()
    def embed_windows(self, windows: list[np.ndarray]) -> np.ndarray:
        """[len(windows), dim] float32, in batches of `batch_size`."""
        out = []
        for i in range(0, len(windows), self.batch_size):
            batch = torch.from_numpy(np.stack(windows[i:i + self.batch_size])).to(self.device)
            out.append(self.model.encode_audio(batch).float().cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, self.dim), np.float32)

    def embed_audio(self, audio: np.ndarray, rate: int, max_windows: int = 0) -> np.ndarray:
        """One track ([frames] or [frames, channels] at `rate` Hz) as a [dim] embedding:
        the normalised mean of its windows' embeddings."""
        mono = to_mono(audio, rate, self.sample_rate)
        clips = self.embed_windows([w for _, w in self.windows(mono, max_windows)])
        return pool(clips)


def pool(clips: np.ndarray) -> np.ndarray:
    """A track's embedding: the l2-normalised mean of its clip embeddings."""
    return F.normalize(torch.from_numpy(clips).mean(0), dim=0).numpy()


def _fit(audio: np.ndarray, frames: int) -> np.ndarray:
    if len(audio) < frames:
        audio = np.pad(audio, (0, frames - len(audio)))
    return np.ascontiguousarray(audio, dtype=np.float32)


def resolve_device(device: str) -> str:
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device {device!r} must be auto, cpu or cuda")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device
