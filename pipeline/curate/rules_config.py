"""The curation rules and their settings, read from the rules themselves: each rule is
one SQL file in pipeline/curate/rules/ (run in name order, `NN_name.sql`) that selects
`row_id, reason` from `candidates`, and declares each `$parameter` it uses in its
header, one line each:

    -- $min_words (int, 4): fewest words a caption may have.

So adding a rule is adding its file, here or in a package of your own named under the
entry-point group `adswap.curation_rules`: its section `rules.<name>` (`enabled` plus
its parameters) is part of curate's config, for config files, `--set` and flags alike."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, make_dataclass
from pathlib import Path

import yaml

from schemas.config import Config, setting
from schemas.plugins import plugin_folders

RULES_DIR = Path(__file__).parent / "rules"
_DECLARED = re.compile(r"^-- \$([a-z_]+) \((int|float|bool|str), ([^)]*)\): (.+)$")
_USED = re.compile(r"\$([a-z_]+)")
_KINDS = {"int": int, "float": float, "bool": bool, "str": str}


@dataclass(frozen=True)
class Rule:
    name: str
    path: Path
    settings: tuple[tuple[str, type, object, str], ...]  # (name, type, default, help)
    help: str

    @property
    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")


def read_rule(path: Path) -> Rule:
    """A rule file's name, declared settings and first comment line; a `$name` used but
    not declared (or declared but unused, or with a default of another type) is an
    error naming the file and line."""
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    declared, problems = [], []
    for number, line in enumerate(lines, 1):
        match = _DECLARED.match(line)
        if not match:
            if line.startswith("-- $"):
                problems.append(f"line {number}: write it as `-- $name (int, 4): help.`")
            continue
        name, kind, default_text, help_text = match.groups()
        default = yaml.safe_load(default_text)
        if kind == "float" and isinstance(default, int) and not isinstance(default, bool):
            default = float(default)
        if not isinstance(default, _KINDS[kind]) or (kind == "int" and isinstance(default,
                                                                                   bool)):
            problems.append(f"line {number}: default {default_text!r} is not {kind}")
        declared.append((name, _KINDS[kind], default, help_text))
    body = "\n".join(line for line in lines if not line.lstrip().startswith("--"))
    used, names = set(_USED.findall(body)), {d[0] for d in declared}
    problems += [f"uses ${n} without declaring it in its header" for n in sorted(used - names)]
    problems += [f"declares ${n} but does not use it" for n in sorted(names - used)]
    if "enabled" in names:
        problems.append("$enabled is every rule's own switch; name the setting otherwise")
    if problems:
        raise ValueError(f"curation rule {path}: " + "; ".join(problems))
    first = lines[0][2:].strip() if lines and lines[0].startswith("--") else ""
    return Rule(path.stem.split("_", 1)[1], path, tuple(declared), first)


GROUP = "adswap.curation_rules"


def read_rules() -> list[Rule]:
    """This folder's rules and those of the packages named under GROUP, in file-name
    order across all of them (the NN_ prefix places a rule among the others)."""
    paths = [p for folder in (RULES_DIR, *plugin_folders(GROUP)) for p in folder.glob("*.sql")]
    rules = [read_rule(path) for path in sorted(paths, key=lambda p: p.name)]
    seen: dict[str, Path] = {}
    for rule in rules:
        if rule.name in seen:
            raise ValueError(f"two curation rules are named {rule.name!r}: {seen[rule.name]} "
                             f"and {rule.path}")
        seen[rule.name] = rule.path
    return rules


RULES = read_rules()


def _section(rule: Rule) -> type:
    fields = [("enabled", bool, setting(True, flag=f"rule-{rule.name}",
                                        help=f"Run this rule: {rule.help}"))]
    fields += [(name, kind, setting(default, help=help_text))
               for name, kind, default, help_text in rule.settings]
    name = "".join(part.title() for part in rule.name.split("_")) + "Rule"
    section = make_dataclass(name, fields, bases=(Config,), frozen=True)
    section.__module__ = __name__  # found by name when a config is pickled
    globals()[name] = section
    return section


def _rules_config() -> type:
    fields = [(rule.name, section, setting(factory=section, help=rule.help))
              for rule in RULES for section in [_section(rule)]]
    config = make_dataclass("RulesConfig", fields, bases=(Config,), frozen=True)
    config.__module__ = __name__
    return config


# One section per rule file: `rules.length.min_words`.
RulesConfig = _rules_config()


@dataclass(frozen=True)
class SplitsConfig(Config):
    valid_fraction: float = setting(0.1, help="Share of the tracks without a split of their "
                                    "own that go to valid, whole artists at a time.")
    test_fraction: float = setting(0.1, help="Share of those tracks that go to test.")
    seed: int = setting(0, help="Seed of the assignment (a hash of artist and seed).")

    def check(self) -> list[str]:
        if not (0 <= self.valid_fraction and 0 <= self.test_fraction
                and self.valid_fraction + self.test_fraction < 1):
            return ["valid_fraction and test_fraction must be >= 0 with a sum below 1"]
        return []


def rule_values(rules) -> dict[str, dict]:
    """Each rule's settings by name, as the report and the data card record them."""
    return {f.name: dataclasses.asdict(getattr(rules, f.name))
            for f in dataclasses.fields(rules)}
