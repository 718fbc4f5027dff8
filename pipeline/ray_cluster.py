"""The Ray cluster a stage runs on when its `executor` setting is `ray`.

`RayConfig` is a config section (`ray.*`) of the caption and shard stages; `connected`
joins the cluster it names, or starts one on this machine for the run, and leaves a
cluster someone else started (a test, a notebook, `ray start`) running. Ray is imported
here only when a stage runs on it, so the CLI starts as fast without it, and a machine
without the `ray` extra is told what to install.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from schemas.config import Config, setting

EXECUTORS = ("local", "ray")


def executor_setting():
    return setting("local", choices=EXECUTORS, help="Where the work runs: local (this "
                   "process and its workers) or ray (a Ray cluster: see ray.address). Both "
                   "write the same files, so a run started with one finishes with the other.")


@dataclass(frozen=True)
class RayConfig(Config):
    address: str | None = setting(None, help="The Ray cluster to join: 'auto' (the one "
                                  "`ray start` runs on this node), host:port of its head, or "
                                  "ray://host:10001; unset: $RAY_ADDRESS (as a KubeRay job "
                                  "sets it) or a cluster `ray start` runs here, else one "
                                  "started on this machine for the run (executor ray only).")
    attempts: int = setting(3, help="Times one unit (a chunk of captions, a shard) is tried "
                            "before it is named and left for the next run; an attempt ends "
                            "when its worker dies or its engine fails (executor ray only).")

    def check(self) -> list[str]:
        return [] if self.attempts >= 1 else ["attempts must be >= 1"]


def import_ray():
    """The `ray` module, or an error that says how to install it."""
    try:
        import ray
    except ImportError as err:
        raise RuntimeError(
            f"--executor ray needs Ray, which is not installed here ({err}): install the "
            "project's `ray` extra into this environment (pip install -e '.[ray]'; "
            "`make setup` does it for both environments)") from None
    return ray


@contextmanager
def connected(config: RayConfig) -> Iterator:
    """Yield `ray` connected to the configured cluster. A cluster this process was
    already connected to is used as it is and left running; one this function joins or
    starts is left (and, if started, stopped) at the end."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    if config.address is None:
        # a cluster of our own, for this run: no dashboard, and nothing reported home
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        ray.init(include_dashboard=False, logging_level="WARNING")
    else:
        ray.init(address=config.address, logging_level="WARNING")
    try:
        yield ray
    finally:
        ray.shutdown()
