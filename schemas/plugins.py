"""Extension points that are one file: the entries of a table (caption engines, audio
encoders, catalog readers) are the modules of one folder, each declaring its own row,
plus modules other installed packages name under an entry-point group, so a team adds
an engine or a reader in its own package without editing this one.

A module declares its row as a module-level constant (`ENGINE`, `ENCODER`, `READER`);
the folder's other modules are helpers only if their names start with an underscore.
Entries that are data files (curation rules) come from the folders of the packages a
group names.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import pkgutil
from pathlib import Path
from types import ModuleType


def discover(package: str, group: str) -> list[ModuleType]:
    """The modules of `package`'s folder in name order, then those named by other
    distributions under the entry-point `group` (value: a module path), in name order."""
    folder = importlib.import_module(package)
    names = [f"{package}.{m.name}" for m in sorted(pkgutil.iter_modules(folder.__path__),
                                                    key=lambda m: m.name)
             if not m.name.startswith("_")]
    names += [name for name in plugin_modules(group) if name not in names]
    return [importlib.import_module(name) for name in names]


def plugin_modules(group: str) -> list[str]:
    """The module paths other distributions name under the entry-point `group`."""
    found = sorted(importlib.metadata.entry_points(group=group), key=lambda e: e.name)
    return [entry.value for entry in found]


def plugin_folders(group: str) -> list[Path]:
    """The folders of the packages named under `group`, for entries that are data files
    (curation rules are SQL files), imported so their location is the installed one."""
    return [Path(importlib.import_module(name).__file__).parent
            for name in plugin_modules(group)]


def rows(package: str, group: str, constant: str) -> list:
    """Each discovered module's `constant`; a module without one is a mistake worth
    naming, since it would otherwise vanish from the table unnoticed."""
    found = []
    for module in discover(package, group):
        row = getattr(module, constant, None)
        if row is None:
            raise ImportError(f"{module.__name__} ({module.__file__}) sits among the "
                              f"entries of {package} but declares no {constant}; name "
                              "helper modules with a leading underscore")
        found.append(row)
    return found
