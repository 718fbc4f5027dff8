"""Build the TextSwap dictionary: the catalog's tag vocabulary per category (display
forms, after its tag map), the tag map's other canonical tags and their synonyms, and
an optional YAML file of extra descriptors and synonyms. Descriptors no track has are
swap candidates, and captions naming them count as hallucinations.

Extras file:
    genre:
      - term: hip hop
        synonyms: [hip-hop, rap]
      - term: synthwave          # a descriptor no track has: a swap candidate only
    mood:
      - term: upbeat
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import yaml

from schemas.catalog import normalise_tag
from schemas.problems import Problem, SchemaError
from schemas.swap_dictionary import SWAP_SCHEMA_ID, SwapDictionary
from schemas.tagmap import TagMap


def build_dictionary(tags: Iterable[tuple[str, str]], categories: Iterable[str],
                     extras: Path | None = None, tag_map: TagMap | None = None
                     ) -> SwapDictionary:
    """Catalog tags (category, display form), the tag map's canonical tags in the run's
    categories, and extras; an entry for an existing term adds its synonyms."""
    categories = tuple(categories)
    entries: dict[tuple[str, str], set[str]] = {}
    display: dict[tuple[str, str], str] = {}

    def add(category: str, written: str, synonyms: Iterable[str] = ()) -> None:
        key = (category, normalise_tag(written))
        display.setdefault(key, " ".join(written.split()))
        entries.setdefault(key, set()).update(normalise_tag(s) for s in synonyms)

    for category, tag in tags:
        add(category, tag)
    if tag_map is not None:
        for canonical in tag_map.tags:
            if canonical.category in categories:
                add(canonical.category, canonical.display, canonical.synonyms)
    if extras is not None:
        for category, term, synonyms in _read_extras(extras, categories):
            add(category, term, synonyms)
    body = {"schema": SWAP_SCHEMA_ID, "categories": {}}
    for (category, term), synonyms in sorted(entries.items()):
        entry = {"term": term, "synonyms": sorted(synonyms - {term})}
        if display[(category, term)] != term:
            entry["display"] = display[(category, term)]
        body["categories"].setdefault(category, []).append(entry)
    sources = ", ".join(str(s) for s in (tag_map and tag_map.source, extras) if s)
    # from_json validates the result: no form may belong to two descriptors
    return SwapDictionary.from_json(body, f"catalog vocabulary{' + ' + sources if sources else ''}")


def _read_extras(path: Path, categories: tuple[str, ...]) -> list[tuple[str, str, list[str]]]:
    try:
        body = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise SchemaError(f"{path} cannot be read as YAML: {err}", []) from err
    if not isinstance(body, dict):
        raise SchemaError(f"{path} must map category -> list of descriptors", [])
    problems, out = [], []
    for category, items in body.items():
        if category not in categories:
            problems.append(Problem(str(path), None, str(category),
                                    f"unknown category; known: {', '.join(categories)}"))
            continue
        for i, item in enumerate(items or []):
            if isinstance(item, str):
                item = {"term": item}
            term = item.get("term") if isinstance(item, dict) else None
            synonyms = item.get("synonyms", []) if isinstance(item, dict) else None
            if not isinstance(term, str) or not normalise_tag(term) or \
                    not isinstance(synonyms, list) or \
                    not all(isinstance(s, str) and normalise_tag(s) for s in synonyms):
                problems.append(Problem(str(path), None, f"{category}[{i}]",
                                        "needs a 'term' and optionally a list of 'synonyms'"))
                continue
            out.append((category, normalise_tag(term), [normalise_tag(s) for s in synonyms]))
    if problems:
        raise SchemaError(f"{path} has problems", problems)
    return out
