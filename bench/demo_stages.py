"""Benchmark: `make demo`, stage by stage (goal: under 30 minutes on 2 cores, venvs built).

Runs the targets the Makefile's `demo` target depends on, in its order, each as its own
`make` call with the Makefile's defaults, into a fresh folder (a temporary one, or
`--keep DIR`, which then holds the demo data, the run and the cards as `make demo`
leaves them), and prints each stage's wall time, the total and its share of the
budget. The caption stage's own statistics give the views and views/s.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUDGET_S = 30 * 60


def demo_targets() -> list[str]:
    makefile = (ROOT / "Makefile").read_text()
    line = re.search(r"^demo:([^#\n]*)", makefile, re.MULTILINE)
    if line is None:
        sys.exit("no demo target in the Makefile")
    return line.group(1).split()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keep", type=Path, help="run in this folder and keep it")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("make_vars", nargs="*", help="extra VAR=value for every make call")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = (args.keep or Path(tmp)).resolve()
        base.mkdir(parents=True, exist_ok=True)
        variables = [f"DEMO_DIR={base / 'demo'}", f"RUN={base / 'run'}",
                     f"CARDS_DIR={base / 'cards'}", *args.make_vars]
        stages = {}
        for target in demo_targets():
            started = time.perf_counter()
            done = subprocess.run(["make", "-C", str(ROOT), target, *variables],
                                  capture_output=True, text=True)
            stages[target] = round(time.perf_counter() - started, 1)
            print(f"{target:>10}: {stages[target]:7.1f} s", flush=True)
            if done.returncode:
                sys.exit(f"make {target} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
        stats = json.loads((base / "demo" / "views" / "_stats" / "r00000-of00001.json")
                           .read_text())
        report = json.loads((base / "run" / "eval" / "report.json").read_text())
    total = sum(stages.values())
    result = {"stages_s": stages, "total_s": round(total, 1),
              "budget_ratio": round(total / BUDGET_S, 3),
              "views": stats["views_generated"], "views_per_s": stats["views_per_s"],
              "eval": {name: {lang: {"R@10": m["t2m_R@10"]["mean"], "MR": m["t2m_MR"]["mean"],
                                     "tracks": m["subset_tracks"]}
                              for lang, m in entry["languages"].items()}
                       for name, entry in report["sets"].items()}}
    print(json.dumps(result, indent=2))
    print(f"make demo: {total / 60:.1f} min ({total / BUDGET_S:.0%} of the 30-minute budget); "
          f"captions {stages.get('captions', 0) / 60:.1f} min for {result['views']} views "
          f"({result['views_per_s']} views/s)")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "demo_stages.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
