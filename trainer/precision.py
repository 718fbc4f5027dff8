"""The precision a run computes in: bf16 autocast, or none. One rule for training,
its validation and `adswap eval`, so a model is scored as it was trained."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import torch


def uses_bf16(precision: str, device: torch.device) -> bool:
    """optim.precision bf16, or auto on a GPU."""
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")


def autocast_for(precision: str, device: torch.device) -> Callable[[], AbstractContextManager]:
    """bf16 autocast where `uses_bf16`; otherwise none."""
    if uses_bf16(precision, device):
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext
