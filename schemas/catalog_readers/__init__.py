"""Catalog readers, one module per format in this folder (or in another installed
package, named under the entry-point group `adswap.catalog_readers`), each declaring
`READER = CatalogReader(...)`: its name (`--format`), its help, the suffixes it reads,
the rule that recognises its files, its bundled tag map and the function that streams
its rows. The format choice, `--format`'s help and auto-recognition come from this
table, so adding a format is adding its module.

A reader yields (row number, row) in the shape the catalog validator checks
(schemas/catalog.py: track_id, audio, duration_s, artist, tags: raw category -> raw
tags); a malformed line becomes a row with an `__error__` (and optionally a
`__field__`), rejected with its number like any other; a file it cannot read at all
raises SchemaError."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from schemas.plugins import rows

if TYPE_CHECKING:
    from schemas.catalog import CatalogConfig

GROUP = "adswap.catalog_readers"
NATIVE = "adswap"


@dataclass(frozen=True)
class CatalogReader:
    """- `rows(path, config, mapped)`: the rows (`mapped`: a tag map will be applied, so
      raw categories may be ones the run does not use);
    - `suffixes`: file suffixes it reads when no rule recognises a file (".parquet");
      `directories`: it reads folders;
    - `recognise(path)`: whether a file is in this format, from its content (a header);
      tried before suffixes, so a public format's .tsv or .csv is not read as ours;
    - `tag_map`: the tag map a read applies unless one is given (None: raw tags)."""

    name: str
    help: str
    rows: Callable[[Path, CatalogConfig, bool], Iterator[tuple[int, dict]]]
    suffixes: tuple[str, ...] = ()
    directories: bool = False
    recognise: Callable[[Path], bool] | None = None
    tag_map: Path | None = None


def _table() -> dict[str, CatalogReader]:
    table: dict[str, CatalogReader] = {}
    for row in rows(__name__, GROUP, "READER"):
        if row.name in table:
            raise ImportError(f"two catalog readers are named {row.name!r}")
        table[row.name] = row
    # ours first, then by name: the order of --format's help and of recognition
    return dict(sorted(table.items(), key=lambda item: (item[0] != NATIVE, item[0])))


READERS: dict[str, CatalogReader] = _table()


def recognise(path: Path) -> str:
    """The format a file or folder is read in when none is set: the first reader whose
    rule recognises its content, else the first that takes its suffix (or folders);
    ours when none does, so the error names what ours reads."""
    for reader in READERS.values():
        if reader.recognise is not None and path.is_file() and reader.recognise(path):
            return reader.name
    for reader in READERS.values():
        if (path.is_dir() and reader.directories) or (
                path.suffix.lower() in reader.suffixes):
            return reader.name
    return NATIVE


def formats_help() -> str:
    return "; ".join(f"{name}: {reader.help}" for name, reader in READERS.items())
