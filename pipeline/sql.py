"""Small helpers for the SQL the stages hand to DuckDB."""

from __future__ import annotations

from pathlib import Path


def sql_string(path: Path | str) -> str:
    """A path as an SQL string literal (paths may contain quotes)."""
    return "'" + str(path).replace("'", "''") + "'"
