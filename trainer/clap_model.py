"""Kind clap: a pretrained transformers `ClapModel` (e.g. a LAION checkpoint) trained as
it is, with our loss, p_cap, View Dropout and TextSwap. Its own towers, projections and
logit scale are the starting point; each tower is trained or frozen (model.clap.
train_audio, model.text.trainable). The audio tower is fed exactly the features its
checkpoint's feature extractor makes (trainer/clap_features.py), and embeddings are what
`ClapModel.get_audio_features` / `get_text_features` return, so an export is a plain
ClapModel folder whose embeddings equal the run's.

One scale: CLAP keeps two (logit_scale_a, logit_scale_t), equal in LAION's checkpoints;
training reads logit_scale_t, and an export writes its value into both.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trainer.clap_features import ClapFeatures
from trainer.config import ModelConfig
from trainer.encoders import Tokens, checkpoint_layers, join_tokens
from trainer.model import DualEncoder


class ClapTokenizer:
    """The checkpoint's own tokenizer, giving `Tokens` (padded to the batch's longest)."""

    def __init__(self, path: str, max_length: int):
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.pad_id = self.tokenizer.pad_token_id or 0
        self.max_length = max_length

    def tokenize(self, texts: list[str]) -> Tokens:
        encoded = self.tokenizer(list(texts), return_tensors="pt", padding="longest",
                                 truncation=True, max_length=self.max_length)
        return Tokens(encoded["input_ids"], encoded["attention_mask"].bool())

    def join(self, parts: list[Tokens]) -> Tokens:
        return join_tokens(parts, self.pad_id)


class ClapDual(DualEncoder):
    def __init__(self, config: ModelConfig):
        super().__init__()
        import transformers
        from transformers import ClapModel

        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
        self.config = config
        path = config.clap.path
        self.clap = ClapModel.from_pretrained(path)
        self.features = ClapFeatures.from_pretrained(path)
        rate, longest = self.features.sampling_rate, self.features.nb_max_samples / \
            self.features.sampling_rate
        if rate != config.audio.sample_rate:
            raise ValueError(f"{path} expects {rate} Hz audio but model.audio.sample_rate "
                             f"is {config.audio.sample_rate}; make shards at {rate} Hz")
        if config.audio.clip_seconds > longest + 1e-9:
            raise ValueError(f"model.audio.clip_seconds {config.audio.clip_seconds} is longer "
                             f"than the {longest:g} s {path}'s feature extractor takes; set "
                             f"it to at most {longest:g}")
        self.text = ClapTokenizer(path, config.text.max_length)
        self.dim = self.clap.config.projection_dim
        self.train_audio, self.train_text = config.clap.train_audio, config.text.trainable
        self.clap.requires_grad_(False)
        for on, parts in ((self.train_audio, (self.clap.audio_model, self.clap.audio_projection)),
                          (self.train_text, (self.clap.text_model, self.clap.text_projection))):
            for part in parts:
                part.requires_grad_(on)
        # logit_scale_a takes no part in our loss: trained, DDP would wait for its gradient
        self.clap.logit_scale_t.requires_grad_(config.learn_temperature)
        if config.gradient_checkpointing:
            checkpoint_layers({where: part for on, part, where in (
                (self.train_audio, self.clap.audio_model, "CLAP's audio tower"),
                (self.train_text, self.clap.text_model, "CLAP's text tower")) if on})

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.clap.logit_scale_t

    def train(self, mode: bool = True):
        super().train(mode)
        # a frozen tower stays in eval mode: its dropout (and BatchNorm statistics) fixed
        if not self.train_audio:
            self.clap.audio_model.eval()
            self.clap.audio_projection.eval()
        if not self.train_text:
            self.clap.text_model.eval()
            self.clap.text_projection.eval()
        # a fusion checkpoint's fusion block batch-normalises only the clips marked
        # longer, pooled to 1 x 1: one marked clip per batch (ClapFeatures) breaks
        # BatchNorm in training mode, so its statistics stay the checkpoint's
        fusion = getattr(self.clap.audio_model.audio_encoder.patch_embed, "fusion_model", None)
        if fusion is not None:
            fusion.eval()
        return self

    def encode_audio(self, audio: torch.Tensor) -> torch.Tensor:
        self.features.train(self.training and self.train_audio)
        features, longer = self.features(audio)
        with torch.enable_grad() if self.train_audio else torch.no_grad():
            out = self.clap.get_audio_features(
                input_features=features.to(next(self.clap.audio_model.parameters()).dtype),
                is_longer=longer)
        return F.normalize(_pooled(out), dim=-1)

    def encode_text(self, ids: Tokens) -> torch.Tensor:
        with torch.enable_grad() if self.train_text else torch.no_grad():
            out = self.clap.get_text_features(input_ids=ids.ids,
                                              attention_mask=ids.mask.long())
        return F.normalize(_pooled(out), dim=-1)

    def branches(self) -> dict[str, nn.Module]:
        return {"clap": self.clap}

    def encoder_parts(self) -> dict[str, nn.Module]:
        return {"audio_encoder": self.clap.audio_model, "text_encoder": self.clap.text_model}

    def export_model(self):
        """The ClapModel to save: these weights, the trained scale in both of CLAP's."""
        with torch.no_grad():
            self.clap.logit_scale_a.copy_(self.clap.logit_scale_t)
        return self.clap


def _pooled(out) -> torch.Tensor:
    # transformers 5 returns the model output (its pooler_output the embedding); 4.x
    # returned the tensor itself
    return out if isinstance(out, torch.Tensor) else out.pooler_output
