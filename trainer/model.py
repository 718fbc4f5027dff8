"""The two model kinds behind one interface (`DualEncoder`):
- DuET-MC (kind duet): two base encoders, each followed by a trainable projection module
  (a small Transformer over the encoder's sequence with a learnable [CLS] token);
- a pretrained CLAP fine-tuned as it is (kind clap, trainer/clap_model.py).
Scores are cosine similarities of the l2-normalised embeddings."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from trainer.config import ModelConfig
from trainer.encoders import (
    TextEncoder,
    Tokens,
    audio_encoder,
    checkpoint_layers,
    pad_or_pool,
)


class Projection(nn.Module):
    def __init__(self, in_dim: int, dim: int, layers: int, heads: int, dropout: float,
                 max_positions: int):
        super().__init__()
        self.max_positions = max_positions
        self.input = nn.Linear(in_dim, dim)
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.position = nn.Parameter(torch.randn(1, max_positions + 1, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=4 * dim,
                                           dropout=dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, states: torch.Tensor, padding: torch.Tensor | None) -> torch.Tensor:
        states, padding = pad_or_pool(states, padding, self.max_positions)
        x = self.input(states)
        x = torch.cat([self.cls.expand(len(x), -1, -1), x], dim=1)
        x = x + self.position[:, :x.shape[1]]
        if padding is not None:
            padding = torch.cat([torch.zeros_like(padding[:, :1]), padding], dim=1)
        out = self.encoder(x, src_key_padding_mask=padding)
        return F.normalize(self.norm(out[:, 0]), dim=-1)


class Embeddings(NamedTuple):
    """One forward's outputs: l2-normalised embeddings and the logit scale."""

    audio: torch.Tensor
    text: torch.Tensor
    negatives: torch.Tensor | None  # of the hard-negative captions, when some were given
    scale: torch.Tensor  # exp(logit scale): 1 / temperature


class DualEncoder(nn.Module):
    """What training, evaluation and export read of a model of either kind: texts and
    audio to l2-normalised embeddings, the logit scale, and which parts are trained.
    A subclass sets `config`, `text` (tokenize/join), `logit_scale` and `dim`, and
    implements encode_audio, encode_text, `branches` and `encoder_parts`."""

    config: ModelConfig
    dim: int

    def forward(self, audio: torch.Tensor, ids: Tokens,
                negative_ids: Tokens | None = None) -> Embeddings:
        """Audio, caption and hard-negative embeddings and the scale. One forward for
        everything, so DDP sees every trainable parameter."""
        texts = self.encode_text(ids if negative_ids is None
                                 else self.text.join([ids, negative_ids]))
        # one text-encoder call for captions and their swapped copies: the encoder
        # runs once on the larger batch instead of twice
        texts, negatives = (texts, None) if negative_ids is None else texts.split(
            [len(ids), len(negative_ids)])
        # CLIP's cap on the learnable scale (temperature >= 0.01)
        scale = self.logit_scale.clamp(max=math.log(100)).exp()
        return Embeddings(self.encode_audio(audio), texts, negatives, scale)

    def encode_audio(self, audio: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def encode_text(self, ids: Tokens) -> torch.Tensor:
        raise NotImplementedError

    def tokenize(self, texts: list[str]) -> Tokens:
        return self.text.tokenize(texts)

    def branches(self) -> dict[str, nn.Module]:
        """The modules whose children are the encoders' parts, by name prefix."""
        raise NotImplementedError

    def encoder_parts(self) -> dict[str, nn.Module]:
        """'audio_encoder' / 'text_encoder': the pretrained or encoder weights each
        learning rate of optim (audio_encoder_lr, text_encoder_lr) applies to."""
        raise NotImplementedError

    def trainable_parameters(self) -> list[nn.Parameter]:
        """What the optimizer updates (frozen encoders have none)."""
        return [p for p in self.parameters() if p.requires_grad]

    def parameter_roles(self) -> list[tuple[str, nn.Parameter]]:
        """Every trainable parameter, in `parameters()` order, with its role: one of
        encoder_parts' names, or 'heads' for the rest (projections, layer mix, scale)."""
        owner = {id(p): role for role, part in self.encoder_parts().items()
                 for p in part.parameters()}
        return [(owner.get(id(p), "heads"), p) for p in self.trainable_parameters()]

    def frozen_modules(self) -> dict[str, nn.Module]:
        """The encoders' parts that take no gradients, by name: their weights come from
        their own files."""
        found = {}
        for branch, module in self.branches().items():
            for name, child in module.named_children():
                weights = list(child.parameters())
                if weights and not any(p.requires_grad for p in weights):
                    found[f"{branch}.{name}"] = child
        return found

    def cast_frozen(self, dtype: torch.dtype) -> None:
        """Frozen parts in `dtype` once (bf16 training): autocast would otherwise recast
        their float32 weights at every op of every forward, as it caches the casts of
        trained weights only."""
        for module in self.frozen_modules().values():
            module.to(dtype)

    def trainable_state(self) -> dict:
        """Everything but the frozen parts: what a checkpoint must keep, the running
        statistics of trained BatchNorms (HTS-AT) and a fixed logit scale included."""
        frozen = tuple(f"{name}." for name in self.frozen_modules())
        return {k: v for k, v in self.state_dict().items() if not k.startswith(frozen)}


class DuetMC(DualEncoder):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.dim = config.dim
        self.audio = audio_encoder(config.audio)
        self.text = TextEncoder(config.text)
        head = dict(dim=config.dim, layers=config.layers, heads=config.heads,
                    dropout=config.dropout, max_positions=config.max_positions)
        self.audio_head = Projection(self.audio.out_dim, **head)
        self.text_head = Projection(self.text.out_dim, **head)
        # stored as log(1/temperature), like CLIP's logit scale
        scale = torch.tensor(math.log(1.0 / config.temperature))
        if config.learn_temperature:
            self.logit_scale = nn.Parameter(scale)
        else:
            self.register_buffer("logit_scale", scale)
        if config.gradient_checkpointing:
            checkpoint_layers({name.replace("_", " "): part
                               for name, part in self.encoder_parts().items()
                               if any(p.requires_grad for p in part.parameters())})

    def encode_audio(self, audio: torch.Tensor) -> torch.Tensor:
        return self.audio_head(*self.audio(audio))

    def encode_text(self, ids: Tokens) -> torch.Tensor:
        return self.text_head(*self.text(ids))

    def branches(self) -> dict[str, nn.Module]:
        return {"audio": self.audio, "text": self.text}

    def encoder_parts(self) -> dict[str, nn.Module]:
        heads = getattr(self.audio, "head_parts", ())
        audio = nn.ModuleList(child for name, child in self.audio.named_children()
                              if name not in heads)
        return {"audio_encoder": audio, "text_encoder": self.text}


def build_model(config: ModelConfig) -> DualEncoder:
    """The model `config.kind` names."""
    if config.kind == "clap":
        from trainer.clap_model import ClapDual

        return ClapDual(config)
    return DuetMC(config)
