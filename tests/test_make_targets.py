"""Every make target of the demo chain, on a tiny demo catalog, through the Makefile a
user runs (`make demo` with small settings): the stages connect end to end."""

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_make_demo_runs_every_stage_on_a_tiny_catalog(tmp_path):
    settings = {
        "DEMO_DIR": tmp_path / "demo", "DEMO_TRACKS": 24, "DEMO_TEST_TRACKS": 8,
        "ENGINE": "template",
        "CAPTIONS_ARGS": "--n-views 3 --full-view", "RUN": tmp_path / "run",
        "CARDS_DIR": tmp_path / "cards", "DATASET": "tiny",
        "SHARDS_ARGS": "--max-samples 8 --clip-seconds 5 --workers 2",
        "TRAIN_ARGS": "--set optim.epochs=2 --set optim.warmup_epochs=1 "
                      "--set data.batch_size=4 --set data.workers=1 "
                      "--set model.audio.cnn.channels=[4,8] --set model.dim=32",
    }
    result = subprocess.run(["make", "-C", str(ROOT), "demo",
                             *[f"{k}={v}" for k, v in settings.items()]],
                            capture_output=True, text=True, timeout=900,
                            env={**os.environ, "MAKEFLAGS": ""})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "demo finished." in result.stdout
    assert f"retrieval report: {tmp_path / 'run'}/eval/report.md" in result.stdout
    assert "| en | text→music |" in result.stdout
    card = json.loads((tmp_path / "cards" / "tiny" / "card.json").read_text())
    assert {"catalog", "captions", "curation", "shards", "training", "evaluation"} <= set(card)
    readme = (tmp_path / "cards" / "tiny" / "README.md").read_text()
    assert "## Shards" in readme and "## Evaluation" in readme
    report = json.loads((tmp_path / "run" / "eval" / "report.json").read_text())
    assert report["sets"]["demo-test"]["tracks"] > 0
    # the same tracks queried with their own tag lists, one query each, and in the summary
    tags = report["sets"]["demo-test-tags"]
    assert tags["tracks"] == report["sets"]["demo-test"]["tracks"] == tags["captions"]
    assert "## demo-test-tags" in result.stdout
    # the demo trains on its text feature cache, built first
    assert list((tmp_path / "demo" / "features").glob("text-*/manifest.json"))
    assert f"dir: {tmp_path / 'demo' / 'features'}" in (tmp_path / "run" / "config.yaml"
                                                        ).read_text()
    index = json.loads((tmp_path / "run" / "index" / "manifest.json").read_text())
    # the index holds the held-out test tracks the eval set has, and only those
    assert index["complete"] and index["tracks"] == report["sets"]["demo-test"]["tracks"]
    assert (tmp_path / "run" / "index" / "ann" / "index.faiss").exists()
    assert f"make serve INDEX={tmp_path / 'run' / 'index'}" in result.stdout
    # a rerun finds everything done: captions reused, shards kept, the run resumed
    again = subprocess.run(["make", "-C", str(ROOT), "demo",
                            *[f"{k}={v}" for k, v in settings.items()]],
                           capture_output=True, text=True, timeout=900,
                           env={**os.environ, "MAKEFLAGS": ""})
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "already done" in again.stdout and "0 views generated" in again.stdout

    tiny = ("--train-set optim.epochs=1 --train-set optim.warmup_epochs=1 "
            "--train-set data.batch_size=4 --train-set data.workers=1 "
            "--train-set model.audio.cnn.channels=[4,8] --train-set model.dim=32")
    ablation = subprocess.run(["make", "-C", str(ROOT), "ablation", "ABLATION_SEEDS=0",
                               f"ABLATION_ARGS=--out {tmp_path / 'ablation'} --subsets 2 "
                               f"{tiny}",
                               *[f"{k}={v}" for k, v in settings.items()]],
                              capture_output=True, text=True, timeout=900,
                              env={**os.environ, "MAKEFLAGS": ""})
    assert ablation.returncode == 0, ablation.stdout[-3000:] + ablation.stderr[-3000:]
    table = (tmp_path / "ablation" / "ablation.md").read_text()
    for label in ("tags only", "+ tag-to-caption", "+ View Dropout", "+ TextSwap"):
        assert f"| {label} |" in table
    assert "vs + tag-to-caption |" in table and "- + TextSwap vs + View Dropout: " in table
    assert "| + TextSwap |" in (tmp_path / "ablation" / "ablation-demo-test-tags.md").read_text()
    summary = json.loads((tmp_path / "ablation" / "ablation.json").read_text())
    runs = {row: entry["runs"][0] for row, entry in summary["rows"].items()}
    configs = {row: (tmp_path / "ablation" / f"{row}-s0" / "config.yaml").read_text()
               for row in runs}
    assert "p_cap: 0.0" in configs["tags-only"] and "view_dropout: false" in \
        configs["tag-to-caption"]
    assert "enabled: true" in configs["textswap"].split("swap:")[1]
