"""The caption stage's resident memory against views generated (run in .venv-llm).

Each mode runs the stage in a child process on the same catalog (10 views per track),
while this process reads the RSS of the child and everything it started (the engine's
worker processes) from /proc every second, and the views finished from a progress file
the engine writes after every batch:

  vllm           the vLLM engine as shipped (bundled SmolLM2 on CPU): in a worker process
                 replaced every `recycle_requests` requests, trimming inside and after
                 each batch; `views` views
  vllm-no-trim   in process, with trim_memory off, i.e. the stage before issue 17, stopped
                 once its first two chunks (2,560 views) are on disk: its slope, and the
                 throughput baseline
  vllm-tcmalloc  as `vllm`, with TCMalloc preloaded, stopped as vllm-no-trim is (skipped,
                 saying so, where libtcmalloc is not installed)
  template       the rule-based engine, in process, `views` views

Prints, per mode, the least-squares slope of RSS against views after the first 1,000
(goal: under 5 MB per 1,000 views for `vllm`), the slope of each batch's peak, the
highest RSS each worker process reached, views/s over the first 2,560 views (the same
requests, seeds and batches in every vLLM mode: faithful decoding's banned words depend
on the whole catalog, so every mode reads the same one) and over the whole run (worker
replacements included; goal: `vllm` within 5% of `vllm-no-trim`), and which rows of
the first 2,560 views differ from vllm-no-trim's.
"""

from __future__ import annotations

import ctypes
import functools
import glob
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.harness import ROOT, Outcome, child_command, tree_rss_mb
from pipeline.captions.memory import resident_mb
from schemas.config import Config, setting

VIEWS_PER_TRACK = 10
# The warm-up. Here oneDNN's primitive caches keep filling until ~1,500 views
# (+0.3 GB of live allocations, then flat), so slopes are also given after 2,000.
WARM_UP_VIEWS = (1000, 2000)
GOAL_MB_PER_1000 = 5.0
GENRES = ["rock", "pop", "jazz", "blues", "funk", "reggae", "country", "ambient", "electronic",
          "classical", "hiphop", "folk"]
MOODS = ["happy", "sad", "calm", "dark", "tense", "playful", "dreamy", "energetic", "epic",
         "romantic", "melancholic", "uplifting"]
INSTRUMENTS = ["drums", "bass", "piano", "flute", "violin", "organ", "synthesizer", "cello",
               "guitar", "voice", "trumpet", "saxophone"]
MODES = ("vllm-no-trim", "vllm-tcmalloc", "vllm", "template")


@dataclass(frozen=True)
class Settings(Config):
    views: int = setting(10_000, help="views for the vllm and template modes")
    modes: tuple[str, ...] = setting(MODES, help="modes to run, from: " + ", ".join(MODES))
    sample_s: float = setting(1.0, help="RSS sampling period")
    chunk_tracks: int = setting(128, help="the stage's chunk size (its default); the two "
                                "shorter modes and the throughput comparison cover the first "
                                "two chunks")
    batch_requests: int = setting(256, help="requests per engine call (the stage's default)")
    recycle_requests: int | None = setting(None, help="requests per worker process in the "
                                           "vllm and vllm-tcmalloc modes (0: in process); "
                                           "default: the engine's")

    def check(self) -> list[str]:
        problems = [f"modes: unknown {m!r}" for m in self.modes if m not in MODES]
        if self.views < VIEWS_PER_TRACK:
            problems.append(f"views must be >= {VIEWS_PER_TRACK}")
        return problems


def make_catalog(path: Path, tracks: int) -> None:
    rng = random.Random(0)
    with path.open("w") as f:
        for i in range(tracks):
            f.write(json.dumps({"track_id": f"t{i:06d}", "audio": f"a/{i}.flac", "tags": {
                "genre": rng.sample(GENRES, rng.randint(1, 3)),
                "mood": rng.sample(MOODS, rng.randint(2, 4)),
                "instrument": rng.sample(INSTRUMENTS, rng.randint(2, 5))}}) + "\n")


def tcmalloc_library() -> str | None:
    """Debian's libtcmalloc-minimal4 (or libgoogle-perftools4), if installed."""
    found = sorted(glob.glob("/usr/lib/*-linux-gnu/libtcmalloc_minimal.so.4")
                   + glob.glob("/usr/lib/*-linux-gnu/libtcmalloc.so.4"))
    return found[0] if found else None


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def glibc_heap_mb() -> tuple[float, float] | None:
    """(bytes in use, bytes free) inside glibc's malloc arenas, in MB (glibc >= 2.33)."""
    try:
        mallinfo2 = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):
        return None
    mallinfo2.restype = _Mallinfo2
    info = mallinfo2()
    return info.uordblks / 2**20, info.fordblks / 2**20


class Recording:
    """The engine, writing to `progress` when it is ready ('ready VIEWS TIME') and after
    every batch ('batch VIEWS TIME HEAP_IN_USE HEAP_FREE RSS': views done by every worker
    so far, then glibc's heap figures and the RSS of the process that runs the engine)."""

    def __init__(self, inner, progress: Path):
        self.inner, self.progress = inner, progress
        self.name, self.model_id = inner.name, inner.model_id
        self.model_revision = inner.model_revision
        # a fresh worker continues the count of those before it
        self.views = _views_done(progress) or 0
        self._log(f"ready {self.views} {time.monotonic()}")

    def _log(self, line: str) -> None:
        with self.progress.open("a") as f:
            f.write(line + "\n")

    def generate(self, requests, sampling):
        results = self.inner.generate(requests, sampling)
        self.views += len(requests)
        heap = glibc_heap_mb() or (-1, -1)
        rss = resident_mb()  # after the engine's trim, if it trims
        self._log(f"batch {self.views} {time.monotonic()} {heap[0]:.1f} {heap[1]:.1f} "
                  f"{rss:.1f}")
        return results


def recording_engine(progress: Path, config, cache_dir) -> Recording:
    """The engine factory (module level: a worker process unpickles it)."""
    from pipeline.captions.engines import make_engine

    return Recording(make_engine(config, cache_dir), progress)


def engine_config(mode: str, recycle_requests: int | None):
    """The mode's engine settings: the shipped defaults for `vllm`, unless given
    `recycle_requests`."""
    from pipeline.captions.engines import EngineConfig
    from pipeline.captions.engines.vllm_engine import VllmSettings

    engines = {"template": EngineConfig(engine="template"),
               "vllm-no-trim": EngineConfig(engine="vllm", recycle_requests=0,
                                            vllm=VllmSettings(trim_memory=False))}
    return engines.get(mode, EngineConfig(recycle_requests=recycle_requests))


def child(catalog: str, out: str, mode: str, chunk_tracks: int, batch_requests: int,
          progress: str, recycle_requests: int | None) -> dict:
    """The stage in this (child) process, its engine recording to `progress`."""
    from pipeline.captions.plan import DropConfig
    from pipeline.captions.stage import CaptionsConfig
    from pipeline.captions.stage import run as captions

    config = CaptionsConfig(catalog=Path(catalog), out=Path(out), chunk_tracks=chunk_tracks,
                            batch_requests=batch_requests,
                            drop=DropConfig(n_views=VIEWS_PER_TRACK),
                            engine=engine_config(mode, recycle_requests))
    stats = captions(config, engine_factory=functools.partial(recording_engine,
                                                              Path(progress)))
    return {"views": stats.views_generated, "peak_rss_mb": stats.peak_rss_mb}


def first_chunk_file(out: Path, chunk: int) -> Path:
    from pipeline.captions.stage import chunk_path

    return chunk_path(out, 0, 1, chunk)


def measure_mode(mode: str, catalog: Path, out: Path, sample_s: float, chunk_tracks: int,
            batch_requests: int, recycle_requests: int | None,
            stop_after_chunks: int | None) -> dict:
    env = dict(os.environ)
    if mode == "vllm-tcmalloc":
        env["LD_PRELOAD"] = tcmalloc_library()  # inherited by the engine's workers
    progress = out.with_suffix(".progress")
    command = child_command(child, catalog, out, mode, chunk_tracks, batch_requests,
                            progress, recycle_requests)
    started = time.monotonic()
    # its own session, so that stopping it stops its engine worker too
    process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    last_chunk = first_chunk_file(out, stop_after_chunks - 1) if stop_after_chunks else None
    samples = []  # (time, views done, RSS MB)
    stopped = False
    while process.poll() is None:
        views = _views_done(progress)
        rss = tree_rss_mb(process.pid)
        if rss and views is not None:
            samples.append((time.monotonic(), views, rss))
        if last_chunk and last_chunk.exists():
            os.killpg(process.pid, signal.SIGTERM)
            process.wait()
            stopped = True
            break
        time.sleep(sample_s)
    if stopped:
        result = {"views": _views_done(progress), "peak_rss_mb": None}
    elif process.returncode:
        raise SystemExit(f"{mode}: the stage exited with {process.returncode}")
    else:
        result = json.loads(process.stdout.read().strip().splitlines()[-1])
    marks = [line.split() for line in progress.read_text().splitlines()]
    readies = [float(m[2]) for m in marks if m[0] == "ready"]
    batches = [(int(m[1]), float(m[2]), [float(x) for x in m[3:]])
               for m in marks if m[0] == "batch"]
    at = {views: t for views, t, _ in batches}
    last = max(at)
    # the end of the second chunk: the same requests in every mode (a track with few
    # tag subsets plans fewer than 10 views, so it falls short of 2 chunks x 10 views)
    compare = max(v for v in at if v <= 2 * chunk_tracks * VIEWS_PER_TRACK)
    # while batches run: not the first model load (0 views done) nor the exit after the
    # last batch; a replacement worker's start is part of the run
    generating = [(v, r) for _, v, r in samples if 0 < v < last]
    # each worker's highest sampled RSS (the whole tree, while that worker ran)
    bounds = readies[1:] + [float("inf")]
    worker_peaks = [round(max((r for t, _, r in samples if begin <= t < end), default=0))
                    for begin, end in zip(readies, bounds, strict=True)]
    # a replacement's cost: from the end of the batch before it to the new worker ready
    restarts = [ready - max(t for _, t, _ in batches if t < ready) for ready in readies[1:]]
    return {
        "views": result["views"], "wall_s": round(time.monotonic() - started, 1),
        "recycle_requests": engine_config(mode, recycle_requests).recycle_after,
        "workers": len(readies),
        "model_load_s": round(readies[0] - started, 1),
        "restart_s": [round(r, 1) for r in restarts],
        "views_per_s": round(compare / (at[compare] - readies[0]), 3),
        "throughput_views": compare,
        "views_per_s_whole_run": round(last / (at[last] - readies[0]), 3),
        "stage_peak_rss_mb": result["peak_rss_mb"],
        "sampled_peak_rss_mb": round(max(r for _, _, r in samples)),
        "worker_peak_rss_mb": worker_peaks,
        **{f"slope_after_{w}": _slope([(v, r) for v, r in generating if v >= w])
           for w in WARM_UP_VIEWS},
        **{f"batch_peak_slope_after_{w}": _slope(_batch_peaks(generating, w))
           for w in WARM_UP_VIEWS},
        "batch_end_slope_after_2000": _slope([(v, e[2]) for v, _, e in batches if v >= 2000]),
        "samples_time_views_rss_mb": [(round(t - started, 1), v, round(r, 1))
                                      for t, v, r in samples],
        "batch_end_views_glibc_in_use_free_and_rss_mb": [(v, e) for v, _, e in batches],
    }


def _views_done(progress: Path) -> int | None:
    try:
        lines = progress.read_text().splitlines()
    except FileNotFoundError:
        return None
    return int(lines[-1].split()[1]) if lines else None


def _batch_peaks(samples: list[tuple[int, float]], after: int) -> list[tuple[int, float]]:
    """The highest RSS sampled while each batch ran (samples taken with `views` done
    belong to the batch that ends after them), for batches starting past `after`."""
    peaks: dict[int, float] = {}
    for views, rss in samples:
        if views >= after:
            peaks[views] = max(peaks.get(views, 0.0), rss)
    return sorted(peaks.items())


def _slope(points: list[tuple[int, float]]) -> float | None:
    """Least-squares MB of RSS per 1,000 views."""
    if len({v for v, _ in points}) < 2:
        return None
    mean_v = sum(v for v, _ in points) / len(points)
    mean_r = sum(r for _, r in points) / len(points)
    covariance = sum((v - mean_v) * (r - mean_r) for v, r in points)
    variance = sum((v - mean_v) ** 2 for v, _ in points)
    return round(1000 * covariance / variance, 2)


def differing_rows(a: Path, b: Path, chunks: int) -> list[str]:
    """The rows of the first `chunks` chunk files that differ, as 'chunk/row: columns'."""
    import pyarrow.parquet as pq

    found = []
    for chunk in range(chunks):
        left = pq.read_table(first_chunk_file(a, chunk)).to_pylist()
        right = pq.read_table(first_chunk_file(b, chunk)).to_pylist()
        if len(left) != len(right):
            found.append(f"{chunk}: {len(left)} rows against {len(right)}")
            continue
        found += [f"{chunk}/{i}: {','.join(k for k in x if x[k] != y.get(k))}"
                  for i, (x, y) in enumerate(zip(left, right, strict=True)) if x != y]
    return found


def run(settings: Settings) -> Outcome:
    compare = 2 * settings.chunk_tracks * VIEWS_PER_TRACK
    short = {"vllm-no-trim", "vllm-tcmalloc"}  # stopped after two chunks
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        catalog = tmp / "catalog.jsonl"
        make_catalog(catalog, settings.views // VIEWS_PER_TRACK)
        for mode in (m for m in MODES if m in settings.modes):
            if mode == "vllm-tcmalloc" and tcmalloc_library() is None:
                print("vllm-tcmalloc: skipped, no libtcmalloc (Debian: apt-get install "
                      "libtcmalloc-minimal4)", file=sys.stderr)
                continue
            # the template engine writes 10,000 views in about a second
            period = 0.01 if mode == "template" else settings.sample_s
            results[mode] = measure_mode(mode, catalog, tmp / mode, period,
                                         settings.chunk_tracks, settings.batch_requests,
                                         settings.recycle_requests,
                                         2 if mode in short else None)
            brief = {k: v for k, v in results[mode].items() if not isinstance(v, (list, dict))}
            print(f"{mode}: {json.dumps(brief)}", file=sys.stderr)
        differing = {mode: differing_rows(tmp / "vllm-no-trim", tmp / mode, 2)
                     for mode in ("vllm", "vllm-tcmalloc")
                     if mode in results and "vllm-no-trim" in results}

    base = results.get("vllm-no-trim", {}).get("views_per_s")
    ratios = {m: {"first_chunks": round(r["views_per_s"] / base, 3),
                  "whole_run": round(r["views_per_s_whole_run"] / base, 3)}
              for m, r in results.items() if base and m != "template"}
    figures = {"views_per_track": VIEWS_PER_TRACK, "goal_mb_per_1000": GOAL_MB_PER_1000,
               "modes": results, "throughput_over_no_trim": ratios,
               "rows_differing_from_no_trim": differing}
    print("slopes in MB of RSS (all processes) per 1,000 views: of every sample after "
          "1,000 and 2,000 views, and of each batch's peak after 2,000; views/s over the "
          f"first {compare:,} views and over the whole run, and their ratio to vllm-no-trim's",
          file=sys.stderr)
    print(f"{'mode':14} {'views':>6} {'workers':>7} {'>1k':>7} {'>2k':>7} {'peaks>2k':>8} "
          f"{'peak MB':>8} {'worker peaks MB':>16} {'views/s':>8} {'whole':>7} {'ratios':>12}",
          file=sys.stderr)
    for mode, r in results.items():
        ratio = "/".join(map(str, ratios.get(mode, {}).values()))
        peaks = ",".join(map(str, r["worker_peak_rss_mb"])) if r["workers"] > 1 else ""
        print(f"{mode:14} {r['views']:>6} {r['workers']:>7} {r['slope_after_1000']!s:>7} "
              f"{r['slope_after_2000']!s:>7} {r['batch_peak_slope_after_2000']!s:>8} "
              f"{r['sampled_peak_rss_mb']:>8} {peaks:>16} {r['views_per_s']!s:>8} "
              f"{r['views_per_s_whole_run']!s:>7} {ratio:>12}", file=sys.stderr)
    baseline = {f"throughput_over_no_trim.{m}.{k}": "vllm-no-trim's views/s over the first "
                f"{compare:,} views, same run (goal >= 0.95 over the whole run)"
                for m in ratios for k in ("first_chunks", "whole_run")}
    if "vllm" in ratios:
        vllm = results["vllm"]
        summary = (
            f"captions memory: vllm {vllm['slope_after_1000']} MB per 1,000 views after the "
            f"first 1,000, {vllm['slope_after_2000']} after 2,000 (goal < {GOAL_MB_PER_1000}; "
            f"before the fix {results['vllm-no-trim']['slope_after_1000']}), throughput "
            f"{ratios['vllm']['whole_run']}x the untrimmed stage's over the whole run, worker "
            f"replacements included (goal >= 0.95); rows differing from vllm-no-trim's: "
            f"{ {m: len(d) for m, d in differing.items()} }")
    else:
        summary = "captions memory: " + "; ".join(
            f"{m} {r['slope_after_1000']} MB per 1,000 views after the first 1,000, "
            f"{r['views_per_s']} views/s" for m, r in results.items())
    return Outcome(figures, baseline, summary)
