"""The CLI reference (docs/reference/cli.md), generated from what defines the CLI: each
command's config dataclass (every setting with its flag, default and help, as
`--help` shows them) and the Makefile's targets. `python -m tools.cli_reference`
writes it (`make cli-reference`); tests/test_docs.py fails when the file in the
repository differs from what this renders now."""

from __future__ import annotations

import inspect
import os
import re
import sys
from dataclasses import MISSING
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "reference" / "cli.md"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _default(leaf) -> str:
    from adswap.config_cli import _show

    if leaf.default is MISSING:
        return "required"
    # defaults under the home folder (the model cache) read the same on every machine
    return f"`{_show(leaf.default).replace(str(Path.home()), '~')}`"


def _flag(leaf, flags: dict[str, str]) -> str:
    if leaf.argument:
        return leaf.path.upper()
    name = flags[leaf.path]
    flag = f"--{name}/--no-{name}" if leaf.kind is bool else f"--{name}"
    return flag + (f", -{leaf.short}" if leaf.short else "")


def make_targets(makefile: Path = ROOT / "Makefile") -> list[tuple[str, str]]:
    """(target, description) of every target the Makefile documents with `## `."""
    found = re.findall(r"^([a-z][a-z-]*):.*?## (.+)$", makefile.read_text(encoding="utf-8"),
                       re.M)
    return [(name, text.strip()) for name, text in found]


def render() -> str:
    """The page; defaults as an environment without adswap's variables gives them."""
    saved = os.environ.pop("ADSWAP_CACHE", None)
    try:
        return _render()
    finally:
        if saved is not None:
            os.environ["ADSWAP_CACHE"] = saved


def _render() -> str:
    from adswap.cli import app
    from adswap.config_cli import COMMANDS, flag_names
    from schemas.config import leaves

    lines = ["# CLI reference", "",
             "Generated from the config dataclasses and the Makefile by "
             "`make cli-reference` (`python -m tools.cli_reference`); do not edit by hand. "
             "Every setting is a flag, `--set PATH=VALUE` and a key of a `--config` YAML "
             "file (its dotted path is the file's sections). "
             "[Configuration](../configuration.md) says how they combine.", "",
             "## Make targets", "", "| target | what it does |", "|---|---|"]
    lines += [f"| `make {name}` | {_cell(text)} |" for name, text in make_targets()]
    lines += ["", *_extension_tables(), "## Commands", ""]
    for command in app.registered_commands:
        name = command.name
        cls = COMMANDS.get(name)
        doc = inspect.getdoc(command.callback) or ""
        lines += [f"### adswap {name}", "", doc.split("\n\n")[0].replace("\n", " "), ""]
        if cls is None:
            continue
        flags = flag_names(cls)
        lines += ["| setting | flag | default | what it does |", "|---|---|---|---|"]
        for leaf in leaves(cls):
            choices = f" One of: {', '.join(map(str, leaf.choices))}." if leaf.choices else ""
            lines.append(f"| `{leaf.path}` | `{_cell(_flag(leaf, flags))}` | "
                         f"{_cell(_default(leaf))} | {_cell(leaf.help + choices)} |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _extension_tables() -> list[str]:
    """The four tables an extension joins ([Extending](../extending.md)), as they are."""
    from pipeline.captions.engines import ENGINES
    from pipeline.curate.rules_config import RULES
    from schemas.catalog_readers import READERS
    from trainer.config import AUDIO_ENCODERS

    def yes(value: bool) -> str:
        return "yes" if value else "no"

    lines = ["## Extension tables", "",
             "### Caption engines (`--engine`)", "",
             "| engine | what | languages | model | translates | requests per worker | "
             "settings |", "|---|---|---|---|---|---|---|"]
    lines += [f"| `{name}` | {_cell(spec.help)} | {', '.join(spec.languages or ['all'])} | "
              f"{yes(spec.uses_model)} | {yes(spec.translates)} | "
              f"{spec.recycle_requests:,} | "
              + (f"`engine.{name}.*`" if spec.settings else "none") + " |"
              for name, spec in ENGINES.items()]
    lines += ["", "### Audio encoders (`model.audio.kind`)", "",
              "| encoder | what | needs a path | frozen weights | settings |",
              "|---|---|---|---|---|"]
    lines += [f"| `{name}` | {_cell(e.description)} | {yes(e.needs_path)} | "
              f"{yes(e.frozen_weights)} | "
              + (f"`model.audio.{e.section}.*`" if e.settings else "none") + " |"
              for name, e in AUDIO_ENCODERS.items()]
    lines += ["", "### Catalog formats (`--format`)", "",
              "| format | what | suffixes | recognised by content | bundled tag map |",
              "|---|---|---|---|---|"]
    lines += [f"| `{name}` | {_cell(r.help)} | {', '.join(r.suffixes) or '-'}"
              f"{' and folders' if r.directories else ''} | {yes(r.recognise is not None)} | "
              + (f"`{r.tag_map.relative_to(ROOT)}`" if r.tag_map else "none") + " |"
              for name, r in READERS.items()]
    lines += ["", "### Curation rules (in run order)", "",
              "| rule | what it rejects | settings (default) |", "|---|---|---|"]
    lines += [f"| `{rule.name}` | {_cell(rule.help)} | "
              + (", ".join(f"`{n}` ({d})" for n, _, d, _ in rule.settings) or "-") + " |"
              for rule in RULES]
    return lines + [""]


def main() -> int:
    PAGE.parent.mkdir(parents=True, exist_ok=True)
    PAGE.write_text(render(), encoding="utf-8")
    print(f"wrote {PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
