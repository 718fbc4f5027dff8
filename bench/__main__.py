"""`python -m bench`: every bench `make bench` runs, one after another, each in the venv
it needs. `python -m bench NAME [settings]`: one bench, in this interpreter
(`python -m bench NAME --help` lists its settings). The benches: bench/registry.py."""

from __future__ import annotations

import subprocess
import sys

from bench.registry import BENCHES, ROOT


def run_all() -> int:
    failed = []
    for entry in BENCHES.values():
        if not entry.in_make_bench:
            continue
        print(f"== {entry.name} ({entry.venv})", flush=True)
        if not entry.python.exists():
            print(f"{entry.name}: needs {entry.venv}, which is not there (make setup)")
            failed.append(entry.name)
            continue
        if subprocess.run([str(entry.python), "-m", "bench", entry.name], cwd=ROOT).returncode:
            failed.append(entry.name)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


def main(argv: list[str]) -> int:
    if not argv:
        return run_all()
    name, *rest = argv
    if name not in BENCHES:
        print(__doc__ + "\n\nbenches: " + ", ".join(BENCHES), file=sys.stderr)
        return 0 if name in ("-h", "--help") else 2
    from bench.harness import command

    command(name, BENCHES[name].load())(args=rest, prog_name=f"python -m bench {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
