"""`make gpu-check`: the multi-GPU training path on real GPUs, in minutes.

On a small demo catalog made on the spot (rendered audio, template captions, curated,
sharded), with the demo model (trainer/configs/demo.yaml):
1. one process, bf16 autocast, `steps` steps: every loss finite and the loss falling
   (the mean of the last five steps below that of the first five); its samples/s;
2. with 2 or more GPUs: two processes (torchrun, NCCL) against one on the same global
   batches (train_step on fixed batches, dropout off): losses equal within `tolerance`;
   the 2-process run's samples/s and its ratio to one process;
3. resume after a kill: a run killed (SIGKILL to its process group, as a lost node) two
   steps after its second checkpoint, then resumed, logs each step once and matches the
   uninterrupted run within `tolerance`; with one process, and with two when there are.
Checks 1-3 run with the first encoder of `audio` (the CNN); the others (HTS-AT, whose
BatchNorm becomes SyncBatchNorm under DDP) get checks 1 and 2.

Prints one table; writes results/gpu_check.json. Exit status: 0 all passed, 1 a check
failed, 3 no CUDA GPU here (nothing was checked). `--device cpu` runs the same checks on
the CPU (gloo, float32) with two processes: the script's own test.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from schemas.config import Config, setting  # noqa: E402

DEMO_CONFIG = ROOT / "trainer" / "configs" / "demo.yaml"
EQUIVALENCE_STEPS = 5
NO_GPU_EXIT = 3  # 2 is argparse's, for bad flags
# audio encoders with BatchNorm: two processes equal one only with SyncBatchNorm
BATCH_NORM = {"htsat"}
# the settings given as several values after their flag
LISTS = ("settings", "audio")


@dataclass(frozen=True)
class GpuCheckConfig(Config):
    work: Path = setting(Path("bench/work/gpu-check"), help="folder for the demo "
                         "catalog, shards and runs (remade on each run)")
    results: Path = setting(Path("bench/results/gpu_check.json"), help="where the figures "
                            "go as JSON")
    tracks: int = setting(128, help="tracks in the demo catalog")
    clip_seconds: float = setting(5.0, help="seconds of each clip in the shards (two per "
                                  "track) and of the model input")
    steps: int = setting(20, help="optimizer steps of each training run")
    batch: int = setting(32, help="global batch: one process takes all of it, two take "
                         "half each")
    tolerance: float = setting(0.02, help="largest relative difference in a step's loss "
                               "between runs that should agree (bf16 rounds to about 0.4 "
                               "percent)")
    device: str = setting("cuda", choices=("cuda", "cpu"), help="cuda; cpu runs the same "
                          "checks on the CPU with two processes (float32), to test this "
                          "script")
    settings: tuple[str, ...] = setting((), help="extra training settings as "
                                        "section.key=value, e.g. model.dim=64")
    audio: tuple[str, ...] = setting(("cnn", "htsat"), help="audio encoders to check "
                                     "(model.audio.kind): the first gets every check, "
                                     "the others training and 2 processes = 1")

    def check(self) -> list[str]:
        problems = []
        if self.steps < 12:
            problems.append("steps must be >= 12 (a kill after the second checkpoint, "
                            "five steps at each end to tell a falling loss)")
        if self.batch < 4 or self.batch % 2:
            problems.append("batch must be even and >= 4 (two processes take half each)")
        if not 0 < self.tolerance < 1:
            problems.append("tolerance must be in (0, 1)")
        if self.tracks < 40:
            problems.append("tracks must be >= 40 (train, valid and test splits)")
        if not 0.5 <= self.clip_seconds <= 30:
            problems.append("clip_seconds must be in [0.5, 30]")
        if not self.audio:
            problems.append("audio must name at least one encoder")
        return problems

    @property
    def checkpoint_every(self) -> int:
        return max(2, self.steps // 4)


def parse(argv: list[str]) -> tuple[GpuCheckConfig, Path | None]:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in dataclasses.fields(GpuCheckConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.name in LISTS:
            parser.add_argument(flag, nargs="*", default=list(f.default),
                                help=f.metadata["help"])
        else:
            kind = {"Path": Path, "int": int, "float": float, "str": str}[f.type]
            parser.add_argument(flag, type=kind, default=f.default, help=f.metadata["help"])
    parser.add_argument("--equivalence-worker", type=Path, help=argparse.SUPPRESS)
    args = vars(parser.parse_args(argv))
    worker = args.pop("equivalence_worker")
    args.update({name: tuple(args[name]) for name in LISTS})
    try:
        return GpuCheckConfig(**args), worker
    except ValueError as err:
        parser.error(str(err))


def main(argv: list[str]) -> int:
    config, worker = parse(argv)
    import torch

    if config.device == "cuda" and not torch.cuda.is_available():
        print(f"gpu-check: no CUDA GPU here (torch {torch.__version__}, "
              f"torch.cuda.is_available() is False); nothing was checked. Run `make "
              "gpu-check` on a machine with NVIDIA GPUs and a CUDA build of torch.",
              file=sys.stderr)
        return NO_GPU_EXIT
    if worker is not None:
        equivalence_worker(config, worker)
        return 0
    # the runs are started from the repository's root
    config = dataclasses.replace(config, work=config.work.resolve(),
                                 results=config.results.resolve())
    gpus = torch.cuda.device_count() if config.device == "cuda" else 2
    shutil.rmtree(config.work, ignore_errors=True)
    print(f"gpu-check: making a {config.tracks}-track demo catalog and its shards in "
          f"{config.work}", file=sys.stderr)
    shards = make_shards(config)
    rows, figures = [], {"device": _device_name(config), "gpus": gpus,
                         "torch": torch.__version__}

    for index, kind in enumerate(config.audio):
        # the first encoder gets every check; the others train and are compared
        encoder = dataclasses.replace(config, settings=(*config.settings,
                                                        f"model.audio.kind={kind}"))
        rows += check_encoder(encoder, kind, shards, gpus, figures, every=index == 0)
    figures["checks"] = [dict(zip(("check", "processes", "result", "detail"), row,
                                  strict=True)) for row in rows]
    config.results.parent.mkdir(parents=True, exist_ok=True)
    config.results.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"\ngpu-check on {figures['device']}, torch {figures['torch']}\n")
    print("| check | processes | result | figures |\n|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0 if all(row[2] in ("pass", "skipped") for row in rows) else 1


def check_encoder(config: GpuCheckConfig, kind: str, shards: Path, gpus: int, figures: dict,
                  every: bool) -> list[tuple[str, str, str, str]]:
    """The table's rows for one audio encoder; its figures go into `figures` (those of
    the first encoder at the top level, as before there were several)."""
    rows = []
    mine = figures if every else figures.setdefault("encoders", {}).setdefault(kind, {})
    one = train_run(config, shards, f"one-{kind}", processes=1)
    losses = one["losses"]
    ok = bool(losses) and all(map(math.isfinite, losses)) and len(losses) == config.steps \
        and statistics.mean(losses[-5:]) < statistics.mean(losses[:5])
    rows.append((f"{kind}: {_precision(config)} training, {config.steps} steps", "1",
                 _verdict(ok),
                 f"loss {statistics.mean(losses[:5]):.3f} -> {statistics.mean(losses[-5:]):.3f}"
                 f" (mean of first and last 5 steps), {one['samples_per_s']:.0f} samples/s"
                 if losses else one["error"]))
    mine["one_process"] = one
    check = f"{kind}: 2 processes = 1 on the same batches"
    if gpus < 2:
        rows.append((check, "2 vs 1", "skipped", f"{gpus} GPU visible"))
    elif kind in BATCH_NORM and config.device == "cpu":
        rows.append((check, "2 vs 1", "skipped", "BatchNorm: SyncBatchNorm runs on GPUs "
                     "only, so CPU processes keep their own statistics"))
    else:
        difference, detail = equivalence(config, shards, kind)
        rows.append((check, "2 vs 1", _verdict(difference is not None and
                                               difference <= config.tolerance), detail))
        mine["equivalence_max_rel_difference"] = difference
    if not every:
        return rows
    pair = None
    if gpus >= 2:
        pair = train_run(config, shards, f"two-{kind}", processes=2)
        mine["two_processes"] = pair
        ratio = pair["samples_per_s"] / one["samples_per_s"] if one["samples_per_s"] else 0
        rows.append((f"{kind}: samples/s", "2", _verdict(bool(pair["losses"])),
                     f"{pair['samples_per_s']:.0f} samples/s, {ratio:.2f}x one process"
                     if pair["losses"] else pair["error"]))
    for processes, reference in ((1, one), (2, pair)):
        if reference is None:
            rows.append((f"{kind}: resume after a kill", "2", "skipped",
                         f"{gpus} GPU visible"))
            continue
        ok, detail = resume_after_kill(config, shards, processes, reference["losses"], kind)
        rows.append((f"{kind}: resume after a kill", str(processes), _verdict(ok), detail))
    return rows


def make_shards(config: GpuCheckConfig) -> Path:
    from pipeline.captions.engines import EngineConfig
    from pipeline.captions.plan import DropConfig
    from pipeline.captions.stage import CaptionsConfig
    from pipeline.captions.stage import run as captions
    from pipeline.curate.stage import CurateConfig
    from pipeline.curate.stage import run as curate
    from pipeline.demo_data import DemoConfig
    from pipeline.demo_data import run as demo
    from pipeline.shards.audio import ClipConfig
    from pipeline.shards.stage import ShardsConfig
    from pipeline.shards.stage import run as shards

    work = config.work
    shortest = max(6.0, 2 * config.clip_seconds + 1)  # room for two clips
    demo(DemoConfig(out=work / "demo", tracks=config.tracks, seed=0,
                    min_duration_s=shortest, max_duration_s=shortest + 2))
    captions(CaptionsConfig(catalog=work / "demo" / "catalog.parquet", out=work / "views",
                            engine=EngineConfig(engine="template"),
                            drop=DropConfig(n_views=4)))
    curate(CurateConfig(views=work / "views", catalog=work / "demo" / "catalog.parquet",
                        out=work / "curated"))
    # small shards, so that the valid split has one for each of two processes
    shards(ShardsConfig(curated=work / "curated", catalog=work / "demo" / "catalog.parquet",
                        out=work / "shards", max_samples=8,
                        clips=ClipConfig(sample_rate=16_000,
                                         clip_seconds=config.clip_seconds,
                                         clips_per_track=2)))
    return work / "shards"


def training_settings(config: GpuCheckConfig, shards: Path, processes: int) -> list[str]:
    return [f"data.shards={shards}", f"data.batch_size={config.batch // processes}",
            "data.workers=2", f"model.audio.clip_seconds={config.clip_seconds}",
            f"run.device={config.device}",
            f"optim.precision={'bf16' if config.device == 'cuda' else 'fp32'}",
            "optim.epochs=1000", "optim.warmup_epochs=1", "optim.patience=0",
            "swap.warmup_epochs=0", "swap.ramp_epochs=1", f"run.max_steps={config.steps}",
            f"run.checkpoint_every={config.checkpoint_every}", "run.log_every=1",
            *config.settings]


def launcher(processes: int) -> list[str]:
    """Python, or torchrun with `processes` processes on this node."""
    if processes == 1:
        return [sys.executable]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
            "--master_addr", "127.0.0.1", "--master_port", str(port)]


def train_command(processes: int, args: list[str]) -> list[str]:
    return [*launcher(processes), "-m", "adswap.cli", "train", *args]


def train_args(config: GpuCheckConfig, shards: Path, out: Path, processes: int) -> list[str]:
    args = ["--config", str(DEMO_CONFIG), "--set", f"run.out={out}"]
    for override in training_settings(config, shards, processes):
        args += ["--set", override]
    return args


def train_run(config: GpuCheckConfig, shards: Path, name: str, processes: int) -> dict:
    out = config.work / "runs" / name
    print(f"gpu-check: training {config.steps} steps with {processes} process(es) -> {out}",
          file=sys.stderr)
    result = subprocess.run(train_command(processes, train_args(config, shards, out,
                                                                processes)),
                            capture_output=True, text=True, cwd=ROOT)
    rows = _steps(out)
    speeds = [r["samples_per_s"] for r in rows[2:]]  # the first steps warm up
    return {"losses": [r["loss"] for r in rows] if result.returncode == 0 else [],
            "samples_per_s": statistics.median(speeds) if speeds else 0.0,
            "error": "" if result.returncode == 0 else _tail(result.stderr)}


def resume_after_kill(config: GpuCheckConfig, shards: Path, processes: int,
                      reference: list[float], kind: str) -> tuple[bool, str]:
    out = config.work / "runs" / f"killed-{kind}-{processes}"
    kill_after = 2 * config.checkpoint_every + 2
    started = subprocess.Popen(train_command(processes, train_args(config, shards, out,
                                                                   processes)),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               cwd=ROOT, start_new_session=True)
    deadline = time.monotonic() + 900
    while started.poll() is None and time.monotonic() < deadline:
        if any(r["step"] >= kill_after for r in _steps(out)):
            break
        time.sleep(0.1)
    if started.poll() is not None:
        return False, f"the run ended before step {kill_after}: " + _tail(
            started.stderr.read())
    os.killpg(started.pid, signal.SIGKILL)
    started.wait()
    started.stderr.close()
    logged_before = max(r["step"] for r in _steps(out))
    import torch

    saved = torch.load(out / "checkpoints" / "last.pt", weights_only=True)["state"]["step"]
    resumed = subprocess.run(train_command(processes, ["--set", f"run.out={out}", "--resume"]),
                             capture_output=True, text=True, cwd=ROOT)
    if resumed.returncode != 0:
        return False, "resume failed: " + _tail(resumed.stderr)
    rows = _steps(out)
    steps = [r["step"] for r in rows]
    if steps != list(range(1, config.steps + 1)):
        return False, f"steps logged after resuming: {steps}"
    difference = _max_rel_difference([r["loss"] for r in rows], reference)
    detail = (f"killed at step {logged_before}, resumed from the checkpoint of step "
              f"{saved}; max rel. difference {difference:.1e} from the uninterrupted run")
    return difference <= config.tolerance, detail


def equivalence(config: GpuCheckConfig, shards: Path, kind: str) -> tuple[float | None, str]:
    """train_step on the same global batches, in one process and in two."""
    outs = {n: config.work / f"equivalence-{kind}-{n}.json" for n in (1, 2)}
    for n, out in outs.items():
        result = subprocess.run([*launcher(n), str(Path(__file__).resolve()), *_flags(config),
                                 "--equivalence-worker", str(out)],
                                capture_output=True, text=True, cwd=ROOT)
        if result.returncode != 0:
            return None, f"{n} process(es) failed: " + _tail(result.stderr)
    one, two = (json.loads(outs[n].read_text()) for n in (1, 2))
    difference = _max_rel_difference(two["losses"], one["losses"])
    same_negatives = one["hard_negatives"] == two["hard_negatives"]
    detail = (f"max rel. difference {difference:.1e} over {EQUIVALENCE_STEPS} steps "
              f"(tolerance {config.tolerance:g}); hard negatives "
              f"{'the same' if same_negatives else 'differ'} ({sum(one['hard_negatives'])})")
    return (difference if same_negatives else math.inf), detail


def equivalence_worker(config: GpuCheckConfig, out: Path) -> None:
    """One or two processes (torchrun) take the same global batches, each its slice, and
    write the global loss of each step (rank 0)."""
    import torch

    from schemas.swap_dictionary import SwapDictionary
    from trainer.config import load_config
    from trainer.data import eval_loader
    from trainer.distributed import setup
    from trainer.model import DuetMC
    from trainer.precision import autocast_for
    from trainer.swap import Swapper
    from trainer.train import Learner, RunContext, train_step

    info = setup(config.device)
    shards = config.work / "shards"
    train_config = load_config(DEMO_CONFIG, [
        *training_settings(config, shards, info.world), "model.dropout=0.0"])
    torch.manual_seed(0)
    model = DuetMC(train_config.model).to(info.device)
    learner = Learner.wrap(model, torch.optim.AdamW(
        model.trainable_parameters(), lr=train_config.optim.lr,
        weight_decay=train_config.optim.weight_decay), info)
    swapper = Swapper(SwapDictionary.load(shards / "swap_dictionary.json"),
                      train_config.swap.categories)
    run = RunContext(train_config, info, swapper,
                     autocast_for(train_config.optim.precision, info.device))
    # the train split in a fixed order (centre crops, first captions), whole batches
    loader = eval_loader(shards, "train", train_config.data, train_config.model.audio,
                         config.batch)
    batches = []
    while len(batches) < EQUIVALENCE_STEPS:  # passes repeat: the order is fixed
        whole = [b for b in loader if len(b["text"]) == config.batch]
        if not whole:
            raise ValueError(f"the train split holds less than one batch of {config.batch}")
        batches += whole
    batches = batches[:EQUIVALENCE_STEPS]
    per = config.batch // info.world
    mine = slice(info.rank * per, (info.rank + 1) * per)
    losses, hard = [], []
    for step, batch in enumerate(batches):
        part = {key: batch[key][mine] for key in ("audio", "text", "spans", "tags")}
        loss, n_hard = train_step(learner, run, [part], 0.5, step)
        losses.append(loss)
        hard.append(n_hard)
    if info.main:
        out.write_text(json.dumps({"losses": losses, "hard_negatives": hard}))
    info.close()


def _flags(config: GpuCheckConfig) -> list[str]:
    flags = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        flag = "--" + f.name.replace("_", "-")
        flags += [flag, *value] if f.name in LISTS else [flag, str(value)]
    return flags


def _steps(out: Path) -> list[dict]:
    path = out / "metrics.jsonl"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line being written
            continue
        if row["type"] == "step":
            rows.append(row)
    return rows


def _max_rel_difference(a: list[float], b: list[float]) -> float:
    if len(a) != len(b) or not a:
        return math.inf
    return max(abs(x - y) / max(abs(y), 1e-12) for x, y in zip(a, b, strict=True))


def _verdict(ok: bool) -> str:
    return "pass" if ok else "FAIL"


def _precision(config: GpuCheckConfig) -> str:
    return "bf16" if config.device == "cuda" else "fp32"


def _device_name(config: GpuCheckConfig) -> str:
    import torch

    if config.device == "cpu":
        return "CPU (--device cpu)"
    return torch.cuda.get_device_name(0)


def _tail(text: str) -> str:
    """The error a failed run ended with (torchrun's summary after it names no cause)."""
    lines = text.strip().splitlines()
    errors = [line for line in lines if "Error:" in line or "error:" in line]
    return (errors[-1] if errors else " / ".join(lines[-3:])).replace("|", "/").strip()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
