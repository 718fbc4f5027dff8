"""The approximate index (`adswap embed --index`): FAISS IVF-Flat on inner product.

k-means splits the tracks into `nlist` lists; a query scores exactly the tracks of the
`nprobe` lists nearest to it. The build picks the smallest nprobe whose recall@10
against exact search reaches `target_recall` on seeded samples of two kinds of query:
the catalog's own tracks ("more like this", each query's own track left out of both
lists) and text queries made from their tags; it records every nprobe it tried with
its recall and latency in ann/index.json.
The index is tied to the embeddings it was built from by their content hash.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from retrieval.config import IndexConfig
from retrieval.library import Library, top_k
from schemas.atomic import atomic_path, write_text_atomic

INDEX_FILE = "index.faiss"
INFO_FILE = "index.json"


def auto_nlist(n: int) -> int:
    # sqrt(n) lists of about sqrt(n) tracks: k-means costs n x nlist per iteration, so
    # this keeps the build short on a few cores, and nprobe is tuned to the recall
    # target afterwards; FAISS wants 39 training points per list
    return max(1, min(round(math.sqrt(n)), n // 39))


def build_index(library: Library, config: IndexConfig = IndexConfig(),
                text_queries: np.ndarray | None = None) -> dict:
    """Train, fill and tune the index; write ann/. The recall is measured on two kinds
    of query when `text_queries` are given: the catalog's own tracks (more like this)
    and text embeddings, which sit elsewhere in the space than audio (the modality
    gap), so an nprobe tuned on tracks alone would overstate text search's recall."""
    import faiss

    if config.threads:
        faiss.omp_set_num_threads(config.threads)
    started = time.perf_counter()
    vectors = library.vectors
    n, dim = vectors.shape
    nlist = min(config.nlist or auto_nlist(n), n)
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = config.seed
    index.cp.min_points_per_centroid = min(39, max(1, n // nlist))  # a tiny catalog: no warning
    index.train(vectors)
    index.add(vectors)
    built = time.perf_counter() - started

    rng = np.random.default_rng(config.seed)
    sample = np.sort(rng.choice(n, min(config.queries, n), replace=False))
    sets = {"tracks": (vectors[sample], sample)}
    if text_queries is not None and len(text_queries):
        texts = np.asarray(text_queries[:config.queries], dtype=np.float32)
        sets["texts"] = (texts, np.full(len(texts), -1))  # no own row to leave out
    exact = {name: top_k(queries, vectors, config.k + 1)[1]
             for name, (queries, _) in sets.items()}
    tried, nprobe = [], 1
    while True:
        index.nprobe = nprobe
        row = {"nprobe": nprobe}
        for name, (queries, own) in sets.items():
            timer = time.perf_counter()
            _, approx = index.search(queries, config.k + 1)
            row[f"ms_per_query_{name}"] = round(1000 * (time.perf_counter() - timer) /
                                                len(queries), 3)
            row[f"recall_{name}"] = round(recall_at_k(exact[name], approx, own, config.k), 4)
        row["recall"] = min(row[f"recall_{name}"] for name in sets)
        tried.append(row)
        if row["recall"] >= config.target_recall or nprobe >= nlist:
            break
        nprobe = min(2 * nprobe, nlist)

    chosen = tried[-1]
    info = {"library": "faiss-cpu", "version": faiss.__version__, "kind": "IVFFlat",
            "metric": "inner product", "tracks": n, "nlist": nlist, "nprobe": nprobe,
            "k": config.k, "recall": chosen["recall"],
            "recall_by_query": {name: chosen[f"recall_{name}"] for name in sets},
            "recall_queries": {name: len(q) for name, (q, _) in sets.items()},
            "target_recall": config.target_recall, "tuning": tried,
            "build_seconds": round(built, 2), "settings": asdict(config),
            "content_sha256": library.manifest["content_sha256"]}
    folder = library.folder / "ann"
    with atomic_path(folder / INDEX_FILE) as tmp:
        faiss.write_index(index, str(tmp))
    write_text_atomic(folder / INFO_FILE, json.dumps(info, indent=1))
    return info


def build_for(folder: Path, config: IndexConfig = IndexConfig(), device: str = "cpu") -> dict:
    """`adswap embed --index`: the index of an embeddings folder, tuned on its tracks
    and on text queries made from their tags by the model that embedded them."""
    from retrieval.search import load_encoder

    library = Library.open(folder)
    column = library.info.column("tags_text").to_pylist()
    rng = np.random.default_rng(config.seed)
    picks = rng.choice(len(column), min(config.queries, len(column)), replace=False)
    texts = list(dict.fromkeys(column[i] for i in sorted(picks) if column[i]))
    queries = load_encoder(library.manifest, None, device).embed_text(texts) if texts else None
    return build_index(library, config, queries)


def recall_at_k(exact: np.ndarray, approx: np.ndarray, own: np.ndarray, k: int) -> float:
    """Mean share of each query's exact top-k found in its approximate top-k, the
    query's own row (`own`; -1 for none) left out of both."""
    found = []
    for truth, guess, me in zip(exact, approx, own, strict=True):
        truth = [r for r in truth if r != me][:k]
        guess = {r for r in guess if r != me and r >= 0}
        if truth:
            found.append(len(guess.intersection(truth[:k])) / len(truth))
    return float(np.mean(found)) if found else 1.0


class Approximate:
    """A built index, checked to belong to the library's embeddings."""

    def __init__(self, library: Library):
        import faiss

        folder = library.folder / "ann"
        info_file = folder / INFO_FILE
        if not info_file.exists() or not (folder / INDEX_FILE).exists():
            raise ValueError(f"{library.folder} has no approximate index; build it with "
                             "`adswap embed ... --index` (or search without --approximate)")
        self.info = json.loads(info_file.read_text(encoding="utf-8"))
        if self.info.get("content_sha256") != library.manifest["content_sha256"]:
            raise ValueError(f"{folder} was built from other embeddings than "
                             f"{library.folder}'s; rebuild it with `adswap embed ... --index`")
        self.index = faiss.read_index(os.fspath(folder / INDEX_FILE))
        self.index.nprobe = self.info["nprobe"]

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores, rows = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        keep = rows[0] >= 0  # fewer than k tracks in the probed lists
        return scores[:, keep], rows[:, keep]
