"""Using a trained model (`adswap embed`, `search`, `serve`), on 2 cores.

1. Embedding throughput of the demo model (trainer/configs/demo.yaml: log-mel CNN, 5 s
   windows at 16 kHz, frozen MiniLM), `adswap embed --catalog` over rendered demo
   tracks (10-15 s at 22.05 kHz: decode, resample, two or three windows each), tracks/s;
   baseline: the model's forward pass alone on the same number of windows.
2. Exact search, one query at a time, at each of `sizes` (default 10k, 100k and 1M
   tracks; 256-d): p50 and p99 latency of `top_k` (chunked, as `adswap search` runs it);
   baseline: one unchunked numpy matrix-vector product and argpartition over the same
   matrix.
3. The approximate index at `ann_size` (1M) tracks: build time (k-means, adding, tuning
   nprobe), the nprobe its build chose, recall@10 against exact search on `queries`
   (500) queries it did not tune on, p50/p99 latency; baseline: exact search at that size.
4. The page: p50 round trip of a text search (HTTP GET of the result page, through
   uvicorn on 127.0.0.1) on a `page_size` (100k) track index; baseline: the same query
   in process (text encoder + exact search), so the ratio is what HTTP and the page add.

Synthetic embeddings have the shape of learned ones: a 2,000-component Gaussian mixture
in a 32-d latent space, mapped to 256-d by a fixed random matrix, plus small isotropic
noise, normalised. Uniform random vectors (no structure) would make any approximate
index look worse than it does on real embeddings; a real catalog's numbers will differ.
"""

from __future__ import annotations

import json
import shutil
import sys
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bench.data import check_demo, demo_folder
from bench.harness import ROOT, WORK, Outcome
from schemas.config import Config, as_dict, setting

DIM = 256


@dataclass(frozen=True)
class Settings(Config):
    tracks: int = setting(200, help="demo tracks to embed")
    test_tracks: int = setting(500, help="held-out test tracks rendered beside them (not "
                               "embedded)")
    duration_s: tuple[float, ...] = setting((10.0, 15.0), help="shortest and longest track")
    sizes: tuple[int, ...] = setting((10_000, 100_000, 1_000_000), help="tracks of each "
                                     "exact-search measurement")
    ann_size: int = setting(1_000_000, help="tracks of the approximate index")
    queries: int = setting(500, help="queries of the approximate index's recall and "
                           "latency")
    page_size: int = setting(100_000, help="tracks of the page's index")
    requests: int = setting(50, help="searches through the page")
    work: Path = setting(WORK, help="folder for the demo catalog and indexes, kept and "
                         "reused")

    def check(self) -> list[str]:
        problems = check_demo(self.tracks, self.test_tracks, self.duration_s)
        return problems + [f"{name} must be >= 1" for name in ("ann_size", "queries",
                                                               "page_size", "requests")
                           if getattr(self, name) < 1]


def synthetic(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((2000, 32)).astype(np.float32)
    latent = centres[rng.integers(0, 2000, n)] + 0.5 * rng.standard_normal((n, 32)).astype(
        np.float32)
    lift = np.random.default_rng(99).standard_normal((32, DIM)).astype(np.float32)
    x = latent @ lift + 0.3 * rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def queries_like(n: int, seed: int) -> np.ndarray:
    """Query vectors from the same distribution as the items (text queries land near
    the tracks they describe), never items themselves."""
    return synthetic(n, seed=seed + 1000)


def percentiles(seconds: list[float]) -> dict:
    ms = np.array(seconds) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3),
            "p99_ms": round(float(np.percentile(ms, 99)), 3)}


def fake_run(folder: Path) -> Path:
    """A run folder holding the demo model, randomly initialised: throughput does not
    depend on what the weights learned."""
    from trainer.config import load_config
    from trainer.model import DuetMC

    run = folder / "demo-run"
    if not (run / "checkpoints" / "last.pt").exists():
        import yaml

        config = load_config(ROOT / "trainer" / "configs" / "demo.yaml",
                             [f"run.out={run}"])
        torch.manual_seed(0)
        model = DuetMC(config.model)
        (run / "checkpoints").mkdir(parents=True, exist_ok=True)
        (run / "config.yaml").write_text(yaml.safe_dump(as_dict(config), sort_keys=False))
        torch.save({"model": model.trainable_state()}, run / "checkpoints" / "last.pt")
    return run


def embedding_throughput(settings: Settings) -> dict:
    from retrieval.embed import EmbedConfig, embed
    from trainer.inference import Encoder

    work = settings.work
    demo = demo_folder(work, settings.tracks, settings.test_tracks, settings.duration_s)
    run = fake_run(work)
    out = work / "embed-out"
    shutil.rmtree(out, ignore_errors=True)
    stats = embed(EmbedConfig(run=run, out=out, catalog=demo / "catalog.parquet",
                              checkpoint="last", device="cpu"))
    encoder = Encoder.from_run(run, "last", "cpu")
    windows = [np.random.default_rng(i).standard_normal(encoder.frames).astype(np.float32)
               * 0.1 for i in range(encoder.batch_size)]
    encoder.embed_windows(windows)  # warm-up at the batch size embed uses
    started = time.perf_counter()
    done = 0
    while done < stats.clips:
        done += len(encoder.embed_windows(windows[:min(len(windows), stats.clips - done)]))
    forward = time.perf_counter() - started
    working = stats.seconds - stats.load_seconds
    return {"tracks": stats.tracks, "windows": stats.clips, "seconds": round(stats.seconds, 2),
            "model_load_seconds": round(stats.load_seconds, 2),
            "tracks_per_s": round(stats.tracks / stats.seconds, 1),
            "tracks_per_s_after_load": round(stats.tracks / working, 1),
            "windows_per_s_after_load": round(stats.clips / working, 1),
            "baseline_forward_only_tracks_per_s": round(stats.tracks / forward, 1),
            "ratio_to_forward_only": round(forward / working, 3)}


def exact_latency(n: int, queries: int) -> dict:
    from retrieval.library import top_k

    items = synthetic(n)
    qs = queries_like(queries, 1)
    top_k(qs[:1], items, 10)  # warm-up
    ours, base = [], []
    for q in qs:
        started = time.perf_counter()
        top_k(q[None], items, 10)
        ours.append(time.perf_counter() - started)
        started = time.perf_counter()
        scores = items @ q
        top = np.argpartition(-scores, 10)[:10]
        top[np.argsort(-scores[top])]
        base.append(time.perf_counter() - started)
    result = {"tracks": n, "queries": queries, **percentiles(ours),
              "baseline_numpy_unchunked": percentiles(base)}
    result["ratio_p50_to_baseline"] = round(result["p50_ms"] /
                                            result["baseline_numpy_unchunked"]["p50_ms"], 3)
    return result


class _Folder:
    """Just enough of a Library for build_index: vectors, a folder, a content hash."""

    def __init__(self, folder: Path, vectors: np.ndarray):
        self.folder, self.vectors = folder, vectors
        self.manifest = {"content_sha256": "synthetic"}


def approximate(work: Path, n: int, queries: int) -> dict:
    from retrieval.ann import Approximate, IndexConfig, build_index
    from retrieval.library import top_k

    items = synthetic(n)
    library = _Folder(work / f"ann-{n}", items)
    started = time.perf_counter()
    # tuned on the catalog's tracks and on 1,000 text-like queries, as `embed --index` is
    info = build_index(library, IndexConfig(queries=1000), queries_like(1000, 3))
    build = time.perf_counter() - started
    index = Approximate(library)
    qs = queries_like(queries, 2)
    _, exact = top_k(qs, items, 10)
    index.search(qs[:1], 10)
    found, times, exact_times = [], [], []
    for q, truth in zip(qs, exact, strict=True):
        started = time.perf_counter()
        _, rows = index.search(q[None], 10)
        times.append(time.perf_counter() - started)
        found.append(len(set(rows[0]) & set(truth)) / 10)
    for q in qs[:100]:
        started = time.perf_counter()
        top_k(q[None], items, 10)
        exact_times.append(time.perf_counter() - started)
    result = {"tracks": n, "build_seconds": round(build, 1), "nlist": info["nlist"],
              "nprobe": info["nprobe"], "build_recall@10": info["recall_by_query"],
              "recall@10": round(float(np.mean(found)), 4), "queries": queries,
              **percentiles(times), "baseline_exact": percentiles(exact_times),
              "tuning": info["tuning"]}
    result["speedup_p50_over_exact"] = round(result["baseline_exact"]["p50_ms"] /
                                             result["p50_ms"], 1)
    shutil.rmtree(library.folder)  # a gigabyte at 1M tracks
    return result


def synthetic_index(work: Path, run: Path, n: int) -> Path:
    """An embeddings folder of n synthetic tracks, tied to the bench run's checkpoint."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from schemas.embeddings import MANIFEST_SCHEMA_ID, embedding_column, tracks_schema
    from trainer.checkpoint import file_sha256

    folder = work / f"index-{n}"
    vectors = synthetic(n)
    ids = [f"synthetic-{i:07d}" for i in range(n)]
    tags = [[("genre", ["rock"]), ("mood", ["happy"])]] * n
    table = pa.Table.from_arrays([
        pa.array(ids), pa.array(["test"] * n), pa.array([None] * n, pa.string()),
        pa.array(tags, pa.map_(pa.string(), pa.list_(pa.string()))),
        pa.array(["rock, happy"] * n), pa.array([1] * n, pa.int32()),
        embedding_column(vectors, "float16")], schema=tracks_schema("float16", DIM))
    (folder / "tracks").mkdir(parents=True, exist_ok=True)
    pq.write_table(table, folder / "tracks" / "part-000000.parquet")
    checkpoint = run / "checkpoints" / "last.pt"
    manifest = {"schema": MANIFEST_SCHEMA_ID, "run": str(run.resolve()),
                "checkpoint": "last.pt", "checkpoint_sha256": file_sha256(checkpoint),
                "model": {"dim": DIM}, "settings": {"dtype": "float16"}, "audio_root": None,
                "parts": [{"name": "part-000000", "tracks": n}], "tracks": n,
                "content_sha256": "synthetic", "complete": True}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def page_round_trip(work: Path, n: int, requests: int) -> dict:
    import uvicorn

    from retrieval.search import Searcher
    from retrieval.serve.app import ServeConfig, bind, create_app

    run = fake_run(work)
    index = synthetic_index(work, run, n)
    searcher = Searcher.open(index)
    app = create_app(ServeConfig(index=index, port=0), {"a": searcher})
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    base = f"http://127.0.0.1:{sock.getsockname()[1]}/?"
    texts = [f"a calm jazz piece number {i} with piano and soft drums" for i in range(requests)]
    urllib.request.urlopen(base + urllib.parse.urlencode({"q": "warm-up"})).read()
    page, direct = [], []
    try:
        for text in texts:
            started = time.perf_counter()
            body = urllib.request.urlopen(base + urllib.parse.urlencode({"q": text})).read()
            page.append(time.perf_counter() - started)
            assert body.count(b'class="result"') == 10
            started = time.perf_counter()
            searcher.text(text, 10)
            direct.append(time.perf_counter() - started)
    finally:
        server.should_exit = True
        thread.join()
        sock.close()
    result = {"tracks": n, "requests": requests, **percentiles(page),
              "baseline_in_process_query": percentiles(direct)}
    result["ratio_p50_to_in_process"] = round(result["p50_ms"] /
                                              result["baseline_in_process_query"]["p50_ms"], 3)
    shutil.rmtree(index)
    return result


def run(settings: Settings) -> Outcome:
    torch.set_num_threads(2)
    settings.work.mkdir(parents=True, exist_ok=True)
    figures = {"threads": torch.get_num_threads()}
    figures["embedding"] = embedding_throughput(settings)
    print(json.dumps(figures["embedding"]), file=sys.stderr)
    figures["exact"] = {f"tracks_{n}": exact_latency(n, 200 if n <= 100_000 else 50)
                        for n in settings.sizes}
    print(json.dumps(figures["exact"]), file=sys.stderr)
    figures["approximate"] = approximate(settings.work, settings.ann_size, settings.queries)
    print(json.dumps(figures["approximate"]), file=sys.stderr)
    figures["page"] = page_round_trip(settings.work, settings.page_size, settings.requests)
    ann, page = figures["approximate"], figures["page"]
    return Outcome(figures, {
        "embedding.ratio_to_forward_only": "the model's forward pass alone on as many "
                                           "windows, same run (its time over embed's)",
        **{f"exact.tracks_{n}.ratio_p50_to_baseline": "one unchunked numpy matrix-vector "
           "product and argpartition over the same matrix, same run" for n in settings.sizes},
        "approximate.speedup_p50_over_exact": "exact search at the same size, same run "
                                              "(its p50 over the index's)",
        "page.ratio_p50_to_in_process": "the same query in process (text encoder + exact "
                                        "search), same run"},
        f"search: embed {figures['embedding']['tracks_per_s_after_load']} tracks/s after "
        f"load; exact top-10 p50 " + ", ".join(
            f"{e['p50_ms']} ms at {e['tracks']:,}" for e in figures["exact"].values())
        + f"; approximate at {ann['tracks']:,}: recall@10 {ann['recall@10']}, p50 "
        f"{ann['p50_ms']} ms ({ann['speedup_p50_over_exact']}x exact); page p50 "
        f"{page['p50_ms']} ms ({page['ratio_p50_to_in_process']}x in process)")
