"""What fine-tuning a pretrained CLAP (model.kind=clap) costs against training heads on
frozen encoders: seconds per optimizer step and peak memory on the CPU, on the same
batch (batch size, clip, captions, TextSwap hard negatives at p_swap 0.15) in every row.

Rows, each in its own process, so its peak RSS is that row's alone (the process's
whole peak: torch and transformers take about 0.8 GB of it before any model); weights
are loaded from save_pretrained folders as a run loads them; AdamW at each group's peak
rate; 1 warm-up step, then the median of the measured optimizer steps:
- clap_ft: kind clap, both towers trained (model.text.trainable=true);
- clap_ft_checkpointing: the same with model.gradient_checkpointing=true;
- frozen_heads: kind duet, both encoders frozen, DuET-MC's heads (default model.dim
  and layers) trained. A frozen CLAP has no heads to train, and hf-frozen takes only
  wav2vec2-style models, so the frozen audio encoder is a random wav2vec2 of HTS-AT's
  final width and block count: 768 wide, 12 layers, the shape of MERT-v1-95M (the
  paper's frozen encoder), its conv front end striding 640 samples (75 frames/s at
  48 kHz, MERT's frame rate). It has 3.4x HTS-AT's weights, and its front end's
  512-channel convolutions over the 48 kHz samples cost most of its forward: what a
  frozen MERT-95M-sized encoder costs, not a same-size HTS-AT frozen. The frozen text
  encoder is a random RobertaModel of the CLAP text tower's sizes, with the same
  tokenizer (its pooler, which open_clip's wrapper leaves out, aside). "tiny" scales
  both down the same way (32 wide, 2 layers) rather than using the bundled MiniLM,
  which would make the frozen row's text tower far larger than the tiny CLAP it is
  compared with; its default-size heads (256 wide) are then larger than the whole tiny
  CLAP, so only base's ratios say what fine-tuning costs.

Configs, random weights (step time and memory do not depend on their values):
- tiny: the tests' tiny CLAP shape (HTS-AT 32 wide, 64 x 64 image; text 32 wide,
  2 layers), 16 kHz, 2 s clips;
- base: transformers' default `ClapConfig()`, the sizes of laion/clap-htsat-unfused
  (HTS-AT 96 to 768 wide, depths 2-2-6-2, a 256 x 256 image; RoBERTa-base text; 512-wide
  projections), with that checkpoint's feature extractor settings (48 kHz, 64 mels,
  hop 480, 10 s, rand_trunc, repeatpad). HTS-AT pads every clip to the extractor's 10 s
  and interpolates it to its 1024-frame image, so CLAP's cost does not depend on the
  clip length (clip_seconds); the frozen wav2vec2's grows with it.

Ratios: clap_ft's step time and peak to frozen_heads', and clap_ft_checkpointing's to
clap_ft's, all measured in the same run.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from bench.harness import WORK, Outcome, in_child
from schemas.config import Config, setting

CONFIGS = ("tiny", "base")
ROWS = ("clap_ft", "clap_ft_checkpointing", "frozen_heads")
# RoBERTa's special tokens in RoBERTa's order: ClapTextConfig's ids (bos 0, pad 1, eos 2)
SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
CAPTIONS = ["a happy rock song with loud electric guitar and drums",
            "sad jazz trio on piano with double bass and brushed snare",
            "calm pop ballad with soft strings and female vocals",
            "slow blues guitar, sad and dark, with a male voice",
            "happy jazz with drums and a walking bass line",
            "dark rock riff on piano, calm at first then loud",
            "upbeat pop tune with guitar, happy and fast",
            "sad blues with drums and a slow groove"]
GENRES, MOODS, INSTRUMENTS = ("rock", "jazz", "pop", "blues"), ("happy", "sad", "calm",
                                                                 "dark"), \
    ("guitar", "piano", "drums", "bass")
TINY_MELS = 64  # the tiny HTS-AT's image: 64 mels x at most 64 frames (tests/clap.py's)

# what each config's folders are made of; written beside them, remade when it changes
SPECS = {
    "tiny": {
        "sample_rate": 16_000, "clip_seconds": 2.0,
        "text": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                 "intermediate_size": 64, "max_position_embeddings": 66},
        "audio": {"num_mel_bins": TINY_MELS, "spec_size": TINY_MELS, "window_size": 8,
                  "patch_embeds_hidden_size": 16, "hidden_size": 32, "depths": [1, 1],
                  "num_attention_heads": [2, 2], "num_classes": 8},
        "projection_dim": 16,
        "wav2vec2": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                     "intermediate_size": 64, "conv_dim": [32] * 7,
                     "conv_kernel": [10, 3, 3, 3, 3, 2, 2],
                     "conv_stride": [5, 2, 2, 2, 2, 2, 2], "num_conv_pos_embeddings": 16,
                     "num_conv_pos_embedding_groups": 4},
    },
    "base": {
        "sample_rate": 48_000, "max_length_s": 10,
        # transformers' ClapConfig() defaults: laion/clap-htsat-unfused's sizes
        "text": {}, "audio": {}, "projection_dim": 512,
        "wav2vec2": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                     "intermediate_size": 3072, "conv_dim": [512] * 7,
                     "conv_kernel": [10, 4, 3, 3, 3, 2, 2],
                     "conv_stride": [5, 4, 2, 2, 2, 2, 2]},
    },
}


@dataclass(frozen=True)
class Settings(Config):
    configs: tuple[str, ...] = setting(CONFIGS, help="model sizes to measure: tiny, base")
    batch: int = setting(4, help="pairs per step, every row and config")
    clip_seconds: float = setting(10.0, help="base's clip length (at most the extractor's "
                                  "10 s); tiny's is 2 s")
    steps: int = setting(3, help="measured optimizer steps per row, after the warm-up")
    warmup: int = setting(1, help="steps run before the measured ones")
    p_swap: float = setting(0.15, help="TextSwap probability of every step")
    work: Path = setting(WORK / "clap_finetune", help="folder of the random model folders, "
                         "kept and reused while their sizes stay the same")

    def check(self) -> list[str]:
        p = []
        if not self.configs or set(self.configs) - set(CONFIGS):
            p.append(f"configs must name some of {', '.join(CONFIGS)}")
        if self.batch < 2:
            p.append("batch must be >= 2 (contrastive loss needs negatives)")
        if not 0.1 <= self.clip_seconds <= SPECS["base"]["max_length_s"]:
            p.append("clip_seconds must be in [0.1, 10]")
        if self.steps < 1 or self.warmup < 0:
            p.append("steps must be >= 1 and warmup >= 0")
        if not 0 <= self.p_swap <= 1:
            p.append("p_swap must be in [0, 1]")
        return p


def _tokenizer(max_tokens: int):
    """A byte-level BPE RoBERTa tokenizer of 400 tokens trained on the captions."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import RobertaTokenizer

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.train_from_iterator([" ".join(CAPTIONS)], trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIAL_TOKENS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    trained = json.loads(bpe.to_str())["model"]
    return RobertaTokenizer(vocab=trained["vocab"],
                            merges=[tuple(merge) for merge in trained["merges"]],
                            model_max_length=max_tokens)


def _extractor(name: str):
    from transformers import ClapFeatureExtractor

    spec = SPECS[name]
    if name == "base":  # laion/clap-htsat-unfused's preprocessor settings
        return ClapFeatureExtractor(
            feature_size=64, sampling_rate=spec["sample_rate"], hop_length=480,
            max_length_s=spec["max_length_s"], fft_window_size=1024, frequency_min=50,
            frequency_max=14_000, truncation="rand_trunc", padding="repeatpad")
    rate, seconds = spec["sample_rate"], spec["clip_seconds"]
    samples = int(rate * seconds)
    return ClapFeatureExtractor(
        feature_size=TINY_MELS, sampling_rate=rate, max_length_s=int(seconds),
        fft_window_size=1024, hop_length=-(-samples // (TINY_MELS - 1)), frequency_min=50,
        frequency_max=rate / 2, truncation="rand_trunc", padding="repeatpad")


def make_models(folder: Path, name: str) -> Path:
    """Random models of config `name` in `folder`: clap/ (ClapModel and ClapProcessor),
    wav2vec2/ (Wav2Vec2Model and feature extractor), roberta/ (RobertaModel of the CLAP
    text tower's size and the same tokenizer). Reused while spec.json is the same."""
    import torch
    import transformers
    from transformers import (
        ClapConfig,
        ClapModel,
        ClapProcessor,
        RobertaConfig,
        RobertaModel,
        Wav2Vec2Config,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2Model,
    )

    spec = SPECS[name]
    marker = folder / "spec.json"
    if marker.exists() and json.loads(marker.read_text()) == spec:
        return folder
    transformers.logging.disable_progress_bar()
    tokenizer = _tokenizer(512 if name == "base" else 64)
    text = {**spec["text"], "projection_dim": spec["projection_dim"]}
    if name == "tiny":
        text["vocab_size"] = len(tokenizer)
    config = ClapConfig(text_config=text,
                        audio_config={**spec["audio"], "projection_dim": spec["projection_dim"],
                                      "enable_fusion": False},
                        projection_dim=spec["projection_dim"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        clap = ClapModel(config)
        clap.save_pretrained(folder / "clap")
        ClapProcessor(feature_extractor=_extractor(name),
                      tokenizer=tokenizer).save_pretrained(folder / "clap")
        del clap
        # the CLAP text tower's own sizes, as a RobertaModel
        roberta = {k: getattr(config.text_config, k) for k in (
            "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
            "intermediate_size", "max_position_embeddings", "type_vocab_size",
            "pad_token_id", "bos_token_id", "eos_token_id", "layer_norm_eps")}
        RobertaModel(RobertaConfig(**roberta)).save_pretrained(
            folder / "roberta")
        tokenizer.save_pretrained(folder / "roberta")
        Wav2Vec2Model(Wav2Vec2Config(**spec["wav2vec2"])).save_pretrained(folder / "wav2vec2")
        Wav2Vec2FeatureExtractor(sampling_rate=spec["sample_rate"], do_normalize=True
                                 ).save_pretrained(folder / "wav2vec2")
    marker.write_text(json.dumps(spec))
    return folder


def _overrides(folder: Path, row: str, batch: int, rate: int, clip: float) -> list[str]:
    common = ["run.device=cpu", f"data.batch_size={batch}", f"model.audio.sample_rate={rate}",
              f"model.audio.clip_seconds={clip}"]
    if row == "frozen_heads":
        return [*common, "model.audio.kind=hf-frozen", f"model.audio.path={folder / 'wav2vec2'}",
                f"model.text.path={folder / 'roberta'}"]
    return [*common, "model.kind=clap", f"model.clap.path={folder / 'clap'}",
            "model.text.trainable=true",
            f"model.gradient_checkpointing={str(row == 'clap_ft_checkpointing').lower()}"]


def row_child(folder: str, row: str, batch: int, rate: int, clip: float, steps: int,
              warmup: int, p: float) -> dict:
    """In a fresh process: one row's model, its optimizer and `warmup + steps` real
    optimizer steps on the fixed batch; the measured steps' seconds and the sizes."""
    import torch

    from schemas.descriptors import DescriptorMatcher
    from schemas.swap_dictionary import Descriptor, SwapDictionary
    from trainer.config import load_config
    from trainer.distributed import Dist
    from trainer.model import build_model
    from trainer.swap import Swapper
    from trainer.train import Learner, RunContext, parameter_groups, train_step

    config = load_config(None, _overrides(Path(folder), row, batch, rate, clip))
    torch.manual_seed(0)
    model = build_model(config.model)
    optimizer = torch.optim.AdamW(parameter_groups(model, config.optim))
    info = Dist()
    learner = Learner.wrap(model, optimizer, info)
    dictionary = SwapDictionary(tuple(
        [Descriptor("genre", g) for g in GENRES] + [Descriptor("mood", m) for m in MOODS] +
        [Descriptor("instrument", i) for i in INSTRUMENTS]))
    run = RunContext(config, info, Swapper(dictionary, ("genre", "mood", "instrument")))
    matcher = DescriptorMatcher(dictionary)
    texts = [CAPTIONS[i % len(CAPTIONS)] for i in range(batch)]
    audio = torch.randn(batch, round(rate * clip), generator=torch.Generator().manual_seed(0))
    batch_ = {"audio": audio * 0.1, "text": texts,
              "spans": [[m._asdict() for m in matcher.find(t)] for t in texts],
              "tags": [{"genre": [GENRES[i % len(GENRES)]]} for i in range(batch)]}
    model.train()
    times, hard = [], []
    for step in range(warmup + steps):
        torch.manual_seed(1000 + step)
        started = time.perf_counter()
        _, n_hard = train_step(learner, run, [batch_], p, step)
        if step >= warmup:
            times.append(time.perf_counter() - started)
            hard.append(n_hard)
    return {"steps_s": [round(t, 3) for t in times],
            "trainable_params": sum(q.numel() for q in model.trainable_parameters()),
            "total_params": sum(q.numel() for q in model.parameters()),
            **{f"{part}_params": sum(q.numel() for q in module.parameters())
               for part, module in model.encoder_parts().items()},
            "hard_negatives_per_step": statistics.mean(hard)}


def measure_config(settings: Settings, name: str) -> dict:
    spec = SPECS[name]
    folder = make_models(Path(settings.work) / name, name)
    rate = spec["sample_rate"]
    clip = settings.clip_seconds if name == "base" else spec["clip_seconds"]
    rows = {}
    for row in ROWS:
        result, measured = in_child(row_child, folder, row, settings.batch, rate, clip,
                                    settings.steps, settings.warmup, settings.p_swap)
        rows[row] = {"step_s": round(statistics.median(result["steps_s"]), 3),
                     "peak_rss_mb": round(measured.peak_rss_mb, 1),
                     **result, "process_wall_s": round(measured.wall_s, 1)}
    ft, ckpt, frozen = (rows[r] for r in ROWS)

    def ratio(a: float, b: float) -> float:
        return round(a / b, 3) if b else 0.0

    return {"setup": {"batch": settings.batch, "clip_seconds": clip, "sample_rate": rate,
                      "measured_steps": settings.steps, "warmup_steps": settings.warmup},
            "rows": rows,
            "ratios": {"ft_step_to_frozen": ratio(ft["step_s"], frozen["step_s"]),
                       "ft_peak_to_frozen": ratio(ft["peak_rss_mb"], frozen["peak_rss_mb"]),
                       "checkpointing_step_to_ft": ratio(ckpt["step_s"], ft["step_s"]),
                       "checkpointing_peak_to_ft": ratio(ckpt["peak_rss_mb"],
                                                         ft["peak_rss_mb"])}}


def run(settings: Settings) -> Outcome:
    import torch

    started = time.perf_counter()
    figures: dict = {"threads": torch.get_num_threads()}
    baseline = {}
    for name in CONFIGS:
        if name not in settings.configs:
            continue
        figures[name] = measure_config(settings, name)
        baseline |= {
            f"{name}.ratios.ft_step_to_frozen": f"{name}'s frozen_heads step (frozen "
            "wav2vec2 + RoBERTa, heads trained) on the same batch, same run",
            f"{name}.ratios.ft_peak_to_frozen": f"{name}'s frozen_heads process peak RSS, "
            "same batch, same run",
            f"{name}.ratios.checkpointing_step_to_ft": f"{name}'s clap_ft step (no "
            "gradient checkpointing), same batch, same run",
            f"{name}.ratios.checkpointing_peak_to_ft": f"{name}'s clap_ft process peak "
            "RSS, same run"}
    figures["bench_wall_s"] = round(time.perf_counter() - started, 1)
    parts = []
    for name in settings.configs:
        rows, ratios = figures[name]["rows"], figures[name]["ratios"]
        parts.append(
            f"{name} (batch {settings.batch}, {figures[name]['setup']['clip_seconds']:g} s): "
            f"CLAP fine-tuning {rows['clap_ft']['step_s']} s/step, "
            f"{ratios['ft_step_to_frozen']}x the frozen heads' "
            f"{rows['frozen_heads']['step_s']} s, peak {rows['clap_ft']['peak_rss_mb']:.0f} "
            f"MB ({ratios['ft_peak_to_frozen']}x); checkpointing "
            f"{ratios['checkpointing_step_to_ft']}x time, "
            f"{ratios['checkpointing_peak_to_ft']}x peak")
    return Outcome(figures, baseline, "clap_finetune: " + "; ".join(parts))
