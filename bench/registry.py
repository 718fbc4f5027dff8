"""The benches: name -> module bench/<name>.py, the venv it runs in, and the smoke
settings (--set overrides) on which tests/bench/test_smoke.py runs it in seconds.

bench/gpu_check.py is not here: it is `make gpu-check`'s pass/fail check, whose list
flags take several values each (`--settings a=1 b=2`) and whose bad settings exit 2 with
a usage line; the harness's CLI would change both.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Entry:
    name: str
    smoke: tuple[str, ...]
    venv: str = ".venv"
    # captions_memory generates 10,000 vLLM views (about an hour on 2 cores): run by name
    in_make_bench: bool = True

    @property
    def module(self) -> str:
        return f"bench.{self.name}"

    def load(self):
        return importlib.import_module(self.module)

    @property
    def python(self) -> Path:
        return ROOT / self.venv / "bin" / "python"


# The smoke runs of shards, train and search share one rendered demo (the same settings).
SMOKE_DEMO = ("test_tracks=0", "duration_s=[6.0, 7.0]")
# make must never rebuild a venv in a smoke run, even where pyproject.toml is newer
SMOKE_MAKE = ("--assume-old=.stamps/venv", "--assume-old=.stamps/venv-llm")

# in the order `make bench` runs them: the quick ones first, the whole demo last
BENCHES = {entry.name: entry for entry in (
    Entry("demo_render", ("tracks=4", "test_tracks=2", "duration_s=[2.0, 3.0]")),
    Entry("captions_overhead", ("tracks=40",)),
    # a local Ray cluster's start (5-20 s on 2 cores) is most of its smoke run
    Entry("ray_captions", ("tracks=20", "chunk_tracks=[10, 5]", "actors=[1]", "rounds=1")),
    Entry("curate", ("tracks=300", "views=2", "pandas_rows=200", "rows_per_file=200")),
    Entry("catalog_read", ("tracks=200", "rounds=1")),
    Entry("descriptor_matching", ("captions=300", "rounds=1")),
    Entry("shards", ("sizes=[12]", *SMOKE_DEMO, "clip_seconds=2")),
    Entry("train", ("tracks=12", *SMOKE_DEMO, "batch=4", "batches=2", "loader_workers=[1]",
                    "memory_batches=[4]")),
    # CLAP fine-tuning against frozen-encoder heads, tiny and base CLAP: 1.5 min on 2 cores
    Entry("features", ("tracks=12", *SMOKE_DEMO, "batch=4", "steps=1", "warmup=1",
                       "audio_width=32", "audio_layers=2")),
    Entry("clap_finetune", ("configs=[tiny]", "steps=1", "warmup=0")),
    Entry("eval", ("items=400", "growth=[400]", "clips=8", "captions=16")),
    Entry("search", ("tracks=12", *SMOKE_DEMO, "sizes=[1000]", "ann_size=2000",
                     "page_size=500", "queries=20", "requests=3")),
    Entry("captions_engines", ("prompts=2", "batch=2", "max_tokens=4"), venv=".venv-llm"),
    Entry("nucleus", ("requests=2", "rounds=1", "max_tokens=4"), venv=".venv-llm"),
    Entry("faithful", ("tracks=2", "views=1"), venv=".venv-llm"),
    Entry("ray_captions_vllm", ("tracks=2", "n_views=1", "actors=[1]", "max_tokens=4"),
          venv=".venv-llm"),
    Entry("captions_memory", ("views=40", "chunk_tracks=2", "batch_requests=8",
                              "modes=[vllm-no-trim, vllm]", "recycle_requests=0"),
          venv=".venv-llm", in_make_bench=False),
    # the chain's first three stages on 6 tracks: the whole demo takes a quarter hour
    Entry("demo_stages", ("targets=[demo-data, captions, curate]",
                          "make_args=[DEMO_TRACKS=4, DEMO_TEST_TRACKS=2, ENGINE=template, "
                          f"'CAPTIONS_ARGS=--n-views 2', {', '.join(SMOKE_MAKE)}]")),
)}
