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
from trainer.features import build_features
from trainer.swap import Swapper
from trainer.text_features import TextFeatures, text_folder
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
    built = build_features(config(demo_shards, features / "unused", features,
                                  "features.swap_variants=1000"), log=lambda _: None)
    return features, built["text"]


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


def test_with_no_swaps_cached_the_drawn_swaps_run_through_the_encoder(demo_shards,
                                                                      tmp_path):
    """The default cache holds views and tags texts only; the swaps a step draws are
    the uncached run's, their states computed at the step."""
    features = tmp_path / "features"
    built = build_features(config(demo_shards, tmp_path / "unused", features),
                           log=lambda _: None)["text"]
    assert built.swaps == 0
    train(config(demo_shards, tmp_path / "plain", "", "run.max_steps=3"))
    train(config(demo_shards, tmp_path / "cached", features, "run.max_steps=3"))
    ran, read = step_rows(tmp_path / "plain"), step_rows(tmp_path / "cached")
    assert [r["hard_negatives"] for r in ran] == [r["hard_negatives"] for r in read]
    assert sum(r["hard_negatives"] for r in ran) > 0
    np.testing.assert_allclose([r["loss"] for r in read], [r["loss"] for r in ran],
                               rtol=2e-3)


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
    assert 0 < stats.swaps < stats.items and len(cache.index) <= stats.items

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
    first = build_features(base, log=lambda _: None)["text"]
    folder = text_folder(base)
    units = sorted(folder.glob("*.parquet"))
    assert first.units == len(units) >= 2 and first.units_done_before == 0
    kept = {p.name: p.read_bytes() for p in folder.glob("*.npy")}
    # killed before the last unit's done marker and the manifest
    (folder / "manifest.json").unlink()
    units[-1].unlink()
    with pytest.raises(ValueError, match="is not finished"):
        TextFeatures.open(base)
    again = build_features(base, log=lambda _: None)["text"]
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


@pytest.fixture(scope="module")
def tiny_speech(tmp_path_factory):
    """A frozen wav2vec2-style audio model (3 layers, 32 wide, 800 frames/s at 16 kHz)."""
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    from tests.trainer.test_encoders import TINY_SPEECH

    folder = tmp_path_factory.mktemp("tiny_speech")
    torch.manual_seed(0)
    Wav2Vec2Model(Wav2Vec2Config(**TINY_SPEECH)).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(sampling_rate=16_000, do_normalize=True).save_pretrained(folder)
    return folder


def frozen_audio(model, clip_seconds=2.0, frame_rate=10):
    return ["model.audio.kind=hf-frozen", f"model.audio.path={model}",
            f"model.audio.clip_seconds={clip_seconds}",
            f"model.audio.hf_frozen.frame_rate={frame_rate}", "features.swap_variants=1000"]


def test_a_run_on_cached_audio_states_trains_as_the_run_that_runs_the_model(
        demo_shards, every_swap, tiny_speech, tmp_path):
    """The clips are as long as the model's input, so every crop is the clip: the cached
    run's losses are the uncached run's, to the float16 precision of the states."""
    features, _ = every_swap
    cached = config(demo_shards, tmp_path / "cached", features, "run.max_steps=4",
                    *frozen_audio(tiny_speech))
    built = build_features(cached, log=lambda _: None)
    audio = built["audio"]
    assert built["text"].units_done_before == built["text"].units  # the text cache is shared
    assert (audio.layers, audio.frames, audio.width) == (4, 20, 32)  # 2 s at 10 Hz
    train(config(demo_shards, tmp_path / "plain", "", "run.max_steps=4",
                 *frozen_audio(tiny_speech)))
    train(cached)
    ran, read = step_rows(tmp_path / "plain"), step_rows(tmp_path / "cached")
    assert [r["hard_negatives"] for r in ran] == [r["hard_negatives"] for r in read]
    np.testing.assert_allclose([r["loss"] for r in read], [r["loss"] for r in ran],
                               rtol=2e-3)
    # the layer mix trained: the cached states reached a trained parameter
    weights = [torch.load(tmp_path / name / "checkpoints" / "last.pt", weights_only=False)
               ["model"]["audio.mix.weight"] for name in ("plain", "cached")]
    torch.testing.assert_close(weights[0], weights[1], atol=1e-4, rtol=1e-3)


def test_cached_crops_are_the_models_pooled_layer_states_of_seeded_windows(
        demo_shards, tiny_speech, tmp_path):
    import webdataset as wds

    from trainer.audio_features import AudioFeatures, audio_identity, crop_window
    from trainer.data import decode_audio
    from trainer.encoders import audio_encoder
    from trainer.feature_cache import cache_folder

    base = config(demo_shards, tmp_path / "run", tmp_path / "features",
                  *frozen_audio(tiny_speech, clip_seconds=1.5, frame_rate=8),
                  "model.text.trainable=true", "features.audio_crops=3")
    built = build_features(base, log=lambda _: None)
    assert set(built) == {"audio"}  # a trained text tower is not cached
    folder = cache_folder(base, "audio", audio_identity(base))
    assert built["audio"].folder == folder
    unit = sorted(folder.glob("*.parquet"))[0]
    states = np.load(unit.with_suffix(".npy"))
    assert states.shape[1:] == (3, 4, 12, 32) and states.dtype == np.float16
    url = demo_shards / f"{unit.stem}.tar"
    sample = next(iter(wds.DataPipeline(wds.SimpleShardList([str(url)]),
                                        wds.tarfile_to_samples())))
    assert pq.read_table(unit).column("key")[0].as_py() == sample["__key__"]
    encoder = audio_encoder(base.model.audio).eval()
    windows = torch.stack([crop_window(decode_audio(sample), 24_000, sample["__key__"], i)
                           for i in range(3)])
    assert not torch.equal(windows[0], windows[1])  # 1.5 s crops of 2 s clips differ
    with torch.no_grad():
        want = torch.stack(encoder.layer_states(windows), dim=1)
    torch.testing.assert_close(torch.from_numpy(states[0]).float(), want, atol=2e-3,
                               rtol=2e-3)
    # the loader's draws cover the crops
    import random

    reader = AudioFeatures.open(base)
    rng = random.Random(0)
    drawn = {reader.read(sample, rng).numpy().tobytes() for _ in range(30)}
    assert len(drawn) == 3

    # another pooling rate is another identity: the run says what differs
    with pytest.raises(ValueError, match=r"frame_rate: 8.0 -> 4.0"):
        AudioFeatures.open(config(demo_shards, tmp_path / "run", tmp_path / "features",
                                  *frozen_audio(tiny_speech, clip_seconds=1.5, frame_rate=4),
                                  "model.text.trainable=true", "features.audio_crops=3"))
    with pytest.raises(ValueError, match="features.audio_crops or model.audio.hf_frozen"):
        build_features(config(demo_shards, tmp_path / "run", tmp_path / "small",
                              *frozen_audio(tiny_speech), "model.text.trainable=true",
                              "features.budget_gb=0.000001"), log=lambda _: None)
