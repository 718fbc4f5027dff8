"""`adswap`: the command-line front of the pipeline and trainer packages, and
`load_model` for a model made by `adswap export`."""

from __future__ import annotations


def load_model(folder, device: str = "cpu"):
    """A model exported with `adswap export`: `.embed_text(list_of_str)` gives [n, dim],
    `.embed_audio(samples, sample_rate)` a track's [dim] embedding (float32, normalised).
    Needs the `train` extra (torch); imported on call so `adswap` itself stays light."""
    from trainer.export import load_model as load

    return load(folder, device)
