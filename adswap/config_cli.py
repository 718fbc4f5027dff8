"""Typer commands generated from config dataclasses (schemas/config.py).

`@config_command(app, Cls)` turns `def cmd(config: Cls, ...)` into a command that takes
`--config FILE.yaml`, `--set section.key=value` (repeatable) and one flag per setting,
named after the field (`--n-views`), or after its section where two sections share a
name (`--optim.warmup-epochs`), or as the field's `flag` metadata says. Each flag's help
is the field's help with its default, and a flag is only an override: `--n-views 4` is
`--set drop.n_views=4`, so the file, `--set` and flags go through one conversion and
one validation, and every problem is reported at once. Parameters of `cmd` after
`config` are ordinary Typer options for what is not a setting of the stage (where to
add a data card, whether to resume); `overrides` and `config_file`, when `cmd` names
them, receive the --set and flag overrides and the --config file given.
"""

from __future__ import annotations

import functools
import inspect
import json
import typing
from collections import Counter
from dataclasses import MISSING
from pathlib import Path

import typer

from schemas.config import ConfigError, Leaf, leaves, load_config

RESERVED = {"config", "set", "help"}
# command name -> its config class, for tools and tests that walk every command
COMMANDS: dict[str, type] = {}


def flag_names(cls) -> dict[str, str]:
    """Setting path -> its flag (without dashes)."""
    found = leaves(cls)
    counts = Counter(leaf.path.rsplit(".", 1)[-1] for leaf in found)
    names = {}
    for leaf in found:
        short = leaf.path.rsplit(".", 1)[-1]
        name = leaf.flag or (short if counts[short] == 1 and short not in RESERVED
                             else leaf.path)
        names[leaf.path] = name.replace("_", "-")
    return names


def _metavar(kind) -> str:
    origin = typing.get_origin(kind)
    if origin is tuple:
        return "A,B,..."
    args = [k for k in typing.get_args(kind) if k is not type(None)]
    if args:
        return _metavar(args[0])
    return {int: "INT", float: "FLOAT", Path: "PATH", dict: "YAML"}.get(kind, "TEXT")


def _show(value) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value)) or "none"
    if value is None:
        return "none"
    if value == "":
        return '""'
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def _help(leaf: Leaf) -> str:
    """The field's help, its choices, and where it lives in a config file (round
    brackets: Typer's rich help reads square ones as markup)."""
    choices = f" One of: {', '.join(map(str, leaf.choices))}." if leaf.choices else ""
    default = "required" if leaf.default is MISSING else f"default: {_show(leaf.default)}"
    return f"{leaf.help}{choices} ({leaf.path}; {default})"


def _is_bool(kind) -> bool:
    return kind is bool


def config_command(app: typer.Typer, cls, name: str | None = None):
    """Register `fn(config, **extra)` as a command configured by `cls`."""
    settings = leaves(cls)
    flags = flag_names(cls)

    def register(fn):
        wanted = inspect.signature(fn).parameters
        wants_overrides, wants_file = "overrides" in wanted, "config_file" in wanted
        ids = {_ident(leaf): leaf for leaf in settings}
        params = [*(_setting_param(leaf, flags) for leaf in settings),
                  *_file_params(settings), *_extra_params(fn)]

        @functools.wraps(fn)
        def command(**kwargs):
            config_file = kwargs.pop("config_file")
            overrides = list(kwargs.pop("overrides") or [])
            overrides += _flag_overrides(kwargs, ids)
            try:
                config = load_config(cls, config_file, overrides)
            except ConfigError as err:
                fail(str(err))
            if wants_overrides:  # to load the same overrides onto another base file
                kwargs["overrides"] = overrides
            if wants_file:  # whether a base file was given at all
                kwargs["config_file"] = config_file
            return fn(config, **kwargs)

        command.__signature__ = inspect.Signature(params)
        command.__annotations__ = {}
        del command.__wrapped__  # Typer must read the generated signature, not fn's
        command_name = name or fn.__name__.replace("_", "-")
        COMMANDS[command_name] = cls
        app.command(command_name)(command)
        return fn

    return register


def _ident(leaf: Leaf) -> str:
    """The keyword a setting's flag arrives under: a dotted path is no identifier."""
    return "opt_" + leaf.path.replace(".", "__")


def _setting_param(leaf: Leaf, flags: dict[str, str]) -> inspect.Parameter:
    """The Typer parameter of one setting; every default is None, so a flag left out
    overrides nothing."""
    if leaf.argument:
        info = typer.Argument(None, help=_help(leaf), show_default=False,
                              metavar=leaf.path.upper())
        annotation = str | None
    elif _is_bool(leaf.kind):
        info = typer.Option(None, f"--{flags[leaf.path]}/--no-{flags[leaf.path]}",
                            help=_help(leaf), show_default=False)
        annotation = bool | None
    elif leaf.repeatable:
        info = typer.Option(None, f"--{flags[leaf.path]}", help=_help(leaf) +
                            " Repeatable.", show_default=False, metavar="VALUE")
        annotation = list[str] | None
    else:
        names = (f"--{flags[leaf.path]}",) + ((f"-{leaf.short}",) if leaf.short else ())
        info = typer.Option(None, *names, help=_help(leaf), show_default=False,
                            metavar=_metavar(leaf.kind))
        annotation = str | None
    return inspect.Parameter(_ident(leaf), inspect.Parameter.KEYWORD_ONLY,
                             default=info, annotation=annotation)


def _file_params(settings: list[Leaf]) -> list[inspect.Parameter]:
    """--config FILE and --set KEY=VALUE, the options every config command takes."""
    return [
        inspect.Parameter(
            "config_file", inspect.Parameter.KEYWORD_ONLY, annotation=Path | None,
            default=typer.Option(None, "--config", help="YAML file of settings, in the "
                                 "sections the dotted names show; --set and flags win "
                                 "over it.", show_default=False, metavar="FILE.yaml")),
        inspect.Parameter(
            "overrides", inspect.Parameter.KEYWORD_ONLY,
            annotation=list[str] | None,
            default=typer.Option(None, "--set", help="Override one setting by its dotted "
                                 "name, e.g. --set " + settings[-1].path + "=VALUE; "
                                 "repeatable.", show_default=False, metavar="KEY=VALUE")),
    ]


def _extra_params(fn) -> list[inspect.Parameter]:
    """`fn`'s own options after `config` (but `overrides` and `config_file`, which the
    command fills)."""
    hints = typing.get_type_hints(fn)  # the command module's string annotations
    return [p.replace(annotation=hints.get(p.name, p.annotation),
                      kind=inspect.Parameter.KEYWORD_ONLY)
            for p in list(inspect.signature(fn).parameters.values())[1:]
            if p.name not in ("overrides", "config_file")]


def _flag_overrides(kwargs: dict, ids: dict[str, Leaf]) -> list[str]:
    """Takes the settings' flags out of `kwargs` as `path=value` overrides, so flags go
    through the same conversion and validation as --set."""
    overrides = []
    for ident, leaf in ids.items():
        value = kwargs.pop(ident)
        if value is None:
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, list):
            value = json.dumps(value)
        overrides.append(f"{leaf.path}={value}")
    return overrides


def fail(message: str, code: int = 1) -> typing.NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)
