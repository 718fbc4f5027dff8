"""The caption engines: one module per engine in this folder (or in another installed
package, named under the entry-point group `adswap.caption_engines`), each declaring its
row of the table as `ENGINE = EngineSpec(...)` (pipeline/captions/engine_api.py). The
table, the engine config section with each engine's own settings, the CLI flags, the
languages checked and translate's choice all come from those rows, so adding an engine
is adding its module. Engines import their libraries lazily, so the planning and
template paths never need vLLM installed."""

from __future__ import annotations

from dataclasses import make_dataclass

from pipeline.captions.engine_api import Engine, EngineSpec, Request, Result, Sampling
from schemas.config import Config, setting
from schemas.plugins import rows

__all__ = ["ENGINES", "Engine", "EngineConfig", "EngineSpec", "Request", "Result",
           "Sampling", "make_engine"]

GROUP = "adswap.caption_engines"
DEFAULT_ENGINE = "vllm"


def _table() -> dict[str, EngineSpec]:
    table: dict[str, EngineSpec] = {}
    for row in rows(__name__, GROUP, "ENGINE"):
        if row.name in table:
            raise ImportError(f"two caption engines are named {row.name!r}: "
                              f"{table[row.name].engine} and {row.engine}")
        table[row.name] = row
    # the default first, then by name: the order of the help text and the config sections
    return dict(sorted(table.items(), key=lambda item: (item[0] != DEFAULT_ENGINE, item[0])))


ENGINES: dict[str, EngineSpec] = _table()


class _EngineSection(Config):
    """The behaviour of the engine section; its fields come from the table."""

    def check(self) -> list[str]:
        # read at check time, not import time, so a row added to the table is accepted
        problems = [] if self.engine in ENGINES else [
            f"engine must be one of {', '.join(ENGINES)}, got {self.engine!r}"]
        if self.recycle_requests is not None and self.recycle_requests < 0:
            problems.append("recycle_requests must be >= 0 (0: no worker process)")
        return problems

    @property
    def recycle_after(self) -> int:
        """Requests per worker process; 0 runs the engine in the calling process."""
        if self.recycle_requests is not None:
            return self.recycle_requests
        return self.spec.recycle_requests

    @property
    def spec(self) -> EngineSpec:
        return ENGINES[self.engine]


def _recycle_defaults() -> str:
    by_value: dict[int, list[str]] = {}
    for name, spec in ENGINES.items():
        by_value.setdefault(spec.recycle_requests, []).append(name)
    return ", ".join(f"{value:,} for {' and '.join(names)}"
                     for value, names in sorted(by_value.items(), reverse=True))


def _engine_config() -> type:
    fields = [
        ("engine", str, setting(DEFAULT_ENGINE, help="; ".join(
            f"{name}: {spec.help}" for name, spec in ENGINES.items()) + ".")),
        ("model", str, setting("smollm2", help="'smollm2' (bundled SmolLM2-135M-Instruct), "
                               "a local folder or a hub id; for openai, the served model "
                               "name.")),
        ("revision", str | None, setting(None, help="Model revision (hub models).")),
        ("recycle_requests", int | None, setting(
            None, help="Generate in a worker process that is replaced after this many "
            "requests, which gives back all the memory the engine gathered (outputs do "
            "not change; on GPUs, with batch_invariant); 0 = in this process. Unset: "
            f"{_recycle_defaults()}.")),
    ]
    fields += [(name, spec.settings, setting(factory=spec.settings,
                                             help=f"Settings of the {name} engine."))
               for name, spec in ENGINES.items() if spec.settings is not None]
    config = make_dataclass("EngineConfig", fields, bases=(_EngineSection,), frozen=True)
    config.__module__ = __name__  # so pickle (the worker process) finds it by name
    return config


# One section per engine that has settings (`engine.vllm.dtype`), built from the table.
EngineConfig = _engine_config()


def make_engine(config: EngineConfig, cache_dir) -> Engine:
    """The configured engine: its table row's class, built from this config."""
    return config.spec.engine.from_config(config, cache_dir)
