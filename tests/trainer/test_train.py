"""The training loop: a run folder with everything it promises, exact resume, and a
short run that learns."""

import json
import math

import pytest
import torch
import yaml
from typer.testing import CliRunner

from adswap.cli import app
from schemas.config import as_dict
from trainer.config import load_config
from trainer.train import learning_rate, train


def small(shards, out, *extra):
    return load_config(None, [
        f"data.shards={shards}", f"run.out={out}", "data.batch_size=8", "data.workers=2",
        "data.shuffle_buffer=16", "data.shuffle_initial=8", "model.audio.clip_seconds=1.5",
        "model.audio.cnn.channels=[4, 8]", "model.dim=32", "model.layers=1", "model.dropout=0.1",
        "optim.epochs=3", "optim.warmup_epochs=1", "swap.warmup_epochs=0",
        "swap.ramp_epochs=1", "swap.p_max=0.5", "run.log_every=1", *extra])


def losses(out):
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r for r in rows if r["type"] == "step"}, \
        [r for r in rows if r["type"] == "epoch"]


def test_resume_matches_an_uninterrupted_run(demo_shards, tmp_path):
    whole = train(small(demo_shards, tmp_path / "whole"))
    steps, epochs = losses(tmp_path / "whole")
    per_epoch = whole.step // 3
    assert whole.epoch == 3 and len(steps) == whole.step and len(epochs) == 3
    assert sum(r["hard_negatives"] for r in steps.values()) > 0
    assert [r["p_swap"] for r in steps.values()][0] == 0.0
    assert max(r["p_swap"] for r in steps.values()) == 0.5

    stop = per_epoch + 3  # inside the second epoch
    part = train(small(demo_shards, tmp_path / "split", f"run.max_steps={stop}"))
    assert part.step == stop and "max_steps" in part.stopped
    with pytest.raises(ValueError, match="pass --resume"):
        train(small(demo_shards, tmp_path / "split"))
    # a step logged after the last checkpoint, as a kill would leave it
    with open(tmp_path / "split" / "metrics.jsonl", "a") as log:
        log.write(json.dumps({"type": "step", "step": stop + 1, "loss": -1.0}) + "\n")
    result = CliRunner().invoke(app, ["train", "--set", f"run.out={tmp_path / 'split'}",
                                      "--set", "run.max_steps=0", "--resume"])
    assert result.exit_code == 0, result.output
    resumed, resumed_epochs = losses(tmp_path / "split")
    assert sorted(resumed) == sorted(steps)
    lines = (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()
    assert sum('"type": "step"' in line for line in lines) == len(steps)  # no repeats
    for step, row in steps.items():
        assert resumed[step]["loss"] == pytest.approx(row["loss"], rel=1e-6), step
        assert resumed[step]["hard_negatives"] == row["hard_negatives"]
    for a, b in zip(epochs, resumed_epochs, strict=True):
        assert a["valid_loss"] == pytest.approx(b["valid_loss"], rel=1e-6)


def test_resuming_with_other_settings_stops_and_names_them(demo_shards, tmp_path):
    """`make train` reruns with --config TRAIN_CONFIG --resume: a run started with other
    settings (the README's SLURM example once continued the demo run this way) is
    refused with the settings that differ, unless the change is asked for."""
    out = tmp_path / "run"
    started, other = tmp_path / "started.yaml", tmp_path / "other.yaml"
    started.write_text(yaml.safe_dump(as_dict(small(demo_shards, out))))
    other.write_text(yaml.safe_dump(as_dict(small(demo_shards, out, "data.p_cap=0.5",
                                                  "optim.lr=0.0005"))))

    def cli(*args):
        return CliRunner().invoke(app, ["train", *map(str, args)])

    assert cli("--config", started, "--set", "run.max_steps=2").exit_code == 0
    refused = cli("--config", other, "--set", "run.max_steps=4", "--resume")
    assert refused.exit_code == 1
    for words in ("was started with other settings than these (2 differ): data.p_cap: "
                  "1.0 -> 0.5; optim.lr: 0.001 -> 0.0005.", "resume without --config",
                  "--accept-config-changes"):
        assert words in " ".join(refused.output.split()), refused.output
    assert load_config(out / "config.yaml").data.p_cap == 1.0  # untouched
    # the same file continues it, whatever its stopping point; no file: its own config
    assert cli("--config", started, "--set", "run.max_steps=3", "--resume").exit_code == 0
    assert cli("--set", f"run.out={out}", "--set", "run.max_steps=4",
               "--resume").exit_code == 0
    accepted = cli("--config", other, "--set", "run.max_steps=5", "--resume",
                   "--accept-config-changes")
    assert accepted.exit_code == 0, accepted.output
    assert load_config(out / "config.yaml").data.p_cap == 0.5
    assert sorted(losses(out)[0]) == [1, 2, 3, 4, 5]


def test_bf16_training_casts_the_frozen_encoder_and_trains(demo_shards, tmp_path):
    """The GPU's precision on the CPU (optim.precision=bf16): frozen text tower in bf16
    once, trained parts in float32 under autocast, finite losses, a checkpoint that
    loads into a float32 model."""
    from trainer.checkpoint import load_model

    state = train(small(demo_shards, tmp_path / "run", "optim.precision=bf16",
                        "run.max_steps=3", "run.validate=false"))
    steps, _ = losses(tmp_path / "run")
    assert state.step == 3 and all(math.isfinite(r["loss"]) for r in steps.values())
    model, _ = load_model(tmp_path / "run", tmp_path / "run" / "checkpoints" / "last.pt")
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_run_folder_holds_config_metrics_plots_and_loadable_checkpoints(demo_shards, tmp_path):
    out = tmp_path / "run"
    state = train(small(demo_shards, out, "optim.epochs=2"))
    assert load_config(out / "config.yaml").optim.epochs == 2
    steps, epochs = losses(out)
    for key in ("loss", "lr", "p_swap", "hard_negatives", "samples_per_s"):
        assert key in steps[1]
    for key in ("valid_loss", "valid_R@10", "valid_MR"):
        assert key in epochs[-1]
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    for png in ("loss.png", "validation.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    body = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert body["state"]["step"] == state.step and body["state"]["epoch"] == 2
    assert {"model", "optimizer", "state", "rng", "config"} <= set(body)
    assert "scaler" not in body  # bf16 autocast has no loss scaler to keep
    assert not any(k.startswith("text.tower") for k in body["model"])  # frozen: not saved
    assert (out / "checkpoints" / "best.pt").exists()


def test_learning_rate_schedule():
    lrs = [learning_rate(s, 100, 10, 1e-3, 1e-5) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert max(lrs) == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:], strict=False))
    assert lrs[-1] == pytest.approx(1e-5, abs=1e-6)


def test_bad_config_fails_before_any_work(tmp_path):
    result = CliRunner().invoke(app, ["train", "--set", "data.p_cap=3", "--set",
                                      "optim.precision=fp8", "--set", f"run.out={tmp_path}"])
    assert result.exit_code == 1
    assert "data.p_cap" in result.output and "optim.precision" in result.output
    assert not (tmp_path / "metrics.jsonl").exists()
    missing = CliRunner().invoke(app, ["train", "--set", f"data.shards={tmp_path}"])
    assert missing.exit_code == 1 and "run `adswap shards` first" in missing.output


@pytest.mark.parametrize("accumulate", [1, 2])
def test_the_loss_is_float32_outside_bf16_autocast(monkeypatch, accumulate):
    """The GPU path's bf16 autocast covers the encoders; the logits and InfoNCE are computed
    outside it on float32 embeddings, with and without gradient caching."""
    import trainer.train as training
    from schemas.descriptors import DescriptorMatcher
    from schemas.swap_dictionary import Descriptor, SwapDictionary
    from trainer.distributed import Dist
    from trainer.model import DuetMC
    from trainer.swap import Swapper

    torch.manual_seed(0)
    seen, real = [], training.contrastive_loss

    def spy(*args, **kwargs):
        tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
        seen.append((torch.is_autocast_enabled("cpu"), {t.dtype for t in tensors}))
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "contrastive_loss", spy)
    config = load_config(None, [
        "model.audio.clip_seconds=0.5", "model.audio.cnn.channels=[4, 8]", "model.dim=32",
        "model.layers=1", "model.max_positions=64", "data.batch_size=2",
        f"data.accumulate={accumulate}"])
    model = DuetMC(config.model)
    learner = training.Learner.wrap(model, torch.optim.AdamW(model.trainable_parameters()),
                                    Dist())
    dictionary = SwapDictionary((Descriptor("genre", "rock"), Descriptor("genre", "jazz")))
    texts = ["a rock song", "jazz on piano", "rock with drums", "slow jazz"]
    spans = [[m._asdict() for m in DescriptorMatcher(dictionary).find(t)] for t in texts]
    parts = [{"audio": torch.randn(2, 8_000) * 0.1, "text": texts[i:i + 2],
              "spans": spans[i:i + 2], "tags": [{"genre": []}] * 2}
             for i in range(0, 2 * accumulate, 2)]
    run = training.RunContext(config, Dist(), Swapper(dictionary, ("genre",)),
                              lambda: torch.autocast("cpu", dtype=torch.bfloat16))
    loss, n_hard = training.train_step(learner, run, parts, 1.0, 0)
    assert math.isfinite(loss) and n_hard > 0
    assert seen and all(not enabled and dtypes == {torch.float32} for enabled, dtypes in seen)
