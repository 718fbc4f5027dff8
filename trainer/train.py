"""The training loop, top to bottom in `train`. Progress lives in `State`
(trainer/checkpoint.py); a step reads the model it trains from a `Learner` and the rest
from a `RunContext`; the learning rate and TextSwap curriculum are small pure functions.

Run folder (run.out): trainer/run_folder.py keeps its config.yaml, logs and plots,
trainer/checkpoint.py its checkpoints/last.pt and best.pt; validation after each epoch is
trainer/validation.py's.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from schemas.swap_dictionary import SwapDictionary
from trainer.audio_features import AudioFeatures
from trainer.checkpoint import State, load_checkpoint, save_checkpoint
from trainer.config import OptimConfig, TrainConfig, cached_towers, config_changes, load_config
from trainer.data import (
    SharedEpoch,
    shard_urls,
    shared_memory_need,
    shared_memory_problem,
    train_loader,
)
from trainer.distributed import (
    Dist,
    loader_note,
    loader_workers,
    local_processes,
    setup,
    usable_cores,
)
from trainer.encoders import CachedAudio, CachedText, Tokens
from trainer.loss import contrastive_loss, gather
from trainer.model import DualEncoder, build_model
from trainer.precision import autocast_for, uses_bf16
from trainer.run_folder import Log, open_run_folder, plot_metrics
from trainer.swap import Swapper, hard_negatives, p_swap
from trainer.text_features import TextFeatures
from trainer.validation import validate

# where DataLoader workers hand batches over (Linux)
SHARED_MEMORY = Path("/dev/shm")


@dataclass(frozen=True)
class Learner:
    """The model being trained and what updates it. `ddp` is what a step calls: the
    model itself in one process, its DistributedDataParallel wrapper in several."""

    model: DualEncoder
    optimizer: torch.optim.Optimizer
    ddp: torch.nn.Module

    @classmethod
    def wrap(cls, model: DualEncoder, optimizer: torch.optim.Optimizer, info: Dist) -> Learner:
        if info.world == 1:
            return cls(model, optimizer, model)
        sync_batch_norm(model, info)
        # frozen encoders have requires_grad=False: DDP neither syncs nor stores them.
        # find_unused_parameters stays off: every trainable parameter takes part in
        # every forward (one forward for audio, captions and hard negatives)
        return cls(model, optimizer, torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[info.local_rank] if info.device.type == "cuda" else None))


def sync_batch_norm(model: DualEncoder, info: Dist) -> None:
    """BatchNorm (HTS-AT's) as SyncBatchNorm on GPUs under DDP: normalised by the whole
    global batch, so N GPUs train as one GPU of the same batch would. It runs on GPUs
    only; a CPU (gloo) run keeps per-process statistics. The layers keep their
    parameters, so an optimizer built before still updates them."""
    if info.world > 1 and info.device.type == "cuda":
        torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)


@dataclass(frozen=True)
class RunContext:
    """What every step of a run reads besides the model: the config, this process's
    place in the run (rank, world, device), the autocast its forwards run under, the
    TextSwap swapper and the feature caches (features.dir) when there are some."""

    config: TrainConfig
    info: Dist
    swapper: Swapper
    autocast: Callable[[], AbstractContextManager] = nullcontext
    text_features: TextFeatures | None = None
    audio_features: AudioFeatures | None = None

    def audio_input(self, audio: torch.Tensor) -> torch.Tensor | CachedAudio:
        """What the audio branch takes: the batch's clips, or their cached states."""
        return CachedAudio(audio) if self.audio_features is not None else audio

    def text_input(self, model: DualEncoder, texts: list[str]) -> Tokens | CachedText:
        """What the text branch takes: cached states, or the tokens to run it on."""
        if self.text_features is not None:
            return self.text_features.lookup(texts)
        return model.tokenize(texts)

    @property
    def swaps_cached(self) -> bool:
        return self.text_features is not None and self.config.features.swap_variants > 0

    def negative_input(self, model: DualEncoder, texts: list[str]) -> Tokens | CachedText:
        """The hard negatives' text input: from the cache where it holds swaps; with a
        cache that holds none (features.swap_variants 0), the frozen encoder's states of
        these few texts, computed here, so they join the cached captions' states."""
        if self.text_features is None or self.swaps_cached:
            return self.text_input(model, texts)
        with torch.no_grad():
            states, padding = model.text(model.tokenize(texts).to(self.info.device))
        return CachedText(states, ~padding)


def learning_rate(step: int, total: int, warmup: int, peak: float, floor: float) -> float:
    """Linear warm-up to `peak`, then cosine decay to `floor` at `total` steps."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * progress))


def steps_per_epoch(config: TrainConfig, world: int) -> int:
    _, samples = shard_urls(config.data.shards, "train")
    samples = config.data.samples_per_epoch or samples
    per_step = config.data.batch_size * config.data.accumulate * world
    if samples < per_step:
        raise ValueError(f"an epoch of {samples} samples is smaller than one step of "
                         f"{per_step} (batch_size x accumulate x processes); lower "
                         "data.batch_size or raise data.samples_per_epoch")
    return samples // per_step


def train(config: TrainConfig, resume: bool = False,
          accept_config_changes: bool = False) -> State:
    info = setup(config.run.device, config.dist)
    towers = cached_towers(config) if config.features.dir else ()
    text_features = TextFeatures.open(config) if "text" in towers else None
    audio_features = AudioFeatures.open(config) if "audio" in towers else None
    steps = _check_run(config, resume, info.world, accept_config_changes,
                       audio_features.sample_bytes if audio_features else 0)
    torch.manual_seed(config.run.seed)  # identical initial weights on every rank
    learner = _new_learner(config, info)
    state = State()
    if resume:
        state = load_checkpoint(_checkpoints(config) / "last.pt", learner.model,
                                learner.optimizer)
        state.stopped = ""
    swapper = Swapper(SwapDictionary.load(Path(config.data.shards) / "swap_dictionary.json"),
                      config.swap.categories)
    run = RunContext(config, info, swapper, autocast_for(config.optim.precision, info.device),
                     text_features, audio_features)
    epoch_value = SharedEpoch(state.epoch)
    loader = _train_loader(config, info, epoch_value, run.audio_features)
    log = open_run_folder(config, state, resume) if info.main else None

    while state.epoch < config.optim.epochs and not state.stopped:
        epoch_value.set(state.epoch)
        _run_epoch(learner, run, iter(loader), steps, state, log)
        if state.stopped:
            break
        state.epoch += 1
        state.step_in_epoch = 0
        metrics = validate(learner.model, config, info, run.autocast) \
            if config.run.validate else None
        if info.main:
            _end_epoch(learner, config, metrics, state, log)
        # every rank follows rank 0's early-stopping decision; the broadcast also holds
        # them until rank 0 has written the epoch's checkpoint
        if info.broadcast_flag("early stopping", bool(state.stopped)) and not state.stopped:
            state.stopped = "early stopping"
    if log is not None:
        log.close()
    info.close()
    return state


def _checkpoints(config: TrainConfig) -> Path:
    return Path(config.run.out) / "checkpoints"


def _check_run(config: TrainConfig, resume: bool, world: int,
               accept_config_changes: bool = False, sample_bytes: int = 0) -> int:
    """Problems found before any work: a run already in run.out (without --resume), a
    resumed run whose settings changed, shards of another sample rate, batches
    (`sample_bytes` a sample when they carry cached states) that /dev/shm cannot hold.
    Returns the steps per epoch."""
    # every rank checks (run.out must be storage every node sees), so none is left
    # waiting in a collective for a rank that stopped
    if not resume and (_checkpoints(config) / "last.pt").exists():
        raise ValueError(f"{config.run.out} already holds a run; pass --resume to continue "
                         "it or set run.out to a new folder")
    saved = Path(config.run.out) / "config.yaml"
    if resume and saved.exists() and not accept_config_changes:
        changes = config_changes(load_config(saved), config)
        if changes:
            raise ValueError(
                f"{config.run.out} was started with other settings than these "
                f"({len(changes)} differ): " + "; ".join(changes) + ". To continue it as "
                "it was, resume without --config (its config.yaml is used) or with the "
                "same file; to continue it with these, pass --accept-config-changes; "
                "for a new run, set run.out to a new folder")
    steps = steps_per_epoch(config, world)
    if SHARED_MEMORY.is_dir():
        problem = shared_memory_problem(
            shared_memory_need(config.data, config.model.audio,
                               loader_workers(config.data.workers), sample_bytes),
            local_processes(), shutil.disk_usage(SHARED_MEMORY).free)
        if problem:
            raise ValueError(problem)
    manifest = json.loads((Path(config.data.shards) / "manifest.json").read_text())
    shard_rate = manifest["settings"]["clips"]["sample_rate"]
    if shard_rate != config.model.audio.sample_rate:
        raise ValueError(f"shards in {config.data.shards} are {shard_rate} Hz but "
                         f"model.audio.sample_rate is {config.model.audio.sample_rate}")
    return steps


def _new_learner(config: TrainConfig, info: Dist) -> Learner:
    """The model on this process's device, AdamW with weight decay on weights only."""
    model = _build_in_turns(info, lambda: build_model(config.model)).to(info.device)
    if not model.trainable_parameters():
        raise ValueError("nothing to train: every tower is frozen and the temperature is "
                         "fixed; train a tower (model.clap.train_audio, model.text.trainable) "
                         "or set model.learn_temperature=true")
    if uses_bf16(config.optim.precision, info.device):
        model.cast_frozen(torch.bfloat16)
    optimizer = torch.optim.AdamW(parameter_groups(model, config.optim), lr=config.optim.lr)
    return Learner.wrap(model, optimizer, info)


def parameter_groups(model: DualEncoder, optim: OptimConfig) -> list[dict]:
    """AdamW's groups: per learning rate (heads at optim.lr, trained encoders at theirs),
    weights with weight decay, then biases, norms and the logit scale without. Each
    group starts at its peak and keeps its `lr_ratio` (peak over optim.lr), which the
    schedule scales it by, so a caller stepping without the schedule gets each rate."""
    peaks = {"heads": optim.lr, "audio_encoder": optim.audio_encoder_lr or optim.lr,
             "text_encoder": optim.text_encoder_lr}
    groups: dict[tuple[float, bool], list] = {}
    for role, param in model.parameter_roles():
        groups.setdefault((peaks[role] / optim.lr, param.ndim >= 2), []).append(param)
    ratios = dict.fromkeys(ratio for ratio, _ in groups)
    return [{"params": groups[ratio, decay], "lr_ratio": ratio, "lr": optim.lr * ratio,
             "weight_decay": optim.weight_decay if decay else 0.0}
            for ratio in ratios for decay in (True, False) if (ratio, decay) in groups]


def _build_in_turns(info: Dist, build: Callable[[], DualEncoder]) -> DualEncoder:
    """Rank 0 builds first, then each other node's first process, then the rest.
    Loading a model that ships its own code (MERT) copies that code into a module
    cache, not atomically: 8-32 processes copying at once into one shared cache can
    import a half-written file. The first process of each node fills a cache local to
    the node; rank 0 alone fills one on storage the nodes share."""
    mine = 0 if info.rank == 0 else 1 if info.local_rank == 0 else 2
    model = None
    for turn in range(3):
        if turn and info.world > 1:
            info.barrier(f"models built (turn {turn})")
        if turn == mine:
            model = build()
    return model


def _train_loader(config: TrainConfig, info: Dist, epoch: SharedEpoch,
                  audio_features: AudioFeatures | None):
    workers = loader_workers(config.data.workers)
    note = loader_note(config.data.workers, workers, usable_cores(), local_processes())
    if note and info.local_rank == 0:
        print(note, file=sys.stderr)
    return train_loader(dataclasses.replace(config.data, workers=workers),
                        config.model.audio, config.run.seed, epoch,
                        pin_memory=info.device.type == "cuda", audio_features=audio_features)


def _run_epoch(learner: Learner, run: RunContext, batches, steps: int, state: State,
               log: Log | None) -> None:
    """The steps of state.epoch from state.step_in_epoch on; stops early (state.stopped)
    at run.max_steps."""
    config, info = run.config, run.info
    accumulate = config.data.accumulate
    for _ in range(state.step_in_epoch * accumulate):  # resume inside an epoch
        next(batches)
    p = p_swap(state.epoch, config.swap)
    learner.model.train()
    bar = tqdm(total=steps, initial=state.step_in_epoch, desc=f"epoch {state.epoch}",
               unit="step", disable=not info.main, file=sys.stderr)
    while state.step_in_epoch < steps:
        started = time.perf_counter()
        # dropout draws from a stream fixed by (seed, rank, step): resuming repeats it
        torch.manual_seed((config.run.seed << 32) + (info.rank << 24) + state.step)
        parts = [next(batches) for _ in range(accumulate)]
        lr = learning_rate(state.step, steps * config.optim.epochs,
                           round(config.optim.warmup_epochs * steps), config.optim.lr,
                           config.optim.min_lr)
        for group in learner.optimizer.param_groups:
            # a checkpoint from before per-encoder rates has one rate for all groups
            group["lr"] = lr * group.get("lr_ratio", 1.0)
        loss_sum, n_hard = train_step(learner, run, parts, p, state.step)
        state.step += 1
        state.step_in_epoch += 1
        bar.update()
        bar.set_postfix(loss=f"{loss_sum:.4f}", lr=f"{lr:.2e}", hard=n_hard, refresh=False)
        if log is not None and (state.step % config.run.log_every == 0 or state.step == 1):
            per_rank = config.data.batch_size * accumulate
            log.write({"type": "step", "epoch": state.epoch, "step": state.step,
                       "loss": loss_sum, "lr": lr, "p_swap": p, "hard_negatives": n_hard,
                       "samples_per_s": info.world * per_rank / (time.perf_counter() - started)})
        if _checkpoint_within_epoch(learner, run, state):
            break
    bar.close()


def _checkpoint_within_epoch(learner: Learner, run: RunContext, state: State) -> bool:
    """Save last.pt every run.checkpoint_every steps and at run.max_steps; True (and
    state.stopped set) when run.max_steps is reached."""
    config = run.config
    limit = bool(config.run.max_steps and state.step >= config.run.max_steps)
    if limit:
        state.stopped = f"run.max_steps={config.run.max_steps} reached"
    if limit or (config.run.checkpoint_every and
                 state.step % config.run.checkpoint_every == 0):
        if run.info.main:
            save_checkpoint(_checkpoints(config) / "last.pt", learner.model,
                            learner.optimizer, state, config)
        # no rank runs ahead of a checkpoint that is not on disk yet
        run.info.barrier("checkpoint saved")
    return limit


def train_step(learner: Learner, run: RunContext, parts: list[dict], p: float, step: int
               ) -> tuple[float, int]:
    """One optimizer step over the micro-batches in `parts` with TextSwap probability
    `p`; returns the global batch's loss and how many hard negatives it used (summed
    over processes)."""
    model, config, info, device = learner.model, run.config, run.info, run.info.device
    micro, accumulate = config.data.batch_size, len(parts)
    per_rank = micro * accumulate
    offsets = [info.rank * per_rank + j * micro for j in range(accumulate)]
    inputs = [(run.audio_input(b["audio"]).to(device, non_blocking=True),
               run.text_input(model, b["text"]).to(device)) for b in parts]
    negatives = [hard_negatives(run.swapper, b["text"], b["spans"], b["tags"], p,
                                config.run.seed, step, offset, info.world * per_rank,
                                run.text_features if run.swaps_cached else None)
                 for b, offset in zip(parts, offsets, strict=True)]
    negative_ids = [run.negative_input(model, h.texts).to(device) if len(h) else None
                    for h in negatives]
    learner.optimizer.zero_grad(set_to_none=True)
    if accumulate == 1:
        with run.autocast():
            out = learner.ddp(*inputs[0], negative_ids[0])
        all_a, all_t = gather(out.audio.float(), out.text.float(), info.rank, info.world)
        loss = contrastive_loss(out.audio.float(), out.text.float(), all_a, all_t, out.scale,
                                offsets[0], negatives[0],
                                None if out.negatives is None else out.negatives.float())
        loss.backward()
    else:
        loss = _accumulated_backward(learner.ddp, run, inputs, negatives, negative_ids,
                                     offsets)
    if config.optim.grad_clip:
        torch.nn.utils.clip_grad_norm_(model.trainable_parameters(), config.optim.grad_clip)
    learner.optimizer.step()
    loss_total, n_hard = info.sum("loss totals", loss, sum(len(h) for h in negatives))
    return loss_total / info.world, int(n_hard)


def _accumulated_backward(ddp, run: RunContext, inputs, negatives, negative_ids, offsets
                          ) -> torch.Tensor:
    """Gradient caching: the exact gradient of the loss over all micro-batches at the
    memory cost of one. 1) embed every micro-batch without gradients; 2) compute the full
    loss on those embeddings as leaves, giving d(loss)/d(embedding); 3) re-run each
    micro-batch with gradients (same dropout draws) and back-propagate those. Every
    micro-batch is thus scored against the whole effective batch, as on more GPUs."""
    info, device = run.info, run.info.device
    rng = []
    with torch.no_grad(), run.autocast():
        outputs = []
        for (audio, ids), neg in zip(inputs, negative_ids, strict=True):
            rng.append(_rng_state(device))
            outputs.append(ddp(audio, ids, neg))
    leaf = lambda x: None if x is None else x.float().detach().requires_grad_()  # noqa: E731
    audio_leaves = [leaf(o.audio) for o in outputs]
    text_leaves = [leaf(o.text) for o in outputs]
    hard_leaves = [leaf(o.negatives) for o in outputs]
    scale = leaf(outputs[0].scale)
    all_a, all_t = gather(torch.cat(audio_leaves), torch.cat(text_leaves), info.rank,
                          info.world)
    loss = sum(contrastive_loss(a, t, all_a, all_t, scale, offset, neg, h)
               for a, t, h, offset, neg in zip(audio_leaves, text_leaves, hard_leaves, offsets,
                                               negatives, strict=True)) / len(inputs)
    loss.backward()
    last = len(inputs) - 1
    for j, ((audio, ids), neg) in enumerate(zip(inputs, negative_ids, strict=True)):
        _set_rng_state(rng[j], device)
        sync = ddp.no_sync() if info.world > 1 and j < last else nullcontext()
        with sync:
            with run.autocast():
                out = ddp(audio, ids, neg)
            # the scale is shared: its whole gradient goes with the last micro-batch
            pairs = [(out.audio, audio_leaves[j].grad), (out.text, text_leaves[j].grad),
                     (out.scale, scale.grad if j == last else torch.zeros_like(scale))]
            if out.negatives is not None:
                pairs.append((out.negatives, hard_leaves[j].grad))
            pairs = [(x, g) for x, g in pairs if x.requires_grad]  # a fixed scale has none
            torch.autograd.backward([x for x, _ in pairs],
                                    [g.to(x.dtype) for x, g in pairs])
    return loss.detach()


def _rng_state(device) -> tuple:
    return torch.get_rng_state(), (torch.cuda.get_rng_state(device)
                                   if device.type == "cuda" else None)


def _set_rng_state(state: tuple, device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


def _end_epoch(learner: Learner, config: TrainConfig, metrics: dict | None, state: State,
               log: Log) -> None:
    """Rank 0, after an epoch: its row, best.pt on a better validation loss (or a step
    towards early stopping), last.pt and the plots."""
    row = {"type": "epoch", "epoch": state.epoch - 1, "step": state.step}
    checkpoints = _checkpoints(config)
    if metrics is not None:
        row.update(metrics)
        if metrics.get("valid_loss") is not None:
            if metrics["valid_loss"] < state.best_valid_loss:
                state.best_valid_loss, state.bad_epochs = metrics["valid_loss"], 0
                save_checkpoint(checkpoints / "best.pt", learner.model, learner.optimizer,
                                state, config)
            else:
                state.bad_epochs += 1
                if config.optim.patience and state.bad_epochs >= config.optim.patience:
                    state.stopped = (f"early stopping: no better validation loss in "
                                     f"{state.bad_epochs} epochs")
    log.write(row)
    save_checkpoint(checkpoints / "last.pt", learner.model, learner.optimizer, state, config)
    plot_metrics(Path(config.run.out))


