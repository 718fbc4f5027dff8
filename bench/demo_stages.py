"""`make demo`, stage by stage (goal: under 30 minutes on 2 cores, venvs built).

Runs the targets the Makefile's `demo` target depends on (or `targets`), in its order,
each as its own `make` call with the Makefile's defaults and `make_args`, into a fresh
folder (a temporary one, or `keep`, which then holds the demo data, the run and the cards
as `make demo` leaves them), and gives each stage's wall time, the total and its share
of the budget. The caption stage's own statistics give the views and views/s, the eval
report R@10 and median rank, when those stages ran.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.harness import ROOT, Outcome, measure
from schemas.config import Config, setting

BUDGET_S = 30 * 60


@dataclass(frozen=True)
class Settings(Config):
    keep: Path | None = setting(None, help="run in this folder and keep it (default: a "
                                "temporary one)")
    targets: tuple[str, ...] = setting((), help="make targets to run, in order (default: "
                                       "the demo target's prerequisites)")
    make_args: tuple[str, ...] = setting((), help="extra VAR=value (or make flags) for "
                                         "every make call", repeatable=True)


def _demo_rule() -> tuple[list[str], list[str]]:
    """The Makefile's `demo` target: its prerequisites, and its own variables
    (`demo: FEATURES = ...`) as VAR=value."""
    makefile = (ROOT / "Makefile").read_text()
    targets, variables = None, []
    for line in re.findall(r"^demo:([^#\n]*)", makefile, re.MULTILINE):
        assignment = re.fullmatch(r"\s*(\w+)\s*:?=\s*(.*?)\s*", line)
        if assignment:
            variables.append(f"{assignment[1]}={assignment[2]}")
        else:
            targets = line.split()
    if targets is None:
        sys.exit("no demo target in the Makefile")
    return targets, variables


def demo_targets() -> list[str]:
    return _demo_rule()[0]


def demo_variables() -> list[str]:
    """`make demo` gives its own variables to its prerequisites, and a stage run on its
    own would go without them (train would run the frozen text tower at every step).
    Given on the command line, their `$(...)` still expand in make, to this run's
    folders."""
    return _demo_rule()[1]


def run(settings: Settings) -> Outcome:
    with tempfile.TemporaryDirectory() as tmp:
        base = (settings.keep or Path(tmp)).resolve()
        base.mkdir(parents=True, exist_ok=True)
        variables = [f"DEMO_DIR={base / 'demo'}", f"RUN={base / 'run'}",
                     f"CARDS_DIR={base / 'cards'}", *demo_variables(), *settings.make_args]
        stages, cpu = {}, {}
        for target in settings.targets or demo_targets():
            with measure() as measured:
                done = subprocess.run(["make", "-C", str(ROOT), target, *variables],
                                      capture_output=True, text=True)
            stages[target], cpu[target] = round(measured.wall_s, 1), round(measured.cpu_s, 1)
            print(f"{target:>10}: {stages[target]:7.1f} s", file=sys.stderr, flush=True)
            if done.returncode:
                raise RuntimeError(f"make {target} failed:\n{done.stdout[-3000:]}"
                                   f"{done.stderr[-3000:]}")
        views = base / "demo" / "views" / "_stats" / "r00000-of00001.json"
        stats = json.loads(views.read_text()) if views.exists() else None
        evaluated = base / "run" / "eval" / "report.json"
        report = json.loads(evaluated.read_text()) if evaluated.exists() else None
    total = sum(stages.values())
    figures: dict = {"stages_s": stages, "stages_cpu_s": cpu, "total_s": round(total, 1),
                     "budget_ratio": round(total / BUDGET_S, 3)}
    if stats:
        figures["views"] = stats["views_generated"]
        figures["views_per_s"] = stats["views_per_s"]
    if report:
        figures["eval"] = {
            name: {lang: {"R@10": m["t2m_R@10"]["mean"], "MR": m["t2m_MR"]["mean"],
                          "tracks": m["subset_tracks"]}
                   for lang, m in entry["languages"].items()}
            for name, entry in report["sets"].items()}
    captions = (f"; captions {stages['captions'] / 60:.1f} min for {figures['views']} views "
                f"({figures['views_per_s']} views/s)" if "captions" in stages and stats else "")
    return Outcome(figures, {"budget_ratio": "the 30-minute budget of `make demo`"},
                   f"make demo ({', '.join(stages)}): {total / 60:.1f} min "
                   f"({total / BUDGET_S:.0%} of the 30-minute budget){captions}")
