"""A throwaway plugin package, as another team's package would install one: its module
and a dist-info naming it under one of adswap's entry-point groups, on PYTHONPATH of the
processes a test starts (entry points are read once per process)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path


def plugin_env(folder: Path, group: str, name: str, module: str, source: str,
               data: dict[str, str] | None = None) -> dict:
    """Writes the package `module` (its `__init__.py` is `source`; `data`: more files
    in it, by name) and its distribution's metadata into `folder`; the environment a
    subprocess needs to see them."""
    package = folder / module
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text(textwrap.dedent(source), encoding="utf-8")
    for file_name, text in (data or {}).items():
        (package / file_name).write_text(textwrap.dedent(text), encoding="utf-8")
    info = folder / f"{module}_plugin-0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}-plugin\n"
                                   "Version: 0.1\n", encoding="utf-8")
    (info / "entry_points.txt").write_text(f"[{group}]\n{name} = {module}\n",
                                           encoding="utf-8")
    env = dict(os.environ, COLUMNS="250")  # --help on one line per option
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(folder),
                                                      env.get("PYTHONPATH")]))
    return env


def adswap(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "adswap.cli", *args], env=env,
                          capture_output=True, text=True)
