"""`adswap tags`: the vocabulary report, tag-level curation before any caption is made.

Reads a catalog as every stage does (format, tag map, min_tag_tracks) and writes into
the output folder:
  tags.json, tags.md     tags per category with their track counts and raw spellings;
                         tracks per number of tags in each category; rare tags; what
                         the tag map changed (renamed, merged, moved, dropped) and the
                         tags it does not know; suspected duplicates
  starter_map.yaml       a tag map covering every raw tag, with suggestions marked, to
                         edit and pass back with --tag-map

Suspected duplicates are tags of one category that differ only by case, spaces,
hyphens or a plural ending, and tags written the same in two categories (which a
caption cannot tell apart). The data card uses the same counts for its tag map
section.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from schemas.atomic import write_text_atomic
from schemas.catalog import (
    DEFAULT_CATEGORIES,
    CatalogConfig,
    Track,
    catalog_format,
    iter_catalog,
    read_setting,
    tag_map_for,
)
from schemas.catalog_readers import READERS
from schemas.config import Config, setting
from schemas.tagmap import (
    RAW_SEPARATOR,
    Outcome,
    TagMap,
    load_tag_map,
    normalise_tag,
    surface_key,
)

EXAMPLES = 20
_NEGATION = re.compile(r"^(no|not|non|without)\s+\S")
_SAFE_YAML = re.compile(r"[A-Za-z0-9][^:#\[\]{},\"]*[^\s:#\[\]{},\"]|[A-Za-z0-9]")
_YAML_WORDS = {"yes", "no", "true", "false", "on", "off", "null", "y", "n", "~"}


@dataclass(frozen=True)
class TagsConfig(Config):
    catalog: Path = setting(help="The catalog whose vocabulary to report.", argument=True)
    out: Path = setting(Path("tag_report"), help="Folder for tags.md, tags.json and "
                        "starter_map.yaml.")
    read: CatalogConfig = read_setting()
    rare_tracks: int = setting(5, help="Tags on fewer tracks than this are listed as rare "
                               "(at least min_tag_tracks, which drops them).")

    def check(self) -> list[str]:
        return [] if self.rare_tracks >= 1 else ["rare_tracks must be >= 1"]


class VocabularyCounter:
    """Counts, track by track, every raw tag and where the tag map sent it."""

    def __init__(self, config: CatalogConfig, tag_map: TagMap | None):
        self.config, self.tag_map = config, tag_map
        self.tracks = 0
        self.raw = Counter()           # (raw category, raw key) -> tracks
        self.spelled: dict[tuple[str, str], str] = {}  # first spelling of each raw key
        self.outcome: dict[tuple[str, str], Outcome] = {}
        self.canonical = Counter()     # (category, key) -> tracks, before min_tag_tracks
        self.display: dict[tuple[str, str], str] = {}
        self.kept = Counter()          # (category, key) -> tracks, as stages see them
        self.per_track = {c: Counter() for c in config.categories}
        self._forms: dict[tuple[str, str], list[tuple[str, str]]] | None = None

    def add(self, track: Track) -> None:
        self.tracks += 1
        self._forms = None
        targets = set()
        for raw_category, values in (track.raw_tags or track.tags).items():
            for value in dict.fromkeys(normalise_tag(v) for v in values):
                key = (raw_category, value)
                self.raw[key] += 1
                self.spelled.setdefault(key, value)
                outcome = self.outcome.get(key)
                if outcome is None:
                    outcome = self.outcome[key] = self._resolve(raw_category, value)
                if outcome.kind != "dropped":
                    target = (outcome.category, normalise_tag(outcome.tag))
                    self.display.setdefault(target, outcome.tag)
                    targets.add(target)
        self.canonical.update(targets)
        for category, tags in track.tags.items():
            self.per_track[category][len(tags)] += 1
            self.kept.update((category, normalise_tag(t)) for t in tags)

    def _resolve(self, raw_category: str, tag: str) -> Outcome:
        if self.tag_map is None:
            return Outcome("unmapped", raw_category, tag)
        return self.tag_map.resolve(raw_category, tag)

    def change(self, key: tuple[str, str]) -> str:
        """What happened to one raw tag, the first that applies: dropped, unused (its
        category is not among the run's), rare (min_tag_tracks), unmapped, merged (with
        other raw tags), moved (to another category), renamed, unchanged."""
        outcome = self.outcome[key]
        if outcome.kind == "dropped":
            return "dropped"
        target = (outcome.category, normalise_tag(outcome.tag))
        if outcome.category not in self.config.categories:
            return "unused"
        if self.canonical[target] < self.config.min_tag_tracks:
            return "rare"
        if outcome.kind == "unmapped":
            return "unmapped"
        if len(self.raw_forms()[target]) > 1:
            return "merged"
        if outcome.category != key[0]:
            return "moved"
        return "renamed" if outcome.tag != key[1] else "unchanged"

    def raw_forms(self) -> dict[tuple[str, str], list[tuple[str, str]]]:
        """(category, key) of each tag -> the raw tags that became it."""
        if self._forms is None:
            self._forms = defaultdict(list)
            for key, outcome in self.outcome.items():
                if outcome.kind != "dropped":
                    self._forms[(outcome.category, normalise_tag(outcome.tag))].append(key)
        return self._forms

    def changes(self) -> dict:
        """The tag map's effect, for the data card and the report."""
        counts = Counter()
        examples: dict[str, list] = defaultdict(list)
        for key in sorted(self.raw, key=lambda k: (-self.raw[k], k)):
            kind = self.change(key)
            counts[kind] += 1
            if kind != "unchanged" and len(examples.get(kind, ())) < EXAMPLES:
                outcome = self.outcome[key]
                examples[kind].append({
                    "raw": f"{key[0]}{RAW_SEPARATOR}{self.spelled[key]}",
                    "tag": None if outcome.kind == "dropped" else
                    f"{outcome.tag} ({outcome.category})", "tracks": self.raw[key]})
        tag_map = self.tag_map
        return {"tag_map": None if tag_map is None else tag_map.source,
                "tag_map_sha256": None if tag_map is None else tag_map.sha256,
                "raw_tags": len(self.raw), "counts": dict(sorted(counts.items())),
                "examples": {k: v for k, v in sorted(examples.items())}}

    def duplicates(self) -> list[dict]:
        """Canonical tags a caption could not tell apart, or that only a plural separates."""
        by_form: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for target in self.canonical:
            by_form[surface_key(target[1])].append(target)
        groups, seen = [], set()
        for form, targets in sorted(by_form.items()):
            members = list(targets)
            for singular in (form[:-1], form[:-2]) if form.endswith("s") else ():
                if singular in by_form and len(singular) > 2:
                    members += by_form[singular]
            members = sorted(set(members))
            if len(members) > 1 and tuple(members) not in seen:
                seen.add(tuple(members))
                categories = {c for c, _ in members}
                groups.append({
                    "tags": [f"{self.display[m]} ({m[0]})" for m in members],
                    "tracks": [self.canonical[m] for m in members],
                    "why": "the same words in two categories" if len(categories) > 1
                    else "differ only by case, spaces, hyphens or a plural"})
        return groups

    def report(self, rare_tracks: int) -> dict:
        categories: dict[str, list] = {c: [] for c in self.config.categories}
        forms = self.raw_forms()
        for target, n in sorted(self.canonical.items(), key=lambda kv: (-kv[1], kv[0])):
            if target[0] in categories:
                categories[target[0]].append({
                    "tag": self.display[target], "tracks": n, "kept_tracks": self.kept[target],
                    "raw": sorted(f"{c}{RAW_SEPARATOR}{self.spelled[(c, t)]}"
                                  for c, t in forms[target])})
        threshold = max(rare_tracks, self.config.min_tag_tracks)
        rare = [{"tag": f"{self.display[t]} ({t[0]})", "tracks": n}
                for t, n in sorted(self.canonical.items(), key=lambda kv: (kv[1], kv[0]))
                if n < threshold and t[0] in self.config.categories]
        unmapped = [{"raw": f"{k[0]}{RAW_SEPARATOR}{self.spelled[k]}", "tracks": n}
                    for k, n in sorted(self.raw.items(), key=lambda kv: (-kv[1], kv[0]))
                    if self.outcome[k].kind == "unmapped"]
        unused = Counter()
        for key, n in self.raw.items():
            if self.change(key) == "unused":
                unused[self.outcome[key].category] += n
        return {
            "tracks": self.tracks,
            "categories": categories,
            "tags_per_track": {c: dict(sorted(h.items())) for c, h in self.per_track.items()},
            "rare": {"below_tracks": threshold, "tags": rare},
            "unmapped": unmapped,
            "unused_categories": dict(unused),
            "duplicates": self.duplicates(),
            "changes": self.changes(),
        }


def run(config: TagsConfig) -> dict:
    """Read the catalog, write tags.json, tags.md and starter_map.yaml; return the report."""
    tag_map = tag_map_for(config.catalog, config.read)
    counter = VocabularyCounter(config.read, tag_map)
    rejected, examples = 0, []
    for track, problems in iter_catalog(config.catalog, config.read):
        if track is None:
            rejected += 1
            if len(examples) < EXAMPLES:
                examples += [str(p) for p in problems]
            continue
        counter.add(track)
    if counter.tracks == 0:
        raise ValueError(f"catalog {config.catalog} has no valid track ({rejected} rejected "
                         "rows); run `adswap validate` to see why")
    report = counter.report(config.rare_tracks)
    report.update(catalog=str(config.catalog),
                  format=catalog_format(config.catalog, config.read),
                  rejected_rows=rejected, rejected_examples=examples)
    out = Path(config.out)
    write_text_atomic(out / "tags.json", json.dumps(report, indent=2, sort_keys=True) + "\n")
    write_text_atomic(out / "tags.md", render(report))
    write_text_atomic(out / "starter_map.yaml", starter_map(counter, config.catalog))
    return report


def render(report: dict) -> str:
    changes = report["changes"]
    lines = [f"# Tag vocabulary of `{report['catalog']}`", "",
             f"{report['tracks']} tracks ({report['rejected_rows']} rows rejected), format "
             f"{report['format']}, tag map: {changes['tag_map'] or 'none'}.", "",
             "## Tags per category", ""]
    for category, tags in report["categories"].items():
        lines.append(f"- **{category}** ({len(tags)}): " + ", ".join(
            f"{t['tag']} ({t['tracks']})" for t in tags))
    lines += ["", "## Tracks per number of tags", "",
              "| category | " + " | ".join(f"{n} tags" for n in range(6)) + " | more |",
              "|---|" + "---|" * 7]
    for category, histogram in report["tags_per_track"].items():
        counts = [histogram.get(n, 0) for n in range(6)]
        more = sum(v for k, v in histogram.items() if k > 5)
        lines.append(f"| {category} | " + " | ".join(str(c) for c in counts) + f" | {more} |")
    rare = report["rare"]
    lines += ["", f"## Rare tags (on fewer than {rare['below_tracks']} tracks)", "",
              ", ".join(f"{t['tag']} ({t['tracks']})" for t in rare["tags"]) or "none", "",
              "## What the tag map changed", "",
              "| change | raw tags |", "|---|---|"]
    lines += [f"| {kind} | {n} |" for kind, n in changes["counts"].items()]
    for kind, examples in changes["examples"].items():
        lines += ["", f"{kind}: " + ", ".join(
            f"`{e['raw']}`" + (f" -> {e['tag']}" if e["tag"] and kind != "unmapped" else "")
            for e in examples)]
    if report["unused_categories"]:
        lines += ["", "Tags in categories this run does not use (add them to --categories "
                  "to keep them): " + ", ".join(f"{c} ({n} uses)" for c, n in
                                                  report["unused_categories"].items())]
    lines += ["", "## Unmapped tags (passed through as they are)", "",
              ", ".join(f"`{t['raw']}` ({t['tracks']})" for t in report["unmapped"]) or "none",
              "", "## Suspected duplicates", ""]
    lines += [f"- {', '.join(d['tags'])}: {d['why']} (tracks: "
              f"{', '.join(str(n) for n in d['tracks'])})" for d in report["duplicates"]] \
        or ["none"]
    if report["rejected_examples"]:
        lines += ["", "## Rejected rows (first problems)", ""]
        lines += [f"- {p}" for p in report["rejected_examples"]]
    lines += ["", "A starter tag map covering every raw tag is in `starter_map.yaml`: edit "
              "it and pass it with `--tag-map`.", ""]
    return "\n".join(lines)


# --- the starter map ---------------------------------------------------------------

def starter_map(counter: VocabularyCounter, catalog: Path) -> str:
    """A tag map covering every raw tag of the catalog: what the current map does, and
    for tags it does not know, suggestions (display forms from the bundled maps, joined
    words split, spellings merged, negations dropped), each marked as such."""
    categories = counter.config.categories
    declared = list(counter.tag_map.declared) if counter.tag_map else []
    bundled = _bundled_maps(categories)
    entries, drops = _starter_entries(counter, declared, bundled, _lexicon(counter, bundled))
    _merge_duplicates(entries)
    drops += _split_collisions(entries, counter)
    _set_refs(entries, set(categories) | set(declared))
    return _starter_yaml(counter, catalog, declared, entries, drops)


def _starter_entries(counter: VocabularyCounter, declared: list[str], bundled: list[TagMap],
                     lexicon: set[str]) -> tuple[dict[tuple[str, str], dict],
                                                 list[tuple[str, str]]]:
    """Every raw tag, most used first, as an entry of its (category, key) target or a
    drop with its reason; a target category that is a valid name is appended to
    `declared`."""
    categories = counter.config.categories
    entries: dict[tuple[str, str], dict] = {}  # (category, key) -> display, raw, notes
    drops: list[tuple[str, str]] = []
    for key in sorted(counter.raw, key=lambda k: (-counter.raw[k], k)):
        raw_category, tag = key
        outcome, note = counter.outcome[key], None
        if outcome.kind == "unmapped":
            outcome, note = _suggest(raw_category, tag, outcome, bundled, lexicon, categories)
        if outcome.kind == "dropped":
            drops.append((f"{raw_category}{RAW_SEPARATOR}{counter.spelled[key]}",
                          note or "dropped by the current map"))
            continue
        if outcome.category not in categories and outcome.category not in declared:
            if re.fullmatch(r"[a-z][a-z0-9_]*", outcome.category):
                declared.append(outcome.category)
            else:
                drops.append((f"{raw_category}{RAW_SEPARATOR}{counter.spelled[key]}",
                              f"raw category '{raw_category}' is not a category name: "
                              "list this tag under the category it belongs to"))
                continue
        target = (outcome.category, normalise_tag(outcome.tag))
        entry = entries.setdefault(target, {"display": outcome.tag, "raw": [], "notes": [],
                                            "tracks": 0})
        entry["tracks"] += counter.raw[key]
        entry["raw"].append(key)
        if note:
            entry["notes"].append(f"{tag}: {note}")
    return entries, drops


def _set_refs(entries: dict[tuple[str, str], dict], known: set[str]) -> None:
    """Each entry's raw refs as the map writes them: plain where the raw category is the
    entry's own (or no category) and the tag names one entry only, else qualified."""
    plain_targets = defaultdict(set)  # a plain raw tag under two entries would be ambiguous
    for target, entry in entries.items():
        for raw_category, tag in entry["raw"]:
            if raw_category == target[0] or raw_category not in known:
                plain_targets[tag].add(target)
    for target, entry in entries.items():
        refs = []
        for raw_category, tag in entry["raw"]:
            plain = (raw_category == target[0] or raw_category not in known) \
                and len(plain_targets[tag]) == 1
            if plain and tag == target[1]:
                continue  # the canonical tag's own name needs no ref
            refs.append(tag if plain else f"{raw_category}{RAW_SEPARATOR}{tag}")
        entry["refs"] = refs


def _starter_yaml(counter: VocabularyCounter, catalog: Path, declared: list[str],
                  entries: dict[tuple[str, str], dict], drops: list[tuple[str, str]]) -> str:
    categories = counter.config.categories
    moves = counter.tag_map.moves if counter.tag_map else {}
    lines = [f"# Starter tag map for {catalog}, written by `adswap tags` from "
             f"{counter.tracks} tracks.",
             "# Each canonical tag is written as its display form; `raw` lists the catalog "
             "spellings merged into it.",
             "# Lines marked 'suggested' are guesses: check them, then pass this file with "
             "--tag-map.", ""]
    if declared:
        lines.append(f"categories: [{', '.join(declared)}]")
    if moves:
        lines.append("move: {" + ", ".join(f"{_yaml(s)}: {_yaml(t)}" for s, t in
                                           sorted(moves.items())) + "}")
    for category in [*categories, *declared]:
        section = sorted(((k, e) for k, e in entries.items() if k[0] == category),
                         key=lambda item: item[1]["display"].lower())
        if not section:
            continue
        lines += ["", f"{category}:"]
        for _, entry in section:
            body = f"{{raw: [{', '.join(_yaml(r) for r in dict.fromkeys(entry['refs']))}]}}" \
                if entry["refs"] else ""
            comment = f"  # tracks: {entry['tracks']}" + \
                (f"; suggested: {'; '.join(entry['notes'])}" if entry["notes"] else "")
            lines.append(f"  {_yaml(entry['display'])}: {body}".rstrip() + comment)
    if drops:
        lines += ["", "drop:"]
        lines += [f"  - {_yaml(raw)}  # {why}" for raw, why in drops]
    return "\n".join(lines) + "\n"


def _suggest(raw_category: str, tag: str, outcome: Outcome, bundled: list[TagMap],
             lexicon: set[str], categories: tuple[str, ...]) -> tuple[Outcome, str | None]:
    if _NEGATION.match(tag):
        return Outcome("dropped", None, None), "suggested drop: a negation names no property"
    for tag_map in bundled:
        found = tag_map.resolve(raw_category, tag)
        if found.kind == "mapped" and (found.category == outcome.category
                                       or outcome.category not in categories):
            if found.category in categories and (found.category, found.tag) != (
                    outcome.category, tag):
                return found, f"as in the bundled {Path(tag_map.source).stem} map"
    words = _split_words(tag, lexicon)
    if words:
        return Outcome("mapped", outcome.category, words), "joined words split"
    return outcome, None


def _bundled_maps(categories: tuple[str, ...]) -> list[TagMap]:
    """The bundled maps, as a source of display forms for tags no map knows yet."""
    known = tuple(dict.fromkeys([*categories, *DEFAULT_CATEGORIES]))
    return [load_tag_map(reader.tag_map, known) for reader in READERS.values()
            if reader.tag_map is not None]


def _lexicon(counter: VocabularyCounter, bundled: list[TagMap]) -> set[str]:
    """Words a joined tag may be made of: those of the bundled maps' display forms and
    of the catalog's own spaced tags."""
    words = set()
    for tag_map in bundled:
        for canonical in tag_map.tags:
            words.update(re.findall(r"[a-z]+", canonical.display.lower()))
    for _, tag in counter.raw:
        words.update(w for w in re.findall(r"[a-z]+", tag) if " " in tag or "-" in tag)
    return {w for w in words if len(w) > 2}


def _split_words(tag: str, lexicon: set[str]) -> str | None:
    """'drummachine' -> 'drum machine' when every piece is a known word (2 or 3 pieces,
    the split with the longest first word)."""
    if not re.fullmatch(r"[a-z]{6,}", tag):
        return None
    for i in range(len(tag) - 3, 2, -1):
        head, tail = tag[:i], tag[i:]
        if head in lexicon:
            if tail in lexicon:
                return f"{head} {tail}"
            for j in range(len(tail) - 3, 2, -1):
                if tail[:j] in lexicon and tail[j:] in lexicon:
                    return f"{head} {tail[:j]} {tail[j:]}"
    return None


def _merge_duplicates(entries: dict[tuple[str, str], dict]) -> None:
    """Entries of one category that a caption cannot tell apart, or only a plural
    ending separates, become one: the one on most tracks, preferring spaced words."""
    forms = {(k[0], surface_key(k[1])) for k in entries}
    groups: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
    for key in entries:
        form = surface_key(key[1])
        for ending in ("es", "s"):
            if form.endswith(ending) and (key[0], form[:-len(ending)]) in forms:
                form = form[:-len(ending)]
                break
        groups[(key[0], form)].append(key)
    for members in groups.values():
        if len(members) < 2:
            continue
        keep = max(members, key=lambda k: (entries[k]["tracks"], " " in k[1], k[1]))
        for key in members:
            if key != keep:
                entry = entries.pop(key)
                entries[keep]["raw"] += entry["raw"]
                entries[keep]["tracks"] += entry["tracks"]
                entries[keep]["notes"].append(f"suggested merge of '{entry['display']}'")


def _split_collisions(entries: dict[tuple[str, str], dict], counter: VocabularyCounter
                      ) -> list[tuple[str, str]]:
    """Tags written alike in two categories ('ambient' genre and mood) cannot both be
    descriptors: the one on fewer tracks is suggested for dropping (or moving)."""
    owner: dict[str, tuple[str, str]] = {}
    drops = []
    for key in sorted(entries, key=lambda k: (-entries[k]["tracks"], k)):
        form = surface_key(key[1])
        if form not in owner:
            owner[form] = key
            continue
        entry, other = entries.pop(key), owner[form]
        for raw_category, tag in entry["raw"]:
            drops.append((f"{raw_category}{RAW_SEPARATOR}{counter.spelled[(raw_category, tag)]}",
                          f"suggested drop: '{entry['display']}' is also a {other[0]} tag "
                          f"({entries[other]['tracks']} tracks) and captions cannot tell "
                          "them apart; move or rename one"))
    return drops


def _yaml(text: str) -> str:
    """A YAML scalar: plain when safe, else a JSON string (valid YAML)."""
    if _SAFE_YAML.fullmatch(text) and text.lower() not in _YAML_WORDS:
        return text
    return json.dumps(text, ensure_ascii=False)
