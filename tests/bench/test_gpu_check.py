"""`make gpu-check` (bench/gpu_check.py): without CUDA it stops at once and says so; with
`--device cpu` its whole logic runs on the CPU (two gloo processes) and passes."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "gpu_check.py"


def run(*args, **env):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True,
                          text=True, timeout=900, env={**os.environ, **env})


def test_without_cuda_it_stops_at_once_and_says_so(tmp_path):
    started = time.monotonic()
    # no GPU is visible even where there is one, so this never starts the real check
    result = run("--work", tmp_path / "work", CUDA_VISIBLE_DEVICES="")
    assert result.returncode == 3
    assert "no CUDA GPU here" in result.stderr and "nothing was checked" in result.stderr
    assert time.monotonic() - started < 30
    assert not (tmp_path / "work").exists() and result.stdout == ""


def test_bad_settings_are_listed_together():
    result = run("--steps", 5, "--batch", 7, "--device", "tpu")
    assert result.returncode == 2 and result.stderr.startswith("usage:")
    for words in ("device must be one of cuda, cpu, got 'tpu'", "steps must be >= 12",
                  "batch must be even"):
        assert words in result.stderr


@pytest.mark.slow
def test_every_check_runs_and_passes_on_the_cpu(tmp_path):
    results = tmp_path / "gpu_check.json"
    result = run("--device", "cpu", "--work", tmp_path / "work", "--results", results,
                 "--tracks", 40, "--clip-seconds", 1, "--steps", 12, "--batch", 8,
                 "--tolerance", 1e-4, "--settings", "model.audio.cnn.channels=[4,8]",
                 "model.dim=32", "model.layers=1", "data.workers=1",
                 'model.audio.htsat.overrides={"depths": [1, 1], "num_attention_heads": [2, 2], '
                 '"patch_embeds_hidden_size": 16, "hidden_size": 32}',
                 OMP_NUM_THREADS="1")
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    table = [line for line in result.stdout.splitlines() if line.startswith("|")]
    assert table[:2] == ["| check | processes | result | figures |", "|---|---|---|---|"]
    body = json.loads(results.read_text())
    checks = {(c["check"], c["processes"]): c for c in body["checks"]}
    assert len(table) == 2 + len(checks) == 2 + 5 + 2  # the CNN's five, HTS-AT's two
    assert all(c["result"] == "pass" for key, c in checks.items()
               if key != ("htsat: 2 processes = 1 on the same batches", "2 vs 1")), checks
    assert "killed at step" in checks[("cnn: resume after a kill", "2")]["detail"]
    assert checks[("htsat: fp32 training, 12 steps", "1")]["result"] == "pass"
    # on the CPU there is no SyncBatchNorm: said, not failed
    htsat_pair = checks[("htsat: 2 processes = 1 on the same batches", "2 vs 1")]
    assert htsat_pair["result"] == "skipped" and "SyncBatchNorm" in htsat_pair["detail"]
    assert body["one_process"]["samples_per_s"] > 0 < body["two_processes"]["samples_per_s"]
    assert body["encoders"]["htsat"]["one_process"]["samples_per_s"] > 0
    # fp32 on the CPU: two processes match one far inside the bf16 tolerance
    assert body["equivalence_max_rel_difference"] < 1e-4
