"""Paired comparisons where users meet them: `adswap eval --compare` and `adswap
ablation` (rows, sweeps, the table with intervals, the plot)."""

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from adswap.cli import app
from schemas.config import ConfigError
from trainer.ablation import run_ablation
from trainer.config import AblationConfig

TINY = ["data.batch_size=8", "data.workers=1", "model.audio.clip_seconds=1.5",
        "model.audio.cnn.channels=[4,8]", "model.dim=32", "model.layers=1", "optim.epochs=1",
        "optim.warmup_epochs=1"]


@pytest.fixture(scope="module")
def eval_set(demo_catalog, tmp_path_factory):
    demo, _ = demo_catalog
    out = tmp_path_factory.mktemp("eval_set") / "demo-test"
    result = CliRunner().invoke(app, [
        "import-eval", "--file", str(demo / "reference_captions.parquet"), "--catalog",
        str(demo / "catalog.parquet"), "--out", str(out), "--clip-seconds", "1.5",
        "--workers", "1"])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def tags_eval_set(demo_catalog, tmp_path_factory):
    """The same test tracks, each queried with its own tag list (`adswap tag-queries`)."""
    demo, _ = demo_catalog
    work = tmp_path_factory.mktemp("tags_eval_set")
    runner = CliRunner()
    made = runner.invoke(app, ["tag-queries", "--catalog", str(demo / "catalog.parquet"),
                               "--out", str(work / "queries.parquet")])
    assert made.exit_code == 0, made.output
    result = runner.invoke(app, [
        "import-eval", "--file", str(work / "queries.parquet"), "--catalog",
        str(demo / "catalog.parquet"), "--out", str(work / "demo-test-tags"),
        "--clip-seconds", "1.5", "--workers", "1"])
    assert result.exit_code == 0, result.output
    return work / "demo-test-tags"


def test_rows_and_sweeps(tmp_path):
    shards = tmp_path / "keep-0.25"
    shards.mkdir()
    (shards / "sizes.json").write_text("{}")
    config = AblationConfig(eval_sets=(tmp_path,), p_caps=(0.0, 0.5, 1.0, 0.5),
                            other_shards=(f"keep_prob 0.25={shards}",))
    rows = {row.name: row for row in config.rows()}
    assert list(rows) == ["tags-only", "tag-to-caption", "view-dropout", "textswap",
                          "textswap-pcap0", "textswap-pcap0.5", "textswap-keep_prob-0.25"]
    assert [rows[n].versus for n in rows] == [None, "tags-only", "tag-to-caption",
                                              "view-dropout", "textswap", "textswap",
                                              "textswap"]
    assert rows["textswap-pcap0.5"].overrides[-1] == "data.p_cap=0.5"
    assert "swap.enabled=true" in rows["textswap-pcap0.5"].overrides
    assert rows["textswap-keep_prob-0.25"].overrides[-1] == f"data.shards={shards}"
    assert rows["textswap-keep_prob-0.25"].label == "+ TextSwap, keep_prob 0.25"
    assert AblationConfig(eval_sets=(tmp_path,)).seeds == (0, 1, 2)
    with pytest.raises(ConfigError) as err:
        AblationConfig(eval_sets=(tmp_path,), p_caps=(2.0,), other_shards=("no-label",),
                       replicates=5)
    text = str(err.value)
    for fragment in ("p_caps: 2.0", "LABEL=DIR", "replicates"):
        assert fragment in text
    missing = AblationConfig(eval_sets=(tmp_path,), out=tmp_path / "out",
                             other_shards=(f"x={tmp_path / 'missing'}",))
    with pytest.raises(ValueError, match="missing holds no shards"):
        run_ablation(missing)
    assert not (tmp_path / "out").exists()  # refused before any training


def test_eval_compare_gives_paired_intervals(demo_shards, eval_set, tmp_path):
    from trainer.config import load_config
    from trainer.train import train

    run = tmp_path / "a"
    train(load_config(None, [f"data.shards={demo_shards}", f"run.out={run}", *TINY]))
    twin = tmp_path / "twin"
    shutil.copytree(run / "checkpoints", twin / "checkpoints")
    shutil.copy(run / "config.yaml", twin / "config.yaml")
    result = CliRunner().invoke(app, ["eval", str(run), "--eval-set", str(eval_set),
                                      "--compare", str(twin), "--checkpoint", "last"])
    assert result.exit_code == 0, result.output
    assert f"vs {twin} on demo-test (en), 95% interval: R@1 +0.0 [+0.0, +0.0]" in result.output
    report = json.loads((run / "eval" / "report.json").read_text())
    paired = report["comparisons"][str(twin)]["demo-test"]["en"]
    assert all(paired[m]["diff"] == 0 and not paired[m]["excludes_zero"]
               for m in ("R@1", "R@10", "MR"))
    assert (twin / "eval" / "report.json").exists()  # the other run was scored too
    assert "## Paired comparison" in (run / "eval" / "report.md").read_text()
    with np.load(run / "eval" / "demo-test" / "ranks.npz") as saved:
        assert saved["en"].shape[1] == len(saved["en.queries"]) == report["sets"][
            "demo-test"]["captions"]


@pytest.mark.slow
def test_ablation_with_sweeps_writes_intervals_for_every_step(demo_shards, eval_set,
                                                              tags_eval_set, tmp_path):
    from tests.clap import tiny_clap

    out = tmp_path / "ablation"
    clap = tiny_clap(tmp_path / "tiny-clap", max_length_s=1.5)  # the eval set's clips
    args = ["ablation", "--eval-set", str(eval_set), "--eval-set", str(tags_eval_set),
            "--seeds", "0,1", "--out", str(out),
            "--p-caps", "0.5", "--other-shards", f"same shards={demo_shards}",
            "--replicates", "500", "--train-set", f"data.shards={demo_shards}",
            "--baseline", f"clap:{clap}"]
    for item in TINY:
        args += ["--train-set", item]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "ablation.json").read_text())
    assert len(summary["rows"]) == 7 and summary["seeds"] == [0, 1]
    zero_shot = next(iter(summary["rows"].values()))  # the zero-shot row comes first
    assert zero_shot["zero_shot"] == f"clap:{clap}" and zero_shot["label"] == "zero-shot tiny-clap"
    assert set(zero_shot["rows_versus"]) == set(summary["rows"]) - {next(iter(summary["rows"]))}
    for name, paired in zero_shot["rows_versus"].items():
        mean = np.mean([r["R@10"] for r in summary["rows"][name]["runs"]]) - \
            zero_shot["R@10_mean"]
        assert paired["R@10"]["diff"] == pytest.approx(mean)
    for row in summary["rows"].values():
        assert len(row["runs"]) == 2
        if row["versus"] is None:
            continue
        for m in ("R@1", "R@10", "MR"):
            paired = row["paired"][m]
            assert paired["lo"] <= paired["hi"]
            mean = np.mean([r[m] for r in row["runs"]]) - np.mean(
                [r[m] for r in summary["rows"][row["versus"]]["runs"]])
            assert paired["diff"] == pytest.approx(mean)
    table = (out / "ablation.md").read_text()
    assert "| + View Dropout |" in table and "vs + tag-to-caption |" in table
    assert "- + TextSwap, p_cap 0.5 vs + TextSwap: " in table
    assert "| + TextSwap, same shards |" in table
    assert table.index("| zero-shot tiny-clap |") < table.index("| tags only |")
    assert "zero-shot, untrained" in table and "Against zero-shot tiny-clap" in table
    assert (out / "ablation.png").stat().st_size > 10_000
    # the second eval set gets its own table from the same runs: other queries, same rows
    tags = json.loads((out / "ablation-demo-test-tags.json").read_text())
    assert tags["eval_set"] == str(tags_eval_set) and summary["eval_set"] == str(eval_set)
    assert tags["queries"] == pq.read_table(tags_eval_set.parent / "queries.parquet").num_rows
    assert list(tags["rows"]) == list(summary["rows"])
    for name, row in tags["rows"].items():
        if row.get("zero_shot"):
            continue
        for run in row["runs"]:
            report = json.loads((out / f"{name}-s{run['seed']}" / "eval" / "report.json")
                                .read_text())
            scored = report["sets"]["demo-test-tags"]["languages"]["en"]
            assert run["MR"] == scored["t2m_MR"]["mean"]
            assert run["R@10"] == scored["t2m_R@10"]["mean"]
    assert "| + TextSwap |" in (out / "ablation-demo-test-tags.md").read_text()
    assert (out / "ablation-demo-test-tags.png").stat().st_size > 10_000
    assert f"ablation on demo-test-tags: {out / 'ablation-demo-test-tags'}.md" in result.output
    # a rerun trains nothing and rescoring is skipped: the runs' reports stay as they were
    stamp = (out / "textswap-s1" / "eval" / "report.json").stat().st_mtime_ns
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert (out / "textswap-s1" / "eval" / "report.json").stat().st_mtime_ns == stamp
