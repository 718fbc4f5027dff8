"""adswap's own catalogs: Parquet or JSONL with a `tags` column/object mapping category ->
list of tags; CSV (and Parquet) with one `tags.<category>` column per category, tags
separated by `;`; or a `datasets` directory saved with `save_to_disk` (a DatasetDict's
split names fill an empty `split` column)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

from schemas.catalog_readers import CatalogReader
from schemas.problems import Problem, SchemaError
from schemas.tabular import header, iter_rows

if TYPE_CHECKING:
    from schemas.catalog import CatalogConfig

TABULAR = (".csv", ".jsonl", ".ndjson")


def native_rows(path: Path, config: CatalogConfig, mapped: bool
                ) -> Iterator[tuple[int, dict]]:
    if path.is_dir():
        yield from _dataset_rows(path)
        return
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        yield from _parquet_rows(path, config, mapped)
    elif suffix in TABULAR:
        yield from _tabular_rows(path, config, mapped)
    else:
        from schemas.catalog_readers import READERS

        others = [f"{name} ({reader.help})" for name, reader in READERS.items()
                  if name != READER.name]
        raise SchemaError(
            f"catalog {path}: unknown format '{suffix}'; use .parquet, .csv, .jsonl, "
            f"a `datasets` directory, or another format: {'; '.join(others)}", [])


def _require_columns(path: Path, columns: list[str], config: CatalogConfig,
                     mapped: bool) -> None:
    problems = [Problem(str(path), None, c, "column is missing")
                for c in ("track_id", "audio") if c not in columns]
    has_tags = "tags" in columns or any(c.startswith("tags.") for c in columns)
    if not has_tags:
        problems.append(Problem(str(path), None, "tags",
                                "column is missing (give `tags` or `tags.<category>` columns)"))
    # with a tag map, a raw category may be moved or mapped: rows are checked instead
    unknown = [] if mapped else [
        c for c in columns if c.startswith("tags.") and c[len("tags."):] not in config.categories]
    problems += [Problem(str(path), None, c,
                         f"unknown tag category; known: {', '.join(config.categories)} "
                         "(add it with --categories)") for c in unknown]
    if problems:
        raise SchemaError(f"catalog {path} cannot be read", problems)


def _parquet_rows(path: Path, config: CatalogConfig, mapped: bool
                  ) -> Iterator[tuple[int, dict]]:
    try:
        reader = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as err:
        raise SchemaError(f"catalog {path} is not a readable Parquet file: {err}", []) from err
    _require_columns(path, reader.schema_arrow.names, config, mapped)
    row_number = 0
    for batch in reader.iter_batches(batch_size=8192):
        for row in batch.to_pylist():
            row_number += 1
            yield row_number, row


def _tabular_rows(path: Path, config: CatalogConfig, mapped: bool
                  ) -> Iterator[tuple[int, dict]]:
    """CSV and JSON Lines rows, streamed by the one tabular reader (so memory stays flat
    in the catalog's size); a row it cannot read is rejected with its field."""
    columns = header(path)
    if columns is not None:
        _require_columns(path, columns, config, mapped)
    for row in iter_rows(path):
        if row.problem is not None:
            yield row.number, {"__error__": row.problem.message, "__field__": row.problem.field}
        else:
            yield row.number, row.values


def _dataset_rows(path: Path) -> Iterator[tuple[int, dict]]:
    import datasets  # slow to import; only needed for this format

    try:
        loaded = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as err:
        raise SchemaError(f"catalog {path} is not a `datasets` directory: {err}", []) from err
    parts = loaded.items() if isinstance(loaded, datasets.DatasetDict) else [(None, loaded)]
    row_number = 0
    for split_name, part in parts:
        split = {"validation": "valid", "val": "valid"}.get(split_name, split_name)
        for row in part:
            row_number += 1
            if split and not row.get("split"):
                row = {**row, "split": split}
            yield row_number, row


READER = CatalogReader("adswap", "parquet, csv, jsonl or a `datasets` folder", native_rows,
                       suffixes=(".parquet", *TABULAR), directories=True)
