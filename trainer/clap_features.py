"""CLAP's audio front end in torch: the features transformers' `ClapFeatureExtractor`
makes, batched, on the audio's device.

A pretrained CLAP checkpoint must be fed exactly the features it was trained on (the
padding of short clips, the filter bank its truncation mode picks, the dB scale), and
the extractor that makes them is numpy, one clip at a time, on the host: in a training
loop it would cost a CPU pass over every clip of every batch and a copy to the GPU.
`ClapFeatures` reproduces it for clips no longer than the extractor's
`nb_max_samples`, to float32 precision; longer clips, which the extractor crops or
fuses at random, are refused.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import ClapFeatureExtractor
from transformers.audio_utils import window_function

TRUNCATIONS = ("fusion", "rand_trunc")
PADDINGS = ("repeatpad", "repeat", "pad")
# the extractor's spectrogram(): mel_floor and power_to_db's min_value, reference 1,
# no db_range (its top_db setting is stored but never passed on)
MEL_FLOOR = 1e-10


class ClapFeatures(nn.Module):
    """`ClapFeatureExtractor(audio)` as a module: [batch, samples] audio in, the
    extractor's `input_features` ([B, 4, frames, mels] for truncation "fusion",
    [B, 1, frames, mels] for "rand_trunc", float32) and `is_longer` ([B, 1] bool) out."""

    def __init__(self, extractor: ClapFeatureExtractor):
        super().__init__()
        if extractor.truncation not in TRUNCATIONS:
            raise ValueError(f"CLAP truncation {extractor.truncation!r} is not one of "
                             f"{', '.join(TRUNCATIONS)}")
        if extractor.padding not in PADDINGS:
            raise ValueError(f"CLAP padding {extractor.padding!r} is not one of "
                             f"{', '.join(PADDINGS)}")
        if extractor.nb_max_samples != int(extractor.nb_max_samples):
            raise ValueError(f"CLAP max_length_s={extractor.max_length_s} is not a whole "
                             f"number of samples at {extractor.sampling_rate} Hz")
        self.sampling_rate = int(extractor.sampling_rate)
        self.feature_size = int(extractor.feature_size)
        self.fft_window_size = int(extractor.fft_window_size)
        self.hop_length = int(extractor.hop_length)
        self.frequency_min = float(extractor.frequency_min)
        self.frequency_max = float(extractor.frequency_max)
        # max_length_s * sampling_rate, a float when max_length_s is one
        self.nb_max_samples = int(extractor.nb_max_samples)
        self.truncation: str = extractor.truncation
        self.padding: str = extractor.padding
        # the extractor's own banks: HTK without norm for fusion (torchaudio's defaults,
        # which LAION's fusion models were trained with), Slaney for rand_trunc (librosa's)
        filters = (extractor.mel_filters if self.truncation == "fusion"
                   else extractor.mel_filters_slaney)
        self.register_buffer("filters", torch.from_numpy(filters).float(), persistent=False)
        self.register_buffer("window", torch.from_numpy(
            window_function(self.fft_window_size, "hann")).float(), persistent=False)

    @classmethod
    def from_pretrained(cls, path: str | Path) -> ClapFeatures:
        """The front end of the feature extractor saved in a CLAP folder."""
        return cls(ClapFeatureExtractor.from_pretrained(str(path)))

    def _pad(self, audio: torch.Tensor) -> torch.Tensor:
        # _get_input_mel's padding of a short clip, all clips of the batch at once
        length = audio.shape[1]
        if length == self.nb_max_samples:
            return audio
        if self.padding == "repeat":
            audio = audio.repeat(1, self.nb_max_samples // length + 1)[:, :self.nb_max_samples]
        elif self.padding == "repeatpad":
            audio = audio.repeat(1, self.nb_max_samples // length)
        return F.pad(audio, (0, self.nb_max_samples - audio.shape[1]))

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if audio.ndim != 2:
            raise ValueError(f"CLAP features take audio [batch, samples], not {tuple(audio.shape)}")
        if audio.shape[1] > self.nb_max_samples:
            longest = self.nb_max_samples / self.sampling_rate
            raise ValueError(
                f"clips of {audio.shape[1] / self.sampling_rate:g} s are longer than the CLAP "
                f"feature extractor's {longest:g} s (max_length_s), which it crops or fuses at "
                f"random; set model.audio.clip_seconds <= {longest:g}")
        # float32 under bf16 autocast too: the mel projection is a matmul, which autocast
        # would run in bf16, up to tenths of a dB off the extractor's float64
        with torch.autocast(audio.device.type, enabled=False):
            spec = torch.stft(self._pad(audio.float()), self.fft_window_size, self.hop_length,
                              window=self.window, center=True, pad_mode="reflect",
                              return_complex=True)
            power = spec.real ** 2 + spec.imag ** 2
            mel = torch.einsum("bft,fm->btm", power, self.filters)
            features = (10.0 * torch.log10(mel.clamp(min=MEL_FLOOR)))[:, None]
        if self.truncation == "fusion":
            # a short clip's four views (global, then three crops) are all the whole clip
            features = features.repeat(1, 4, 1, 1)
        is_longer = torch.zeros(audio.shape[0], 1, dtype=torch.bool, device=audio.device)
        if self.training and self.truncation == "fusion":
            # The extractor marks one random clip of a batch with none longer as longer, so
            # that the fusion layers (which only longer clips pass through) get a gradient
            # in every step; LAION trained the fusion checkpoints so, and under DDP a
            # parameter without a gradient would stop the run. (transformers' fusion block
            # batch-normalises the marked clips alone, and a training batch norm refuses a
            # single one: its batch norms must run in eval mode.) Evaluation needs no
            # gradient, and there a marked clip would change the embedding of a short one.
            is_longer[torch.randint(audio.shape[0], (1,), device=audio.device)] = True
        return features, is_longer
