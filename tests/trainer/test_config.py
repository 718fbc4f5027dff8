"""Training config: YAML plus overrides, typed, every problem listed before any work."""

import pytest

from schemas.config import ConfigError, as_dict
from trainer.config import TrainConfig, load_config


def test_defaults_are_the_paper_settings():
    config = load_config()
    assert config == TrainConfig()
    assert (config.model.temperature, config.optim.lr, config.optim.weight_decay) == \
        (0.03, 1e-3, 0.05)
    assert (config.swap.p_max, config.swap.warmup_epochs, config.swap.ramp_epochs) == \
        (0.15, 5, 20)
    assert (config.model.dim, config.model.layers, config.model.heads) == (256, 2, 2)
    assert config.optim.epochs == 100 and config.optim.warmup_epochs == 5


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  p_cap: 0.5\n  languages: [en, de]\nmodel:\n  audio:\n"
                    "    cnn: {channels: [8, 16]}\n")
    config = load_config(path, ["optim.lr=5e-4", "data.languages=en", "run.out=runs/x",
                                "swap.enabled=false"])
    assert config.data.p_cap == 0.5 and config.data.languages == ("en",)
    assert config.model.audio.cnn.channels == (8, 16) and config.optim.lr == 5e-4
    assert str(config.run.out) == "runs/x" and config.swap.enabled is False
    assert as_dict(load_config(None, ["optim.epochs=3", "optim.warmup_epochs=1"]))[
        "optim"]["epochs"] == 3
    # a setting an earlier version had says where it lives now, in a file or a --set
    path.write_text("model:\n  audio:\n    channels: [8, 16]\n")
    with pytest.raises(ConfigError, match=r"model.audio.channels: unknown setting \(it is "
                       r"model.audio.cnn.channels now\)"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"it is model.audio.hf_frozen.trust_remote_code"):
        load_config(None, ["model.audio.trust_remote_code=true"])
    path.write_text("model:\n  audio:\n    htsat: {depths: [1, 1]}\n")  # was the mapping
    with pytest.raises(ConfigError, match=r"model.audio.htsat.depths: unknown setting "
                       r"\(ClapAudioConfig overrides go under model.audio.htsat.overrides"):
        load_config(path)


def test_every_problem_is_listed_at_once(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("data:\n  p_cap: 2\n  batch_size: one\n  colour: red\nmodel:\n"
                    "  audio:\n    kind: resnet\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, ["optim.lr=-1", "nonsense"])
    text = str(err.value)
    for fragment in ("data.batch_size: expected int", "data.colour: unknown setting",
                     "override 'nonsense'"):
        assert fragment in text
    with pytest.raises(ConfigError) as err:
        load_config(None, ["data.p_cap=2", "model.audio.kind=resnet", "optim.lr=-1",
                           "model.dim=255", "data.batch_size=1"])
    assert len(err.value.problems) == 5
    for fragment in ("p_cap", "kind", "lr", "model.dim", "batch_size"):
        assert fragment in str(err.value)
    with pytest.raises(ConfigError, match="model.audio.path must name"):
        load_config(None, ["model.audio.kind=hf-frozen"])
