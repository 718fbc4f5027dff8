"""The curation report: what each rule removed, per split and category, the
distributions curation decides on, and examples of rejects (report.json, report.md)."""

from __future__ import annotations

import json
from pathlib import Path

from schemas.atomic import write_text_atomic

EXAMPLES_PER_RULE = 5


def write_report(con, out: Path, stats, settings: dict, config) -> dict:
    per_split: dict = {}
    for split, kept, removed in con.execute(
            "SELECT split, count(*) FILTER (WHERE rule IS NULL), "
            "count(*) FILTER (WHERE rule IS NOT NULL) FROM rows GROUP BY split ORDER BY split"
    ).fetchall():
        per_split[split] = {"curated": kept, "rejected": removed}
    recall_bins = dict(con.execute(
        "SELECT least(floor(tag_recall * 10), 9) / 10 AS bin, count(*) FROM rows "
        "GROUP BY bin ORDER BY bin").fetchall())
    hallucinations = dict(con.execute(
        "SELECT least(len(hallucinated), 3) AS n, count(*) FROM rows GROUP BY n "
        "ORDER BY n"
    ).fetchall())
    by_category = dict(con.execute(
        "SELECT h.category, count(*) FROM (SELECT unnest(hallucinated) AS h FROM rows) "
        "GROUP BY h.category ORDER BY h.category").fetchall())
    views_per_track = dict(con.execute(
        "SELECT n, count(*) FROM (SELECT track_id, count(*) AS n FROM rows WHERE rule IS NULL "
        "GROUP BY track_id) GROUP BY n ORDER BY n").fetchall())
    examples = {}
    for (rule,) in con.execute("SELECT DISTINCT rule FROM rows WHERE rule IS NOT NULL "
                               "ORDER BY rule").fetchall():
        examples[rule] = [
            {"track_id": t, "view_id": v, "language": lang, "text": text, "reason": reason}
            for t, v, lang, text, reason in con.execute(
                "SELECT track_id, view_id, language, text, reason FROM rows WHERE rule = ? "
                "ORDER BY track_id, view_id LIMIT ?", [rule, EXAMPLES_PER_RULE]).fetchall()]
    report = {
        "totals": {"views": stats.views, "curated": stats.curated, "rejected": stats.rejected},
        "rejected_by_rule": stats.by_rule,
        "per_split": per_split,
        "tag_recall_histogram": {f"{b:.1f}": n for b, n in recall_bins.items()},
        "hallucinations_per_view": {("3+" if n == 3 else str(n)): c
                                    for n, c in hallucinations.items()},
        "hallucinated_by_category": by_category,
        "curated_views_per_track": {str(n): c for n, c in views_per_track.items()},
        "rejected_examples": examples,
        "settings": settings,
        "inputs": {"views": str(config.views), "catalog": str(config.catalog),
                   "eval_sets": [str(p) for p in config.eval_sets]},
        "seconds": stats.seconds,
    }
    write_text_atomic(out / "report.json", json.dumps(report, indent=2, sort_keys=True,
                                                      default=str) + "\n")
    write_text_atomic(out / "report.md", _markdown(report))
    return report


def _markdown(report: dict) -> str:
    t = report["totals"]
    lines = ["# Curation report", "",
             f"{t['views']} views in, {t['curated']} curated, {t['rejected']} rejected.", "",
             "| rule | rejected |", "|---|---|"]
    for rule, count in report["rejected_by_rule"].items():
        lines.append(f"| {rule} | {'off' if count is None else count} |")
    lines += ["", "| split | curated | rejected |", "|---|---|---|"]
    for split, counts in sorted(report["per_split"].items()):
        lines.append(f"| {split} | {counts['curated']} | {counts['rejected']} |")
    lines += ["", "Tag recall (share of views per bin): " + ", ".join(
        f"{b}: {n}" for b, n in report["tag_recall_histogram"].items()),
        "", "Hallucinated descriptors per view: " + ", ".join(
        f"{k}: {v}" for k, v in report["hallucinations_per_view"].items()),
        "", "Hallucinations by category: " + (", ".join(
            f"{k}: {v}" for k, v in report["hallucinated_by_category"].items()) or "none"),
        "", "## Rejected examples", ""]
    for rule, examples in report["rejected_examples"].items():
        lines.append(f"### {rule}")
        lines += [f"- `{e['track_id']}` view {e['view_id']} ({e['language']}): "
                  f"\"{e['text']}\" — {e['reason']}" for e in examples]
        lines.append("")
    return "\n".join(lines) + "\n"
