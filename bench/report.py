"""Renders docs/performance.md from bench/results/*.json: one section per registered
bench (what it measures, its figures and ratios, the settings, commit and machine they
were measured with), or the command that makes a missing one.

`python -m bench.report` writes the page; `--check` only says whether it is stale.
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

from bench.registry import BENCHES, ROOT, Entry

PAGE = ROOT / "docs" / "performance.md"
RESULTS = ROOT / "bench" / "results"
COMMAND = ".venv/bin/python -m bench.report"
# a longer list (a time series of samples) is named, not printed, on the page
LONGEST_LIST = 8


def what(entry: Entry) -> str:
    """The bench module's docstring, read without importing it (a bench of .venv-llm
    imports what .venv lacks)."""
    path = ROOT / "bench" / f"{entry.name}.py"
    return ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""


def _flat(value, prefix: str = "") -> list[tuple[str, object]]:
    if isinstance(value, dict) and value:
        return [row for key, item in value.items()
                for row in _flat(item, f"{prefix}{key}.")]
    return [(prefix.rstrip("."), value)]


def _cell(value, results_file: str) -> str:
    if isinstance(value, list) and len(value) > LONGEST_LIST:
        text = f"{len(value)} values (in {results_file})"
    elif isinstance(value, float):
        text = f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    elif isinstance(value, int) and not isinstance(value, bool):
        text = f"{value:,}"
    else:
        text = json.dumps(value) if not isinstance(value, str) else value
    return text.replace("|", "\\|")


def _table(header: tuple[str, ...], rows: list[tuple]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(row) + " |" for row in rows), ""]


def section(entry: Entry, results: Path) -> list[str]:
    command = f"{entry.venv}/bin/python -m bench {entry.name}"
    lines = [f"## {entry.name}", "", what(entry), "",
             f"Run: `{command}` (settings: `{command} --help`)."
             + ("" if entry.in_make_bench else " `make bench` leaves it out: run it by name."),
             ""]
    path = results / f"{entry.name}.json"
    if not path.exists():
        return lines + [f"No results yet: `{command}` writes bench/results/{path.name}, "
                        f"then `{COMMAND}` puts them here.", ""]
    body = json.loads(path.read_text(encoding="utf-8"))
    shown = f"bench/results/{path.name}"
    machine = body["machine"]
    commit = body["commit"][:10] + (" with uncommitted changes" if body["dirty"] else "")
    lines += [f"**{body['summary']}**", "",
              f"Measured at commit {commit} on {machine['cpu']}, {machine['cores']} cores, "
              f"{machine['memory_gb']} GB, Python {machine['python']}, torch "
              f"{machine['torch']} ({machine['os']}).", ""]
    if body["baseline"]:
        lines += ["Ratios, each to a baseline:", ""]
        lines += _table(("ratio", "value", "to"), [
            (f"`{name}`", _cell(ratio["ratio"], shown), ratio["to"].replace("|", "\\|"))
            for name, ratio in body["baseline"].items()])
    lines += ["Settings:", ""]
    lines += _table(("setting", "value"), [(f"`{k}`", _cell(v, shown))
                                           for k, v in _flat(body["settings"])])
    lines += ["Figures:", ""]
    lines += _table(("figure", "value"), [(f"`{k}`", _cell(v, shown))
                                          for k, v in _flat(body["figures"])])
    return lines


def render(results: Path = RESULTS) -> str:
    lines = ["# Performance", "",
             "What each benchmark measures and what it found, every figure beside a "
             "baseline measured in the same run (or a stated goal). Generated from "
             f"bench/results/*.json by `{COMMAND}`: do not edit by hand. `make bench` runs "
             "every bench (bench/registry.py lists them) and then regenerates this page.",
             "",
             "`make gpu-check` (bench/gpu_check.py) is not here: it is a pass/fail check "
             "of the multi-GPU training path, run on CUDA machines.", ""]
    for entry in BENCHES.values():
        lines += section(entry, results)
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: list[str]) -> int:
    page = render()
    if "--check" in argv:
        stale = not PAGE.exists() or PAGE.read_text(encoding="utf-8") != page
        if stale:
            print(f"{PAGE.relative_to(ROOT)} is stale: run `{COMMAND}`", file=sys.stderr)
        return int(stale)
    PAGE.parent.mkdir(parents=True, exist_ok=True)
    PAGE.write_text(page, encoding="utf-8")
    print(f"-> {PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
