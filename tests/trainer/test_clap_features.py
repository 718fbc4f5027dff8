"""trainer/clap_features.py: CLAP's audio features in torch equal transformers'
`ClapFeatureExtractor`'s for clips up to its max length, in both truncation modes and
all three paddings; is_longer marks a clip only where LAION's training did; longer
clips are refused; a CLAP folder's model takes the features."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, ClapFeatureExtractor, ClapModel

from tests.clap import tiny_clap
from trainer.clap_features import ClapFeatures

torch.set_num_threads(1)

# LAION's settings (48 kHz, hop 480, 1024-point FFT, 64 mels, 50 Hz to 14 kHz), 1 s long
SAMPLING_RATE = 48_000
LAION = dict(feature_size=64, sampling_rate=SAMPLING_RATE, hop_length=480, max_length_s=1,
             fft_window_size=1024, frequency_min=50, frequency_max=14_000)
# dB; float32 against the extractor's float64 stays within 1e-4 dB on these clips
TOLERANCE_DB = 1e-3


def extractor(truncation: str, padding: str = "repeatpad") -> ClapFeatureExtractor:
    return ClapFeatureExtractor(**LAION, truncation=truncation, padding=padding)


def clips(samples: int, seed: int = 0) -> torch.Tensor:
    """Three noise clips, loud, quiet and near silence, so the dB scale is tested over
    most of its range."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(3, samples, generator=generator) * torch.tensor([[0.5], [0.05], [1e-3]])


@pytest.mark.parametrize("truncation", ["fusion", "rand_trunc"])
@pytest.mark.parametrize("padding", ["repeatpad", "repeat", "pad"])
@pytest.mark.parametrize("samples", [48_000, 17_321, 700])
def test_clap_features_equal_the_extractors_on_the_same_audio(truncation, padding, samples):
    reference = extractor(truncation, padding)
    audio = clips(samples)
    expected = reference(list(audio.numpy()), sampling_rate=SAMPLING_RATE,
                         return_tensors="pt")["input_features"]
    features, _ = ClapFeatures(reference).eval()(audio)
    assert features.dtype == torch.float32
    assert features.shape == expected.shape == (3, 4 if truncation == "fusion" else 1, 101, 64)
    torch.testing.assert_close(features, expected, rtol=0, atol=TOLERANCE_DB)


def test_clap_features_are_float32_under_bf16_autocast():
    features = ClapFeatures(extractor("rand_trunc")).eval()
    audio = clips(48_000)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed, _ = features(audio)
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, features(audio)[0], rtol=0, atol=1e-5)


@pytest.mark.parametrize("truncation", ["fusion", "rand_trunc"])
def test_evaluation_marks_no_clip_longer(truncation):
    reference = extractor(truncation)
    audio = clips(48_000)
    _, is_longer = ClapFeatures(reference).eval()(audio)
    expected = reference(list(audio.numpy()), sampling_rate=SAMPLING_RATE,
                         return_tensors="pt")["is_longer"]
    assert is_longer.dtype == expected.dtype == torch.bool
    assert is_longer.shape == expected.shape == (3, 1)
    assert not is_longer.any()


def test_training_with_fusion_marks_one_random_clip_of_each_batch_longer():
    features = ClapFeatures(extractor("fusion")).train()
    torch.manual_seed(0)
    marked = [features(clips(4_800))[1] for _ in range(20)]
    assert all(int(is_longer.sum()) == 1 for is_longer in marked)
    assert len({int(is_longer.flatten().nonzero()) for is_longer in marked}) > 1
    assert not ClapFeatures(extractor("rand_trunc")).train()(clips(4_800))[1].any()


def test_clips_longer_than_the_extractors_max_length_are_refused_naming_clip_seconds():
    with pytest.raises(ValueError, match=r"clips of 1\.5 s are longer than the CLAP feature "
                       r"extractor's 1 s .*set model\.audio\.clip_seconds <= 1$"):
        ClapFeatures(extractor("rand_trunc"))(clips(72_000))


def folder_with(tmp_path: Path, fusion: bool) -> Path:
    return tiny_clap(tmp_path / "clap", fusion=fusion,
                     truncation="fusion" if fusion else "rand_trunc")


@pytest.mark.parametrize("fusion", [False, True])
def test_a_tiny_clap_folder_gives_its_model_the_extractors_embeddings(tmp_path, fusion):
    folder = folder_with(tmp_path, fusion)
    model = ClapModel.from_pretrained(folder).eval()
    features = ClapFeatures.from_pretrained(folder).eval()
    assert (features.sampling_rate, features.nb_max_samples, features.feature_size) == (
        16_000, 32_000, 64)
    assert features.truncation == ("fusion" if fusion else "rand_trunc")
    audio = clips(20_000) * 10
    reference = ClapFeatureExtractor.from_pretrained(folder)(
        list(audio.numpy()), sampling_rate=16_000, return_tensors="pt")
    tokens = AutoTokenizer.from_pretrained(folder)(["calm piano", "loud rock guitar", "jazz"],
                                                   padding=True, return_tensors="pt")
    with torch.no_grad():
        input_features, is_longer = features(audio)
        ours = model.get_audio_features(input_features=input_features, is_longer=is_longer)
        # the extractor's is_longer has a random clip marked under fusion
        theirs = model.get_audio_features(input_features=reference["input_features"],
                                          is_longer=is_longer)
        text = model.get_text_features(**tokens)
    assert ours.pooler_output.shape == text.pooler_output.shape == (3, 16)
    torch.testing.assert_close(ours.pooler_output, theirs.pooler_output, rtol=0, atol=1e-5)


def test_training_with_fusion_gives_the_fusion_layers_a_gradient(tmp_path):
    folder = folder_with(tmp_path, fusion=True)
    model = ClapModel.from_pretrained(folder).train()
    patch_embed = model.audio_model.audio_encoder.patch_embed
    # the fusion block's batch norms see the marked clips only, one clip here, and batch
    # norm refuses to train on a single value per channel (its global branch pools the
    # clip to 1 x 1): with one clip marked its statistics have to stay frozen
    patch_embed.fusion_model.eval()
    input_features, is_longer = ClapFeatures.from_pretrained(folder).train()(clips(32_000))
    embeds = model.get_audio_features(input_features=input_features, is_longer=is_longer)
    embeds.pooler_output.square().sum().backward()
    fusion = [*patch_embed.fusion_model.parameters(), *patch_embed.mel_conv2d.parameters()]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in fusion)


def test_tiny_clap_leaves_the_global_random_state_as_it_was(tmp_path):
    state = torch.random.get_rng_state()
    numpy_state = np.random.get_state()[1].copy()
    tiny_clap(tmp_path / "clap")
    assert torch.equal(torch.random.get_rng_state(), state)
    assert np.array_equal(np.random.get_state()[1], numpy_state)
