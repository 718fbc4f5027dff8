"""Does the CUDA LLM environment resolve? `make setup` on a GPU node installs the pinned
official vLLM wheel and this project's [llm,dev,ray] extras into .venv-llm; this asks pip
to resolve them together for a GPU node (Linux, manylinux wheels) from this machine,
without a GPU and without downloading the wheels (pip reads their metadata only).

A node's glibc decides which manylinux wheels it takes, and pip takes a wheel only for a
platform tag it is given: vLLM ships manylinux_2_28 wheels, torch's dependencies
manylinux2014 ones and llguidance manylinux_2_31, so every tag up to the node's glibc
is passed (`--glibc`, default 2.35: Ubuntu 22.04, the CUDA images' base).

Prints the resolved versions of the packages that matter and exits 0, or pip's error
and 1. `make llm-cuda-check` runs it; it needs the package index (PyPI).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent
SHOWN = ("vllm", "torch", "transformers", "triton", "numpy", "typer", "pyarrow", "duckdb",
         "datasets", "gguf", "accelerate")


def platform_tags(glibc: str, arch: str) -> list[str]:
    """Every manylinux tag a node with this glibc (major.minor) takes, newest first."""
    major, minor = (int(part) for part in glibc.split("."))
    if major != 2 or minor < 17:
        raise ValueError(f"glibc {glibc}: give 2.17 or newer (manylinux2014 is 2.17)")
    tags = [f"manylinux_2_{m}_{arch}" for m in range(minor, 16, -1)]
    return tags + [f"manylinux2014_{arch}", f"manylinux2010_{arch}", f"manylinux1_{arch}"]


def project_requirements(extras: tuple[str, ...]) -> list[str]:
    """This project's dependencies and those of `extras`, from pyproject.toml (the
    project itself cannot be resolved from wheels: it is a folder)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    found = list(project["dependencies"])
    for extra in extras:
        found += project["optional-dependencies"][extra]
    return found


def resolve(vllm: str, python: str, glibc: str, arch: str, extras: tuple[str, ...]) -> dict:
    """pip's installation report for vLLM beside the project's requirements."""
    with tempfile.TemporaryDirectory() as work:
        report = Path(work) / "report.json"
        command = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet",
                   "--ignore-installed", "--only-binary=:all:", "--report", str(report),
                   "--target", str(Path(work) / "target"), "--python-version", python,
                   "--implementation", "cp",
                   *[f"--platform={tag}" for tag in platform_tags(glibc, arch)],
                   vllm, *project_requirements(extras)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            errors = [line for line in done.stderr.splitlines() if "is ignored" not in line]
            raise RuntimeError("\n".join(errors[-12:]))
        return json.loads(report.read_text())


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vllm", default="vllm==0.33.0", help="the vLLM requirement "
                        "`make setup` installs on a GPU node (the Makefile's VLLM_CUDA)")
    parser.add_argument("--python", default="3.12", help="the node's Python (vLLM 0.33 "
                        "takes 3.11 to 3.14)")
    parser.add_argument("--glibc", default="2.35", help="the node's glibc, major.minor "
                        "(`ldd --version`)")
    parser.add_argument("--arch", default="x86_64", choices=("x86_64", "aarch64"))
    parser.add_argument("--extras", default="llm,dev,ray", help="this project's extras in "
                        ".venv-llm")
    args = parser.parse_args(argv)
    extras = tuple(e for e in args.extras.split(",") if e)
    where = (f"{args.vllm} + adswap[{','.join(extras)}] for CPython {args.python}, "
             f"{args.arch}, glibc {args.glibc}")
    try:
        report = resolve(args.vllm, args.python, args.glibc, args.arch, extras)
    except RuntimeError as err:
        print(f"llm-cuda-check: {where} does not resolve:\n{err}", file=sys.stderr)
        return 1
    versions = {item["metadata"]["name"].lower(): item["metadata"]["version"]
                for item in report["install"]}
    print(f"llm-cuda-check: {where} resolves ({len(versions)} packages)")
    for name in SHOWN:
        if name in versions:
            print(f"  {name}=={versions[name]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
