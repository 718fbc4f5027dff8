"""Reading the text files public catalogs come as."""

from __future__ import annotations

from pathlib import Path


def open_text(path: Path):
    # surrogateescape keeps undecodable bytes, so the validator names the row and field
    return path.open(encoding="utf-8", errors="surrogateescape", newline="")


def header_cells(path: Path) -> list[str]:
    """The first line's tab-separated cells, unquoted; [] if it is not text."""
    try:
        with open_text(path) as f:
            first = f.readline(1 << 16)
    except (OSError, UnicodeError):
        return []
    return [cell.strip().strip('"') for cell in first.rstrip("\r\n").split("\t")]
