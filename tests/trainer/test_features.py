"""The text feature cache (`adswap features`): built once, resumed after a kill, refused
when stale or over budget; a run that reads it trains as the run that runs the encoder."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from adswap.cli import app
from schemas.config import ConfigError
from schemas.swap_dictionary import SwapDictionary
from trainer.config import load_config
from trainer.features import TextFeatures, build_features, text_folder
from trainer.swap import Swapper
from trainer.train import train

torch.set_num_threads(1)


def config(shards, out, features, *extra):
    return load_config(None, [
        f"data.shards={shards}", f"run.out={out}", f"features.dir={features}",
        "data.batch_size=8", "data.workers=1", "data.shuffle_buffer=16",
        "data.shuffle_initial=8", "model.audio.clip_seconds=1.5",
        "model.audio.cnn.channels=[4, 8]", "model.dim=32", "model.layers=1",
        "optim.epochs=2", "optim.warmup_epochs=1", "swap.warmup_epochs=0",
        "swap.ramp_epochs=0", "swap.p_max=0.5", "run.log_every=1", "run.validate=false",
        *extra])


def step_rows(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()
            if json.loads(line)["type"] == "step"]


@pytest.fixture(scope="module")
def every_swap(demo_shards, tmp_path_factory):
    """A cache holding every swap each text allows: training's draws are the uncached."""
    features = tmp_path_factory.mktemp("features")
    stats = build_features(config(demo_shards, features / "unused", features,
                                  "features.swap_variants=1000"), log=lambda _: None)
    return features, stats


def test_a_cached_run_trains_as_the_run_that_runs_the_encoder(demo_shards, every_swap,
                                                              tmp_path):
    features, _ = every_swap
    plain = config(demo_shards, tmp_path / "plain", "", "run.max_steps=4")
    cached = config(demo_shards, tmp_path / "cached", features, "run.max_steps=4",
                    "features.swap_variants=1000")
    train(plain)
    train(cached)
    ran, read = step_rows(tmp_path / "plain"), step_rows(tmp_path / "cached")
    assert [r["step"] for r in ran] == [r["step"] for r in read] == [1, 2, 3, 4]
    # the same swaps, and losses equal to float16 precision of the cached states
    assert [r["hard_negatives"] for r in ran] == [r["hard_negatives"] for r in read]
    assert sum(r["hard_negatives"] for r in ran) > 0
    np.testing.assert_allclose([r["loss"] for r in read], [r["loss"] for r in ran],
                               rtol=2e-3)
    # a cached run may resume uncached (and back): the settings are the same run's
    result = CliRunner().invoke(app, ["train", "--set", f"run.out={tmp_path / 'cached'}",
                                      "--set", "features.dir=", "--set", "run.max_steps=5",
                                      "--resume"])
    assert result.exit_code == 0, result.output


def test_cached_states_are_the_encoders_and_swaps_are_capped(demo_shards, every_swap,
                                                             tmp_path):
    features, stats = every_swap
    base = config(demo_shards, tmp_path, features, "features.swap_variants=1000")
    cache = TextFeatures.open(base)
    from trainer.encoders import TextEncoder

    encoder = TextEncoder(base.model.text).eval()
    texts = list(cache.index)[:5] + list(cache.index)[-3:]  # views, tags texts and swaps
    got = cache.lookup(texts)
    with torch.no_grad():
        tokens = encoder.tokenize(texts)
        want, _ = encoder(tokens)
    assert torch.equal(got.mask, tokens.mask)
    torch.testing.assert_close(got.states[got.mask], want[tokens.mask], atol=2e-3, rtol=2e-3)
    # a text repeated in two shards is one entry
    assert 0 < stats.swaps < stats.texts and len(cache.index) <= stats.texts

    capped = tmp_path / "capped"
    build_features(config(demo_shards, tmp_path, capped, "features.swap_variants=2"),
                   log=lambda _: None)
    folder = next(capped.glob("text-*"))
    swapper = Swapper(SwapDictionary.load(demo_shards / "swap_dictionary.json"),
                      base.swap.categories)
    tables = [pq.read_table(p).to_pylist() for p in sorted(folder.glob("*.parquet"))]
    rows = [row for table in tables for row in table]
    swaps = [r for r in rows if r["kind"] == "swap"]
    assert swaps and len(swaps) < stats.swaps
    assert {r["kind"] for r in rows} == {"view", "tags", "swap"}
    assert all(r["category"] in swapper.categories for r in swaps)


def test_a_killed_build_resumes_and_a_stale_or_oversized_cache_is_refused(demo_shards,
                                                                          tmp_path):
    features = tmp_path / "features"
    base = config(demo_shards, tmp_path / "run", features, "features.swap_variants=3")
    first = build_features(base, log=lambda _: None)
    folder = text_folder(base)
    units = sorted(folder.glob("*.parquet"))
    assert first.units == len(units) >= 2 and first.units_done_before == 0
    kept = {p.name: p.read_bytes() for p in folder.glob("*.npy")}
    # killed before the last unit's done marker and the manifest
    (folder / "manifest.json").unlink()
    units[-1].unlink()
    with pytest.raises(ValueError, match="is not finished"):
        TextFeatures.open(base)
    again = build_features(base, log=lambda _: None)
    assert again.units_done_before == first.units - 1
    assert {p.name: p.read_bytes() for p in folder.glob("*.npy")} == kept
    assert not list(folder.glob(".*tmp*"))

    # another swap setting is another identity: its run says what differs
    with pytest.raises(ValueError, match=r"swap.variants: 3 -> 4"):
        TextFeatures.open(config(demo_shards, tmp_path / "run", features,
                                 "features.swap_variants=4"))
    with pytest.raises(ValueError, match="more than features.budget_gb=1e-06"):
        build_features(config(demo_shards, tmp_path / "run", tmp_path / "small",
                              "features.budget_gb=0.000001"), log=lambda _: None)
    with pytest.raises(ConfigError, match="cannot be cached"):
        config(demo_shards, tmp_path / "run", features, "model.text.trainable=true")
