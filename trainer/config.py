"""Training configuration: typed dataclasses, read from YAML plus `section.key=value`
overrides, checked as a whole before any work so every problem is listed at once."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

AUDIO_KINDS = ("cnn", "htsat", "hf-frozen")
PRECISIONS = ("auto", "fp32", "bf16")


@dataclass
class DataConfig:
    shards: Path = Path("data/demo/shards")
    p_cap: float = 1.0  # chance a pair uses a caption view instead of the tags as text
    # Augmented View Dropout: draw one of the track's views each time; off = always the
    # same view, its last (the all-tags view when captions were made with --full-view)
    view_dropout: bool = True
    languages: tuple[str, ...] = ()  # caption languages to train on; empty = all
    batch_size: int = 64  # per process and micro-batch
    accumulate: int = 1  # micro-batches per optimizer step (effective batch grows)
    samples_per_epoch: int = 0  # 0 = the train split's size from sizes.json
    workers: int = 2
    shuffle_buffer: int = 1000
    shuffle_initial: int = 100


@dataclass
class AudioConfig:
    kind: str = "cnn"  # cnn | htsat | hf-frozen
    sample_rate: int = 16_000  # must match the shards
    clip_seconds: float = 5.0  # model input; longer clips are randomly cropped
    n_mels: int = 64
    n_fft: int = 1024
    hop: int = 320
    f_min: float = 20.0
    f_max: float = 0.0  # 0 = Nyquist
    channels: tuple[int, ...] = (16, 32, 64, 128)  # cnn blocks
    path: str = ""  # htsat: optional pretrained checkpoint; hf-frozen: model folder or id
    trust_remote_code: bool = False  # hf-frozen models such as MERT ship their own code
    htsat: dict = field(default_factory=dict)  # ClapAudioConfig overrides (from scratch)


@dataclass
class TextConfig:
    path: str = "minilm"  # 'minilm' (bundled all-MiniLM-L6-v2), a local folder or a hub id
    max_length: int = 64


@dataclass
class ModelConfig:
    audio: AudioConfig = field(default_factory=AudioConfig)
    text: TextConfig = field(default_factory=TextConfig)
    dim: int = 256
    layers: int = 2
    heads: int = 2
    dropout: float = 0.1
    max_positions: int = 1024
    temperature: float = 0.03
    learn_temperature: bool = False


@dataclass
class SwapConfig:
    enabled: bool = True
    p_max: float = 0.15
    warmup_epochs: int = 5
    ramp_epochs: int = 20
    categories: tuple[str, ...] = ("genre", "mood", "instrument")


@dataclass
class OptimConfig:
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 5.0
    epochs: int = 100
    min_lr: float = 0.0
    grad_clip: float = 1.0  # 0 = off
    patience: int = 10  # epochs without a better validation loss before stopping; 0 = off
    precision: str = "auto"  # auto = bf16 autocast on GPU, fp32 on CPU


@dataclass
class RunConfig:
    out: Path = Path("runs/demo")
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 0  # steps between mid-epoch checkpoints; 0 = each epoch only
    max_steps: int = 0  # stop after this many optimizer steps; 0 = no limit
    device: str = "auto"  # auto | cpu | cuda
    validate: bool = True


@dataclass(frozen=True)
class DistConfig:
    timeout_s: float = field(default=600.0, metadata={"help": (
        "seconds a process waits in a collective for the others before the run stops "
        "with a message naming the processes that never arrived; raise it when one "
        "process legitimately works alone for longer (e.g. a slow shared file system)")})


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    swap: SwapConfig = field(default_factory=SwapConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    dist: DistConfig = field(default_factory=DistConfig)

    def to_dict(self) -> dict:
        return _plain(dataclasses.asdict(self))


class ConfigError(ValueError):
    def __init__(self, source: str, problems: list[str]):
        self.problems = problems
        super().__init__(f"invalid training config ({source}):\n" +
                         "\n".join(f"  - {p}" for p in problems))


def load_config(path: Path | None = None, overrides: list[str] = ()) -> TrainConfig:
    """YAML file (optional) then `a.b=value` overrides (values parsed as YAML)."""
    source = str(path) if path else "defaults"
    body: dict = {}
    problems: list[str] = []
    if path is not None:
        try:
            body = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as err:
            raise ConfigError(source, [f"cannot read: {err}"]) from err
        if not isinstance(body, dict):
            raise ConfigError(source, ["the file must hold a mapping of sections"])
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            problems.append(f"override {item!r} must look like section.key=value")
            continue
        target = body
        *parents, leaf = key.strip().split(".")
        for name in parents:
            target = target.setdefault(name, {})
            if not isinstance(target, dict):
                problems.append(f"override {item!r}: {name} is not a section")
                break
        else:
            target[leaf] = yaml.safe_load(raw) if raw.strip() else ""
    config = _build(TrainConfig, body, "", problems)
    problems += validate(config) if not problems else []
    if problems:
        raise ConfigError(source, problems)
    return config


def validate(c: TrainConfig) -> list[str]:
    """Value checks across the whole config."""
    p: list[str] = []

    def need(ok: bool, message: str) -> None:
        if not ok:
            p.append(message)

    need(0 <= c.data.p_cap <= 1, f"data.p_cap {c.data.p_cap} must be in [0, 1]")
    need(c.data.batch_size >= 2, "data.batch_size must be >= 2 (contrastive loss needs negatives)")
    need(c.data.accumulate >= 1, "data.accumulate must be >= 1")
    need(c.data.samples_per_epoch >= 0, "data.samples_per_epoch must be >= 0")
    need(c.data.workers >= 0, "data.workers must be >= 0")
    need(c.data.shuffle_buffer >= 1 and c.data.shuffle_initial >= 1,
         "data.shuffle_buffer and shuffle_initial must be >= 1")
    a = c.model.audio
    need(a.kind in AUDIO_KINDS, f"model.audio.kind {a.kind!r} must be one of "
         f"{', '.join(AUDIO_KINDS)}")
    need(1000 <= a.sample_rate <= 192_000, "model.audio.sample_rate must be in [1000, 192000]")
    need(0.1 <= a.clip_seconds <= 600, "model.audio.clip_seconds must be in [0.1, 600]")
    need(a.n_mels >= 8 and a.n_fft >= 64 and a.hop >= 1, "model.audio: n_mels >= 8, "
         "n_fft >= 64, hop >= 1")
    need(a.f_max == 0 or a.f_min < a.f_max <= a.sample_rate / 2,
         "model.audio.f_max must be 0 or in (f_min, sample_rate / 2]")
    need(len(a.channels) >= 1 and all(ch >= 1 for ch in a.channels),
         "model.audio.channels must list positive widths")
    pools = 2 ** len(a.channels)  # each cnn block halves frequency and time
    need(a.kind != "cnn" or (a.n_mels >= pools and a.clip_seconds * a.sample_rate / a.hop
                             >= pools),
         f"model.audio: {len(a.channels)} cnn blocks need n_mels and clip frames >= {pools}")
    need(a.kind != "hf-frozen" or bool(a.path),
         "model.audio.path must name the frozen model for kind hf-frozen")
    need(bool(c.model.text.path), "model.text.path must name a text encoder")
    need(c.model.text.max_length >= 4, "model.text.max_length must be >= 4")
    need(c.model.dim >= 8 and c.model.heads >= 1 and c.model.dim % c.model.heads == 0,
         "model.dim must be >= 8 and divisible by model.heads")
    need(c.model.layers >= 1, "model.layers must be >= 1")
    need(0 <= c.model.dropout < 1, "model.dropout must be in [0, 1)")
    need(c.model.temperature > 0, "model.temperature must be > 0")
    need(0 <= c.swap.p_max <= 1, "swap.p_max must be in [0, 1]")
    need(c.swap.warmup_epochs >= 0 and c.swap.ramp_epochs >= 0,
         "swap.warmup_epochs and ramp_epochs must be >= 0")
    o = c.optim
    need(o.lr > 0 and 0 <= o.min_lr <= o.lr, "optim: lr > 0 and 0 <= min_lr <= lr")
    need(o.weight_decay >= 0, "optim.weight_decay must be >= 0")
    need(o.epochs >= 1, "optim.epochs must be >= 1")
    need(0 <= o.warmup_epochs <= o.epochs, "optim.warmup_epochs must be in [0, epochs]")
    need(o.grad_clip >= 0 and o.patience >= 0, "optim.grad_clip and patience must be >= 0")
    need(o.precision in PRECISIONS, f"optim.precision must be one of {', '.join(PRECISIONS)}")
    need(c.run.device in ("auto", "cpu", "cuda"), "run.device must be auto, cpu or cuda")
    need(c.run.log_every >= 1, "run.log_every must be >= 1")
    need(c.run.checkpoint_every >= 0 and c.run.max_steps >= 0,
         "run.checkpoint_every and max_steps must be >= 0")
    need(c.dist.timeout_s > 0, "dist.timeout_s must be > 0")
    return p


def _build(cls, body, where: str, problems: list[str]):
    """Construct dataclass `cls` from a mapping, recording wrong keys and types."""
    if not isinstance(body, dict):
        problems.append(f"{where or 'config'} must be a mapping, got {type(body).__name__}")
        return cls()
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in sorted(set(body) - names):
        problems.append(f"{where}{key}: unknown setting (known: {', '.join(sorted(names))})")
    values = {}
    for f in dataclasses.fields(cls):
        if f.name not in body:
            continue
        kind, value, name = hints[f.name], body[f.name], f"{where}{f.name}"
        if dataclasses.is_dataclass(kind):
            values[f.name] = _build(kind, value, name + ".", problems)
        else:
            converted = _convert(kind, value)
            if converted is _BAD:
                problems.append(f"{name}: expected {_type_name(kind)}, got {value!r}")
            else:
                values[f.name] = converted
    return cls(**values)


_BAD = object()


def _convert(kind, value):
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(kind):
            if option is type(None) and value is None:
                return None
            converted = _convert(option, value) if option is not type(None) else _BAD
            if converted is not _BAD:
                return converted
        return _BAD
    if origin is tuple:
        item = typing.get_args(kind)[0]
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            return _BAD
        items = [_convert(item, v) for v in value]
        return _BAD if any(i is _BAD for i in items) else tuple(items)
    if kind is bool:
        return value if isinstance(value, bool) else _BAD
    if kind is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else _BAD
    if kind is float:
        if isinstance(value, str):  # YAML 1.1 reads '5e-4' (no dot) as a string
            try:
                return float(value)
            except ValueError:
                return _BAD
        return float(value) if isinstance(value, (int, float)) and not isinstance(
            value, bool) else _BAD
    if kind is str:
        return value if isinstance(value, str) else _BAD
    if kind is Path:
        return Path(value) if isinstance(value, (str, Path)) else _BAD
    if kind is dict:
        return dict(value) if isinstance(value, dict) else _BAD
    return _BAD


def _type_name(kind) -> str:
    return getattr(kind, "__name__", None) or str(kind).replace("typing.", "")


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return str(value) if isinstance(value, Path) else value
