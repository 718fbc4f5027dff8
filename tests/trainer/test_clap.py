"""Kind clap: a pretrained CLAP (a tiny random ClapModel the tests write) trained with
our loss; each tower trained or frozen at its own rate; gradient checkpointing; zero-shot
scores equal to transformers' own embeddings; an export transformers loads alone."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from adswap.cli import app
from tests.clap import tiny_clap
from trainer.config import load_config
from trainer.model import build_model
from trainer.train import parameter_groups, train

torch.set_num_threads(1)
OURS = ("adswap", "trainer", "pipeline", "schemas", "retrieval", "tests")


@pytest.fixture(scope="module")
def clap_folder(tmp_path_factory):
    # the demo shards' rate and clip length (16 kHz, 2 s)
    return tiny_clap(tmp_path_factory.mktemp("clap") / "tiny-clap")


def clap_config(shards, out, clap, *extra):
    return load_config(None, [
        "model.kind=clap", f"model.clap.path={clap}", f"data.shards={shards}",
        f"run.out={out}", "data.batch_size=4", "data.workers=1", "data.shuffle_buffer=8",
        "data.shuffle_initial=4", "model.audio.clip_seconds=2", "optim.epochs=1",
        "optim.warmup_epochs=0", "optim.lr=1e-3", "optim.audio_encoder_lr=1e-3",
        "optim.text_encoder_lr=1e-3", "run.max_steps=3", "run.validate=false",
        "swap.warmup_epochs=0", "swap.ramp_epochs=1", "swap.p_max=0.5", *extra])


def tower_weights(state: dict, prefix: str) -> torch.Tensor:
    return torch.cat([v.flatten().float() for k, v in sorted(state.items())
                      if k.startswith(prefix) and v.is_floating_point()])


def test_training_moves_both_towers_when_trained_and_neither_when_frozen(
        demo_shards, clap_folder, tmp_path):
    from transformers import ClapModel

    start = {f"clap.{k}": v for k, v in ClapModel.from_pretrained(clap_folder)
             .state_dict().items()}
    moved = {}
    for name, extra in (("trained", ["model.text.trainable=true"]),
                        ("frozen", ["model.clap.train_audio=false",
                                    "model.learn_temperature=true"])):
        train(clap_config(demo_shards, tmp_path / name, clap_folder, *extra))
        state = torch.load(tmp_path / name / "checkpoints" / "last.pt",
                           weights_only=True)["model"]
        moved[name] = {prefix: bool(prefix in {k.split(".", 2)[0] + "." + k.split(".", 2)[1]
                                               for k in state} and
                                    not torch.equal(tower_weights(state, prefix),
                                                    tower_weights(start, prefix)))
                       for prefix in ("clap.audio_model", "clap.text_model",
                                      "clap.audio_projection", "clap.text_projection")}
        moved[name]["scale"] = not torch.equal(state["clap.logit_scale_t"],
                                               start["clap.logit_scale_t"])
    assert all(moved["trained"][p] for p in ("clap.audio_model", "clap.text_model",
                                             "clap.audio_projection", "clap.text_projection"))
    assert not moved["trained"]["scale"]  # fixed: the checkpoint's own scale
    # frozen towers are not even in the checkpoint (their weights are the folder's)
    assert moved["frozen"] == {"clap.audio_model": False, "clap.text_model": False,
                               "clap.audio_projection": False, "clap.text_projection": False,
                               "scale": True}


def test_each_tower_learns_at_its_own_rate(clap_folder, demo_shards, tmp_path):
    config = clap_config(demo_shards, tmp_path, clap_folder, "model.text.trainable=true",
                         "optim.lr=1e-3", "optim.audio_encoder_lr=1e-4",
                         "optim.text_encoder_lr=1e-5")
    model = build_model(config.model)
    groups = parameter_groups(model, config.optim)
    by_id = {id(p): g["lr_ratio"] for g in groups for p in g["params"]}
    assert by_id[id(model.clap.audio_model.audio_encoder.patch_embed.proj.weight)] == \
        pytest.approx(0.1)
    assert by_id[id(model.clap.text_model.embeddings.word_embeddings.weight)] == \
        pytest.approx(0.01)
    assert by_id[id(model.clap.audio_projection.linear1.weight)] == 1.0
    # each group starts at its own peak, so a step taken before the schedule runs is right
    assert {round(g["lr"], 9) for g in groups} == {1e-3, 1e-4, 1e-5}
    # weight decay on weights only, in every rate's group
    assert all((g["weight_decay"] > 0) == all(p.ndim >= 2 for p in g["params"])
               for g in groups)
    assert sum(len(g["params"]) for g in groups) == len(model.trainable_parameters())


def test_the_paper_clap_ft_config_trains_every_tower_of_a_checkpoint_at_its_rate(tmp_path):
    from pathlib import Path

    paper = Path(__file__).parents[2] / "trainer/configs/paper-clap-ft.yaml"
    folder = tiny_clap(tmp_path / "clap-48k", sampling_rate=48_000, max_length_s=10)
    config = load_config(paper, [f"model.clap.path={folder}"])
    model = build_model(config.model)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {"clap.logit_scale_a", "clap.logit_scale_t"}
    assert {round(g["lr"], 9) for g in parameter_groups(model, config.optim)} == {1e-4, 1e-5}
    assert config.data.batch_size * 8 == 1024


def test_gradient_checkpointing_recomputes_the_layers_and_gives_the_same_gradients(
        clap_folder, demo_shards, tmp_path):
    from transformers.modeling_layers import GradientCheckpointingLayer

    grads, calls = {}, {}
    for on in (False, True):
        config = clap_config(demo_shards, tmp_path, clap_folder, "model.text.trainable=true",
                             f"model.gradient_checkpointing={str(on).lower()}")
        torch.manual_seed(0)
        model = build_model(config.model).train()
        # a layer's first part counts its runs: a recompute calls the layer's forward
        # itself, past the layer's own hooks
        firsts = [next(m.children()) for m in model.modules()
                  if isinstance(m, GradientCheckpointingLayer)]
        count = [0]
        hooks = [first.register_forward_pre_hook(lambda *_, c=count: c.__setitem__(0, c[0] + 1))
                 for first in firsts]
        torch.manual_seed(1)
        audio = torch.randn(3, 32_000) * 0.1
        out = model(audio, model.tokenize(["soft piano", "loud rock drums", "jazz trio"]))
        before = count[0]
        (out.audio @ out.text.T).trace().backward()
        calls[on] = (before, count[0] - before)
        grads[on] = torch.cat([p.grad.flatten() for p in model.trainable_parameters()
                               if p.grad is not None])
        for hook in hooks:
            hook.remove()
    assert calls[False][1] == 0 and calls[True][1] == calls[True][0] > 0
    assert torch.allclose(grads[True], grads[False], atol=1e-6)


def test_clap_settings_that_cannot_work_are_refused(clap_folder, demo_shards, tmp_path):
    from schemas.config import ConfigError

    with pytest.raises(ConfigError, match="clap.path must name a ClapModel folder"):
        load_config(None, ["model.kind=clap"])
    with pytest.raises(ConfigError, match="clap.path is read by kind clap only"):
        load_config(None, [f"model.clap.path={clap_folder}"])
    wrong_rate = clap_config(demo_shards, tmp_path, clap_folder, "model.audio.sample_rate=48000")
    with pytest.raises(ValueError, match="expects 16000 Hz audio"):
        build_model(wrong_rate.model)
    too_long = clap_config(demo_shards, tmp_path, clap_folder, "model.audio.clip_seconds=3")
    with pytest.raises(ValueError, match="longer than the 2 s"):
        build_model(too_long.model)
    nothing = clap_config(demo_shards, tmp_path / "nothing", clap_folder,
                          "model.clap.train_audio=false")
    with pytest.raises(ValueError, match="nothing to train"):
        train(nothing)


@pytest.fixture(scope="module")
def eval_set(demo_catalog, tmp_path_factory):
    demo, _ = demo_catalog
    out = tmp_path_factory.mktemp("clap_eval") / "demo-test"
    result = CliRunner().invoke(app, [
        "import-eval", "--file", str(demo / "reference_captions.parquet"), "--catalog",
        str(demo / "catalog.parquet"), "--out", str(out), "--clip-seconds", "2",
        "--workers", "1"])
    assert result.exit_code == 0, result.output
    return out


def by_hand(folder, eval_set) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Track and caption embeddings of the eval set from transformers alone: the
    checkpoint's processor and ClapModel's get_*_features."""
    import webdataset as wds
    from transformers import ClapModel, ClapProcessor

    from trainer.data import shard_urls

    model, processor = ClapModel.from_pretrained(folder).eval(), \
        ClapProcessor.from_pretrained(folder)
    urls, _ = shard_urls(eval_set, "test")
    tracks, clips, texts, owner = [], {}, [], []
    import io

    import soundfile as sf
    for sample in wds.WebDataset(urls, shardshuffle=False, empty_check=False):
        meta = json.loads(sample["json"])
        audio, rate = sf.read(io.BytesIO(sample["flac"]), dtype="float32")
        if meta["track_id"] not in clips:
            tracks.append(meta["track_id"])
            clips[meta["track_id"]] = []
            texts += [v["text"] for v in meta["views"]]
            owner += [len(tracks) - 1] * len(meta["views"])
        clips[meta["track_id"]].append(audio[:2 * rate])
    with torch.no_grad():
        items = []
        for track in tracks:
            inputs = processor.feature_extractor(clips[track], sampling_rate=16_000,
                                                 return_tensors="pt")
            emb = model.get_audio_features(**inputs).pooler_output
            items.append(torch.nn.functional.normalize(emb.mean(0), dim=0))
        tokens = processor.tokenizer(texts, padding=True, truncation=True, max_length=64,
                                     return_tensors="pt")
        text = model.get_text_features(**tokens).pooler_output
    return torch.stack(items), text, torch.tensor(owner)


def test_zero_shot_scores_are_transformers_own_embeddings_under_the_protocol(
        clap_folder, eval_set, tmp_path):
    from trainer.evaluate import subset_metrics

    result = CliRunner().invoke(app, [
        "eval", f"clap:{clap_folder}", "--eval-set", str(eval_set), "--subset-size", "4",
        "--subsets", "3", "--baselines", str(tmp_path / "zero-shot")])
    assert result.exit_code == 0, result.output
    (run,) = (tmp_path / "zero-shot").iterdir()
    report = json.loads((run / "eval" / "report.json").read_text())
    assert report["model"]["zero_shot"] and report["checkpoint"] == "pretrained.pt"
    assert "Zero-shot" in (run / "eval" / "report.md").read_text()
    assert (run / "eval" / "demo-test" / "ranks.npz").exists()
    tracks, text, owner = by_hand(clap_folder, eval_set)
    expected = subset_metrics(tracks, text, owner, 3, 4, 0)
    measured = report["sets"]["demo-test"]["languages"]["en"]
    for metric in ("t2m_R@1", "t2m_R@10", "t2m_MR", "m2t_R@1"):
        assert measured[metric]["mean"] == pytest.approx(expected[metric]["mean"]), metric


def test_a_clap_run_goes_from_training_to_its_zero_shot_row_to_transformers(
        demo_shards, clap_folder, eval_set, tmp_path):
    """train -> eval against the zero-shot row (paired interval) -> export -> a
    transformers-only process loads the folder and embeds as the run does."""
    from trainer.inference import Encoder

    run = tmp_path / "run"
    train(clap_config(demo_shards, run, clap_folder, "model.text.trainable=true",
                      "run.max_steps=4"))
    result = CliRunner().invoke(app, [
        "eval", str(run), "--eval-set", str(eval_set), "--subset-size", "4", "--subsets", "3",
        "--compare", f"clap:{clap_folder}", "--baselines", str(tmp_path / "zero-shot"),
        "--replicates", "200", "--checkpoint", "last"])
    assert result.exit_code == 0, result.output
    assert f"vs clap:{clap_folder} on demo-test (en), 95% interval: R@1" in result.output
    paired = json.loads((run / "eval" / "report.json").read_text())["comparisons"][
        f"clap:{clap_folder}"]["demo-test"]["en"]["R@10"]
    assert paired["lo"] <= paired["diff"] <= paired["hi"]

    out = tmp_path / "export"
    result = CliRunner().invoke(app, ["export", str(run), "--out", str(out), "--checkpoint",
                                      "last"])
    assert result.exit_code == 0, result.output
    assert "transformers" in (out / "README.md").read_text()
    encoder = Encoder.from_run(run, "last")
    texts = ["soft piano ballad", "loud rock with drums"]
    clip = (np.sin(np.arange(32_000) / 16_000 * 2 * np.pi * 440) * 0.3).astype(np.float32)
    np.save(tmp_path / "clip.npy", clip)
    # a process in which adswap's packages cannot be imported: transformers alone
    script = f"""
import importlib.abc, json, sys, numpy as np, torch
class NoAdswap(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {OURS!r}:
            raise ImportError(name + " is adswap's")
sys.meta_path.insert(0, NoAdswap())
from transformers import ClapModel, ClapProcessor
model = ClapModel.from_pretrained({str(out)!r}).eval()
processor = ClapProcessor.from_pretrained({str(out)!r})
with torch.no_grad():
    t = model.get_text_features(**processor.tokenizer({texts!r}, padding=True,
                                return_tensors="pt")).pooler_output
    a = model.get_audio_features(**processor.feature_extractor(
        [np.load({str(tmp_path / 'clip.npy')!r})], sampling_rate=16000,
        return_tensors="pt")).pooler_output
print(json.dumps({{"text": t.tolist(), "audio": a.tolist(),
                  "scale": float(model.logit_scale_a.exp()), "modules": list(sys.modules)}}))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert not any(m.split(".")[0] in OURS for m in loaded["modules"])
    assert loaded["scale"] == pytest.approx(float(encoder.model.logit_scale.exp()))
    np.testing.assert_allclose(loaded["text"], encoder.embed_text(texts), atol=1e-5)
    np.testing.assert_allclose(loaded["audio"][0], encoder.embed_windows([clip])[0], atol=1e-5)
    # adswap's own loader takes the exported folder as well
    from adswap import load_model

    np.testing.assert_allclose(load_model(out).embed_text(texts), encoder.embed_text(texts),
                               atol=1e-6)

    # embed, then search with the run and with its export (what serve's page runs)
    from retrieval.search import Searcher

    index = tmp_path / "index"
    result = CliRunner().invoke(app, ["embed", str(run), "--shards", str(eval_set), "--splits",
                                      "test", "--out", str(index), "--checkpoint", "last"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((index / "manifest.json").read_text())
    assert manifest["model"]["kind"] == "clap" and manifest["model"]["clap"] == str(clap_folder)
    for model in (None, out):
        searcher = Searcher.open(index, model)
        query = encoder.embed_text(["soft piano ballad"])[0]
        expected = np.argsort(-(searcher.library.vectors @ query), kind="stable")[:3]
        assert [h["track_id"] for h in searcher.text("soft piano ballad", 3)] == \
            [searcher.library.track_ids[i] for i in expected]
