"""Symmetric InfoNCE over the global batch, with TextSwap hard negatives.

Each process holds a slice of the global batch. Embeddings are gathered from every
rank with gradients (open_clip's `gather_features`), and each process scores its own
rows against all columns ("local loss"): the mean over processes of these losses is
the loss of the whole batch on one process, and so are the gradients DDP averages.

A hard negative for anchor i replaces one other caption in row i of the audio-to-text
logits; the matrix keeps its shape and the text-to-audio direction is unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from trainer.swap import HardNegatives


def gather(audio: torch.Tensor, text: torch.Tensor, rank: int, world: int
           ) -> tuple[torch.Tensor, torch.Tensor]:
    if world == 1:
        return audio, text
    from open_clip.loss import gather_features

    return gather_features(audio, text, local_loss=True, gather_with_grad=True, rank=rank,
                           world_size=world)


def contrastive_loss(audio: torch.Tensor, text: torch.Tensor, all_audio: torch.Tensor,
                     all_text: torch.Tensor, scale: torch.Tensor, offset: int,
                     negatives: HardNegatives | None = None,
                     negative_text: torch.Tensor | None = None) -> torch.Tensor:
    """audio, text: this process's [n, d] rows; all_*: the global [N, d] batch; offset:
    the global index of row 0; negative_text: embeddings of negatives.texts."""
    labels = torch.arange(len(audio), device=audio.device) + offset
    audio_to_text = scale * audio @ all_text.T
    if negatives is not None and len(negatives):
        rows = torch.tensor(negatives.rows, device=audio.device)
        columns = torch.tensor(negatives.columns, device=audio.device)
        hard = scale * (audio[rows] * negative_text).sum(-1)
        audio_to_text = audio_to_text.index_put((rows, columns), hard)
    text_to_audio = scale * text @ all_audio.T
    return (F.cross_entropy(audio_to_text, labels) + F.cross_entropy(text_to_audio, labels)) / 2
