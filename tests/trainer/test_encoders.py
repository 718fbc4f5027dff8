"""Encoders and the DuET-MC model: log-mel in pure torch, the three audio kinds, the
frozen text tower, projection modules, and what a checkpoint keeps."""

import math

import numpy as np
import pytest
import torch

from schemas.config import ConfigError
from trainer.config import AUDIO_ENCODERS, AudioConfig, AudioEncoder, ModelConfig
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
    return ModelConfig(audio=AudioConfig(kind=kind, clip_seconds=1.0, channels=(4, 8), **audio),
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


def test_padding_does_not_change_a_text_embedding():
    model = DuetMC(small()).eval()
    alone = model.encode_text(model.tokenize(["a calm piano piece"]))
    batch = model.encode_text(model.tokenize(["a calm piano piece",
                                              "a much longer caption " * 5]))
    assert torch.allclose(alone[0], batch[0], atol=1e-5)


def test_htsat_from_scratch():
    config = small("htsat", sample_rate=48_000, hop=480,
                   htsat={"depths": [1, 1], "num_attention_heads": [2, 2],
                          "patch_embeds_hidden_size": 16, "hidden_size": 32})
    model = DuetMC(config)
    a = model.encode_audio(torch.randn(2, 48_000) * 0.1)
    assert a.shape == (2, 32)
    assert all(p.requires_grad for p in model.audio.parameters())


def test_frozen_hf_audio_model_mixes_all_layers(tmp_path):
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(0)
    hf = Wav2Vec2Model(Wav2Vec2Config(hidden_size=32, num_hidden_layers=3,
                                      num_attention_heads=2, intermediate_size=64,
                                      conv_dim=(16, 16), conv_stride=(5, 4),
                                      conv_kernel=(10, 8), num_conv_pos_embeddings=16,
                                      num_conv_pos_embedding_groups=2))
    hf.save_pretrained(tmp_path)
    Wav2Vec2FeatureExtractor(sampling_rate=16_000, do_normalize=True).save_pretrained(tmp_path)
    model = DuetMC(small("hf-frozen", path=str(tmp_path)))
    assert model.audio.mix.in_channels == 4  # embeddings + 3 layers
    audio = torch.randn(2, 16_000) * 0.1
    loss = model.encode_audio(audio).sum()
    loss.backward()
    assert model.audio.mix.weight.grad is not None
    assert all(p.grad is None for p in model.audio.model.parameters())
    assert not any(k.startswith("audio.model.") for k in model.trainable_state())
    with pytest.raises(ValueError, match="expects 16000 Hz"):
        DuetMC(small("hf-frozen", path=str(tmp_path), sample_rate=24_000))


def test_long_sequences_are_pooled_to_the_projection_positions():
    from trainer.model import Projection

    head = Projection(8, 16, 1, 2, 0.0, max_positions=10)
    out = head(torch.randn(2, 95, 8), None)
    assert out.shape == (2, 16)
    mask = torch.zeros(2, 95, dtype=torch.bool)
    mask[1, 40:] = True
    assert head(torch.randn(2, 95, 8), mask).shape == (2, 16)
    assert np.isfinite(out.detach().numpy()).all()


class TinyEncoder(torch.nn.Module):
    """An audio encoder that lives outside trainer/encoders.py: 10 ms frames, projected."""

    def __init__(self, config: AudioConfig):
        super().__init__()
        self.hop = config.sample_rate // 100
        self.proj = torch.nn.Linear(self.hop, 12)
        self.out_dim = 12

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, None]:
        frames = audio[:, :audio.shape[1] // self.hop * self.hop]
        return self.proj(frames.reshape(len(audio), -1, self.hop)), None


def test_an_audio_encoder_is_one_row_of_the_table(monkeypatch):
    monkeypatch.setitem(AUDIO_ENCODERS, "tiny", AudioEncoder(
        "tests.trainer.test_encoders:TinyEncoder", "10 ms frames", needs_path=True))
    with pytest.raises(ConfigError, match="path must name the model for kind tiny"):
        AudioConfig(kind="tiny")
    model = DuetMC(small("tiny", path="weights/none-needed"))
    assert isinstance(model.audio, TinyEncoder)
    embedding = model.encode_audio(torch.randn(2, 16_000) * 0.1)
    assert embedding.shape == (2, 32)
    with pytest.raises(ConfigError, match="kind must be one of cnn, htsat, hf-frozen, tiny"):
        AudioConfig(kind="resnet")


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
