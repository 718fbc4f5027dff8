"""A tiny random CLAP checkpoint for tests: a transformers `ClapModel` and its
`ClapProcessor` saved in a folder, as a LAION checkpoint is, written in a tenth of a second
and without a hub."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import (
    ClapConfig,
    ClapFeatureExtractor,
    ClapModel,
    ClapProcessor,
    RobertaTokenizer,
)

# RoBERTa's special tokens in RoBERTa's order, so that the ids are ClapTextConfig's
# defaults (bos 0, pad 1, eos 2)
SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
WORDS = ("a calm piano ballad with soft strings, an upbeat rock song with loud electric "
         "guitar and drums, jazz trio with double bass and brushed snare, ambient synth pad "
         "drone, fast techno beat with heavy bass, acoustic folk guitar and female vocals, "
         "male voice singing over a slow hip hop groove, orchestral film score with brass "
         "and choir, lofi chill track, happy pop tune, sad violin solo, dark metal riff")
MAX_TOKENS = 64
# HTS-AT turns [frames, mels] into a square image of spec_size: mels = spec_size //
# freq_ratio and frames <= spec_size * freq_ratio. 64 mels and freq_ratio 1 keep the
# image at 64 x 64 (16 x 16 patches), and 64 is also the width the extractor's fusion
# of longer clips hard-codes.
MELS = SPEC_SIZE = 64


def _tokenizer() -> RobertaTokenizer:
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.train_from_iterator([WORDS], trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIAL_TOKENS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    trained = json.loads(bpe.to_str())["model"]
    return RobertaTokenizer(vocab=trained["vocab"],
                            merges=[tuple(merge) for merge in trained["merges"]],
                            model_max_length=MAX_TOKENS)


def _extractor(sampling_rate: int, max_length_s: float, truncation: str) -> ClapFeatureExtractor:
    samples = max_length_s * sampling_rate
    if samples != int(samples):
        raise ValueError(f"max_length_s={max_length_s} is not a whole number of samples")
    if float(max_length_s).is_integer():
        # the extractor pads a short clip to max_length_s * sampling_rate samples, which
        # numpy refuses as a float
        max_length_s = int(max_length_s)
    return ClapFeatureExtractor(
        feature_size=MELS, sampling_rate=sampling_rate, max_length_s=max_length_s,
        fft_window_size=1024, hop_length=-(-int(samples) // (SPEC_SIZE - 1)),
        frequency_min=50, frequency_max=sampling_rate / 2, truncation=truncation,
        padding="repeatpad")


def tiny_clap(folder: Path, *, sampling_rate: int = 16_000, max_length_s: float = 2.0,
              truncation: str = "rand_trunc", fusion: bool = False, seed: int = 0) -> Path:
    """Write a tiny random `ClapModel` with its processor (feature extractor and a
    byte-level BPE RoBERTa tokenizer of 400 tokens trained on a few captions) into
    `folder`. The hop is chosen so that a full clip is at most 64 frames, what the
    model's 64 x 64 image holds. `fusion` builds the fusion layers (pass
    truncation="fusion" with it, as LAION's fused checkpoints have). The global random
    state is left as it was."""
    tokenizer = _tokenizer()
    config = ClapConfig(
        text_config={"vocab_size": len(tokenizer), "hidden_size": 32, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "intermediate_size": 64,
                     # RoBERTa's positions start after the padding id
                     "max_position_embeddings": MAX_TOKENS + 2, "projection_dim": 16},
        audio_config={"num_mel_bins": MELS, "spec_size": SPEC_SIZE, "window_size": 8,
                      "patch_embeds_hidden_size": 16, "hidden_size": 32, "depths": [1, 1],
                      "num_attention_heads": [2, 2], "num_classes": 8,
                      "enable_fusion": fusion, "fusion_type": "aff_2d" if fusion else None,
                      "projection_dim": 16},
        projection_dim=16)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ClapModel(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    ClapProcessor(feature_extractor=_extractor(sampling_rate, max_length_s, truncation),
                  tokenizer=tokenizer).save_pretrained(folder)
    return folder
