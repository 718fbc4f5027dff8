"""The demo bench runs each stage as `make demo` runs it: the same targets, in order,
with the demo target's own variables."""

import re
import subprocess

from bench.demo_stages import demo_targets, demo_variables
from bench.harness import ROOT


def test_the_stages_are_the_demo_targets_prerequisites():
    makefile = (ROOT / "Makefile").read_text()
    targets = demo_targets()
    assert targets[0] == "demo-data" and targets.index("shards") < targets.index("train")
    for target in targets:  # each a target of its own, not a word of `demo: VAR = ...`
        assert re.search(rf"^{re.escape(target)}:", makefile, re.MULTILINE), target


def test_train_alone_reads_the_feature_cache_as_make_demo_does(tmp_path):
    def train_recipe(*variables):
        return subprocess.run(["make", "-n", "-C", str(ROOT), "train", f"DEMO_DIR={tmp_path}",
                               *variables], capture_output=True, text=True, check=True).stdout

    assert "FEATURES=$(DEMO_DIR)/features" in demo_variables()
    assert "features.dir" not in train_recipe()
    cached = train_recipe(*demo_variables())
    # the cache is built, then both of train's commands (torchrun or not) read it
    assert "adswap features" in cached
    assert cached.count(f"--set features.dir={tmp_path}/features") == 3
