"""The DuET-MC trainer: model, loader, TextSwap, loss, training loop, evaluation and the
ablation. Reads shards through `schemas/`; never imports `pipeline`."""
