"""What every bench shares: its CLI, one way to measure, one results file.

A bench is a module of bench/ with
- `Settings`: a frozen dataclass on the project's config base (schemas/config.py), so
  `python -m bench NAME` takes `--config`, `--set` and one flag per setting, as the
  `adswap` commands do (adswap/config_cli.py);
- `run(settings) -> Outcome`: its figures, the baseline each ratio is to (measured in
  the same run), and the line it prints.
`command` turns such a module into its CLI; `record` writes bench/results/<bench>.json
with the git commit and the machine beside the settings and figures, which
bench/report.py renders into docs/performance.md.

`measure` (a block of this process) and `run_measured` (a child process) give wall
time, CPU time (the process and its children) and the peak RSS of the process tree;
`in_child` runs one of a bench's functions in a fresh process through `run_measured`,
for figures a process's own high-water mark must not carry over between.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import platform
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import typer

from adswap.config_cli import COMMANDS, config_command
from pipeline.captions.memory import resident_mb
from schemas.config import as_dict

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
# inputs a bench makes once and reuses between runs (rendered audio, shards); ignored by git
WORK = ROOT / "bench" / "work"
SCHEMA = "adswap.bench/1"


@dataclass
class Measurement:
    """Filled in when the measured block or process ends."""

    wall_s: float = 0.0
    cpu_s: float = 0.0
    peak_rss_mb: float = 0.0

    def as_dict(self) -> dict:
        return {"wall_s": round(self.wall_s, 3), "cpu_s": round(self.cpu_s, 3),
                "peak_rss_mb": round(self.peak_rss_mb, 1)}


def tree_rss_mb(root: int) -> float:
    """Resident memory of a process and all its descendants, in MB (Linux; 0 elsewhere).
    A stage's workers are children of a forkserver, which getrusage does not see."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    tree, grew = {root}, True
    while grew:
        more = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= more
        grew = bool(more)
    pages = 0
    for pid in tree:
        try:
            pages += int(Path(f"/proc/{pid}/statm").read_text().split()[1])
        except OSError:
            continue
    return pages * resource.getpagesize() / 2**20


class _Sampler:
    """Samples the RSS of a process tree on a thread until stopped; its peak."""

    def __init__(self, root: int, every_s: float):
        self.root, self.every_s, self.peak = root, every_s, 0.0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="rss-sampler", daemon=True)

    def _watch(self) -> None:
        while True:
            self.peak = max(self.peak, tree_rss_mb(self.root))
            if self._done.wait(self.every_s):
                return

    def __enter__(self) -> _Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._done.set()
        self._thread.join()


def _cpu_s() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


@contextmanager
def measure(sample_s: float = 0.05) -> Iterator[Measurement]:
    """Wall time, CPU time of this process and the children it waited for, and the peak
    RSS of this process and all its descendants (sampled every `sample_s`: a spike
    shorter than that can be missed) while the block runs."""
    result = Measurement()
    started, cpu = time.perf_counter(), _cpu_s()
    with _Sampler(os.getpid(), sample_s) as sampler:
        try:
            yield result
        finally:
            result.wall_s = time.perf_counter() - started
            result.cpu_s = _cpu_s() - cpu
            result.peak_rss_mb = max(sampler.peak, resident_mb())


def run_measured(command: list[str], *, sample_s: float = 0.05,
                 env: dict | None = None, cwd: Path | None = None,
                 stop: Callable[[], bool] | None = None) -> tuple[str, Measurement]:
    """Run `command` (its stdout returned; its stderr shown only if it fails) and measure
    its process tree: CPU time and the largest single process from the kernel's account
    of it (wait4), the tree's sum by sampling. `stop`, polled at every sample, ends the
    run early (SIGTERM to its session) when it returns True."""
    result = Measurement()
    started = time.perf_counter()
    # its own session, so that stopping it also stops what it started
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env, cwd=cwd, start_new_session=True)
    streams: dict[str, str] = {}
    # read beside the wait: a child blocked on a full pipe would never end
    readers = [threading.Thread(target=lambda n=n, s=s: streams.__setitem__(n, s.read()),
                                daemon=True)
               for n, s in (("out", process.stdout), ("err", process.stderr))]
    for reader in readers:
        reader.start()
    stopped = False
    with _Sampler(process.pid, sample_s) as sampler:
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if stop is not None and not stopped and stop():
                os.killpg(process.pid, signal.SIGTERM)
                stopped = True
            time.sleep(sample_s)
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    for reader in readers:
        reader.join()
    result.wall_s = time.perf_counter() - started
    result.cpu_s = usage.ru_utime + usage.ru_stime
    result.peak_rss_mb = max(sampler.peak, _maxrss_mb(usage))
    if process.returncode and not stopped:
        raise RuntimeError(f"{' '.join(map(str, command))} exited with "
                           f"{process.returncode}:\n{streams.get('err', '')[-3000:]}")
    return streams.get("out", ""), result


def _maxrss_mb(usage) -> float:
    return usage.ru_maxrss / 2**20 if sys.platform == "darwin" else usage.ru_maxrss / 1024


def child_command(fn: Callable, *args) -> list[str]:
    """The command that runs `fn(*args)` (a module-level function of bench/, arguments
    JSON-able) in a fresh interpreter, printing its JSON result last."""
    return [sys.executable, "-m", "bench.harness", fn.__module__, fn.__qualname__,
            json.dumps([str(a) if isinstance(a, Path) else a for a in args])]


def in_child(fn: Callable, *args, sample_s: float = 0.05, env: dict | None = None):
    """`fn(*args)` in a fresh process: (its result, the process tree's Measurement)."""
    out, measured = run_measured(child_command(fn, *args), sample_s=sample_s, env=env,
                                 cwd=ROOT)
    return json.loads(out.strip().splitlines()[-1]), measured


@dataclass(frozen=True)
class Outcome:
    """What a bench's run found. `baseline`: each ratio's dotted path in `figures` ->
    what it is a ratio to (measured in the same run, or a stated goal)."""

    figures: dict
    baseline: dict[str, str]
    summary: str


def git_commit() -> dict:
    """The commit the figures were measured at, and whether the tree had changes."""
    def git(*args) -> str:
        try:
            return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True,
                                  text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return ""

    return {"commit": git("rev-parse", "HEAD") or "unknown",
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gb = None
    try:
        memory_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    try:
        torch = importlib.import_module("torch").__version__
    except ImportError:
        torch = None
    return {"cpu": cpu, "cores": cores, "memory_gb": memory_gb,
            "python": platform.python_version(), "torch": torch,
            "os": f"{platform.system()} {platform.release()}"}


def record(bench: str, settings, figures: dict, baseline: dict[str, str],
           summary: str = "", results: Path = RESULTS) -> Path:
    """Write results/<bench>.json; every ratio named in `baseline` must be a figure."""
    missing = [path for path in baseline if _lookup(figures, path) is None]
    if missing:
        raise ValueError(f"{bench}: baseline names ratios that are not figures: {missing}")
    body = {"schema": SCHEMA, "bench": bench, **git_commit(), "machine": machine(),
            "settings": as_dict(settings) if dataclasses.is_dataclass(settings)
            else dict(settings),
            "figures": figures,
            "baseline": {path: {"ratio": _lookup(figures, path), "to": to}
                         for path, to in baseline.items()},
            "summary": summary}
    results.mkdir(parents=True, exist_ok=True)
    path = results / f"{bench}.json"
    path.write_text(json.dumps(body, indent=1, sort_keys=False, default=str) + "\n")
    return path


def _lookup(figures: dict, path: str):
    value = figures
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def command(name: str, module) -> typer.Typer:
    """`module`'s CLI: its Settings as flags, --config and --set; running it records."""
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False,
                      help=module.__doc__)
    # COMMANDS lists the adswap CLI's commands (its reference and tests walk it); a
    # bench is not one, and some share a name with one (train, eval, curate, shards)
    commands = dict(COMMANDS)

    def bench(settings, results_dir: Path = typer.Option(
            RESULTS, "--results-dir", help="Folder of the results file.")) -> None:
        outcome = module.run(settings)
        path = record(name, settings, outcome.figures, outcome.baseline, outcome.summary,
                      results_dir)
        typer.echo(outcome.summary)
        typer.echo(f"-> {path}")

    bench.__doc__ = module.__doc__
    config_command(app, module.Settings, name)(bench)
    COMMANDS.clear()
    COMMANDS.update(commands)
    return app


def _child_main(argv: list[str]) -> None:
    module, qualname, args = argv
    fn = importlib.import_module(module)
    for part in qualname.split("."):
        fn = getattr(fn, part)
    print(json.dumps(fn(*json.loads(args)), default=str))


if __name__ == "__main__":
    _child_main(sys.argv[1:])
