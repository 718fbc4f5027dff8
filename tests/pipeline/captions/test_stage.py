import gc
import json
import random
import re
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pyarrow as pa
import pytest

from pipeline.captions.engines import ENGINES, EngineConfig, EngineSpec, Result, Sampling
from pipeline.captions.engines.template import TemplateEngine
from pipeline.captions.plan import DropConfig, plan_views
from pipeline.captions.stage import CaptionsConfig, run
from pipeline.sharding import resolve_rank
from schemas.catalog import iter_catalog
from schemas.config import ConfigError, load_config
from schemas.views import read_table, views_schema

GENRES = ["rock", "pop", "jazz", "blues", "funk"]
MOODS = ["happy", "sad", "calm", "dark", "tense"]
INSTRUMENTS = ["drums", "bass", "piano", "flute", "violin", "organ"]


def make_catalog(path: Path, n: int, seed: int = 0) -> Path:
    """Tracks with at least 7 distinct tag subsets (3+ instruments), so every track
    gets the n_views views these tests count (planning gives a track no more views
    than it has subsets)."""
    rng = random.Random(seed)
    with path.open("w") as f:
        for i in range(n):
            f.write(json.dumps({
                "track_id": f"t{i:05d}", "audio": f"a/{i}.flac",
                "tags": {"genre": rng.sample(GENRES, rng.randint(1, 2)),
                         "mood": rng.sample(MOODS, rng.randint(0, 3)),
                         "instrument": rng.sample(INSTRUMENTS, rng.randint(3, 4))}}) + "\n")
    return path


def config(tmp_path, out="views", **changes):
    base = dict(catalog=tmp_path / "catalog.jsonl", out=tmp_path / out,
                engine=EngineConfig(engine="template"), drop=DropConfig(n_views=4),
                chunk_tracks=8)
    base.update(changes)
    return CaptionsConfig(**base)


def rows(out: Path) -> list[dict]:
    found = []
    for path in sorted(out.glob("views-*.parquet")):
        found += read_table(str(path), views_schema()).to_pylist()
    return found


@pytest.fixture
def catalog(tmp_path):
    return make_catalog(tmp_path / "catalog.jsonl", 30)


def test_writes_one_valid_row_per_track_view_language(tmp_path, catalog, capsys):
    stats = run(config(tmp_path, languages=("en", "de")))
    found = rows(tmp_path / "views")
    assert len(found) == 30 * 4 * 2 == stats.views_generated
    assert len({r["content_key"] for r in found}) == len(found)
    assert {(r["track_id"], r["view_id"], r["language"]) for r in found} == {
        (f"t{i:05d}", v, lang) for i in range(30) for v in range(4) for lang in ("en", "de")}
    first = found[0]
    assert first["engine"] == "template" and first["template_id"] == "caption-v1"
    assert json.loads(first["sampling"]) == {"max_tokens": 64, "temperature": 0.7, "top_p": 0.95}
    for row in found:  # the caption speaks of the view's own tags, in the right row
        assert all(tag in row["text"] for tag in row["tags"]["instrument"])
    assert len(list((tmp_path / "views").glob("views-*.parquet"))) == 4  # 30 tracks / 8
    stats_file = json.loads((tmp_path / "views/_stats/r00000-of00001.json").read_text())
    assert stats_file["views_generated"] == 240 and stats_file["failures"] == 0
    # peak RSS: in the stats file and on the progress bar, so a climb shows early
    assert 20 < stats_file["peak_rss_mb"] == stats.peak_rss_mb < 4096
    shown = [int(mb.replace(",", "")) for mb in re.findall(r"peak_rss=([\d,]+)MB",
                                                           capsys.readouterr().err)]
    assert shown and shown == sorted(shown) and shown[-1] <= stats.peak_rss_mb


def test_rejected_catalog_rows_are_counted_not_dropped_silently(tmp_path, catalog):
    with catalog.open("a") as f:
        f.write(json.dumps({"track_id": "bad", "audio": "../../etc/passwd",
                            "tags": {"genre": ["rock"]}}) + "\n")
    stats = run(config(tmp_path))
    assert stats.tracks == 30 and stats.catalog_rejects == 1
    assert "row 31: audio" in stats.reject_examples[0]
    saved = json.loads((tmp_path / "views/_stats/r00000-of00001.json").read_text())
    assert saved["catalog_rejects"] == 1


def test_rerun_generates_nothing(tmp_path, catalog):
    run(config(tmp_path))
    before = rows(tmp_path / "views")
    # as a killed run leaves its temporary file; another rank's is that rank's to clean
    killed = tmp_path / "views" / ".views-r00000-of00001-00002.parquet.tmp-999999"
    others = tmp_path / "views" / ".views-r00001-of00002-00000.parquet.tmp-999999"
    killed.write_bytes(b"half a chunk")
    others.write_bytes(b"half a chunk")
    stats = run(config(tmp_path))
    assert stats.views_generated == 0 and stats.chunks_skipped == 4
    assert rows(tmp_path / "views") == before
    assert not killed.exists() and others.exists()


def test_changed_settings_regenerate_exactly_the_affected_views(tmp_path, catalog):
    run(config(tmp_path))
    more = run(config(tmp_path, drop=DropConfig(n_views=6)))
    assert (more.views_reused, more.views_generated) == (120, 60)  # views 0-3 are unchanged
    hotter = run(config(tmp_path, drop=DropConfig(n_views=6), sampling=Sampling(temperature=1)))
    assert hotter.views_generated == 180
    assert len(rows(tmp_path / "views")) == 180


class FlakyEngine(TemplateEngine):
    """Fails some requests and returns the rest in reverse order (ids, not order, match)."""

    def __init__(self, fail_every):
        self.fail_every = fail_every

    def generate(self, requests, sampling):
        results = super().generate(requests, sampling)
        for i, r in enumerate(results):
            if self.fail_every and i % self.fail_every == 0:
                results[i] = Result(r.request_id, "", "error", error="server on fire")
        return results[::-1]


def test_failed_requests_are_left_out_and_retried(tmp_path, catalog):
    first = run(config(tmp_path), engine_factory=lambda *_: FlakyEngine(3))
    assert first.failures > 0 and "server on fire" in first.failure_examples[0]
    assert len(rows(tmp_path / "views")) == 120 - first.failures
    second = run(config(tmp_path), engine_factory=lambda *_: FlakyEngine(0))
    assert second.views_generated == first.failures
    reference = tmp_path / "reference"
    run(config(tmp_path, out="reference"))
    assert rows(tmp_path / "views") == rows(reference)


def test_engine_calls_are_batched_within_a_chunk(tmp_path, catalog):
    sizes = []

    class Counting(TemplateEngine):
        def generate(self, requests, sampling):
            sizes.append(len(requests))
            return super().generate(requests, sampling)

    run(config(tmp_path, batch_requests=7), engine_factory=lambda *_: Counting())
    # 30 tracks in chunks of 8, 4 views each: 32, 32, 32 and 24 requests, 7 at a time
    assert sizes == [7, 7, 7, 7, 4] * 3 + [7, 7, 7, 3]
    assert len(rows(tmp_path / "views")) == 120


def test_ranks_split_the_work_disjointly(tmp_path, catalog):
    whole = run(config(tmp_path, out="whole"))
    parts = [run(config(tmp_path, out="parts", rank=r, world_size=3)) for r in range(3)]
    assert sum(p.tracks for p in parts) == whole.tracks == 30
    key = lambda r: r["content_key"]  # noqa: E731
    assert sorted(rows(tmp_path / "parts"), key=key) == sorted(rows(tmp_path / "whole"), key=key)


def test_layout_change_is_refused_and_stale_chunks_removed(tmp_path, catalog):
    run(config(tmp_path))
    with pytest.raises(ValueError, match="chunk_tracks"):
        run(config(tmp_path, chunk_tracks=5))
    make_catalog(tmp_path / "catalog.jsonl", 10)
    run(config(tmp_path))
    assert len(list((tmp_path / "views").glob("views-*.parquet"))) == 2
    assert {r["track_id"] for r in rows(tmp_path / "views")} == {f"t{i:05d}" for i in range(10)}


def test_resume_after_sigkill_matches_an_uninterrupted_run(tmp_path):
    make_catalog(tmp_path / "catalog.jsonl", 4000, seed=1)
    args = [sys.executable, "-m", "adswap.cli", "captions", "--catalog",
            str(tmp_path / "catalog.jsonl"), "--engine", "template", "--chunk-tracks", "50"]
    killed = subprocess.Popen(args + ["--out", str(tmp_path / "killed")],
                              stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    deadline = time.time() + 60
    while len(list((tmp_path / "killed").glob("views-*.parquet"))) < 3:
        assert killed.poll() is None, "the run ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    written = len(list((tmp_path / "killed").glob("views-*.parquet")))
    assert written < 80, "the run finished before the kill"
    subprocess.run(args + ["--out", str(tmp_path / "killed")], check=True,
                   stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    subprocess.run(args + ["--out", str(tmp_path / "clean")], check=True,
                   stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    killed_rows, clean_rows = rows(tmp_path / "killed"), rows(tmp_path / "clean")
    planned = sum(len(plan_views(r["track_id"], r["tags"], DropConfig())) for r in map(
        json.loads, (tmp_path / "catalog.jsonl").read_text().splitlines()))
    assert 38000 < len(clean_rows) == planned  # 10 views a track, fewer for a few
    assert killed_rows == clean_rows
    assert not list((tmp_path / "killed").glob(".*tmp*"))


def test_slurm_array_sets_rank(monkeypatch):
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "7")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "5")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "4")
    config = CaptionsConfig(catalog=Path("c.csv"), out=Path("v"))
    assert (config.rank, config.world_size) == (None, None)
    resolved = resolve_rank(config)
    assert (resolved.rank, resolved.world_size) == (2, 4)
    given = resolve_rank(CaptionsConfig(catalog=Path("c.csv"), out=Path("v"), rank=0,
                                        world_size=2))
    assert (given.rank, given.world_size) == (0, 2)  # settings win
    with pytest.raises(ValueError, match="rank"):
        CaptionsConfig(catalog=Path("c.csv"), out=Path("v"), rank=4, world_size=4)


def test_settings_report_every_problem(tmp_path):
    (tmp_path / "c.yaml").write_text("colour: red\ndrop:\n  keep_prob: 2\n")
    with pytest.raises(ConfigError) as err:
        load_config(CaptionsConfig, tmp_path / "c.yaml",
                    ["engine.engine=gpt", "languages=en,xx", "n_views=3"])
    text = str(err.value)
    for part in ("colour: unknown setting", "catalog: required", "out: required",
                 "engine.engine must be one of", "drop.keep_prob",
                 "unknown setting 'n_views' (did you mean drop.n_views?)"):
        assert part in text, text


def test_cli_runs_with_config_file_and_flags(tmp_path, catalog):
    from typer.testing import CliRunner

    from adswap.cli import app

    (tmp_path / "c.yaml").write_text("engine:\n  engine: template\ndrop:\n  n_views: 2\n"
                                     "languages: [en, fr]\n")
    result = CliRunner().invoke(app, ["captions", "--config", str(tmp_path / "c.yaml"),
                                      "--catalog", str(catalog), "--out", str(tmp_path / "v"),
                                      "--n-views", "3"])
    assert result.exit_code == 0, result.output
    assert len(rows(tmp_path / "v")) == 30 * 3 * 2
    bad = CliRunner().invoke(app, ["captions", "--catalog", str(tmp_path / "nope.csv"),
                                   "--out", str(tmp_path / "w"), "--engine", "template"])
    assert bad.exit_code == 1 and "does not exist" in bad.output


class HeldMemory:
    """Counts steps; tracing starts at step `start`, so the bytes still held at step `end`
    beyond those held at step `middle` are state kept across the steps in between."""

    def __init__(self, start: int, middle: int, end: int):
        self.start, self.middle, self.end = start, middle, end
        self.steps, self.snapshots = 0, {}

    def step(self) -> None:
        self.steps += 1
        gc.collect()
        if self.steps == self.start:
            tracemalloc.start(25)
        elif self.steps in (self.middle, self.end):
            self.snapshots[self.steps] = tracemalloc.take_snapshot()
        if self.steps == self.end:
            tracemalloc.stop()

    def growth(self) -> tuple[int, str]:
        diff = self.snapshots[self.end].compare_to(self.snapshots[self.middle], "traceback")
        where = "\n".join(f"{d.size_diff:+} B\n" + "\n".join(d.traceback.format()[-10:])
                          for d in diff[:3])
        return sum(d.size_diff for d in diff), where


def test_stage_holds_no_growing_state_across_chunks(tmp_path):
    """150 chunks through an engine that keeps nothing: from the 100th to the 150th chunk
    the stage comes to hold no more than the catalog reader alone does over the same rows
    (it keeps every track id, by design, to find duplicates); Arrow's pool stays flat."""
    tags = {"genre": ["rock", "jazz"], "mood": ["calm", "dark"], "instrument": ["piano", "bass"]}
    catalog = tmp_path / "catalog.jsonl"
    with catalog.open("w") as f:
        for i in range(600):  # same tags and id widths, so every chunk allocates the same
            f.write(json.dumps({"track_id": f"t{i:05d}", "audio": f"a/{i:05d}.flac",
                                "tags": tags}) + "\n")
    stage, arrow = HeldMemory(50, 100, 150), {}

    class Measuring(TemplateEngine):
        def generate(self, requests, sampling):
            stage.step()  # one call per chunk of 4 tracks
            if stage.steps in (100, 150):
                arrow[stage.steps] = pa.total_allocated_bytes()
            return super().generate(requests, sampling)

    reader = HeldMemory(50, 100, 150)
    try:
        stats = run(config(tmp_path, chunk_tracks=4), engine_factory=lambda *_: Measuring())
        for row, _ in enumerate(iter_catalog(catalog), 1):
            if row % 4 == 0:
                reader.step()
    finally:
        tracemalloc.stop()
    assert stats.chunks == stage.steps == reader.steps == 150
    (held, where), (held_by_reader, _) = stage.growth(), reader.growth()
    assert 0 < held_by_reader < 100 * 200  # the id index: under 100 B per track
    # CPython's free lists keep up to 80 freed lists, dicts, tuples... each, counted
    # where they were first allocated: about 10 KB of noise, whatever the run's length
    assert held - held_by_reader < 16384, f"the stage kept {held} B over 50 chunks:\n{where}"
    assert arrow[150] == arrow[100]


class ShoutingEngine(TemplateEngine):
    """A caption engine that lives outside pipeline/captions/engines: the template's
    captions in capitals, English only."""

    name = "shout"

    def generate(self, requests, sampling):
        return [Result(r.request_id, r_.text.upper(), r_.finish_reason)
                for r, r_ in zip(requests, super().generate(requests, sampling), strict=True)]


def test_an_engine_is_one_row_of_the_table(tmp_path, catalog, monkeypatch):
    monkeypatch.setitem(ENGINES, "shout", EngineSpec(
        "shout", "capitals", ShoutingEngine, languages=("en",), uses_model=False))
    run(config(tmp_path, engine=EngineConfig(engine="shout")))
    written = rows(tmp_path / "views")
    assert written and all(r["engine"] == "shout" and r["text"].isupper() for r in written)
    # its languages are checked when the config is read, before any work
    with pytest.raises(ConfigError, match="the shout engine writes en, not de"):
        config(tmp_path, engine=EngineConfig(engine="shout"), languages=("en", "de"))
    with pytest.raises(ConfigError, match="the template engine writes en, de, fr, es, it, "
                       "not ja"):
        config(tmp_path, languages=("ja",))
    with pytest.raises(ConfigError, match="engine must be one of vllm, openai, template, "
                       "shout, got 'nope'"):
        EngineConfig(engine="nope")
