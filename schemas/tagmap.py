"""Tag maps: a user's file that turns a catalog's raw tags into canonical tags.

A canonical tag is written as its display form, the words a person and an LLM would
write ("electric guitar" for `electricguitar`, "R&B" for `rnb`); it has a category and
optional synonyms (more words captions may use for it). The map says which raw tags
become which canonical tag (merges), moves tags or whole raw categories to another
category, and drops tags. A raw tag the map does not know passes through unchanged.
Maps are applied when a catalog is read, so every stage sees the same tags; the raw
tags stay on each track for provenance.

YAML (every key that is not `categories`, `move` or `drop` is a category):

    categories: [theme]              # categories beyond the run's (--categories)
    move: {mood/theme: mood}         # raw category -> category for its other tags
    genre:
      hip hop: {raw: [hiphop, hip-hop]}       # canonical tag: raw tags merged into it
      R&B: {raw: [rnb], synonyms: [rhythm and blues]}
      rock:                                    # known and unchanged
    theme:
      film: {raw: [mood/theme---film]}         # `rawcategory---tag`: from another category
    drop: [mood/theme---background, misc]      # a plain tag is dropped in every category

CSV (header `raw_category,raw_tag,category,tag,synonyms`; `#` lines are comments and
`# categories: theme, other` declares extra categories): one row per raw tag; an empty
`category` keeps the raw category, an empty `tag` keeps the raw tag as display form,
`category` = `drop` drops it, `raw_tag` = `*` moves the whole raw category, and
`synonyms` are separated by `;`.

How a raw tag (raw category R, tag t) resolves, first match wins: a ref naming R
(`R---t`, or plain under section R); a plain `drop`; when R is not a category (MTG-
Jamendo's `mood/theme`, MagnaTagATune's flat list), t wherever the map lists it; then,
in R's category (after `move`), a canonical tag whose display form is t; else t passes
through. A canonical tag whose own name is listed as a raw tag of another is merged
into that one (merges may chain; a cycle is an error). Tags moved to a category the map
declares but the run does not use are dropped, and reported.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import yaml

from schemas.problems import Problem, SchemaError

BUNDLED_DIR = Path(__file__).parent / "tagmaps"
RESERVED_KEYS = ("categories", "move", "drop")
RAW_SEPARATOR = "---"  # `rawcategory---tag`, MTG-Jamendo's own notation
CSV_COLUMNS = ("raw_category", "raw_tag", "category", "tag", "synonyms")
CSV_DROP = "drop"
CSV_MOVE_ALL = "*"
_CATEGORY_NAME = re.compile(r"[a-z][a-z0-9_]*")
_SPACES = re.compile(r"\s+")
_DROP_SEPARATORS = str.maketrans("", "", " \t\n\r\f\v-")


def normalise_tag(tag: str) -> str:
    """Tags compare case- and whitespace-insensitively: 'Hip  Hop ' == 'hip hop'."""
    return _SPACES.sub(" ", tag).strip().lower()


def surface_key(form: str) -> str:
    """What the descriptor matcher cannot tell apart: 'hip hop' = 'hip-hop' = 'HipHop'."""
    return form.lower().translate(_DROP_SEPARATORS)


class Outcome(NamedTuple):
    kind: str            # "mapped" (the map names it), "dropped", "unmapped" (passed through)
    category: str | None
    tag: str | None      # the display form


DROPPED = Outcome("dropped", None, None)


@dataclass(frozen=True)
class CanonicalTag:
    category: str
    display: str
    synonyms: tuple[str, ...]
    line: int


class TagMap:
    """A loaded, checked map. `resolve` is called once per distinct raw tag (callers
    cache it), so it favours clarity over speed."""

    def __init__(self, source: str, sha256: str, declared: tuple[str, ...],
                 tags: tuple[CanonicalTag, ...], refs: dict, drop_any: frozenset,
                 foreign: dict, moves: dict, canonical: dict, known: frozenset):
        self.source, self.sha256 = source, sha256
        self.declared = declared  # categories the map adds to the run's
        self.tags = tags          # the canonical tags, merges applied
        self._refs, self._drop_any, self._foreign = refs, drop_any, foreign
        self.moves = moves  # raw category -> category its unlisted tags go to
        self._canonical, self._known = canonical, known

    def resolve(self, raw_category: str, tag: str) -> Outcome:
        """Where a raw tag goes; `tag` is already normalised (`normalise_tag`)."""
        found = self._refs.get((raw_category, tag))
        if found is not None:
            return found
        if tag in self._drop_any:
            return DROPPED
        if raw_category not in self._known:
            found = self._foreign.get(tag)
            if found is not None:
                return found
        category = self.moves.get(raw_category, raw_category)
        found = self._refs.get((category, tag)) or self._canonical.get((category, tag))
        return found or Outcome("unmapped", category, tag)

    def synonyms(self) -> dict[tuple[str, str], tuple[str, ...]]:
        """(category, display) -> synonyms, for the swap dictionary."""
        return {(t.category, t.display): t.synonyms for t in self.tags}


# --- loading ------------------------------------------------------------------------

@dataclass
class _Entry:
    category: str
    display: str
    synonyms: list[str]
    line: int


@dataclass
class _Ref:
    raw_category: str | None  # None: a plain tag, no category named
    section: str | None       # the section it was listed under (None for drop)
    tag: str
    target: _Entry | None     # None: drop
    line: int


@dataclass
class _Parsed:
    declared: list[tuple[str, int]]
    moves: list[tuple[str, str, int]]
    entries: list[_Entry]
    refs: list[_Ref]


def bundled_map_path(name: str) -> Path:
    return BUNDLED_DIR / f"{name}.yaml"


def load_tag_map(path: str | Path, categories: Iterable[str]) -> TagMap:
    """Read and check a YAML or CSV tag map against the run's categories; every
    problem is reported at once, each with the map file, line and tag."""
    path = Path(path)
    try:
        stat = path.stat()
    except OSError as err:
        raise SchemaError(f"tag map {path} cannot be read: {err}", []) from err
    return _load_cached(str(path.resolve()), stat.st_mtime_ns, stat.st_size,
                        tuple(categories), str(path))


@functools.lru_cache(maxsize=16)
def _load_cached(resolved: str, mtime_ns: int, size: int, categories: tuple[str, ...],
                 shown: str) -> TagMap:
    raw = Path(resolved).read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise SchemaError(f"tag map {shown} is not UTF-8 text: {err}", []) from err
    problems: list[Problem] = []
    if Path(resolved).suffix.lower() in (".yaml", ".yml"):
        parsed = _parse_yaml(text, shown, problems)
    elif Path(resolved).suffix.lower() == ".csv":
        parsed = _parse_csv(text, shown, problems)
    else:
        raise SchemaError(f"tag map {shown}: use a .yaml, .yml or .csv file", [])
    tag_map = _build(parsed, categories, shown, hashlib.sha256(raw).hexdigest(), problems)
    if problems:
        raise SchemaError(f"tag map {shown} has {len(problems)} problem(s)", problems)
    return tag_map


def _problem(file: str, line: int | None, tag: str | None, message: str) -> Problem:
    where = f"line {line}" if line is not None else None
    return Problem(file, None, where, (f"tag '{tag}': " if tag is not None else "") + message)


def _split_ref(text: str) -> tuple[str | None, str]:
    if RAW_SEPARATOR in text:
        category, tag = text.split(RAW_SEPARATOR, 1)
        return category.strip(), normalise_tag(tag)
    return None, normalise_tag(text)


def _parse_yaml(text: str, file: str, problems: list[Problem]) -> _Parsed:
    parsed = _Parsed([], [], [], [])
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as err:
        line = getattr(getattr(err, "problem_mark", None), "line", None)
        problems.append(_problem(file, None if line is None else line + 1, None,
                                 f"is not valid YAML: {err}"))
        return parsed
    if root is None:
        return parsed
    if not isinstance(root, yaml.MappingNode):
        problems.append(_problem(file, _line(root), None, "must map categories to tags"))
        return parsed
    for key, value in _pairs(root, file, problems):
        name = key.value
        if name == "categories":
            for item in _scalars(value, file, problems, "categories"):
                parsed.declared.append((item.value.strip(), _line(item)))
        elif name == "move":
            if not isinstance(value, yaml.MappingNode):
                problems.append(_problem(file, _line(value), None,
                                         "'move' must map a raw category to a category"))
                continue
            for source, target in _pairs(value, file, problems):
                if not isinstance(target, yaml.ScalarNode) or not target.value:
                    problems.append(_problem(file, _line(target), None,
                                             f"move of '{source.value}' needs a category"))
                    continue
                parsed.moves.append((source.value.strip(), target.value.strip(),
                                     _line(source)))
        elif name == "drop":
            for item in _scalars(value, file, problems, "drop"):
                category, tag = _split_ref(item.value)
                parsed.refs.append(_Ref(category, None, tag, None, _line(item)))
        else:
            _parse_section(name.strip(), value, file, problems, parsed)
    return parsed


def _parse_section(category: str, node, file: str, problems: list[Problem],
                   parsed: _Parsed) -> None:
    if _is_null(node):
        return
    if not isinstance(node, yaml.MappingNode):
        problems.append(_problem(file, _line(node), None,
                                 f"category '{category}' must map canonical tags to "
                                 "their raw tags and synonyms"))
        return
    for key, value in _pairs(node, file, problems):
        display = _SPACES.sub(" ", key.value).strip()
        if not display:
            problems.append(_problem(file, _line(key), None, "a canonical tag is empty"))
            continue
        entry = _Entry(category, display, [], _line(key))
        parsed.entries.append(entry)
        if _is_null(value):
            continue
        if not isinstance(value, yaml.MappingNode):
            problems.append(_problem(file, _line(value), display,
                                     "needs a mapping with 'raw' and/or 'synonyms'"))
            continue
        for field_key, field_value in _pairs(value, file, problems):
            if field_key.value == "raw":
                for item in _scalars(field_value, file, problems, "raw"):
                    raw_category, tag = _split_ref(item.value)
                    parsed.refs.append(_Ref(raw_category, category, tag, entry, _line(item)))
            elif field_key.value == "synonyms":
                entry.synonyms += [_SPACES.sub(" ", s.value).strip()
                                   for s in _scalars(field_value, file, problems, "synonyms")]
            else:
                problems.append(_problem(file, _line(field_key), display,
                                         f"unknown key '{field_key.value}'; use 'raw' "
                                         "and 'synonyms'"))


def _line(node) -> int:
    return node.start_mark.line + 1


def _is_null(node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null") or (
        isinstance(node, yaml.MappingNode) and not node.value)


def _pairs(node, file: str, problems: list[Problem]):
    """Key/value nodes of a mapping; a repeated key is a problem (plain YAML keeps the
    last silently)."""
    seen: dict[str, int] = {}
    for key, value in node.value:
        if not isinstance(key, yaml.ScalarNode):
            problems.append(_problem(file, _line(key), None, "keys must be plain text"))
            continue
        if key.value in seen:
            problems.append(_problem(file, _line(key), key.value,
                                     f"is listed twice (also at line {seen[key.value]})"))
            continue
        seen[key.value] = _line(key)
        yield key, value


def _scalars(node, file: str, problems: list[Problem], what: str) -> list:
    if _is_null(node):
        return []
    if isinstance(node, yaml.ScalarNode):
        return [node]
    if isinstance(node, yaml.SequenceNode) and all(
            isinstance(item, yaml.ScalarNode) for item in node.value):
        return [item for item in node.value if item.value.strip()]
    problems.append(_problem(file, _line(node), None, f"'{what}' must be a list of text"))
    return []


def _parse_csv(text: str, file: str, problems: list[Problem]) -> _Parsed:
    parsed = _Parsed([], [], [], [])
    reader = csv.reader(io.StringIO(_csv_body(text, parsed)))
    header: list[str] | None = None
    entries: dict[tuple[str, str], _Entry] = {}
    for row in reader:
        number = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if header is None:
            header = _csv_header(row, number, file, problems)
            if header is None:
                return parsed
            continue
        if len(row) > len(header):
            problems.append(_problem(file, number, None,
                                     f"has {len(row)} cells; the header has {len(header)}"))
            continue
        cells = {name: (row[i].strip() if i < len(row) else "") for i, name in enumerate(header)}
        _add_csv_row(cells, number, file, problems, parsed, entries)
    return parsed


def _csv_body(text: str, parsed: _Parsed) -> str:
    """The text with comment lines blanked, not removed, so csv line numbers stay equal
    to file lines; a `# categories: a, b` comment declares categories."""
    body = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.lstrip().startswith("#"):
            declared = re.match(r"\s*#\s*categories\s*:(.*)", line)
            if declared:
                parsed.declared += [(c.strip(), number) for c in declared.group(1).split(",")
                                    if c.strip()]
            body.append("")
        else:
            body.append(line)
    return "\n".join(body)


def _csv_header(row: list[str], number: int, file: str,
                problems: list[Problem]) -> list[str] | None:
    """The column names, or None (with the problem reported) when they are wrong."""
    header = [cell.strip() for cell in row]
    missing = [c for c in CSV_COLUMNS[:4] if c not in header]
    unknown = [c for c in header if c not in CSV_COLUMNS]
    if missing or unknown:
        problems.append(_problem(file, number, None, f"the header needs "
                                 f"{', '.join(CSV_COLUMNS)} (missing: {missing}, "
                                 f"unknown: {unknown})"))
        return None
    return header


def _add_csv_row(cells: dict[str, str], number: int, file: str, problems: list[Problem],
                 parsed: _Parsed, entries: dict[tuple[str, str], _Entry]) -> None:
    """One data row: a move of a whole raw category, a dropped tag, or a raw tag mapped to
    a canonical one (rows naming the same canonical tag share its entry)."""
    raw_category, raw_tag = cells["raw_category"], cells["raw_tag"]
    category, display = cells["category"], _SPACES.sub(" ", cells["tag"]).strip()
    if not raw_category or not raw_tag:
        problems.append(_problem(file, number, raw_tag or None,
                                 "needs raw_category and raw_tag"))
        return
    if raw_tag == CSV_MOVE_ALL:
        if category in ("", CSV_DROP) or display:
            problems.append(_problem(file, number, None, "a '*' row moves a raw "
                                     "category: give 'category' and leave 'tag' empty"))
        else:
            parsed.moves.append((raw_category, category, number))
        return
    if category == CSV_DROP:
        if display:
            problems.append(_problem(file, number, raw_tag,
                                     "a dropped tag takes no 'tag'"))
        parsed.refs.append(_Ref(raw_category, None, normalise_tag(raw_tag), None, number))
        return
    category = category or raw_category
    display = display or _SPACES.sub(" ", raw_tag).strip()
    key = (category, normalise_tag(display))
    entry = entries.get(key)
    if entry is None:
        entry = entries[key] = _Entry(category, display, [], number)
        parsed.entries.append(entry)
    entry.synonyms += [s.strip() for s in cells.get("synonyms", "").split(";")
                       if s.strip()]
    parsed.refs.append(_Ref(raw_category, category, normalise_tag(raw_tag), entry, number))


def _build(parsed: _Parsed, run_categories: tuple[str, ...], file: str, sha256: str,
           problems: list[Problem]) -> TagMap:
    declared = _declared_categories(parsed, run_categories, file, problems)
    known = set(run_categories) | set(declared)
    moves = _moves(parsed, known, file, problems)
    by_key, entries = _unique_entries(parsed, known, file, problems)
    explicit, plain, drop_any = _place_refs(parsed, by_key, file, problems)
    final = {id(entry): _merge_target(entry, explicit, plain, file, problems)
             for entry in entries}
    outcome: dict[int, Outcome] = {}
    for entry in entries:
        target = final[id(entry)]
        outcome[id(entry)] = DROPPED if target is None else Outcome(
            "mapped", target.category, target.display)
    canonical_tags = [e for e in entries if final[id(e)] is e]
    synonyms: dict[int, list[str]] = {id(e): list(e.synonyms) for e in canonical_tags}
    for entry in entries:
        target = final[id(entry)]
        if target is not None and target is not entry:
            synonyms[id(target)] += entry.synonyms
    _check_collisions(canonical_tags, synonyms, file, problems)

    def target_of(ref: _Ref) -> Outcome:
        return DROPPED if ref.target is None else outcome[id(ref.target)]

    refs = {key: target_of(ref) for key, ref in explicit.items()}
    for ref in plain.values():  # a plain tag listed under a section names that category
        refs.setdefault((ref.section, ref.tag), target_of(ref))
    canonical = {(e.category, normalise_tag(e.display)): outcome[id(e)] for e in entries}
    foreign = {tag: target_of(ref) for tag, ref in plain.items()}
    for (_, key), found in canonical.items():
        foreign.setdefault(key, found)
    tags = tuple(CanonicalTag(e.category, e.display, tuple(dict.fromkeys(
        s for s in synonyms[id(e)] if normalise_tag(s) != normalise_tag(e.display))), e.line)
                 for e in canonical_tags)
    sections = {e.category for e in entries} | set(moves.values())
    return TagMap(file, sha256, tuple(declared), tags, refs, frozenset(drop_any), foreign,
                  moves, canonical, frozenset(known | sections))


def _declared_categories(parsed: _Parsed, run_categories: tuple[str, ...], file: str,
                         problems: list[Problem]) -> list[str]:
    """Categories the map declares beyond the run's, each once, in declaration order."""
    declared = []
    for name, line in parsed.declared:
        if not _CATEGORY_NAME.fullmatch(name):
            problems.append(_problem(file, line, None, f"category '{name}' must be a "
                                     "lowercase identifier (letters, digits, _)"))
        elif name not in declared and name not in run_categories:
            declared.append(name)
    return declared


def _check_category(category: str, known: set[str], line: int, tag: str | None,
                    file: str, problems: list[Problem]) -> bool:
    if category in known:
        return True
    problems.append(_problem(file, line, tag, f"unknown category '{category}'; known: "
                             f"{', '.join(sorted(known))} (declare it under "
                             "'categories:' or add it to the run's --categories)"))
    return False


def _moves(parsed: _Parsed, known: set[str], file: str,
           problems: list[Problem]) -> dict[str, str]:
    moves: dict[str, str] = {}
    for source, target, line in parsed.moves:
        if _check_category(target, known, line, None, file, problems):
            if source in moves:
                problems.append(_problem(file, line, None,
                                         f"raw category '{source}' is moved twice"))
            moves[source] = target
    return moves


def _unique_entries(parsed: _Parsed, known: set[str], file: str, problems: list[Problem]
                    ) -> tuple[dict[tuple[str, str], _Entry], list[_Entry]]:
    """Canonical tags by (category, key) and in file order; an entry in an unknown
    category or defined twice is reported and left out."""
    by_key: dict[tuple[str, str], _Entry] = {}
    entries = []
    for entry in parsed.entries:
        if not _check_category(entry.category, known, entry.line, entry.display, file,
                               problems):
            continue
        key = (entry.category, normalise_tag(entry.display))
        if key in by_key:
            problems.append(_problem(file, entry.line, entry.display,
                                     f"is defined twice in '{entry.category}' (also at line "
                                     f"{by_key[key].line})"))
            continue
        by_key[key] = entry
        entries.append(entry)
    return by_key, entries


def _place_refs(parsed: _Parsed, by_key: dict[tuple[str, str], _Entry], file: str,
                problems: list[Problem]) -> tuple[dict[tuple[str, str], _Ref],
                                                  dict[str, _Ref], dict[str, _Ref]]:
    """The raw refs as (explicit by (raw category, tag), plain by tag, dropped in any
    category by tag); a raw tag sent to two places is reported, since a row could not
    say which one it meant."""
    explicit: dict[tuple[str, str], _Ref] = {}
    plain: dict[str, _Ref] = {}
    drop_any: dict[str, _Ref] = {}
    for ref in parsed.refs:
        if ref.target is not None and by_key.get(
                (ref.target.category, normalise_tag(ref.target.display))) is not ref.target:
            continue  # its entry was reported (unknown category or defined twice)
        if ref.raw_category is None and ref.target is None:
            slot, key = drop_any, ref.tag
        elif ref.raw_category is None:
            slot, key = plain, ref.tag
        else:
            slot, key = explicit, (ref.raw_category, ref.tag)
        other = slot.get(key)
        if other is not None and other.target is not ref.target:
            problems.append(_problem(file, ref.line, ref.tag, "is in two places: "
                                     f"{_where(ref)} and {_where(other)} (line {other.line})"
                                     + (f"; write '{ref.section}{RAW_SEPARATOR}{ref.tag}' "
                                        "to name its raw category"
                                        if slot is plain and ref.section else "")))
            continue
        slot[key] = ref
    for tag, ref in drop_any.items():
        other = plain.get(tag)
        if other is not None:
            problems.append(_problem(file, ref.line, tag, "is in two places: dropped and "
                                     f"{_where(other)} (line {other.line})"))
    return explicit, plain, drop_any


def _merge_ref(entry: _Entry, explicit: dict[tuple[str, str], _Ref],
               plain: dict[str, _Ref]) -> _Ref | None:
    """The raw ref an entry's own name matches in another entry: the entry merges into
    that one."""
    key = normalise_tag(entry.display)
    ref = explicit.get((entry.category, key))
    if ref is None and key in plain and plain[key].section == entry.category:
        ref = plain[key]
    return ref if ref is not None and ref.target is not entry else None


def _merge_target(entry: _Entry, explicit: dict[tuple[str, str], _Ref],
                  plain: dict[str, _Ref], file: str,
                  problems: list[Problem]) -> _Entry | None:
    """The entry at the end of the entry's chain of merges (itself when it merges into
    none), or None when the chain ends in a drop or (reported) loops."""
    path, current = [entry], entry
    while True:
        ref = _merge_ref(current, explicit, plain)
        if ref is None:
            return current
        current = ref.target
        if current is None:  # merged into a drop
            return None
        if any(current is seen for seen in path):
            cycle = " -> ".join(f"'{e.display}' (line {e.line})" for e in [*path, current])
            problems.append(_problem(file, entry.line, entry.display,
                                     f"merges form a cycle: {cycle}"))
            return None
        path.append(current)


def _where(ref: _Ref) -> str:
    if ref.target is None:
        return "dropped"
    return f"'{ref.target.display}' ({ref.target.category})"


def _check_collisions(tags: list[_Entry], synonyms: dict[int, list[str]], file: str,
                      problems: list[Problem]) -> None:
    """Two canonical tags a caption cannot tell apart (same letters once case, spaces
    and hyphens are dropped) would make tag recall and TextSwap ambiguous."""
    owner: dict[str, _Entry] = {}
    for entry in tags:
        for form in dict.fromkeys([entry.display, *synonyms[id(entry)]]):
            key = surface_key(form)
            other = owner.get(key)
            if other is not None and other is not entry:
                problems.append(_problem(file, entry.line, entry.display,
                                         f"its form '{form}' collides with '{other.display}' "
                                         f"({other.category}, line {other.line}); a caption "
                                         "could not tell them apart"))
            owner.setdefault(key, entry)
