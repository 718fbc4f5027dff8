"""Every registered bench on its smoke settings, through its CLI: it runs, and the results
file it writes holds the commit, the machine, the settings given and figures whose
ratios name their baselines. The vLLM benches run where vLLM is (`pytest -m llm` in
.venv-llm)."""

import dataclasses
import importlib.util
import json
import re

import pytest
from typer.testing import CliRunner

from bench.harness import command
from bench.registry import BENCHES, ROOT
from schemas.config import load_config


def _marks(entry):
    if entry.venv == ".venv-llm":
        return [pytest.mark.llm, pytest.mark.skipif(
            importlib.util.find_spec("vllm") is None,
            reason=f"{entry.name} needs vLLM: run it in .venv-llm (pytest -m llm)")]
    if entry.name == "demo_stages":  # its captions target runs .venv-llm's adswap
        return [pytest.mark.skipif(not (ROOT / ".venv-llm" / "bin" / "adswap").exists(),
                                   reason="demo_stages' make captions needs .venv-llm "
                                   "(make setup)")]
    return []


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """One work folder for the module: shards, train and search share its demo."""
    return tmp_path_factory.mktemp("bench-work")


@pytest.fixture
def keep_torch_threads():
    """A bench may set torch's threads (search takes 2); the tests after it keep theirs."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", [pytest.param(name, marks=_marks(entry))
                                  for name, entry in BENCHES.items()])
def test_bench_runs_on_its_smoke_settings_and_records(name, work, tmp_path,
                                                       keep_torch_threads):
    entry = BENCHES[name]
    module = entry.load()
    overrides = list(entry.smoke)
    if "work" in {f.name for f in dataclasses.fields(module.Settings)}:
        overrides.append(f"work={work}")
    args = [item for override in overrides for item in ("--set", override)]
    result = CliRunner().invoke(command(name, module),
                                [*args, "--results-dir", str(tmp_path)])
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"

    body = json.loads((tmp_path / f"{name}.json").read_text())
    assert body["bench"] == name and re.fullmatch(r"[0-9a-f]{40}", body["commit"])
    assert {"cpu", "cores", "memory_gb", "python", "torch"} <= set(body["machine"])
    given = dataclasses.asdict(load_config(module.Settings, None, overrides))
    assert body["settings"] == json.loads(json.dumps(given, default=str))
    assert body["figures"] and body["summary"] in result.output
    assert body["baseline"], "every bench gives at least one ratio to a baseline"
    for path, ratio in body["baseline"].items():
        value = body["figures"]
        for part in path.split("."):
            value = value[part]
        assert value == ratio["ratio"] and isinstance(value, (int, float)), path
        assert ratio["to"]
