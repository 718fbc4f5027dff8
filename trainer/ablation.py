"""`adswap ablation`: the paper's four rows, same seed and budget, over several seeds,
with a paired difference and its 95% interval for every step.

Rows (each adds one thing to the one before):
  tags only        p_cap 0: the tags as text
  + tag-to-caption p_cap 1, one fixed caption per track (no View Dropout)
  + View Dropout   p_cap 1, a view drawn each time the track is seen
  + TextSwap       the above with TextSwap hard negatives on their curriculum
and, as options, the paper's sweeps as extra rows of the full method, each compared
with + TextSwap: other p_cap values (`p_caps`), and shards made from other captions
(`other_shards`, e.g. captions written with another View Dropout keep_prob).

Each (row, seed) trains into OUT/<row>-s<seed> and its last checkpoint (the same
budget for every row) is evaluated on the eval sets with one protocol seed, so every
run ranks the same queries in the same subsets; a finished one is skipped on a rerun,
an interrupted one resumes. A table per eval set (OUT/ablation.md for the first,
OUT/ablation-<set>.md for each other) reports text-to-music R@1, R@10 and median rank
(mean and spread over seeds) and, for each step, the difference from the row it builds
on with a 95% paired-bootstrap interval over queries and seeds (trainer/bootstrap.py).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from trainer.bootstrap import METRICS, describe
from trainer.config import AblationConfig, EvalConfig, load_config
from trainer.evaluate import evaluate, paired_runs
from trainer.train import train
from trainer.zero_shot import baseline_run

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
EVAL_SEED = 0  # one protocol seed for every run: paired runs need the same subsets


def _needs_eval(run: Path, config: AblationConfig) -> bool:
    """Whether the run lacks a result, under this protocol, on any of the eval sets."""
    for folder in config.eval_sets:
        found = _set_entry(run / "eval" / "report.json", folder)
        if found is None:
            return True
        name, entry = found
        protocol = entry.get("protocol", {})
        if protocol.get("seed") != EVAL_SEED or protocol.get("subsets") != config.subsets \
                or not (run / "eval" / name / "ranks.npz").exists():
            return True
    return False


def run_ablation(config: AblationConfig) -> list[dict]:
    """Trains and scores what is missing; returns the table on each eval set, in order."""
    out = Path(config.out)
    rows = config.rows()
    for row in rows:  # before any run starts, not after hours of training
        shards = next((o.split("=", 1)[1] for o in row.overrides
                       if o.startswith("data.shards=")), None)
        if row.name.startswith("textswap-") and shards and \
                not (Path(shards) / "sizes.json").exists():
            raise ValueError(f"other_shards: {shards} holds no shards (sizes.json); build "
                             "them with `adswap shards`")
    baselines = {spec: baseline_run(spec, out / "zero-shot") for spec in config.baselines}
    for run in baselines.values():
        if _needs_eval(run, config):
            evaluate(EvalConfig(run=run, sets=config.eval_sets, subsets=config.subsets,
                                seed=EVAL_SEED))
    for seed in config.seeds:
        for row in rows:
            run = out / f"{row.name}-s{seed}"
            if _set_entry(run / "eval" / "report.json", config.eval_sets[0]) is None:
                resume = (run / "checkpoints" / "last.pt").exists()
                train_config = load_config(
                    run / "config.yaml" if resume else config.train_config,
                    [*config.train_set, *row.overrides, f"run.seed={seed}", f"run.out={run}"])
                train(train_config, resume=resume)
            if _needs_eval(run, config):
                # the last checkpoint: every row gets the same training budget
                evaluate(EvalConfig(run=run, sets=config.eval_sets, subsets=config.subsets,
                                    seed=EVAL_SEED, checkpoint="last"))
    summaries = [_summarise(config, rows, baselines, folder) for folder in config.eval_sets]
    for i, summary in enumerate(summaries):
        stem = report_stem(i, summary)
        (out / f"{stem}.json").write_text(json.dumps(summary, indent=1))
        (out / f"{stem}.md").write_text(render(summary))
        plot(summary, out / f"{stem}.png")
    return summaries


def report_stem(index: int, summary: dict) -> str:
    """The files of the table on the index-th eval set: the first set's keep the plain
    names, each other set's carry the set's name (ablation-<set>.md)."""
    return "ablation" if index == 0 else f"ablation-{_UNSAFE.sub('_', summary['set_name'])}"


def _summarise(config: AblationConfig, rows: list, baselines: dict, folder: Path) -> dict:
    """The table on one eval set: every row's scores per seed, and each step's paired
    difference from the row it builds on (and from each zero-shot baseline)."""
    out = Path(config.out)
    entries = {(row.name, seed): _set_entry(out / f"{row.name}-s{seed}" / "eval" /
                                            "report.json", folder)
               for seed in config.seeds for row in rows}
    # every run was scored on the same set, so the first one's names and sizes hold for all
    set_name, first = entries[rows[0].name, config.seeds[0]]
    language = "en" if "en" in first["languages"] else next(iter(first["languages"]))
    results = {row.name: [{"seed": seed, **_scores(entries[row.name, seed][1], language)}
                          for seed in config.seeds] for row in rows}
    table = {}
    for spec, run in baselines.items():  # the zero-shot rows first
        _, entry = _set_entry(run / "eval" / "report.json", folder)
        runs = [{"seed": seed, **_scores(entry, language)} for seed in config.seeds]
        table[f"zero-shot-{run.name}"] = {
            "label": f"zero-shot {Path(spec[len('clap:'):]).name}", "runs": runs,
            "versus": None, "zero_shot": spec,
            **{f"{m}_{stat}": float(fn([r[m] for r in runs]))
               for m in METRICS for stat, fn in (("mean", np.mean), ("std", np.std))},
            # every trained row minus this one: the same queries, the baseline per seed
            "rows_versus": {row.name: paired_runs(
                [out / f"{row.name}-s{s}" for s in config.seeds], [run] * len(config.seeds),
                set_name, language, config.replicates) for row in rows}}
    for row in rows:
        runs = results[row.name]
        entry = {"label": row.label, "runs": runs, "versus": row.versus,
                 **{f"{m}_{stat}": float(fn([r[m] for r in runs]))
                    for m in METRICS for stat, fn in (("mean", np.mean), ("std", np.std))}}
        if row.versus is not None:
            entry["paired"] = paired_runs(
                [out / f"{row.name}-s{s}" for s in config.seeds],
                [out / f"{row.versus}-s{s}" for s in config.seeds], set_name, language,
                config.replicates)
        table[row.name] = entry
    measured = first["languages"][language]
    return {"seeds": list(config.seeds), "eval_set": str(folder),
            "set_name": set_name, "language": language,
            "subset_tracks": measured["subset_tracks"], "subsets": measured["subsets"],
            "queries": measured["queries"], "replicates": config.replicates,
            "config": str(config.train_config), "overrides": list(config.train_set),
            "rows": table}


def _scores(entry: dict, language: str) -> dict:
    metrics = entry["languages"][language]
    return {"R@10": metrics["t2m_R@10"]["mean"], "MR": metrics["t2m_MR"]["mean"],
            "R@1": metrics["t2m_R@1"]["mean"]}


def _sets(report_file: Path) -> dict:
    """The eval sets a run's report holds (it keeps every set it was evaluated on)."""
    if not report_file.exists():
        return {}
    return json.loads(report_file.read_text(encoding="utf-8"))["sets"]


def _set_entry(report_file: Path, folder: Path) -> tuple[str, dict] | None:
    """The run's results on one eval set, with the set's name, if it has them."""
    return next(((name, entry) for name, entry in _sets(report_file).items()
                 if entry["path"] == str(folder)), None)


def render(summary: dict) -> str:
    rows = summary["rows"]
    tracks = summary["subset_tracks"]
    seeds = summary["seeds"]
    over = "queries and seeds" if len(seeds) > 1 else "queries"
    lines = [f"Text-to-music retrieval on `{summary['eval_set']}` ({summary['language']}): "
             f"{summary['queries']} queries, {summary['subsets']} subset(s) of {tracks} "
             f"tracks (chance: R@10 {100 * min(10, tracks) / tracks:.1f}%, MR "
             f"{(tracks + 1) / 2:.0f}). Mean ± std over seeds {seeds}. Each step: the "
             f"difference from the row it builds on, with a 95% interval from a paired "
             f"bootstrap over {over} ({summary['replicates']} replicates); * = the interval "
             "excludes 0. Higher R@k and lower MR are better.", "",
             "| model | R@1 | R@10 | MR | step | Δ R@1 | Δ R@10 | Δ MR |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows.values():
        cells = [f"{row[f'{m}_mean']:.1f} ± {row[f'{m}_std']:.1f}" for m in METRICS]
        if row.get("zero_shot"):
            step = ["zero-shot, untrained", "", "", ""]
        elif row["versus"] is None:
            step = ["baseline", "", "", ""]
        else:
            step = [f"vs {rows[row['versus']]['label']}",
                    *(describe(row["paired"][m]) for m in METRICS)]
        lines.append(f"| {row['label']} | " + " | ".join(cells + step) + " |")
    lines += ["", "Steps, R@10:", ""]
    for row in rows.values():
        if row["versus"] is not None:
            paired = row["paired"]["R@10"]
            verdict = "resolved" if paired["excludes_zero"] else \
                "not resolved: the interval holds 0"
            lines.append(f"- {row['label']} vs {rows[row['versus']]['label']}: "
                         f"{describe(paired)} ({verdict})")
    for row in rows.values():
        for name, paired in row.get("rows_versus", {}).items():
            if name == next(iter(row["rows_versus"])):
                lines += ["", f"Against {row['label']} (`{row['zero_shot']}`), R@10:", ""]
            lines.append(f"- {rows[name]['label']}: {describe(paired['R@10'])}")
    return "\n".join(lines) + "\n"


def plot(summary: dict, path: Path) -> None:
    """R@10 per row (bars, a dot per seed), and each step's R@10 difference with its 95%
    interval (a bar crossing the dashed zero line is not resolved)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(summary["rows"].values())
    steps = [r for r in rows if r["versus"] is not None]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 0.5 * len(rows) + 2.5), dpi=100,
                                      gridspec_kw={"width_ratios": [1, 1.3]})
    left.barh(range(len(rows)), [r["R@10_mean"] for r in rows],
              xerr=[r["R@10_std"] for r in rows], color="#3b6ea5", capsize=4)
    for i, row in enumerate(rows):
        left.scatter([r["R@10"] for r in row["runs"]], [i] * len(row["runs"]),
                     color="black", s=10, zorder=3)
    left.set_yticks(range(len(rows)), [r["label"] for r in rows], fontsize=8)
    left.invert_yaxis()
    left.set_xlabel("text→music R@10 (%), mean ± std over seeds")
    labels = [f"{r['label']}\nvs {summary['rows'][r['versus']]['label']}" for r in steps]
    diffs = [r["paired"]["R@10"] for r in steps]
    colours = ["#2a7f3f" if d["excludes_zero"] and d["diff"] > 0 else
               "#b03a2e" if d["excludes_zero"] else "#777777" for d in diffs]
    for i, (d, colour) in enumerate(zip(diffs, colours, strict=True)):
        right.errorbar(d["diff"], i, xerr=[[d["diff"] - d["lo"]], [d["hi"] - d["diff"]]],
                       fmt="o", color=colour, capsize=4)
        right.annotate(describe(d), (d["hi"], i), xytext=(6, 0), textcoords="offset points",
                       fontsize=7, va="center", color=colour)
    right.axvline(0, color="black", linestyle="--", linewidth=1)
    right.set_yticks(range(len(steps)), labels, fontsize=7)
    right.invert_yaxis()
    right.set_xlabel("Δ R@10 (points), 95% paired-bootstrap interval")
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)
