"""The harness's measurements, its results file and its CLI, and the performance page
it feeds."""

import json
import sys
import time

import pytest
from typer.testing import CliRunner

from bench import descriptor_matching
from bench.harness import command, measure, record, run_measured
from bench.registry import BENCHES
from bench.report import COMMAND, PAGE, render


def test_run_measured_sees_a_grandchilds_memory_and_the_tree_cpu():
    # a child that starts a grandchild holding 200 MB: the tree's peak includes it
    code = ("import subprocess, sys; subprocess.run([sys.executable, '-c', "
            "'b = bytearray(200 * 2**20); import time; time.sleep(0.5)']); print('done')")
    out, measured = run_measured([sys.executable, "-c", code], sample_s=0.02)
    assert out.strip() == "done"
    assert measured.peak_rss_mb > 200 and measured.cpu_s > 0
    assert measured.wall_s >= 0.5


def test_run_measured_says_how_a_child_failed():
    with pytest.raises(RuntimeError, match="ZeroDivisionError"):
        run_measured([sys.executable, "-c", "1 / 0"])


def test_measure_takes_the_peak_of_this_process():
    with measure(sample_s=0.01) as measured:
        block = bytearray(150 * 2**20)
        for i in range(0, len(block), 4096):  # touched, so resident
            block[i] = 1
        time.sleep(0.1)  # held for several samples, then freed before the block ends
        del block
    assert measured.peak_rss_mb > 150 and measured.wall_s > 0


def test_record_refuses_a_ratio_that_is_not_a_figure(tmp_path):
    settings = descriptor_matching.Settings()
    with pytest.raises(ValueError, match="ratio_to_nothing"):
        record("x", settings, {"a": 1}, {"ratio_to_nothing": "?"}, results=tmp_path)
    path = record("x", settings, {"a": {"ratio": 0.5}}, {"a.ratio": "the b"}, "s",
                  results=tmp_path)
    body = json.loads(path.read_text())
    assert body["baseline"] == {"a.ratio": {"ratio": 0.5, "to": "the b"}}
    assert body["settings"]["tags"] == 200 and "cpu" in body["machine"]


def test_a_bench_cli_lists_its_settings_and_every_bad_one():
    app = command("descriptor_matching", descriptor_matching)
    shown = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert shown.exit_code == 0
    for flag in ("--tags", "--captions", "--rounds", "--config", "--set", "--results-dir"):
        assert flag in shown.output
    bad = CliRunner().invoke(app, ["--tags", "0", "--set", "rounds=0", "--set", "nope=1"])
    assert bad.exit_code == 1
    assert "unknown setting 'nope'" in bad.output


def test_benches_do_not_join_the_adswap_commands():
    from adswap.config_cli import COMMANDS

    before = dict(COMMANDS)
    command("train", BENCHES["train"].load())
    assert COMMANDS == before


def test_the_performance_page_is_what_the_results_render():
    assert PAGE.exists(), f"{PAGE} is missing: run `{COMMAND}`"
    assert PAGE.read_text(encoding="utf-8") == render(), \
        f"docs/performance.md is stale (bench/results changed): run `{COMMAND}`"


def test_a_bench_without_results_says_which_command_makes_them(tmp_path):
    page = render(tmp_path)
    for entry in BENCHES.values():
        assert f"No results yet: `{entry.venv}/bin/python -m bench {entry.name}` " in page
