"""The docs' SLURM example, run through `make -n` with SLURM's variables: it trains
the paper config on the shards it names into the run it names (it once set neither, so
`make train` passed the demo's shards and resumed the demo run), with torchrun's
rendezvous on the job's first node."""

import os
import re
import subprocess
from pathlib import Path

from trainer.config import load_config

ROOT = Path(__file__).resolve().parents[2]


def slurm_example() -> str:
    from tests.docs import code_blocks

    found = [b for _, b in code_blocks("bash") if "#SBATCH --nodes" in b and "make train" in b]
    assert len(found) == 1, "the docs have one SLURM training example"
    return found[0]


def test_the_readme_slurm_example_trains_what_it_names(tmp_path):
    script = slurm_example()
    assert "--cpus-per-task" in script  # loader workers need cores on every rank
    assert script.count("srun make train") == 1
    (tmp_path / "scontrol").write_text("#!/bin/sh\nprintf 'gpu-a17\\ngpu-a18\\n'\n")
    (tmp_path / "scontrol").chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}", "SLURM_NNODES": "2",
           "SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": "gpu-a[17-18]"}
    done = subprocess.run(["bash", "-c", script.replace("srun make train", "make -n train")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    recipe = " ".join(done.stdout.replace("\\\n", " ").split())
    line = recipe[recipe.index("torch.distributed.run"):].split("; else")[0]
    settings = dict(re.findall(r"--set (\S+?)=(\S+)", line))
    config = re.search(r"--config (\S+)", line).group(1)
    assert "--nproc_per_node 8 --nnodes=2 --rdzv_backend=c10d --rdzv_endpoint=gpu-a17:29500 " \
           "--rdzv_id=4242" in line
    assert config == "trainer/configs/paper-mert-clip.yaml"
    assert settings["data.shards"] != "data/demo/shards"
    assert settings["run.out"] != "runs/demo"
    card = re.search(r"--card-dir (\S+)", line).group(1)
    assert card != "data_cards/demo"
    # what the ranks will train: the paper's model on the shards and run named
    trained = load_config(ROOT / config, [f"{k}={v}" for k, v in settings.items()])
    assert trained.model.audio.kind == "hf-frozen" and trained.model.audio.sample_rate == 24_000
    assert str(trained.data.shards) == settings["data.shards"]
