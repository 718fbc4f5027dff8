"""Search: exact top-k against a brute-force reference, the approximate index's recall
measured against exact search, and `adswap search` with good and bad queries."""

import json
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from adswap.cli import app
from retrieval.ann import Approximate, IndexConfig, build_index, recall_at_k
from retrieval.library import Library, top_k
from retrieval.search import SearchConfig, Searcher, search
from trainer.inference import Encoder

torch.set_num_threads(1)


def unit_rows(rng, n, d):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_force(queries, items, k):
    """Every score in plain numpy, sorted by score then row."""
    out = []
    for q in queries:
        scores = items.astype(np.float64) @ q.astype(np.float64)
        out.append(sorted(range(len(items)), key=lambda i: (-scores[i], i))[:k])
    return np.array(out)


@pytest.mark.parametrize("n, k, chunk", [(1000, 10, 64), (50, 10, 7), (5, 10, 2), (300, 1, 1000)])
def test_exact_top_k_equals_a_brute_force_reference(n, k, chunk):
    rng = np.random.default_rng(n)
    items, queries = unit_rows(rng, n, 16), unit_rows(rng, 20, 16)
    scores, rows = top_k(queries, items, k, chunk=chunk)
    assert np.array_equal(rows, brute_force(queries, items, k))
    assert np.allclose(scores, np.take_along_axis(queries @ items.T, rows, 1), atol=1e-6)
    assert (np.diff(scores, axis=1) <= 0).all()


def test_exact_top_k_orders_equal_scores_by_row():
    items = np.array([[1, 0], [0, 1], [1, 0], [1, 0]], np.float32)
    _, rows = top_k(np.array([[1, 0]], np.float32), items, 3, chunk=2)
    assert rows.tolist() == [[0, 2, 3]]


def test_recall_at_k_on_a_hand_checked_example():
    exact = np.array([[0, 1, 2, 3], [1, 0, 2, 3]])
    approx = np.array([[0, 1, 3, -1], [1, 2, 3, 0]])
    # query 0 (own row 0): truth {1, 2}, found {1} -> 0.5; query 1 (own row 1): truth
    # {0, 2}, found {2, 0} -> 1.0
    assert recall_at_k(exact, approx, np.array([0, 1]), 2) == pytest.approx(0.75)


def test_the_approximate_index_reaches_its_recall_and_belongs_to_its_embeddings(
        demo_indexes, tmp_path):
    """Clustered synthetic embeddings (as real ones are): the build measures recall@10
    against exact search and tunes nprobe to reach the target; a search through the
    index finds what exact search finds at that rate."""
    library = Library.open(demo_indexes[0])
    rng = np.random.default_rng(0)
    centres = unit_rows(rng, 60, 32)
    vectors = centres[rng.integers(0, 60, 6000)] + 0.35 * rng.standard_normal((6000, 32))
    library.vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(
        np.float32)
    library.folder = tmp_path
    texts = centres[rng.integers(0, 60, 300)] + 0.5 * rng.standard_normal((300, 32))
    texts = (texts / np.linalg.norm(texts, axis=1, keepdims=True)).astype(np.float32)
    info = build_index(library, IndexConfig(target_recall=0.95, queries=300, seed=1), texts)
    assert info["nlist"] == 77 and info["recall"] >= 0.95  # about sqrt(6000)
    assert info["recall"] == min(info["recall_by_query"].values())
    assert info["recall_queries"] == {"tracks": 300, "texts": 300}
    assert info["nprobe"] < info["nlist"]  # it did not need to scan everything
    assert [t["nprobe"] for t in info["tuning"]][-1] == info["nprobe"]
    assert all(t["recall"] < 0.95 for t in info["tuning"][:-1])
    stored = json.loads((tmp_path / "ann" / "index.json").read_text())
    assert stored["recall"] == info["recall"]

    approximate = Approximate(library)
    queries = unit_rows(np.random.default_rng(5), 200, 32)
    _, exact = top_k(queries, library.vectors, 10)
    _, approx = approximate.search(queries, 10)
    found = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact, strict=True)])
    assert found >= 0.9

    # an index copied beside other embeddings is refused
    library.manifest = {**library.manifest, "content_sha256": "0" * 64}
    with pytest.raises(ValueError, match="built from other embeddings"):
        Approximate(library)


def test_text_audio_and_more_like_this_queries_rank_the_index(demo_indexes, trained_runs,
                                                              demo_catalog):
    demo, catalog = demo_catalog
    built = json.loads((demo_indexes[0] / "ann" / "index.json").read_text())
    # every indexed track (the 32 train/valid ones) is a recall query
    assert built["recall_queries"]["tracks"] == 32 and built["recall_queries"]["texts"] > 10
    searcher = Searcher.open(demo_indexes[0])
    library = searcher.library
    encoder = Encoder.from_run(trained_runs[0])
    hits = searcher.text("calm piano and strings", 5)
    query = encoder.embed_text(["calm piano and strings"])[0]
    expected = np.argsort(-(library.vectors @ query), kind="stable")[:5]
    assert [h["track_id"] for h in hits] == [library.track_ids[i] for i in expected]
    assert hits[0]["score"] == pytest.approx(float(library.vectors[expected[0]] @ query),
                                             abs=1e-4)

    like = searcher.like(library.track_ids[3], 5)
    assert library.track_ids[3] not in [h["track_id"] for h in like] and len(like) == 5

    # an audio query: the track's own file finds the track first
    track = next(t for t in catalog.tracks if t.track_id == library.track_ids[0])
    data, rate = sf.read(demo / track.audio)
    own = searcher.audio((demo / track.audio).read_bytes(), 3)
    assert own[0]["track_id"] == track.track_id or own[0]["score"] >= 0.99
    assert np.allclose(encoder.embed_audio(data, rate), encoder.embed_audio(
        np.stack([data, data], 1), rate), atol=1e-5)  # stereo is downmixed

    approximate = Searcher(library, encoder, approximate=True)
    assert [h["track_id"] for h in approximate.text("calm piano and strings", 5)] == \
        [h["track_id"] for h in hits]  # the demo index is one list: exact


def test_search_command_prints_results_and_refuses_bad_queries(demo_indexes, trained_runs,
                                                               tmp_path):
    runner = CliRunner()
    ok = runner.invoke(app, ["search", str(demo_indexes[0]), "happy pop", "-k", "3", "--json"])
    assert ok.exit_code == 0, ok.output
    body = json.loads(ok.output)
    assert len(body["results"]) == 3 and body["method"] == "exact"
    assert body["results"][0]["audio_path"].endswith(".flac")
    table = runner.invoke(app, ["search", str(demo_indexes[0]), "happy pop", "-k", "2"])
    assert table.exit_code == 0 and len(table.output.strip().splitlines()) == 2
    assert runner.invoke(app, ["search", str(demo_indexes[0]), "--like",
                               body["results"][0]["track_id"], "--approximate"]).exit_code == 0

    (tmp_path / "notes.flac").write_text("these are not sounds")
    indexed, plain = demo_indexes  # the second has no approximate index
    bad = {
        "the query is empty": (indexed, [""]),
        "10,000 characters long; the limit is 1,000": (indexed, ["x" * 10_000]),
        "not readable as audio": (indexed, ["--audio", str(tmp_path / "notes.flac")]),
        "another run, or this run trained further": (indexed, ["rock", "--model",
                                                               str(trained_runs[1])]),
        "no approximate index": (plain, ["rock", "--approximate"]),
        "no track 'nope'": (indexed, ["--like", "nope"]),
    }
    for message, (index, args) in bad.items():
        result = runner.invoke(app, ["search", str(index), *args])
        assert result.exit_code == 1, (message, result.output)
        assert message in result.output and "Traceback" not in result.output, result.output

    # an unfinished or foreign folder says what to run
    half = tmp_path / "half"
    shutil.copytree(demo_indexes[0], half)
    manifest = json.loads((half / "manifest.json").read_text())
    (half / "manifest.json").write_text(json.dumps({**manifest, "complete": False}))
    result = runner.invoke(app, ["search", str(half), "rock"])
    assert result.exit_code == 1 and "rerun the same command" in result.output
    result = runner.invoke(app, ["search", str(tmp_path), "rock"])
    assert result.exit_code == 1 and "not an embeddings folder" in result.output
    with pytest.raises(ValueError, match="only one of"):
        search(SearchConfig(index=demo_indexes[0], query="rock", like="x"))
