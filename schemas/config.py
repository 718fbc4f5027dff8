"""Every command's settings: a typed, frozen dataclass whose fields each carry their
help text, so the default, the type and the documentation are written once.

A config is read from an optional YAML file whose sections mirror the dataclass, then
`section.key=value` overrides (`--set`, and the flags the CLI generates from the
fields), converted to the field types and checked as a whole: every problem, in the
file, the overrides and the values, is listed at once before any work starts.

- `setting(default, help=...)` declares a field; `choices` are checked for you.
- `Config` is the base: a subclass lists its value problems in `check()`, each
  starting with the field's name, and construction raises `ConfigError` with all; its
  class attribute `renamed` (old name -> new dotted name), or its own `moved(key,
  where)`, turns a setting an earlier version had into a message saying where it is.
- `load_config(Cls, path, overrides)` builds one, `config_from_dict(Cls, data, source)`
  one from plain data; `as_dict(config)` is its YAML form;
  `leaves(Cls)` lists every setting with its dotted path, type, default and help.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    def __init__(self, source: str, problems: list[str]):
        self.problems = list(problems)
        super().__init__(f"invalid settings ({source}):\n" +
                         "\n".join(f"  - {p}" for p in self.problems))


def setting(default: Any = MISSING, *, help: str, factory: Any = MISSING,
            choices: tuple = (), argument: bool = False, flag: str = "",
            short: str = "", repeatable: bool = False) -> Any:
    """A config field. `argument`: a positional CLI argument; `flag`: the CLI flag's name
    when the field's own name would be vague (`swap.enabled` -> `--textswap`); `short`: a
    one-letter alias (`-k`);
    `repeatable`: a list given by repeating its flag, for items that may hold commas
    (lists of paths always are)."""
    metadata = {"help": help, "choices": tuple(choices), "argument": argument, "flag": flag,
                "short": short, "repeatable": repeatable}
    if factory is not MISSING:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


class Config:
    """Base of every config dataclass (declare subclasses `@dataclass(frozen=True)`)."""

    renamed: typing.ClassVar[dict[str, str]] = {}

    @classmethod
    def moved(cls, key: str, where: str) -> str:
        """Where the setting `key` of an earlier version lives now ('' if it never
        existed); `where` is this section's dotted prefix."""
        return f"it is {where}{cls.renamed[key]} now" if key in cls.renamed else ""

    def check(self) -> list[str]:
        """Value problems, each starting with the field's name; none by default."""
        return []

    def __post_init__(self) -> None:
        problems = []
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                problems.append(f"{f.name} must be one of {', '.join(map(str, choices))}, "
                                f"got {getattr(self, f.name)!r}")
        problems += self.check()
        if problems:
            raise ConfigError(type(self).__name__, problems)


@dataclass(frozen=True)
class Leaf:
    """One setting: its dotted path in the config tree and what the CLI shows of it."""

    path: str
    kind: Any
    default: Any  # MISSING for a required setting
    help: str
    choices: tuple
    argument: bool
    flag: str
    short: str
    repeatable: bool


def leaves(cls) -> list[Leaf]:
    """Every setting of `cls`, sections flattened to dotted paths, with the default a
    section's own default gives it (a section may override its class's defaults)."""
    found: list[Leaf] = []
    _collect(cls, _default_of_class(cls), "", found)
    return found


def _collect(cls, defaults, where: str, found: list[Leaf]) -> None:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        default = getattr(defaults, f.name, MISSING) if defaults is not None else \
            _field_default(f)
        if dataclasses.is_dataclass(kind):
            _collect(kind, default if default is not MISSING else None, f"{where}{f.name}.",
                     found)
            continue
        found.append(Leaf(f"{where}{f.name}", kind, default, f.metadata.get("help", ""),
                          f.metadata.get("choices", ()), f.metadata.get("argument", False),
                          f.metadata.get("flag", ""), f.metadata.get("short", ""),
                          f.metadata.get("repeatable", False) or _is_path_list(kind)))


def _is_path_list(kind) -> bool:
    return typing.get_origin(kind) is tuple and typing.get_args(kind)[0] is Path


def _field_default(f) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return MISSING


def _default_of_class(cls):
    """An instance with every default, or None when some setting is required; unchecked,
    since a check may read files (listing settings must not)."""
    if any(_field_default(f) is MISSING for f in dataclasses.fields(cls)):
        return None
    return _unchecked(cls, {})


def load_config(cls, path: Path | str | None = None, overrides: typing.Iterable[str] = ()):
    """`cls` from an optional YAML file, then `a.b=value` overrides, in order."""
    source = str(path) if path else "command line"
    problems: list[str] = []
    body: dict = {}
    if path is not None:
        try:
            body = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as err:
            raise ConfigError(source, [f"cannot read {path}: {err}"]) from err
        if not isinstance(body, dict):
            raise ConfigError(source, [f"{path} must hold a mapping of settings"])
    kinds = {leaf.path: leaf.kind for leaf in leaves(cls)}
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            problems.append(f"override {item!r} must look like section.key=value")
            continue
        if key not in kinds:
            problems.append(f"override {item!r}: unknown setting {key!r}"
                            + (_renamed_hint(cls, key) or _suggest(key, kinds)))
            continue
        value = _from_text(kinds[key], text)
        if value is _BAD:
            problems.append(f"{key}: expected {_type_name(kinds[key])}, got {text!r}")
            continue
        target = body
        *parents, name = key.split(".")
        for part in parents:
            if not isinstance(target.get(part), dict):
                target[part] = {}
            target = target[part]
        target[name] = value
    config = _build(cls, body, "", problems)
    if problems:
        raise ConfigError(source, problems)
    return config


def config_from_dict(cls, body: dict, source: str):
    """`cls` from plain data (as `as_dict` wrote it), checked as load_config checks."""
    problems: list[str] = []
    config = _build(cls, body, "", problems)
    if problems:
        raise ConfigError(source, problems)
    return config


def _renamed_hint(cls, key: str) -> str:
    """Where a setting an earlier version had lives now, as the section that held it
    says (`Config.moved`)."""
    where, section = "", cls
    *parents, name = key.split(".")
    for part in parents:
        kind = typing.get_type_hints(section).get(part)
        if not dataclasses.is_dataclass(kind):
            return ""
        where, section = f"{where}{part}.", kind
    moved = section.moved(name, where) if issubclass(section, Config) else ""
    return f" ({moved})" if moved else ""


def _suggest(key: str, kinds: dict) -> str:
    leaf = key.rsplit(".", 1)[-1]
    near = [k for k in kinds if k.rsplit(".", 1)[-1] == leaf]
    return f" (did you mean {' or '.join(near)}?)" if near else ""


def _build(cls, body, where: str, problems: list[str]):
    """Construct `cls` from a mapping, recording unknown keys, wrong types, missing
    required settings and the values' own problems; None if it cannot be built."""
    if not isinstance(body, dict):
        problems.append(f"{where.rstrip('.') or 'config'} must be a mapping, got "
                        f"{type(body).__name__}")
        body = {}
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in sorted(set(body) - names):
        moved = cls.moved(key, where) if issubclass(cls, Config) else ""
        problems.append(f"{where}{key}: unknown setting "
                        f"({moved or 'known: ' + ', '.join(sorted(names))})")
    values, buildable = {}, True
    for f in dataclasses.fields(cls):
        kind, name = hints[f.name], f"{where}{f.name}"
        if f.name not in body:
            if _field_default(f) is MISSING:
                problems.append(f"{name}: required")
                buildable = False
            continue
        if dataclasses.is_dataclass(kind):
            # a section given in part keeps the section's own defaults for the rest
            base = _field_default(f)
            section = dict(as_dict(base)) if base is not MISSING else {}
            section.update(body[f.name] if isinstance(body[f.name], dict) else {})
            built = _build(kind, section if isinstance(body[f.name], dict) else body[f.name],
                           name + ".", problems)
            if built is None:
                buildable = False
            else:
                values[f.name] = built
            continue
        converted = _convert(kind, body[f.name])
        if converted is _BAD:
            problems.append(f"{name}: expected {_type_name(kind)}, got {body[f.name]!r}")
        else:
            values[f.name] = converted
    if not buildable:
        return None
    try:
        return cls(**values)
    except ConfigError as err:
        problems.extend(f"{where}{p}" for p in err.problems)
    except (TypeError, ValueError) as err:
        problems.append(f"{where.rstrip('.') or cls.__name__}: {err}")
    return _unchecked(cls, values)


def _unchecked(cls, values: dict):
    """An instance that skipped its checks (their problems are recorded), so the
    sections around it are still checked and every problem is listed at once."""
    instance = object.__new__(cls)
    for f in dataclasses.fields(cls):
        object.__setattr__(instance, f.name, values[f.name] if f.name in values
                           else _field_default(f))
    return instance


_BAD = object()
_NONE_TEXT = ("", "null", "none", "~")


def _from_text(kind, text: str):
    """A command-line value (`--set a=TEXT` or a flag) as the field's type."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        if text.strip().lower() in _NONE_TEXT and type(None) in typing.get_args(kind):
            return None
        for option in typing.get_args(kind):
            if option is not type(None):
                value = _from_text(option, text)
                if value is not _BAD:
                    return value
        return _BAD
    if kind in (str, Path):
        return kind(text)
    if origin is tuple:
        item = typing.get_args(kind)[0]
        if text.lstrip().startswith("["):
            try:
                return _convert(kind, yaml.safe_load(text))
            except yaml.YAMLError:
                return _BAD
        parts = [_from_text(item, p.strip()) for p in text.split(",") if p.strip()]
        return _BAD if any(p is _BAD for p in parts) else tuple(parts)
    try:
        return _convert(kind, yaml.safe_load(text))
    except yaml.YAMLError:
        return _BAD


def _convert(kind, value):
    """A YAML value as the field's type, or _BAD."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(kind):
            return None
        for option in typing.get_args(kind):
            converted = _convert(option, value) if option is not type(None) else _BAD
            if converted is not _BAD:
                return converted
        return _BAD
    if origin is tuple:
        item = typing.get_args(kind)[0]
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            return _BAD
        items = [_convert(item, v) for v in value]
        return _BAD if any(i is _BAD for i in items) else tuple(items)
    if kind is bool:
        return value if isinstance(value, bool) else _BAD
    if kind is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else _BAD
    if kind is float:
        if isinstance(value, str):  # YAML 1.1 reads '5e-4' (no dot) as a string
            try:
                return float(value)
            except ValueError:
                return _BAD
        return float(value) if isinstance(value, (int, float)) and not isinstance(
            value, bool) else _BAD
    if kind is str:
        return value if isinstance(value, str) else _BAD
    if kind is Path:
        return Path(value) if isinstance(value, (str, Path)) else _BAD
    if kind is dict:
        return dict(value) if isinstance(value, dict) else _BAD
    return _BAD


def _type_name(kind) -> str:
    origin = typing.get_origin(kind)
    if origin is tuple:
        return f"a list of {_type_name(typing.get_args(kind)[0])}"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(k) for k in typing.get_args(kind))
    if kind is type(None):
        return "null"
    return getattr(kind, "__name__", None) or str(kind)


def as_dict(config) -> dict:
    """The config as plain YAML-ready data (paths as strings, tuples as lists)."""
    return _plain(dataclasses.asdict(config))


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return str(value) if isinstance(value, Path) else value
