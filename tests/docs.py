"""The documentation's pages, for the tests that check what they say: the README and
every page of docs/."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def code_blocks(language: str) -> list[tuple[Path, str]]:
    """(page, body) of every fenced block of `language` on every page."""
    return [(page, body) for page in pages()
            for body in re.findall(rf"```{language}\n(.*?)```",
                                   page.read_text(encoding="utf-8"), re.S)]
