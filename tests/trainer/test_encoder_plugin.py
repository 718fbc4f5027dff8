"""An audio encoder from another package is one module: its row (under the entry-point
group), its settings section, its flags, and what export does with its weights."""

import json

from tests.plugins import adswap, plugin_env

TINY = '''
from dataclasses import dataclass

import torch

from schemas.config import Config, setting
from trainer.config import AudioEncoder


@dataclass(frozen=True)
class TinySettings(Config):
    frame_ms: int = setting(10, help="Frame length in milliseconds (tiny).")

    def check(self):
        return [] if self.frame_ms >= 1 else ["frame_ms must be >= 1"]


class TinyEncoder(torch.nn.Module):
    """Frames of frame_ms, projected: frozen, as a pretrained model would be."""

    def __init__(self, config):
        super().__init__()
        self.hop = config.sample_rate * config.tiny.frame_ms // 1000
        self.proj = torch.nn.Linear(self.hop, 12).requires_grad_(False)
        self.out_dim = 12

    def forward(self, audio):
        frames = audio[:, :audio.shape[1] // self.hop * self.hop]
        return self.proj(frames.reshape(len(audio), -1, self.hop)), None


ENCODER = AudioEncoder("tiny", "tiny_encoder:TinyEncoder", "frames, projected",
                       settings=TinySettings, needs_path=True, frozen_weights=True)
'''

BUILD = '''
import json, torch
from schemas.config import ConfigError
from trainer.config import load_config
from trainer.export import _frozen_encoders
from trainer.model import DuetMC

config = load_config(None, ["model.audio.kind=tiny", "model.audio.tiny.frame_ms=20",
                            "model.audio.path=weights/tiny", "model.audio.clip_seconds=1",
                            "model.dim=32", "model.layers=1"])
model = DuetMC(config.model)
out = {"hop": model.audio.hop, "shape": list(model.encode_audio(torch.randn(2, 16000)).shape),
       "exported": _frozen_encoders(config.model).get("audio", {}).get("name")}
for bad in (["model.audio.kind=tiny"], ["model.audio.kind=tiny", "model.audio.path=w",
                                        "model.audio.tiny.frame_ms=0"]):
    try:
        load_config(None, bad)
    except ConfigError as err:
        out.setdefault("errors", []).append(str(err))
print(json.dumps(out))
'''


def test_an_audio_encoder_from_another_package_needs_only_its_module(tmp_path):
    import subprocess
    import sys

    env = plugin_env(tmp_path / "plugin", "adswap.audio_encoders", "tiny", "tiny_encoder",
                     TINY)
    shown = adswap(env, "train", "--help")
    assert shown.returncode == 0, shown.stderr
    assert "tiny (frames, projected)" in shown.stdout and "--frame-ms" in shown.stdout
    built = subprocess.run([sys.executable, "-c", BUILD], env=env, capture_output=True,
                           text=True)
    assert built.returncode == 0, built.stderr
    out = json.loads(built.stdout)
    assert out["hop"] == 320 and out["shape"] == [2, 32]
    assert out["exported"] == "weights/tiny"  # frozen weights are named, not copied
    assert "path must name the model for kind tiny" in out["errors"][0]
    assert "model.audio.tiny.frame_ms must be >= 1" in out["errors"][1]
