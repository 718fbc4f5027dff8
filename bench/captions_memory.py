"""Benchmark: the caption stage's resident memory against views generated (run in .venv-llm).

Each mode runs the stage in a child process on the same catalog (10 views per track),
while this process reads the child's RSS from /proc every second and the views it has
finished from a progress file its engine writes after every batch:

  vllm           the vLLM engine as shipped (bundled SmolLM2 on CPU), --views views
  vllm-no-trim   the same with trim_memory off, i.e. the stage before issue 17, over the
                 first two chunks (2,560 views): its slope, and the throughput baseline
  vllm-tcmalloc  as `vllm`, with TCMalloc preloaded, over the same 2,560 views (skipped,
                 saying so, where libtcmalloc is not installed)
  template       the rule-based engine, --views views

Prints, per mode, the least-squares slope of RSS against views after the first 1,000
(goal: under 5 MB per 1,000 views for `vllm`), the slope of each batch's peak, views/s
over the first 2,560 views (the same requests, seeds and batches in every vLLM mode;
goal: `vllm` within 5% of `vllm-no-trim`), and whether those rows are identical.
"""

from __future__ import annotations

import argparse
import ctypes
import glob
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from curate import tree_rss_mb

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


def child(catalog: Path, out: Path, engine: str, trim: bool, chunk_tracks: int,
          progress: Path) -> None:
    """Run the stage; after every engine call append 'views seconds' and glibc's heap
    figures (what is in use, what is free but kept) to `progress`."""
    from pipeline.captions.engines import EngineConfig, VllmSettings, make_engine
    from pipeline.captions.plan import DropConfig
    from pipeline.captions.stage import CaptionsConfig, run

    log = progress.open("a", buffering=1)

    class Recording:
        def __init__(self, inner):
            self.inner, self.views = inner, 0
            self.name, self.model_id = inner.name, inner.model_id
            self.model_revision = inner.model_revision
            log.write(f"0 {time.monotonic()}\n")  # engine ready: the model is loaded

        def generate(self, requests, sampling):
            results = self.inner.generate(requests, sampling)
            self.views += len(requests)
            heap = glibc_heap_mb() or (-1, -1)
            rss = int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf(
                "SC_PAGE_SIZE") / 2**20  # after the engine's trim, if it trims
            log.write(f"{self.views} {time.monotonic()} {heap[0]:.1f} {heap[1]:.1f} "
                      f"{rss:.1f}\n")
            return results

    config = CaptionsConfig(catalog=catalog, out=out, chunk_tracks=chunk_tracks,
                            drop=DropConfig(n_views=VIEWS_PER_TRACK),
                            engine=EngineConfig(engine=engine,
                                                vllm=VllmSettings(trim_memory=trim)))
    stats = run(config, engine_factory=lambda *a: Recording(make_engine(*a)))
    print(json.dumps({"views": stats.views_generated, "peak_rss_mb": stats.peak_rss_mb}))


def measure(mode: str, catalog: Path, out: Path, sample_s: float, chunk_tracks: int) -> dict:
    engine = "template" if mode == "template" else "vllm"
    env = dict(os.environ)
    if mode == "vllm-tcmalloc":
        env["LD_PRELOAD"] = tcmalloc_library()
    progress = out.with_suffix(".progress")
    command = [sys.executable, __file__, "--child", str(catalog), str(out), engine,
               str(mode != "vllm-no-trim"), str(chunk_tracks), str(progress)]
    started = time.monotonic()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
    samples, cpu = [], []  # (views done, RSS MB), (views done, CPU seconds)
    while process.poll() is None:
        views = _views_done(progress)
        rss = tree_rss_mb(process.pid)
        if rss and views is not None:
            samples.append((views, rss))
            cpu.append((views, _cpu_seconds(process.pid)))
        time.sleep(sample_s)
    if process.returncode:
        raise SystemExit(f"{mode}: the stage exited with {process.returncode}")
    result = json.loads(process.stdout.read().strip().splitlines()[-1])
    marks = [line.split() for line in progress.read_text().splitlines()]
    ready = float(marks[0][1])
    at = {int(m[0]): float(m[1]) for m in marks}
    batch_end = {int(m[0]): [float(x) for x in m[2:]] for m in marks[1:]}
    compare = min(2 * chunk_tracks * VIEWS_PER_TRACK, max(at))
    # while batches run: not the model load (0 views done) nor the exit after the last
    generating = [(v, r) for v, r in samples if 0 < v < max(at)]
    # CPU seconds from the model loaded to `compare` views (None if a sample is missing)
    loaded = [s for v, s in cpu if v == 0 and s is not None]
    done = [s for v, s in cpu if v >= compare and s is not None]
    return {
        "views": result["views"], "wall_s": round(time.monotonic() - started, 1),
        "model_load_s": round(ready - started, 1),
        "views_per_s": round(compare / (at[compare] - ready), 3) if compare in at else None,
        "throughput_views": compare,
        "cpu_s_per_view": round((done[0] - loaded[-1]) / compare, 4)
        if done and loaded else None,
        "stage_peak_rss_mb": result["peak_rss_mb"],
        "sampled_peak_rss_mb": round(max(r for _, r in samples)),
        **{f"slope_after_{w}": _slope([(v, r) for v, r in generating if v >= w])
           for w in WARM_UP_VIEWS},
        **{f"batch_peak_slope_after_{w}": _slope(_batch_peaks(generating, w))
           for w in WARM_UP_VIEWS},
        "batch_end_slope_after_2000": _slope([(v, e[2]) for v, e in batch_end.items()
                                              if v >= 2000]),
        "samples_views_rss_mb": [(v, round(r, 1)) for v, r in samples],
        "batch_end_glibc_in_use_free_and_rss_mb": batch_end,
    }


def _views_done(progress: Path) -> int | None:
    try:
        lines = progress.read_text().splitlines()
    except FileNotFoundError:
        return None
    return int(lines[-1].split()[0]) if lines else None


def _cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


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


def same_rows(a: Path, b: Path, chunks: int) -> bool:
    import pyarrow.parquet as pq

    for chunk in range(chunks):
        name = f"views-r00000-of00001-{chunk:06d}.parquet"
        if not pq.read_table(a / name).equals(pq.read_table(b / name)):
            return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--views", type=int, default=10_000,
                        help="views for the vllm and template modes")
    parser.add_argument("--sample-s", type=float, default=1.0, help="RSS sampling period")
    parser.add_argument("--chunk-tracks", type=int, default=128,
                        help="the stage's chunk size (its default); the two shorter modes "
                        "and the throughput comparison cover the first two chunks")
    parser.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        catalog, out, engine, trim, chunk_tracks, progress = args.child
        child(Path(catalog), Path(out), engine, trim == "True", int(chunk_tracks), Path(progress))
        return

    compare = 2 * args.chunk_tracks * VIEWS_PER_TRACK
    modes = {"vllm-no-trim": compare, "vllm-tcmalloc": compare,
             "vllm": args.views, "template": args.views}
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for mode, views in modes.items():
            if mode == "vllm-tcmalloc" and tcmalloc_library() is None:
                print("vllm-tcmalloc: skipped, no libtcmalloc (Debian: apt-get install "
                      "libtcmalloc-minimal4)", file=sys.stderr)
                continue
            catalog = tmp / f"catalog-{views}.jsonl"
            if not catalog.exists():
                make_catalog(catalog, views // VIEWS_PER_TRACK)
            # the template engine writes 10,000 views in about a second
            period = 0.01 if mode == "template" else args.sample_s
            results[mode] = measure(mode, catalog, tmp / mode, period, args.chunk_tracks)
            brief = {k: v for k, v in results[mode].items() if not isinstance(v, (list, dict))}
            print(f"{mode}: {json.dumps(brief)}", file=sys.stderr)
        identical = {mode: same_rows(tmp / "vllm-no-trim", tmp / mode, 2)
                     for mode in ("vllm", "vllm-tcmalloc") if mode in results}

    base = results["vllm-no-trim"]["views_per_s"]
    report = {"views_per_track": VIEWS_PER_TRACK,
              "goal_mb_per_1000": GOAL_MB_PER_1000, "modes": results,
              "throughput_over_no_trim": {m: round(r["views_per_s"] / base, 3)
                                          for m, r in results.items()
                                          if m != "template" and r["views_per_s"]},
              "rows_identical_to_no_trim": identical}
    out = Path("bench/results")
    out.mkdir(parents=True, exist_ok=True)
    (out / "captions_memory.json").write_text(json.dumps(report, indent=2) + "\n")
    print("slopes in MB of RSS per 1,000 views: of every sample after 1,000 and 2,000 "
          "views, and of each batch's peak after 2,000")
    print(f"{'mode':14} {'views':>6} {'>1k':>7} {'>2k':>7} {'peaks>2k':>8} {'peak MB':>8} "
          f"{'views/s':>8} {'ratio':>6}")
    for mode, r in results.items():
        ratio = report["throughput_over_no_trim"].get(mode)
        print(f"{mode:14} {r['views']:>6} {r['slope_after_1000']!s:>7} "
              f"{r['slope_after_2000']!s:>7} {r['batch_peak_slope_after_2000']!s:>8} "
              f"{r['stage_peak_rss_mb']:>8} {r['views_per_s']!s:>8} {ratio!s:>6}")
    vllm = results["vllm"]
    print(f"captions memory: vllm {vllm['slope_after_1000']} MB per 1,000 views after the "
          f"first 1,000, {vllm['slope_after_2000']} after 2,000 (goal < {GOAL_MB_PER_1000}; "
          f"before the fix {results['vllm-no-trim']['slope_after_1000']}), throughput "
          f"{report['throughput_over_no_trim']['vllm']}x the untrimmed stage over the same "
          f"{compare:,} views (goal >= 0.95); rows identical: {identical}")


if __name__ == "__main__":
    main()
