"""`adswap ablation`: the paper's four rows, same seed and budget, over several seeds.

Rows (each adds one thing to the one before):
  tags only        p_cap 0: the tags as text
  + tag-to-caption p_cap 1, one fixed caption per track (no View Dropout)
  + View Dropout   p_cap 1, a view drawn each time the track is seen
  + TextSwap       the above with TextSwap hard negatives on their curriculum
Each (row, seed) trains into OUT/<row>-s<seed> and its last checkpoint (the same
budget for every row) is evaluated on the eval sets; a finished one is skipped on a
rerun, an interrupted one resumes. The table reports
text-to-music R@10 and median rank on the first set, mean and spread over seeds.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from trainer.config import ABLATION_LABELS as LABELS
from trainer.config import ABLATION_ROWS as ROWS
from trainer.config import AblationConfig, EvalConfig, load_config
from trainer.evaluate import evaluate
from trainer.train import train


def run_ablation(config: AblationConfig) -> dict:
    out = Path(config.out)
    results: dict[str, list[dict]] = {row: [] for row in ROWS}
    for seed in config.seeds:
        for row, row_overrides in ROWS.items():
            run = out / f"{row}-s{seed}"
            report_file = run / "eval" / "report.json"
            first = _set_entry(report_file, config.eval_sets[0])
            if first is None:
                resume = (run / "checkpoints" / "last.pt").exists()
                train_config = load_config(
                    run / "config.yaml" if resume else config.train_config,
                    [*config.train_set, *row_overrides, f"run.seed={seed}", f"run.out={run}"])
                train(train_config, resume=resume)
                # the last checkpoint: every row gets the same training budget
                evaluate(EvalConfig(run=run, sets=config.eval_sets, subsets=config.subsets,
                                    seed=seed, checkpoint="last"))
                first = _set_entry(report_file, config.eval_sets[0])
            metrics = first["languages"].get("en") or next(iter(first["languages"].values()))
            results[row].append({"seed": seed, "R@10": metrics["t2m_R@10"]["mean"],
                                 "MR": metrics["t2m_MR"]["mean"],
                                 "R@1": metrics["t2m_R@1"]["mean"]})
    table = {row: {"label": LABELS[row], "runs": runs,
                   **{f"{m}_{stat}": float(fn([r[m] for r in runs]))
                      for m in ("R@10", "MR", "R@1")
                      for stat, fn in (("mean", np.mean), ("std", np.std))}}
             for row, runs in results.items()}
    summary = {"seeds": list(config.seeds), "eval_set": str(config.eval_sets[0]),
               "config": str(config.train_config), "overrides": list(config.train_set),
               "rows": table}
    (out / "ablation.json").write_text(json.dumps(summary, indent=1))
    (out / "ablation.md").write_text(render(summary))
    plot(summary, out / "ablation.png")
    return summary


def _set_entry(report_file: Path, folder: Path) -> dict | None:
    """The run's results on one eval set, if it has been evaluated on it (a run's report
    keeps every set it was evaluated on)."""
    if not report_file.exists():
        return None
    sets = json.loads(report_file.read_text(encoding="utf-8"))["sets"].values()
    return next((entry for entry in sets if entry["path"] == str(folder)), None)


def render(summary: dict) -> str:
    lines = [f"Text-to-music retrieval on `{summary['eval_set']}`, mean ± std over seeds "
             f"{summary['seeds']}.", "", "| model | R@1 | R@10 | MR |", "|---|---|---|---|"]
    for row in summary["rows"].values():
        lines.append(f"| {row['label']} | {row['R@1_mean']:.1f} ± {row['R@1_std']:.1f} | "
                     f"{row['R@10_mean']:.1f} ± {row['R@10_std']:.1f} | "
                     f"{row['MR_mean']:.1f} ± {row['MR_std']:.1f} |")
    return "\n".join(lines) + "\n"


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(summary["rows"].values())
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.bar(range(len(rows)), [r["R@10_mean"] for r in rows],
           yerr=[r["R@10_std"] for r in rows], color="#3b6ea5", capsize=4)
    for i, row in enumerate(rows):
        ax.scatter([i] * len(row["runs"]), [r["R@10"] for r in row["runs"]], color="black",
                   s=10, zorder=3)
    ax.set_xticks(range(len(rows)), [r["label"] for r in rows], fontsize=8)
    ax.set_ylabel("text→music R@10 (%)")
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)
