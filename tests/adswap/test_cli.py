"""The command line: every command is generated from its config dataclass, so its --help
lists each setting once with its default, and flags, --set and --config are one path."""

import re

import pytest
from typer.testing import CliRunner

from adswap.cli import app
from adswap.config_cli import COMMANDS, _show, flag_names
from schemas.config import MISSING, leaves

WIDE = {"COLUMNS": "400", "NO_COLOR": "1", "TERM": "dumb"}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_lists_every_setting_once_with_its_default(name):
    result = CliRunner().invoke(app, [name, "--help"], env=WIDE)
    assert result.exit_code == 0, result.output
    text = result.output
    flags = flag_names(COMMANDS[name])
    for leaf in leaves(COMMANDS[name]):
        where = f"({leaf.path}; "
        assert text.count(where) == 1, f"{name}: {leaf.path} listed {text.count(where)} times"
        default = "required" if leaf.default is MISSING else f"default: {_show(leaf.default)}"
        assert f"{where}{default})" in text, f"{name}: {leaf.path} without its default"
        if not leaf.argument:
            # one row of the options table starts with the flag (the docstring may name it)
            assert len(re.findall(rf"^\W*--{re.escape(flags[leaf.path])}(?![\w.-])", text,
                                  re.M)) == 1, f"{name}: flag of {leaf.path}"
    assert "--config" in text and "--set" in text


def test_every_command_is_generated_from_a_config():
    registered = {c.name or c.callback.__name__.replace("_", "-")
                  for c in app.registered_commands}
    assert registered == set(COMMANDS)


def test_flags_set_and_config_file_agree(tmp_path):
    from trainer.config import TrainConfig

    (tmp_path / "c.yaml").write_text("optim:\n  lr: 0.5\n  epochs: 7\n")
    seen = {}
    import typer

    from adswap.config_cli import config_command

    probe = typer.Typer()

    @config_command(probe, TrainConfig, "probe")
    def _probe(config: TrainConfig) -> None:
        seen["config"] = config

    probe.command("other")(lambda: None)  # a group, so "probe" is a subcommand
    result = CliRunner().invoke(probe, ["probe", "--config", str(tmp_path / "c.yaml"),
                                        "--set", "optim.lr=0.25", "--p-cap", "0.5",
                                        "--no-textswap", "--channels", "8,16",
                                        "--optim.warmup-epochs", "2"])
    assert result.exit_code == 0, result.output
    config = seen["config"]
    assert config.optim.lr == 0.25 and config.optim.epochs == 7  # --set wins over the file
    assert config.data.p_cap == 0.5 and config.swap.enabled is False
    assert config.model.audio.cnn.channels == (8, 16) and config.optim.warmup_epochs == 2.0
    assert config.swap.warmup_epochs == 5  # the other section's warmup_epochs is untouched


def test_bad_settings_are_listed_at_once_without_a_traceback(tmp_path):
    result = CliRunner().invoke(app, ["captions", "--engine", "gpt", "--n-views", "many",
                                      "--set", "colour=red", "--keep-prob", "2"])
    assert result.exit_code == 1
    for part in ("engine.engine must be one of vllm, openai, template",
                 "drop.n_views: expected int, got 'many'", "unknown setting 'colour'",
                 "catalog: required", "out: required", "drop.keep_prob"):
        assert part in result.output, result.output
    assert "Traceback" not in result.output


def test_the_config_examples_of_the_docs_load(tmp_path):
    """Each ```yaml block of the README or a docs page that starts `# adswap CMD --config`
    is a valid config of CMD (a file it names need not exist: loading checks settings,
    not data)."""
    from schemas.config import ConfigError, load_config
    from tests.docs import ROOT, code_blocks

    blocks = [(page, m.group(1), m.group(2)) for page, body in code_blocks("yaml")
              for m in [re.match(r"# adswap ([a-z-]+) --config \S+\n(.*)", body, re.S)] if m]
    assert {name for _, name, _ in blocks} >= {
        "captions", "curate", "shards", "train", "eval", "import-eval", "ablation", "card",
        "demo-data", "translate-captions", "embed", "serve"}
    for i, (page, name, body) in enumerate(blocks):
        path = tmp_path / f"{i}.yaml"
        # the ablation's check loads the training config it names
        path.write_text(body.replace("trainer/configs/demo.yaml",
                                     str(ROOT / "trainer/configs/demo.yaml")))
        try:
            load_config(COMMANDS[name], path)
        except ConfigError as err:
            raise AssertionError(f"{page.relative_to(ROOT)}: the {name} example: {err}") from err
