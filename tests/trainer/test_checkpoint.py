"""trainer/checkpoint.py: a checkpoint gives back the weights, optimizer, progress and
random streams it saved; a run folder loads for evaluation; a checkpoint of another
model is refused by name."""

import random

import numpy as np
import pytest
import torch
import yaml

from schemas.config import as_dict
from trainer.checkpoint import (
    State,
    checkpoint_path,
    file_sha256,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from trainer.config import load_config
from trainer.model import DuetMC

torch.set_num_threads(1)


def tiny(*extra):
    return load_config(None, ["model.audio.clip_seconds=0.5", "model.audio.cnn.channels=[4, 8]",
                              "model.dim=32", "model.layers=1", "model.max_positions=64",
                              "model.learn_temperature=true", *extra])


def trained(config):
    """A model and optimizer one step away from their initial state."""
    torch.manual_seed(0)
    model = DuetMC(config.model)
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=1e-3)
    out = model(torch.randn(2, 8_000) * 0.1, model.tokenize(["rock", "calm piano"]))
    (out.audio @ out.text.T * out.scale).trace().neg().backward()
    optimizer.step()
    return model, optimizer


def test_a_checkpoint_restores_weights_optimizer_progress_and_random_streams(tmp_path):
    config = tiny()
    model, optimizer = trained(config)
    path = tmp_path / "checkpoints" / "last.pt"
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    save_checkpoint(path, model, optimizer, State(epoch=2, step=7, best_valid_loss=1.5,
                                                  stopped="run.max_steps=7 reached"), config)
    expected = (random.random(), np.random.rand(), torch.rand(1))

    torch.manual_seed(99)
    fresh = DuetMC(config.model)
    fresh_optimizer = torch.optim.AdamW(fresh.trainable_parameters(), lr=1e-3)
    state = load_checkpoint(path, fresh, fresh_optimizer)
    assert (random.random(), np.random.rand(), torch.rand(1)) == expected
    assert state == State(epoch=2, step=7, best_valid_loss=1.5,
                          stopped="run.max_steps=7 reached")
    for key, value in model.trainable_state().items():
        assert torch.equal(fresh.trainable_state()[key], value), key
    saved, loaded = optimizer.state_dict(), fresh_optimizer.state_dict()
    assert saved["param_groups"] == loaded["param_groups"]
    for index, moments in saved["state"].items():
        assert torch.equal(loaded["state"][index]["exp_avg"], moments["exp_avg"])
    assert not list(path.parent.glob(".*tmp*"))  # written whole, then renamed


@pytest.mark.filterwarnings("ignore:.*to a meta parameter")  # meta holds no values
def test_a_checkpoint_resumes_a_model_that_is_not_on_the_cpu(tmp_path):
    """Every GPU rank resumes a model on its own device: the random generators' states
    must come back on the CPU (numpy cannot read a GPU tensor), the weights and the
    optimizer's moments on the model's device. `meta` stands in for a GPU: a device
    that is not the CPU. Before the fix the load mapped everything to the model's
    device and failed at the numpy state."""
    config = tiny()
    model, optimizer = trained(config)
    path = tmp_path / "last.pt"
    np.random.seed(5)
    torch.manual_seed(6)
    save_checkpoint(path, model, optimizer, State(epoch=1, step=3), config)
    expected = (np.random.rand(), torch.rand(1))

    away = DuetMC(config.model).to("meta")
    away_optimizer = torch.optim.AdamW(away.trainable_parameters(), lr=1e-3)
    away_optimizer.load_state_dict(optimizer.state_dict())  # moments exist to be moved
    assert load_checkpoint(path, away, away_optimizer) == State(epoch=1, step=3)
    assert (np.random.rand(), torch.rand(1)) == expected
    assert all(v.device.type == "meta" for v in away.trainable_state().values())
    moments = away_optimizer.state_dict()["state"][0]
    assert moments["exp_avg"].device.type == "meta"


def test_a_run_folder_loads_for_evaluation_and_names_its_checkpoint(tmp_path):
    config = tiny()
    model, optimizer = trained(config)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(as_dict(config), sort_keys=False))
    with pytest.raises(ValueError, match="has no checkpoint; train it first"):
        checkpoint_path(tmp_path, "best")
    save_checkpoint(tmp_path / "checkpoints" / "last.pt", model, optimizer, State(), config)
    path = checkpoint_path(tmp_path, "best")  # no best.pt yet: the last one
    assert path.name == "last.pt"
    loaded, loaded_config = load_model(tmp_path, path)
    assert loaded_config == config and not loaded.training
    audio, ids = torch.randn(2, 8_000) * 0.1, model.tokenize(["rock", "jazz"])
    model.eval()
    with torch.no_grad():
        assert torch.equal(loaded.encode_audio(audio), model.encode_audio(audio))
        assert torch.equal(loaded.encode_text(ids), model.encode_text(ids))
    assert len(file_sha256(path)) == 64
    save_checkpoint(tmp_path / "checkpoints" / "best.pt", model, optimizer, State(), config)
    assert checkpoint_path(tmp_path, "best").name == "best.pt"


def test_a_checkpoint_of_another_model_is_refused(tmp_path):
    config = tiny()
    model, optimizer = trained(config)
    path = tmp_path / "last.pt"
    save_checkpoint(path, model, optimizer, State(), config)
    bigger = DuetMC(tiny("model.layers=2").model)
    with pytest.raises(ValueError, match=r"last.pt does not fit this model .*model config"):
        load_checkpoint(path, bigger, torch.optim.AdamW(bigger.trainable_parameters()))
    with pytest.raises(ValueError, match="nothing to resume"):
        load_checkpoint(tmp_path / "missing.pt", model, optimizer)
