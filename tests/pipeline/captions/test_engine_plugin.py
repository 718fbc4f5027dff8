"""A caption engine is one file: a module of another package, registered under the
entry-point group, gets its config section, its flags, its languages checked, the
engine choice and translate's refusal, with nothing in adswap edited."""

from pyarrow import parquet as pq

from tests.pipeline.captions.test_stage import make_catalog
from tests.plugins import adswap, plugin_env

ECHO = '''
from dataclasses import dataclass

from pipeline.captions.engine_api import EngineSpec, Result
from schemas.config import Config, setting


@dataclass(frozen=True)
class EchoSettings(Config):
    prefix: str = setting("echo:", help="Written before the tags (echo).")


class EchoEngine:
    name = "echo"
    model_id = "echo-rules"
    model_revision = "1"

    @classmethod
    def from_config(cls, config, cache_dir):
        return cls(config.echo.prefix)

    def __init__(self, prefix):
        self.prefix = prefix

    def generate(self, requests, sampling):
        return [Result(r.request_id, " ".join([self.prefix, *(t for tags in r.tags.values()
                                                             for t in tags)]), "stop")
                for r in requests]


ENGINE = EngineSpec("echo", "writes the tags back", EchoEngine, settings=EchoSettings,
                    languages=("en",), uses_model=False, translates=False)
'''


def test_an_engine_from_another_package_needs_only_its_module(tmp_path):
    env = plugin_env(tmp_path / "plugin", "adswap.caption_engines", "echo", "echo_engine",
                     ECHO)
    catalog = make_catalog(tmp_path / "catalog.jsonl", 12)
    shown = adswap(env, "captions", "--help")
    assert shown.returncode == 0, shown.stderr
    assert "echo: writes the tags back" in shown.stdout
    assert "--prefix" in shown.stdout  # its settings' flag, from its section

    done = adswap(env, "captions", "--catalog", str(catalog), "--out", str(tmp_path / "v"),
                  "--engine", "echo", "--prefix", "tags:", "--n-views", "2",
                  "--set", "engine.recycle_requests=0")
    assert done.returncode == 0, done.stderr
    written = pq.read_table(tmp_path / "v").to_pylist()
    assert len(written) == 12 * 2
    assert all(r["engine"] == "echo" and r["model_id"] == "echo-rules"
               and r["text"].startswith("tags: ") for r in written)

    german = adswap(env, "captions", "--catalog", str(catalog), "--out", str(tmp_path / "d"),
                    "--engine", "echo", "--languages", "de")
    assert german.returncode == 1 and "the echo engine writes en, not de" in german.stderr
    translate = adswap(env, "translate-captions", "--file", str(catalog), "--out",
                       str(tmp_path / "t.parquet"), "--engine", "echo")
    assert translate.returncode == 1
    assert "the echo engine cannot translate; use vllm or openai" in translate.stderr
