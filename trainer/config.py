"""Training configuration: typed, frozen dataclasses (schemas/config.py), read from YAML
plus `section.key=value` overrides, checked as a whole before any work so every
problem is listed at once."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, make_dataclass
from pathlib import Path
from typing import ClassVar

from schemas.catalog import DEFAULT_CATEGORIES
from schemas.config import Config, ConfigError, as_dict, setting
from schemas.config import load_config as load
from schemas.languages import unknown_languages
from schemas.plugins import plugin_modules

PRECISIONS = ("auto", "fp32", "bf16")


@dataclass(frozen=True)
class AudioEncoder:
    """An audio encoder `model.audio.kind` can name: a row of AUDIO_ENCODERS.
    - `target` ('module:Class') is imported only when a model is built, so reading
      configs (and `adswap --help`) never imports torch; the class takes the AudioConfig
      and returns [batch, time, width] features (see trainer/encoders.py);
    - `settings`: its own section, `model.audio.<name>` (dashes as underscores), or None;
    - `needs_path`: model.audio.path must name its weights;
    - `frozen_weights`: its weights are not trained, so an export names them (path and
      revision, checked when loaded) instead of copying them;
    - `check`: problems of the settings it reads, given the AudioConfig."""

    name: str
    target: str
    description: str
    settings: type[Config] | None = None
    needs_path: bool = False
    frozen_weights: bool = False
    check: Callable[[AudioConfig], list[str]] | None = None

    @property
    def section(self) -> str:
        return self.name.replace("-", "_")


@dataclass(frozen=True)
class CnnSettings(Config):
    channels: tuple[int, ...] = setting((16, 32, 64, 128), help="Widths of the cnn's "
                                        "blocks.")

    def check(self) -> list[str]:
        if not self.channels or any(ch < 1 for ch in self.channels):
            return ["channels must list positive widths"]
        return []


@dataclass(frozen=True)
class HtsatSettings(Config):
    overrides: dict = setting(factory=dict, help="ClapAudioConfig overrides for htsat from "
                              "scratch (YAML mapping).")

    @classmethod
    def moved(cls, key: str, where: str) -> str:
        # model.audio.htsat was the ClapAudioConfig mapping itself
        return f"ClapAudioConfig overrides go under {where}overrides now"


@dataclass(frozen=True)
class HfFrozenSettings(Config):
    trust_remote_code: bool = setting(False, help="Run the code the model ships (MERT "
                                      "does).")
    frame_rate: float = setting(0.0, help="Frames per second the projection takes: each "
                                "layer's states are average-pooled in time to this rate "
                                "before the mix, in training, evaluation and a feature "
                                "cache alike; 0 = the model's own rate (75 Hz for MERT). A "
                                "feature cache grows with it: layers x width x 2 bytes per "
                                "frame of every cached crop.")

    def check(self) -> list[str]:
        return [] if self.frame_rate >= 0 else ["frame_rate must be >= 0"]


def _cnn_problems(config: AudioConfig) -> list[str]:
    pools = 2 ** len(config.cnn.channels)  # each cnn block halves frequency and time
    if config.n_mels < pools or config.clip_seconds * config.sample_rate / config.hop < pools:
        return [f"cnn.channels: {len(config.cnn.channels)} cnn blocks need n_mels and clip "
                f"frames >= {pools}"]
    return []


# The built-in encoders. Their rows live here, not in their modules, because reading a
# config must not import torch; another package adds one as a module declaring
# `ENCODER = AudioEncoder(...)` under the entry-point group adswap.audio_encoders.
BUILT_IN_ENCODERS = (
    AudioEncoder("cnn", "trainer.encoders:CnnEncoder", "log-mel CNN trained from scratch, "
                 "the CPU default", settings=CnnSettings, check=_cnn_problems),
    AudioEncoder("htsat", "trainer.encoders:HtsatEncoder", "HTS-AT, transformers' CLAP "
                 "audio model, trained; from scratch or a CLAP checkpoint (path)",
                 settings=HtsatSettings),
    AudioEncoder("hf-frozen", "trainer.encoders:FrozenHFAudio", "a frozen Hugging Face "
                 "audio model such as MERT (path), its layers mixed by a trained "
                 "convolution", settings=HfFrozenSettings, needs_path=True,
                 frozen_weights=True),
)
ENCODER_GROUP = "adswap.audio_encoders"


def _encoder_table() -> dict[str, AudioEncoder]:
    found = list(BUILT_IN_ENCODERS)
    for name in plugin_modules(ENCODER_GROUP):
        row = getattr(importlib.import_module(name), "ENCODER", None)
        if not isinstance(row, AudioEncoder):
            raise ImportError(f"{name}, named under {ENCODER_GROUP}, declares no ENCODER = "
                              "AudioEncoder(...)")
        found.append(row)
    table: dict[str, AudioEncoder] = {}
    for row in found:
        if row.section in {r.section for r in table.values()}:
            raise ImportError(f"two audio encoders are named {row.name!r}")
        table[row.name] = row
    return table


AUDIO_ENCODERS = _encoder_table()


@dataclass(frozen=True)
class DataConfig(Config):
    shards: Path = setting(Path("data/demo/shards"), help="Shards folder from `adswap "
                           "shards`.")
    p_cap: float = setting(1.0, help="Chance a pair uses a caption view instead of the tags "
                           "as text (the paper's p_cap).")
    view_dropout: bool = setting(True, help="Augmented View Dropout: draw one of the "
                                 "track's views each time; off = always its last view (the "
                                 "all-tags view when captions were made with --full-view).")
    languages: tuple[str, ...] = setting((), help="Caption languages to train on; empty = "
                                         "all.")
    batch_size: int = setting(64, help="Pairs per process and micro-batch.")
    accumulate: int = setting(1, help="Micro-batches per optimizer step (the effective "
                              "batch grows, exactly).")
    samples_per_epoch: int = setting(0, help="Samples per epoch; 0 = the train split's size "
                                     "from sizes.json.")
    workers: int = setting(2, help="Loader worker processes per training process.")
    shuffle_buffer: int = setting(1000, help="Samples in the shuffle buffer.")
    shuffle_initial: int = setting(100, help="Samples buffered before the first is drawn.")

    def check(self) -> list[str]:
        p = []
        if not 0 <= self.p_cap <= 1:
            p.append(f"p_cap {self.p_cap} must be in [0, 1]")
        if self.batch_size < 2:
            p.append("batch_size must be >= 2 (contrastive loss needs negatives)")
        if self.accumulate < 1:
            p.append("accumulate must be >= 1")
        if self.samples_per_epoch < 0 or self.workers < 0:
            p.append("samples_per_epoch and workers must be >= 0")
        if self.shuffle_buffer < 1 or self.shuffle_initial < 1:
            p.append("shuffle_buffer and shuffle_initial must be >= 1")
        return p + unknown_languages(self.languages)  # a typo would train on no caption


class _AudioSection(Config):
    """The behaviour of model.audio; its fields come from the encoder table."""

    renamed: ClassVar[dict[str, str]] = {
        "channels": "cnn.channels", "trust_remote_code": "hf_frozen.trust_remote_code",
        "htsat": "htsat.overrides"}

    def check(self) -> list[str]:
        p = []
        if not 1000 <= self.sample_rate <= 192_000:
            p.append("sample_rate must be in [1000, 192000]")
        if not 0.1 <= self.clip_seconds <= 600:
            p.append("clip_seconds must be in [0.1, 600]")
        if self.n_mels < 8 or self.n_fft < 64 or self.hop < 1:
            p.append("n_mels, n_fft, hop: need n_mels >= 8, n_fft >= 64, hop >= 1")
        if not (self.f_max == 0 or self.f_min < self.f_max <= self.sample_rate / 2):
            p.append("f_max must be 0 or in (f_min, sample_rate / 2]")
        encoder = AUDIO_ENCODERS.get(self.kind)
        if encoder is None:
            return p + [f"kind must be one of {', '.join(AUDIO_ENCODERS)}, got {self.kind!r}"]
        if encoder.needs_path and not self.path:
            p.append(f"path must name the model for kind {self.kind}")
        return p + (encoder.check(self) if encoder.check else [])

    @property
    def encoder(self) -> AudioEncoder:
        return AUDIO_ENCODERS[self.kind]


def _audio_config() -> type:
    fields = [
        ("kind", str, setting("cnn", flag="audio", help="Audio encoder: " + "; ".join(
            f"{name} ({encoder.description})" for name, encoder in AUDIO_ENCODERS.items())
            + ".")),
        ("sample_rate", int, setting(16_000, help="Input rate in Hz; must match the "
                                     "shards.")),
        ("clip_seconds", float, setting(5.0, help="Model input length; longer clips are "
                                        "cropped at random.")),
        ("n_mels", int, setting(64, help="Mel bands.")),
        ("n_fft", int, setting(1024, help="FFT size of the spectrogram.")),
        ("hop", int, setting(320, help="Spectrogram hop in samples.")),
        ("f_min", float, setting(20.0, help="Lowest mel frequency in Hz.")),
        ("f_max", float, setting(0.0, help="Highest mel frequency in Hz; 0 = Nyquist.")),
        ("path", str, setting("", flag="audio-path", help="The encoder's weights, for "
                              "those that take them: htsat, an optional pretrained CLAP "
                              "checkpoint; hf-frozen, the model's folder or hub id.")),
    ]
    fields += [(e.section, e.settings, setting(factory=e.settings, help=f"Settings of the "
                                               f"{e.name} encoder."))
               for e in AUDIO_ENCODERS.values() if e.settings is not None]
    config = make_dataclass("AudioConfig", fields, bases=(_AudioSection,), frozen=True)
    config.__module__ = __name__  # pickled into loader workers and DDP processes
    return config


# Settings every encoder reads, then one section per encoder with settings of its own.
AudioConfig = _audio_config()


@dataclass(frozen=True)
class TextConfig(Config):
    path: str = setting("minilm", flag="text-path", help="Text encoder of kind duet: "
                        "'minilm' (bundled all-MiniLM-L6-v2), a local folder or a hub id.")
    max_length: int = setting(64, help="Longest text in tokens.")
    trainable: bool = setting(False, flag="train-text", help="Fine-tune the text encoder "
                              "(at optim.text_encoder_lr) instead of keeping it frozen, as "
                              "the paper's frozen rows do; kind clap too.")

    def check(self) -> list[str]:
        p = [] if self.path else ["path must name a text encoder"]
        return p + ([] if self.max_length >= 4 else ["max_length must be >= 4"])


MODEL_KINDS = ("duet", "clap")


@dataclass(frozen=True)
class ClapConfig(Config):
    path: str = setting("", flag="clap", help="A transformers ClapModel folder (e.g. a "
                        "LAION checkpoint) with its processor: kind clap starts from its "
                        "two towers, projections and logit scale.")
    train_audio: bool = setting(True, help="Fine-tune CLAP's audio tower (at "
                                "optim.audio_encoder_lr); off = frozen.")


@dataclass(frozen=True)
class ModelConfig(Config):
    kind: str = setting("duet", choices=MODEL_KINDS, flag="model-kind", help="duet = the "
                        "paper's DuET-MC (model.audio's encoder and model.text's, each with "
                        "a projection module); clap = a pretrained CLAP fine-tuned as it is "
                        "from the folder --clap names. It reads model.audio.sample_rate and "
                        "clip_seconds, model.text.max_length and trainable, and the "
                        "temperature only as learned or not: it starts at the checkpoint's.")
    clap: ClapConfig = setting(factory=ClapConfig, help="Kind clap: the pretrained CLAP.")
    audio: AudioConfig = setting(factory=AudioConfig, help="The audio branch.")
    text: TextConfig = setting(factory=TextConfig, help="The text branch.")
    dim: int = setting(256, help="Embedding size (the projection's width).")
    layers: int = setting(2, help="Transformer layers of each projection module.")
    heads: int = setting(2, help="Attention heads of each projection module.")
    dropout: float = setting(0.1, help="Dropout in the projection modules.")
    max_positions: int = setting(1024, help="Longest encoder sequence a projection takes; "
                                 "longer ones are pooled down.")
    temperature: float = setting(0.03, help="InfoNCE temperature (the paper's 0.03).")
    learn_temperature: bool = setting(False, help="Learn the temperature (CLIP's logit "
                                      "scale) instead of fixing it.")
    gradient_checkpointing: bool = setting(False, help="Recompute the trained Hugging Face "
                                           "towers' layer activations in the backward pass "
                                           "instead of keeping them: less memory per batch "
                                           "for about a third more compute.")

    def check(self) -> list[str]:
        p = []
        if self.kind == "clap" and not self.clap.path:
            p.append("clap.path must name a ClapModel folder for kind clap")
        if self.kind != "clap" and self.clap.path:
            p.append(f"clap.path is read by kind clap only (kind is {self.kind}); set "
                     "model.kind=clap or leave clap.path empty")
        if self.dim < 8 or self.heads < 1 or self.dim % self.heads:
            p.append("dim must be >= 8 and divisible by heads")
        if self.layers < 1:
            p.append("layers must be >= 1")
        if not 0 <= self.dropout < 1:
            p.append("dropout must be in [0, 1)")
        if self.temperature <= 0:
            p.append("temperature must be > 0")
        return p


@dataclass(frozen=True)
class SwapConfig(Config):
    enabled: bool = setting(True, flag="textswap", help="TextSwap hard negatives.")
    p_max: float = setting(0.15, help="Chance of a swap per anchor and category at the top "
                           "of the curriculum.")
    warmup_epochs: int = setting(5, help="Epochs without swaps.")
    ramp_epochs: int = setting(20, help="Epochs over which the chance rises to p_max.")
    categories: tuple[str, ...] = setting(DEFAULT_CATEGORIES, help="Descriptor categories "
                                          "TextSwap swaps in.")

    def check(self) -> list[str]:
        p = [] if 0 <= self.p_max <= 1 else ["p_max must be in [0, 1]"]
        if self.warmup_epochs < 0 or self.ramp_epochs < 0:
            p.append("warmup_epochs and ramp_epochs must be >= 0")
        return p


FEATURE_DTYPES = ("float16", "float32")


@dataclass(frozen=True)
class FeaturesConfig(Config):
    dir: str = setting("", flag="features", help="A feature cache root from `adswap "
                       "features`: training reads the frozen towers' outputs from it "
                       "instead of running them (the text encoder's token states; a frozen "
                       "audio model's pooled layer states, hf-frozen), each cache found by "
                       "the identity of its encoder and shard settings; empty = run the "
                       "encoders every step. `adswap features` writes it.")
    swap_variants: int = setting(0, help="TextSwap texts cached per caption and category, "
                                 "drawn from every swap the caption allows (all of them "
                                 "when it allows no more); training swaps among these. 0 = "
                                 "none cached: the few swaps a step draws (at most "
                                 "swap.p_max per caption and category) run through the "
                                 "frozen text encoder, exactly the uncached run's draws; "
                                 "each variant cached adds a caption's worth per category.")
    dtype: str = setting("float16", choices=FEATURE_DTYPES, help="Stored precision of the "
                         "states.")
    budget_gb: float = setting(50.0, help="`adswap features` refuses a cache whose size, "
                               "estimated before any work, is larger.")
    audio_crops: int = setting(4, help="Random crops of clip_seconds per clip whose layer "
                               "states a frozen audio model's cache keeps; training draws one "
                               "of them each time it sees the clip, so crops stay random "
                               "across epochs (the uncached run draws a new crop each time).")
    batch_size: int = setting(128, help="Texts (or audio crops) per encoder call while "
                              "building.")

    def check(self) -> list[str]:
        p = [] if self.swap_variants >= 0 else ["swap_variants must be >= 0"]
        if self.budget_gb <= 0 or self.batch_size < 1:
            p.append("budget_gb must be > 0 and batch_size >= 1")
        if self.audio_crops < 1:
            p.append("audio_crops must be >= 1")
        return p


@dataclass(frozen=True)
class DistConfig(Config):
    timeout_s: float = setting(600.0, help="Seconds a process waits in a collective for the "
                               "others before the run stops with a message naming the "
                               "processes that never arrived; raise it when one process "
                               "legitimately works alone for longer (a slow shared file "
                               "system).")

    def check(self) -> list[str]:
        return [] if self.timeout_s > 0 else ["timeout_s must be > 0"]


@dataclass(frozen=True)
class OptimConfig(Config):
    lr: float = setting(1e-3, help="Peak learning rate (AdamW) of the heads: projection "
                        "modules, layer mix, logit scale.")
    audio_encoder_lr: float = setting(0.0, help="Peak learning rate of a trained audio "
                                      "encoder (cnn, htsat, CLAP's audio tower); 0 = lr. "
                                      "Pretrained towers usually want 10-100x less than "
                                      "new heads.")
    text_encoder_lr: float = setting(1e-5, help="Peak learning rate of the text encoder "
                                     "when it is trained (model.text.trainable).")
    weight_decay: float = setting(0.05, help="AdamW weight decay (not on biases, norms or "
                                  "the logit scale).")
    warmup_epochs: float = setting(5.0, help="Linear warm-up to the peak, in epochs.")
    epochs: int = setting(100, help="Most epochs (cosine decay ends here).")
    min_lr: float = setting(0.0, help="Learning rate of the heads at the end of the cosine "
                            "decay; the encoders' end in the same proportion to their peaks.")
    grad_clip: float = setting(1.0, help="Gradient norm clip; 0 = off.")
    patience: int = setting(10, help="Epochs without a better validation loss before "
                            "stopping; 0 = off.")
    precision: str = setting("auto", choices=PRECISIONS, help="auto = bf16 autocast on GPU, "
                             "fp32 on CPU.")

    def check(self) -> list[str]:
        p = []
        if self.lr <= 0 or not 0 <= self.min_lr <= self.lr:
            p.append("lr, min_lr: need lr > 0 and 0 <= min_lr <= lr")
        if self.audio_encoder_lr < 0 or self.text_encoder_lr <= 0:
            p.append("audio_encoder_lr must be >= 0 and text_encoder_lr > 0")
        if self.weight_decay < 0:
            p.append("weight_decay must be >= 0")
        if self.epochs < 1:
            p.append("epochs must be >= 1")
        if not 0 <= self.warmup_epochs <= self.epochs:
            p.append("warmup_epochs must be in [0, epochs]")
        if self.grad_clip < 0 or self.patience < 0:
            p.append("grad_clip and patience must be >= 0")
        return p


@dataclass(frozen=True)
class RunConfig(Config):
    out: Path = setting(Path("runs/demo"), help="The run folder.")
    seed: int = setting(0, help="Seed of weights, data order, dropout and swaps.")
    log_every: int = setting(10, help="Steps between metrics.jsonl rows.")
    checkpoint_every: int = setting(0, help="Steps between mid-epoch checkpoints; 0 = each "
                                    "epoch only.")
    max_steps: int = setting(0, help="Stop after this many optimizer steps; 0 = no limit.")
    device: str = setting("auto", choices=("auto", "cpu", "cuda"), help="auto = cuda when "
                          "available.")
    validate: bool = setting(True, help="Validation loss and R@10 after each epoch.")

    def check(self) -> list[str]:
        p = [] if self.log_every >= 1 else ["log_every must be >= 1"]
        if self.checkpoint_every < 0 or self.max_steps < 0:
            p.append("checkpoint_every and max_steps must be >= 0")
        return p


@dataclass(frozen=True)
class TrainConfig(Config):
    data: DataConfig = setting(factory=DataConfig, help="What is trained on.")
    model: ModelConfig = setting(factory=ModelConfig, help="DuET-MC.")
    swap: SwapConfig = setting(factory=SwapConfig, help="TextSwap.")
    optim: OptimConfig = setting(factory=OptimConfig, help="Optimisation.")
    run: RunConfig = setting(factory=RunConfig, help="The run.")
    dist: DistConfig = setting(factory=DistConfig, help="Multi-process training.")
    features: FeaturesConfig = setting(factory=FeaturesConfig, help="The frozen "
                                       "encoders' outputs, computed once.")

    def check(self) -> list[str]:
        if not self.features.dir:
            return []
        if self.model.kind != "duet":
            return [f"features.dir: kind {self.model.kind} trains its towers' own inputs; "
                    "cached features are for kind duet's frozen encoders"]
        if not cached_towers(self):
            return ["features.dir: both towers are trained (model.text.trainable, audio "
                    f"kind {self.model.audio.kind}), so their outputs change every step "
                    "and cannot be cached; leave features.dir empty"]
        return []


def cached_towers(config: TrainConfig) -> tuple[str, ...]:
    """The towers a feature cache holds for `config`: those whose encoder is frozen (the
    text encoder unless trained; an audio encoder whose weights are frozen)."""
    towers = () if config.model.text.trainable else ("text",)
    return towers + (("audio",) if config.model.audio.encoder.frozen_weights else ())


@dataclass(frozen=True)
class EvalConfig(Config):
    run: Path = setting(help="A run folder from `adswap train`, or clap:DIR: a pretrained "
                        "ClapModel folder scored zero-shot (kept as a run folder under "
                        "--baselines).", argument=True)
    sets: tuple[Path, ...] = setting((), flag="eval-set", help="Eval set folders (from "
                                     "`adswap import-eval`).")
    subsets: int = setting(10, help="Random subsets to average over.")
    subset_size: int = setting(500, help="Tracks per subset (the paper's 500).")
    seed: int = setting(0, help="Seed for the subsets.")
    pooling: str = setting("mean", choices=("mean", "first"), help="How a track's clips "
                           "become one item: the mean of their embeddings or the first.")
    checkpoint: str = setting("best", choices=("best", "last"), help="Which checkpoint "
                              "of the run to score.")
    batch_size: int = setting(64, help="Clips or captions embedded at once.")
    device: str = setting("auto", choices=("auto", "cpu", "cuda"), help="Where to embed.")
    compare: tuple[Path, ...] = setting((), help="Other runs to compare with: each is "
                                        "evaluated on the same sets with these settings, "
                                        "and the report gives RUN minus it in R@1, R@10 "
                                        "and MR with a 95% paired-bootstrap interval; "
                                        "clap:DIR compares with a zero-shot CLAP.")
    replicates: int = setting(2000, help="Bootstrap replicates of a paired comparison.")
    baselines: Path = setting(Path("runs/zero-shot"), help="Where zero-shot baselines "
                              "(clap:DIR) are kept as run folders, one per model folder.")

    def check(self) -> list[str]:
        problems = []
        if not self.sets:
            problems.append("sets: name at least one eval set (--eval-set)")
        if self.subsets < 1 or self.subset_size < 2:
            problems.append("subsets must be >= 1 and subset_size >= 2")
        if self.batch_size < 1:
            problems.append("batch_size must be >= 1")
        if self.replicates < 100:
            problems.append("replicates must be >= 100 (a 95% interval needs its tails)")
        return problems


# The paper's ablation (`adswap ablation`): each row adds one step to the one before.
ABLATION_ROWS = {
    "tags-only": ["data.p_cap=0", "swap.enabled=false"],
    "tag-to-caption": ["data.p_cap=1", "data.view_dropout=false", "swap.enabled=false"],
    "view-dropout": ["data.p_cap=1", "data.view_dropout=true", "swap.enabled=false"],
    "textswap": ["data.p_cap=1", "data.view_dropout=true", "swap.enabled=true"],
}
ABLATION_LABELS = {"tags-only": "tags only", "tag-to-caption": "+ tag-to-caption",
                   "view-dropout": "+ View Dropout", "textswap": "+ TextSwap"}


@dataclass(frozen=True)
class AblationRow:
    name: str                  # the run folders are OUT/<name>-s<seed>
    label: str
    overrides: tuple[str, ...]
    versus: str | None         # the row it is compared with (paired, per seed)


@dataclass(frozen=True)
class AblationConfig(Config):
    train_config: Path = setting(Path("trainer/configs/demo.yaml"), help="Base training "
                                 "config of every row.")
    train_set: tuple[str, ...] = setting((), repeatable=True, help="An override of the "
                                         "training config for every row, e.g. "
                                         "data.shards=DIR.")
    eval_sets: tuple[Path, ...] = setting((), flag="eval-set", help="Eval set folders; the "
                                          "table uses the first.")
    seeds: tuple[int, ...] = setting((0, 1, 2), help="Seeds; each row trains once per seed.")
    out: Path = setting(Path("runs/ablation"), help="Folder for the runs and the table.")
    subsets: int = setting(10, help="Random 500-track subsets per evaluation (the same "
                           "subsets for every run).")
    p_caps: tuple[float, ...] = setting((), help="The paper's p_cap sweep: extra rows of "
                                        "the full method (+ TextSwap) at each p_cap, "
                                        "compared with + TextSwap at p_cap 1, e.g. 0,0.5.")
    other_shards: tuple[str, ...] = setting((), repeatable=True, help="Extra rows of the "
                                            "full method trained on other shards, as "
                                            "LABEL=DIR (e.g. 'keep_prob 0.25=data/demo/"
                                            "keep-0.25/shards': captions made with another "
                                            "View Dropout keep_prob), compared with + "
                                            "TextSwap.")
    baselines: tuple[str, ...] = setting((), flag="baseline", repeatable=True, help="Zero-"
                                         "shot rows, shown first: clap:DIR scores a "
                                         "pretrained ClapModel folder untrained, and every "
                                         "row is compared with it.")
    replicates: int = setting(2000, help="Bootstrap replicates of each paired comparison.")

    def rows(self) -> list[AblationRow]:
        """The paper's four rows, each against the one before, then the sweeps' rows,
        each against + TextSwap."""
        names = list(ABLATION_ROWS)
        rows = [AblationRow(name, ABLATION_LABELS[name], tuple(ABLATION_ROWS[name]),
                            names[i - 1] if i else None) for i, name in enumerate(names)]
        full = tuple(ABLATION_ROWS["textswap"])
        for p_cap in dict.fromkeys(self.p_caps):
            if p_cap != 1:  # p_cap 1 is the + TextSwap row itself
                rows.append(AblationRow(f"textswap-pcap{p_cap:g}", f"+ TextSwap, p_cap "
                                        f"{p_cap:g}", (*full, f"data.p_cap={p_cap}"),
                                        "textswap"))
        for item in self.other_shards:
            label, _, folder = item.rpartition("=")
            slug = "".join(c if c.isalnum() or c in "._-" else "-" for c in label.strip())
            rows.append(AblationRow(f"textswap-{slug}", f"+ TextSwap, {label.strip()}",
                                    (*full, f"data.shards={folder.strip()}"), "textswap"))
        return rows

    def check(self) -> list[str]:
        problems = [] if self.eval_sets else ["eval_sets: name at least one (--eval-set)"]
        if not self.seeds:
            problems.append("seeds must list at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            problems.append("seeds repeat a seed")
        problems += [f"p_caps: {p} must be in [0, 1]" for p in self.p_caps if not 0 <= p <= 1]
        for item in self.other_shards:
            label, sep, folder = item.rpartition("=")
            if not sep or not label.strip() or not folder.strip():
                problems.append(f"other_shards: {item!r} must look like LABEL=DIR")
        if self.replicates < 100:
            problems.append("replicates must be >= 100 (a 95% interval needs its tails)")
        problems += [f"baselines: {b!r} must look like clap:DIR" for b in self.baselines
                     if not b.startswith("clap:") or not b[5:]]
        if len({row.name for row in self.rows()}) != len(self.rows()):
            problems.append("other_shards: two labels give the same row name")
        try:  # the base config with every row's overrides, before any run starts
            for row in self.rows():
                load_config(self.train_config, [*self.train_set, *row.overrides])
        except ConfigError as err:
            problems += [f"train_config: {p}" for p in err.problems]
        return problems




@dataclass(frozen=True)
class ExportConfig(Config):
    run: Path = setting(help="A run folder from `adswap train`.", argument=True)
    out: Path = setting(help="Folder for the exported model.")
    checkpoint: str = setting("best", choices=("best", "last"), help="Which checkpoint of "
                              "the run.")
    card: Path | None = setting(None, help="The data card (data_cards/<dataset>/README.md) "
                                "the model card links to.")
    overwrite: bool = setting(False, help="Replace an earlier export in out.")


# What a resumed run may change without --accept-config-changes: when it stops, logs and
# saves, its loader processes and how long a collective waits; not what it trains.
# a cached run trains as an uncached one: features.dir may come or go on a resume
RESUME_MAY_CHANGE = ("run.max_steps", "run.log_every", "run.checkpoint_every",
                     "data.workers", "dist.timeout_s", "features.dir", "features.budget_gb",
                     "features.batch_size", "features.audio_crops")


def config_changes(before: TrainConfig, after: TrainConfig) -> list[str]:
    """'setting: before -> after' for every setting that differs, but those a resumed
    run may change (RESUME_MAY_CHANGE)."""
    old, new = flatten(as_dict(before)), flatten(as_dict(after))
    return [f"{key}: {old.get(key)} -> {new.get(key)}" for key in sorted(old.keys() | new.keys())
            if old.get(key) != new.get(key) and key not in RESUME_MAY_CHANGE]


def flatten(body: dict, prefix: str = "") -> dict:
    """A nested dict's leaves by dotted key."""
    flat = {}
    for key, value in body.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def load_config(path: Path | str | None = None, overrides=()) -> TrainConfig:
    """A training config from an optional YAML file and `a.b=value` overrides."""
    return load(TrainConfig, path, overrides)
