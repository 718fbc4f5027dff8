"""The TextSwap dictionary: descriptors by category, each with its synonyms.

Built by curation from the catalog's tag vocabulary (after its tag map) plus a user's
extra file, read by the trainer to make hard negatives. A term belongs to exactly one
category. `term` is the lower-cased comparison key; `display`, written only where it
differs (`R&B` for `r&b`), is the form TextSwap writes into a caption.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from schemas.atomic import write_text_atomic
from schemas.catalog import normalise_tag
from schemas.problems import Problem, SchemaError

SWAP_SCHEMA_ID = "swap_dictionary/1"


@dataclass(frozen=True)
class Descriptor:
    category: str
    term: str
    synonyms: tuple[str, ...] = ()
    display: str = ""  # how the term is written; empty means as `term`

    @property
    def written(self) -> str:
        return self.display or self.term


@dataclass(frozen=True)
class SwapDictionary:
    descriptors: tuple[Descriptor, ...]

    def categories(self) -> list[str]:
        return sorted({d.category for d in self.descriptors})

    def terms(self, category: str) -> list[str]:
        return [d.term for d in self.descriptors if d.category == category]

    def to_json(self) -> dict:
        by_category: dict[str, list[dict]] = {}
        for d in sorted(self.descriptors, key=lambda d: (d.category, d.term)):
            entry = {"term": d.term, "synonyms": sorted(d.synonyms)}
            if d.display and d.display != d.term:
                entry["display"] = d.display
            by_category.setdefault(d.category, []).append(entry)
        return {"schema": SWAP_SCHEMA_ID, "categories": by_category}

    def save(self, path: str | Path) -> None:
        write_text_atomic(path, json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def from_json(cls, body: Mapping, file: str = "<swap dictionary>") -> SwapDictionary:
        problems = validate_swap_json(body, file)
        if problems:
            raise SchemaError(f"{file} is not a valid swap dictionary", problems)
        return cls(tuple(
            Descriptor(category, normalise_tag(e["term"]),
                       tuple(normalise_tag(s) for s in e.get("synonyms", ())),
                       " ".join(e.get("display", "").split()))
            for category, entries in body["categories"].items() for e in entries
        ))

    @classmethod
    def load(cls, path: str | Path) -> SwapDictionary:
        try:
            body = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise SchemaError(f"{path} cannot be read as JSON: {err}", []) from err
        return cls.from_json(body, str(path))


def validate_swap_json(body: Mapping, file: str) -> list[Problem]:
    problems: list[Problem] = []
    if not isinstance(body, Mapping) or body.get("schema") != SWAP_SCHEMA_ID:
        got = body.get("schema") if isinstance(body, Mapping) else type(body).__name__
        return [Problem(file, None, "schema", f"is {got!r}; this version reads '{SWAP_SCHEMA_ID}'")]
    categories = body.get("categories")
    if not isinstance(categories, Mapping):
        return [Problem(file, None, "categories", "must map category -> list of entries")]
    owner: dict[str, str] = {}
    for category, entries in categories.items():
        if not isinstance(entries, list):
            problems.append(Problem(file, None, category, "must be a list of entries"))
            continue
        for i, entry in enumerate(entries):
            where = f"{category}[{i}]"
            term = entry.get("term") if isinstance(entry, Mapping) else None
            if not isinstance(term, str) or not normalise_tag(term):
                problems.append(Problem(file, None, where, "needs a non-empty 'term'"))
                continue
            synonyms = entry.get("synonyms", [])
            if not isinstance(synonyms, list) or not all(isinstance(s, str) for s in synonyms):
                problems.append(Problem(file, None, where, "'synonyms' must be a list of strings"))
                continue
            display = entry.get("display")
            if display is not None and (not isinstance(display, str)
                                        or normalise_tag(display) != normalise_tag(term)):
                problems.append(Problem(file, None, where,
                                        f"'display' {display!r} must spell the term {term!r}"))
            for word in [term, *synonyms]:
                word = normalise_tag(word)
                if word in owner and owner[word] != where:
                    problems.append(Problem(file, None, where,
                                            f"'{word}' is already defined by {owner[word]}"))
                owner.setdefault(word, where)
    return problems
