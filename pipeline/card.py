"""Data cards: data_cards/<dataset>/README.md in the Hugging Face dataset-card format.

Each stage contributes a section of facts, kept in data_cards/<dataset>/card.json; the
README is rendered from all sections present, so later stages (shards, training runs)
add theirs with `update_card` and the card grows without losing earlier facts.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from pipeline.tags import VocabularyCounter
from schemas.atomic import write_text_atomic
from schemas.catalog import CatalogConfig, catalog_format, iter_catalog, read_setting, tag_map_for
from schemas.config import Config, setting

SECTION_ORDER = ("catalog", "captions", "curation", "shards")


@dataclass(frozen=True)
class CardConfig(Config):
    dataset: str = setting(help="Dataset name: the card goes to CARDS_DIR/DATASET/README.md.")
    catalog: Path = setting(help="The source catalog.")
    views: Path | None = setting(None, help="Views folder from `captions`.")
    curated: Path | None = setting(None, help="Output folder of `curate`.")
    cards_dir: Path = setting(Path("data_cards"), help="Where data cards live.")
    read: CatalogConfig = read_setting()

    def check(self) -> list[str]:
        return [] if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]*", self.dataset) else \
            [f"dataset {self.dataset!r} must be a folder name (letters, digits, _ . -)"]


def update_card(folder: Path, section: str, facts: dict, key: str | None = None) -> Path:
    """Store one stage's facts and re-render the card. With `key`, the section keeps one
    entry per key (a training run, an evaluated run) and `facts` replace that entry."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "card.json"
    card = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    if key is None:
        card[section] = facts
    else:
        card.setdefault(section, {})[key] = facts
    write_text_atomic(path, json.dumps(card, indent=2, sort_keys=True) + "\n")
    write_text_atomic(folder / "README.md", render(folder.name, card))
    return folder / "README.md"


def write_card(config: CardConfig) -> Path:
    folder = Path(config.cards_dir) / config.dataset
    update_card(folder, "catalog", catalog_facts(config.catalog, config.read))
    if config.views is not None:
        update_card(folder, "captions", caption_facts(config.views))
    if config.curated is not None:
        update_card(folder, "curation", curation_facts(config.curated, folder))
    return folder / "README.md"


def catalog_facts(catalog: Path, config: CatalogConfig) -> dict:
    tracks = rejects = 0
    seconds = 0.0
    licenses: Counter = Counter()
    vocabulary: dict[str, Counter] = {c: Counter() for c in config.categories}
    tags = VocabularyCounter(config, tag_map_for(catalog, config))
    for track, _ in iter_catalog(catalog, config):
        if track is None:
            rejects += 1
            continue
        tracks += 1
        seconds += track.duration_s or 0.0
        licenses[track.license or "unknown"] += 1
        for category, tag in track.all_tags():
            vocabulary[category][tag] += 1
        tags.add(track)
    changes = tags.changes()
    return {"source": str(catalog), "tracks": tracks, "rejected_rows": rejects,
            "format": catalog_format(catalog, config),
            "audio_hours": round(seconds / 3600, 2), "licenses": dict(licenses.most_common()),
            "vocabulary": {c: dict(sorted(v.items())) for c, v in vocabulary.items()},
            "tag_map": changes if changes["tag_map"] or config.min_tag_tracks > 1 else None,
            "min_tag_tracks": config.min_tag_tracks}


def caption_facts(views: Path) -> dict:
    stats = [json.loads(p.read_text(encoding="utf-8"))
             for p in sorted((Path(views) / "_stats").glob("*.json"))]
    files = sorted(Path(views).glob("*.parquet"))
    columns = ["engine", "model_id", "model_revision", "template_id", "template_hash",
               "sampling", "language"]
    seen = {c: Counter() for c in columns}
    rows = 0
    for path in files:
        table = pq.read_table(path, columns=columns)
        rows += table.num_rows
        for c in columns:
            seen[c].update(table.column(c).to_pylist())
    return {"views": rows, "source": str(views),
            **{c: sorted(v) for c, v in seen.items()},
            "tokens": {"prompt": sum(s.get("prompt_tokens", 0) for s in stats),
                       "completion": sum(s.get("completion_tokens", 0) for s in stats)},
            "failures": sum(s.get("failures", 0) for s in stats)}


def curation_facts(curated: Path, folder: Path) -> dict:
    report = json.loads((Path(curated) / "report.json").read_text(encoding="utf-8"))
    table = pq.read_table(Path(curated) / "curated",
                          columns=["track_id", "text", "tag_recall", "split"])
    _plots(table, folder)
    per_split = Counter(table.column("split").to_pylist())
    return {"source": str(curated), "totals": report["totals"],
            "rejected_by_rule": report["rejected_by_rule"],
            "settings": report["settings"]["rules"],
            "split_views": dict(sorted(per_split.items())),
            "split_tracks": {s: len({t for t, sp in zip(table.column("track_id").to_pylist(),
                                                           table.column("split").to_pylist(),
                                                           strict=True) if sp == s})
                             for s in sorted(per_split)},
            "plots": ["views_per_track.png", "caption_words.png", "tag_recall.png"]}


def _plots(table, folder: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_track = Counter(table.column("track_id").to_pylist())
    words = [len(t.split()) for t in table.column("text").to_pylist()]
    recall = table.column("tag_recall").to_pylist()
    for name, values, label, bins in (
            ("views_per_track.png", list(per_track.values()), "curated views per track",
             range(0, max(per_track.values(), default=1) + 2)),
            ("caption_words.png", words, "words per caption", 30),
            ("tag_recall.png", recall, "tag recall (share of a view's tags named)",
             [i / 10 for i in range(11)])):
        fig, ax = plt.subplots(figsize=(5, 3), dpi=100)
        ax.hist(values, bins=bins, color="#3b6ea5")
        ax.set_xlabel(label)
        ax.set_ylabel("count")
        fig.tight_layout()
        fig.savefig(folder / name, metadata={"Software": None})
        plt.close(fig)


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                        (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")):
        if n < limit:
            return name
    return "n>10M"


def render(dataset: str, card: dict) -> str:
    lines = _front_matter(dataset, card) + [
        f"# {dataset}", "",
        "Music-text pairs for training retrieval models with Augment, Drop & "
        "Swap: tag-derived caption views, curated. Written by `adswap`.", ""]
    if card.get("catalog"):
        lines += _catalog_section(card["catalog"])
    if card.get("captions"):
        lines += _captions_section(card["captions"])
    if card.get("curation"):
        lines += _curation_section(card["curation"])
    if "shards" in card:
        lines += _shards_section(card["shards"])
    for section in sorted(set(card) - set(SECTION_ORDER)):
        lines += [f"## {section.capitalize()}", "", "```json",
                  json.dumps(card[section], indent=2, sort_keys=True), "```", ""]
    return "\n".join(lines)


def _front_matter(dataset: str, card: dict) -> list[str]:
    """The Hugging Face dataset card's YAML header."""
    catalog = card.get("catalog", {})
    captions = card.get("captions", {})
    licenses = list(catalog.get("licenses", {}))
    license_ = licenses[0].lower() if len(licenses) == 1 else "other"
    rows = card.get("curation", {}).get("totals", {}).get(
        "curated", captions.get("views", catalog.get("tracks", 0)))
    header = ["---", f"pretty_name: {dataset}", f"license: {license_}", "language:"]
    header += [f"- {lang}" for lang in captions.get("language", ["en"])]
    return header + ["size_categories:", f"- {_size_category(rows)}", "task_categories:",
                     "- text-retrieval", "- audio-classification", "tags:", "- music",
                     "- music-text-retrieval", "- captions", "---", ""]


def _catalog_section(catalog: dict) -> list[str]:
    lines = ["## Source catalog", "",
             f"- Catalog: `{catalog['source']}`: {catalog['tracks']} tracks "
             f"({catalog['rejected_rows']} rows rejected), {catalog['audio_hours']} h of "
             "audio where durations are known.",
             "- Licenses: " + ", ".join(f"{k} ({v})" for k, v in catalog["licenses"].items()),
             "", "### Tag vocabulary", ""]
    for category, tags in catalog["vocabulary"].items():
        lines.append(f"- **{category}** ({len(tags)}): " +
                     ", ".join(f"{t} ({n})" for t, n in tags.items()))
    lines.append("")
    if catalog.get("tag_map"):
        lines += _tag_map_section(catalog)
    return lines


def _captions_section(captions: dict) -> list[str]:
    return ["## Captions", "",
            f"- {captions['views']} views from `{captions['source']}`.",
            f"- Engine: {', '.join(captions['engine'])}; model: "
            f"{', '.join(captions['model_id'])} "
            f"(revision {', '.join(str(r) for r in captions['model_revision'])}).",
            f"- Prompt template: {', '.join(captions['template_id'])} "
            f"(hash {', '.join(captions['template_hash'])}).",
            f"- Sampling: {', '.join(captions['sampling'])}.",
            f"- Languages: {', '.join(captions['language'])}.",
            f"- Tokens: {captions['tokens']['prompt']} prompt, "
            f"{captions['tokens']['completion']} completion; "
            f"{captions['failures']} failed requests.", ""]


def _curation_section(curation: dict) -> list[str]:
    """Rows each rule removed (in the rules' run order), with its settings; the splits."""
    t = curation["totals"]
    lines = ["## Curation", "",
             f"{t['views']} views in, {t['curated']} kept, {t['rejected']} rejected, "
             f"from `{curation['source']}`.", "", "| rule | settings | rows removed |",
             "|---|---|---|"]
    from pipeline.curate.rules_config import RULES

    order = [rule.name for rule in RULES]
    for rule, removed in sorted(curation["rejected_by_rule"].items(),
                                key=lambda item: order.index(item[0])
                                if item[0] in order else len(order)):
        settings = {k: v for k, v in curation["settings"].get(rule, {}).items()
                    if k != "enabled"}
        shown = ", ".join(f"{k}={v}" for k, v in settings.items()) or "-"
        lines.append(f"| {rule} | {shown} | {'off' if removed is None else removed} |")
    lines += ["", "### Splits", "", "| split | tracks | views |", "|---|---|---|"]
    for split, views in curation["split_views"].items():
        lines.append(f"| {split} | {curation['split_tracks'][split]} | {views} |")
    return lines + ["", "![views per track](views_per_track.png) "
                    "![caption lengths](caption_words.png) ![tag recall](tag_recall.png)", ""]


def _tag_map_section(catalog: dict) -> list[str]:
    """Which tag map the catalog was read with and what it changed (raw tags counted
    once each; see `adswap tags` for the whole vocabulary report)."""
    changes = catalog["tag_map"]
    source = changes["tag_map"]
    lines = ["### Tag map", "",
             (f"Read as {catalog.get('format', 'adswap')} with the tag map `{source}` "
              f"(sha256 {changes['tag_map_sha256'][:16]})" if source else
              f"Read as {catalog.get('format', 'adswap')} without a tag map")
             + f"; tags on fewer than {catalog.get('min_tag_tracks', 1)} tracks dropped. "
             f"{changes['raw_tags']} distinct raw tags:", "",
             "| change | raw tags | examples |", "|---|---|---|"]
    for kind, n in changes["counts"].items():
        shown = ", ".join(f"{e['raw']}" + (f" -> {e['tag']}" if e["tag"] and kind not in
                                              ("unmapped", "rare") else "")
                          for e in changes["examples"].get(kind, [])[:5])
        lines.append(f"| {kind} | {n} | {shown} |")
    return lines + [""]


def _shards_section(shards: dict) -> list[str]:
    t, clips = shards["totals"], shards["settings"]["clips"]
    lines = ["## Shards", "",
             f"{t['samples']} samples from {t['tracks']} tracks in {t['shards']} WebDataset "
             f"shards, {t['audio_hours']:.2f} h of audio, {t['bytes'] / 1e6:.1f} MB, in "
             f"`{shards['source']}`. Clips: {clips['clip_seconds']:g} s at "
             f"{clips['sample_rate']} Hz, {clips['audio_format'].upper()}, position "
             f"{clips['position']}.", "",
             "| split | shards | tracks | samples | hours | clips per track |",
             "|---|---|---|---|---|---|"]
    for split, e in shards["splits"].items():
        per_track = ", ".join(f"{k}: {v}" for k, v in e["clips_per_track"].items())
        lines.append(f"| {split} | {e['shards']} | {e['tracks']} | {e['samples']} | "
                     f"{e['audio_hours']:.2f} | {per_track} |")
    rejects = ", ".join(f"{k} ({n})" for k, n in shards["rejects"].items()) or "none"
    return lines + ["", f"Tracks left out: {rejects}.", ""]
