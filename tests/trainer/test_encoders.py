"""Encoders and the DuET-MC model: log-mel in pure torch, the three audio kinds, the
frozen text tower, projection modules, and what a checkpoint keeps."""

import math
import weakref

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from trainer.config import (
    AudioConfig,
    CnnSettings,
    HfFrozenSettings,
    HtsatSettings,
    ModelConfig,
    TextConfig,
)
from trainer.encoders import LogMel, mel_filterbank
from trainer.model import DuetMC


def test_mel_filterbank_and_log_mel_put_a_tone_in_its_band():
    bank = mel_filterbank(16_000, 1024, 64, 20.0, 8000.0)
    assert bank.shape == (513, 64) and torch.all(bank >= 0)
    assert torch.all(bank.sum(0) > 0)  # no empty band
    centres = bank.argmax(0)
    assert torch.all(centres[1:] >= centres[:-1])  # bands rise with frequency
    t = torch.arange(32_000) / 16_000
    for freq in (250.0, 1000.0, 4000.0):
        mel = LogMel(AudioConfig())(torch.sin(2 * math.pi * freq * t)[None])
        assert mel.shape == (1, 64, 101)
        loudest = int(mel[0, :, 50].argmax())
        hz_per_bin = 16_000 / 1024
        assert bank[round(freq / hz_per_bin), loudest] == bank[round(freq / hz_per_bin)].max()


def small(kind="cnn", **audio):
    return ModelConfig(audio=AudioConfig(kind=kind, clip_seconds=1.0,
                                         cnn=CnnSettings(channels=(4, 8)), **audio),
                       dim=32, layers=1, heads=2, dropout=0.0, max_positions=64)


def test_default_model_embeds_audio_and_text_on_the_unit_sphere():
    model = DuetMC(small())
    audio = torch.randn(3, 16_000) * 0.1
    out = model(audio, model.tokenize(["rock", "calm piano", "jazz"]), model.tokenize(["pop"]))
    assert out.audio.shape == out.text.shape == (3, 32) and out.negatives.shape == (1, 32)
    assert torch.allclose(out.audio.norm(dim=1), torch.ones(3), atol=1e-5)
    assert out.scale.item() == pytest.approx(1 / 0.03)
    assert model(audio, model.tokenize(["rock", "calm piano", "jazz"])).negatives is None
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen and all(n.startswith("text.") for n in frozen)
    state = model.trainable_state()
    assert not any(k.startswith("text.tower") for k in state)
    assert "logit_scale" in state and any(k.startswith("audio.blocks") for k in state)


def test_gradient_checkpointing_takes_the_trained_transformers_towers_only():
    from dataclasses import replace

    from transformers.modeling_layers import GradientCheckpointingLayer

    def checkpointed(model):
        return {name for name, m in model.named_modules()
                if isinstance(m, GradientCheckpointingLayer) and m.gradient_checkpointing}

    # a trained CNN has no transformers layers: only the trained text tower's are taken
    model = DuetMC(replace(small(), gradient_checkpointing=True,
                           text=TextConfig(trainable=True)))
    layers = checkpointed(model)
    assert layers and all(name.startswith("text.") for name in layers)
    audio = torch.randn(2, 16_000) * 0.1
    out = model.train()(audio, model.tokenize(["rock", "calm piano"]))
    (out.audio @ out.text.T).trace().backward()
    assert all(p.grad is not None for p in model.text.parameters())
    # the frozen text tower would make the setting change nothing: refused, not ignored
    with pytest.raises(ValueError, match="no trained encoder has any .trained: audio"):
        DuetMC(replace(small(), gradient_checkpointing=True))


def test_padding_does_not_change_a_text_embedding():
    model = DuetMC(small()).eval()
    alone = model.encode_text(model.tokenize(["a calm piano piece"]))
    batch = model.encode_text(model.tokenize(["a calm piano piece",
                                              "a much longer caption " * 5]))
    assert torch.allclose(alone[0], batch[0], atol=1e-5)


def test_htsat_from_scratch():
    config = small("htsat", sample_rate=48_000, hop=480,
                   htsat=HtsatSettings({"depths": [1, 1], "num_attention_heads": [2, 2],
                                        "patch_embeds_hidden_size": 16, "hidden_size": 32}))
    model = DuetMC(config)
    a = model.encode_audio(torch.randn(2, 48_000) * 0.1)
    assert a.shape == (2, 32)
    assert all(p.requires_grad for p in model.audio.parameters())


TINY_SPEECH = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                   intermediate_size=64, conv_dim=(16, 16), conv_stride=(5, 4),
                   conv_kernel=(10, 8), num_conv_pos_embeddings=16,
                   num_conv_pos_embedding_groups=2)


@pytest.mark.parametrize("stable_layer_norm", [False, True])
def test_frozen_hf_audio_model_mixes_all_layers(tmp_path, stable_layer_norm):
    """The layers' states the hooks collect are the ones transformers returns for a
    model whose forward still gathers them (wav2vec2, both encoder variants)."""
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(0)
    hf = Wav2Vec2Model(Wav2Vec2Config(**TINY_SPEECH, do_stable_layer_norm=stable_layer_norm,
                                      feat_extract_norm="layer" if stable_layer_norm
                                      else "group")).eval()
    hf.save_pretrained(tmp_path)
    Wav2Vec2FeatureExtractor(sampling_rate=16_000, do_normalize=True).save_pretrained(tmp_path)
    model = DuetMC(small("hf-frozen", path=str(tmp_path)))
    assert model.audio.mix.in_channels == 4  # embeddings + 3 layers
    audio = torch.randn(2, 16_000) * 0.1
    with torch.no_grad():
        expected = hf(audio, output_hidden_states=True).hidden_states
    collected = model.audio._layer_states(audio)
    assert len(collected) == len(expected) == 4
    for ours, theirs in zip(collected, expected, strict=True):
        assert torch.allclose(ours, theirs, atol=1e-6)
    loss = model.encode_audio(audio).sum()
    loss.backward()
    assert model.audio.mix.weight.grad is not None
    assert all(p.grad is None for p in model.audio.model.parameters())
    assert not any(k.startswith("audio.model.") for k in model.trainable_state())
    assert {k for k in model.trainable_state() if k.startswith("audio.")} == {
        "audio.mix.weight", "audio.mix.bias"}
    with pytest.raises(ValueError, match="expects 16000 Hz"):
        DuetMC(small("hf-frozen", path=str(tmp_path), sample_rate=24_000))


# MERT ships its own code: a HuBERT subclass whose forward is its own, without the
# decorator through which transformers 5 gathers hidden states; it returns none
MERT_LIKE_CONFIG = """
from transformers import HubertConfig


class MERTConfig(HubertConfig):
    model_type = "mert_model"
"""
MERT_LIKE_MODEL = """
from transformers import HubertModel
from transformers.modeling_outputs import BaseModelOutput

from .configuration_mert import MERTConfig


class MERTModel(HubertModel):
    config_class = MERTConfig

    def forward(self, input_values, attention_mask=None, output_hidden_states=None,
                **kwargs):
        features = self.feature_extractor(input_values).transpose(1, 2)
        outputs = self.encoder(self.feature_projection(features),
                               output_hidden_states=output_hidden_states)
        return BaseModelOutput(last_hidden_state=outputs[0],
                               hidden_states=getattr(outputs, "hidden_states", None))
"""


def mert_like(folder):
    """A tiny model folder laid out as MERT's is (remote code, 24 kHz extractor)."""
    import json

    from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

    torch.manual_seed(0)
    reference = HubertModel(HubertConfig(**TINY_SPEECH)).eval()
    reference.save_pretrained(folder)
    Wav2Vec2FeatureExtractor(sampling_rate=24_000, do_normalize=True).save_pretrained(folder)
    (folder / "configuration_mert.py").write_text(MERT_LIKE_CONFIG)
    (folder / "modeling_mert.py").write_text(MERT_LIKE_MODEL)
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="mert_model", architectures=["MERTModel"], auto_map={
        "AutoConfig": "configuration_mert.MERTConfig", "AutoModel": "modeling_mert.MERTModel"})
    (folder / "config.json").write_text(json.dumps(config))
    return reference


def test_a_model_whose_forward_returns_no_hidden_states_is_mixed_from_its_layers(tmp_path):
    from transformers import AutoModel

    reference = mert_like(tmp_path)
    remote = AutoModel.from_pretrained(tmp_path, trust_remote_code=True).eval()
    audio = torch.randn(2, 24_000) * 0.1
    with torch.no_grad():  # the failure this guards against: MERT under transformers 5
        assert remote(audio, output_hidden_states=True).hidden_states is None
        expected = reference(audio, output_hidden_states=True).hidden_states
    model = DuetMC(small("hf-frozen", path=str(tmp_path), sample_rate=24_000,
                         hf_frozen=HfFrozenSettings(trust_remote_code=True)))
    assert type(model.audio.model).__name__ == "MERTModel"
    for ours, theirs in zip(model.audio._layer_states(audio), expected, strict=True):
        assert torch.allclose(ours, theirs, atol=1e-6)
    model.encode_audio(audio).sum().backward()
    assert model.audio.mix.weight.grad.abs().sum() > 0


class PeakBytes(TorchDispatchMode):
    """The most bytes of tensor storage made inside the block alive at once (CPU)."""

    def __init__(self):
        super().__init__()
        self.live, self.now, self.peak = {}, 0, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor):
                storage = tensor.untyped_storage()
                key = storage.data_ptr()
                if key not in self.live and storage.nbytes():
                    self.live[key] = storage.nbytes()
                    self.now += storage.nbytes()
                    self.peak = max(self.peak, self.now)
                    weakref.finalize(storage, self._free, key)
        return out

    def _free(self, key):
        self.now -= self.live.pop(key, 0)


def test_bf16_training_keeps_the_layer_states_in_bf16_for_the_mix(tmp_path):
    """Under bf16 autocast, with the frozen model cast once, the layer mix keeps each
    layer's states as they came (bf16) and sums them in float32 one by one: at its peak
    the forward holds little more than the frozen model alone plus those states. A
    float32 stack of them and its reshaped copy (the code before) held 4x more."""
    mert_like(tmp_path)
    model = DuetMC(small("hf-frozen", path=str(tmp_path), sample_rate=24_000,
                         hf_frozen=HfFrozenSettings(trust_remote_code=True)))
    model.cast_frozen(torch.bfloat16)
    assert next(model.audio.model.parameters()).dtype == torch.bfloat16
    assert next(model.audio.mix.parameters()).dtype == torch.float32  # trained: as it was
    assert next(model.text.tower.parameters()).dtype == torch.bfloat16
    audio = torch.randn(2, 24_000) * 0.1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        states = model.audio._layer_states(audio.to(torch.bfloat16))
        layer = states[0].numel() * 2  # bytes of one layer's states in bf16
        assert all(s.dtype == torch.bfloat16 for s in states)
        del states
        alone, mixing = PeakBytes(), PeakBytes()
        with alone, torch.no_grad():
            model.audio.model(audio.to(torch.bfloat16))
        with mixing:
            mixed, _ = model.audio(audio)
    assert mixed.dtype == torch.float32
    # the frozen model's own peak, its 4 layers' states, a float32 sum and one term
    assert mixing.peak <= alone.peak + (4 + 2 + 1) * layer, (mixing.peak / layer,
                                                             alone.peak / layer)
    mixed.sum().backward()
    assert model.audio.mix.weight.grad is not None


def tiny_clip_text(folder):
    """A CLIP text model whose tokenizer, like CLIP's, pads with its end-of-text token."""
    import json

    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    vocab = {c: i for i, c in enumerate("abcdefghijklmnopqrstuvwxyz")}
    vocab |= {f"{c}</w>": 26 + i for i, c in enumerate("abcdefghijklmnopqrstuvwxyz")}
    vocab |= {"<|startoftext|>": 52, "<|endoftext|>": 53}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    model = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=32, bos_token_id=52,
        eos_token_id=53, pad_token_id=53)).eval()
    model.save_pretrained(folder)
    return tokenizer, model


def test_clip_text_keeps_its_end_token_for_the_projection(tmp_path):
    """CLIP pools its text states at the end-of-text token, which its tokenizer also
    pads with. That token must reach the projection: not marked as padding, and not cut
    off with the padding columns, the longest text's included."""
    tokenizer, clip = tiny_clip_text(tmp_path)
    assert tokenizer.pad_token_id == tokenizer.eos_token_id
    model = DuetMC(ModelConfig(text=TextConfig(path=str(tmp_path), max_length=32), dim=32,
                               layers=1, heads=2, dropout=0.0, max_positions=64,
                               audio=AudioConfig(clip_seconds=1.0, cnn=CnnSettings((4, 8)))))
    texts = ["rock", "calm piano", "a dark ambient drone"]
    tokens = model.tokenize(texts)
    states, padding = model.text(tokens)
    with torch.no_grad():
        theirs = clip(input_ids=tokens.ids, attention_mask=tokens.mask.long())
    for row in range(len(texts)):
        end = int((tokens.ids[row] == tokenizer.eos_token_id).nonzero()[0])
        assert not padding[row, end], texts[row]
        assert int((~padding[row]).sum()) == end + 1  # start, the text, its end
        # CLIP's own pooled output is the state at that position: it reaches the head
        assert torch.allclose(states[row, end], theirs.pooler_output[row], atol=1e-6)
    # the longest text ends in the last column, which the batch keeps
    assert bool(tokens.mask[2, -1]) and int(tokens.ids[2, -1]) == tokenizer.eos_token_id
    alone = model.encode_text(model.tokenize(["rock"]))
    assert torch.allclose(alone[0], model.encode_text(tokens)[0], atol=1e-5)


def test_trained_batchnorm_statistics_are_kept_in_a_checkpoint():
    """HTS-AT normalises its mel bins with BatchNorm: the running statistics a run
    learned are part of the model it evaluates."""
    config = small("htsat", sample_rate=48_000, hop=480,
                   htsat=HtsatSettings({"depths": [1, 1], "num_attention_heads": [2, 2],
                                        "patch_embeds_hidden_size": 16, "hidden_size": 32}))
    model = DuetMC(config)
    model.encode_audio(torch.randn(2, 48_000))  # train mode: the statistics move
    stats = {k for k in model.trainable_state() if k.endswith(("running_mean", "running_var"))}
    assert stats
    fresh = DuetMC(config)
    fresh.load_state_dict(model.trainable_state(), strict=False)
    model.eval()
    fresh.eval()
    audio = torch.randn(2, 48_000)
    with torch.no_grad():
        assert torch.allclose(fresh.encode_audio(audio), model.encode_audio(audio), atol=1e-6)


def test_long_sequences_are_pooled_to_the_projection_positions():
    from trainer.model import Projection

    head = Projection(8, 16, 1, 2, 0.0, max_positions=10)
    out = head(torch.randn(2, 95, 8), None)
    assert out.shape == (2, 16)
    mask = torch.zeros(2, 95, dtype=torch.bool)
    mask[1, 40:] = True
    assert head(torch.randn(2, 95, 8), mask).shape == (2, 16)
    assert np.isfinite(out.detach().numpy()).all()


def test_reading_configs_and_help_never_import_torch():
    import subprocess
    import sys

    code = ("import sys\nfrom typer.testing import CliRunner\nfrom adswap.cli import app\n"
            "for args in (['--help'], ['train', '--help'], ['eval', '--help']):\n"
            "    assert CliRunner().invoke(app, args).exit_code == 0\n"
            "from trainer.config import load_config\nload_config(None, ['data.p_cap=0.5'])\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'transformers', 'open_clip')))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "[]"
def test_log_mel_stays_float32_under_bf16_autocast():
    # the GPU path trains under bf16 autocast; the spectrogram's matmul must not follow it
    torch.manual_seed(0)
    mel = LogMel(AudioConfig())
    audio = torch.randn(2, 16_000) * 0.1
    reference = mel(audio)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = mel(audio)
    assert under_autocast.dtype == torch.float32
    assert torch.equal(under_autocast, reference)
