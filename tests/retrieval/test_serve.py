"""The web app through FastAPI's test client: search, audio, votes, results; bad input
answered with a 4xx and its reason; audio only from inside the index's audio root;
nothing written but the votes file; the server's refusals (address, port)."""

import json
import os
import shutil
import socket

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from adswap.cli import app as cli
from retrieval.search import Searcher
from retrieval.serve.app import ServeConfig, bind, create_app
from retrieval.serve.votes import Votes, wilson

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def searchers(demo_indexes):
    return {"a": Searcher.open(demo_indexes[0]), "b": Searcher.open(demo_indexes[1])}


def listing(*folders):
    return {str(p): p.stat().st_mtime_ns for f in folders for p in f.rglob("*")}


def test_search_api_pages_and_audio(demo_indexes, searchers, demo_catalog, tmp_path):
    demo, _ = demo_catalog
    before = listing(demo_indexes[0], demo)
    client = TestClient(create_app(ServeConfig(index=demo_indexes[0]), {"a": searchers["a"]}))
    body = client.get("/api/search", params={"q": "happy pop with drums", "k": 4}).json()
    assert [h["rank"] for h in body["results"]] == [1, 2, 3, 4]
    assert body["results"] == [{**h, "audio_url": f"/audio/a/{h['track_id']}"}
                               for h in searchers["a"].text("happy pop with drums", 4)]
    first = body["results"][0]["track_id"]
    audio = client.get(f"/audio/a/{first}")
    assert audio.status_code == 200 and audio.headers["content-type"] == "audio/flac"
    assert audio.content == (demo / "audio" / f"{first}.flac").read_bytes()

    similar = client.get(f"/api/similar/{first}", params={"k": 3}).json()["results"]
    assert len(similar) == 3 and first not in [h["track_id"] for h in similar]
    upload = client.post("/api/search/audio", files={"audio": (
        "mine.flac", (demo / "audio" / f"{first}.flac").read_bytes(), "audio/flac")}).json()
    assert len(upload["results"]) == 10

    page = client.get("/", params={"q": "happy pop with drums", "k": 4})
    assert page.status_code == 200 and page.text.count('class="result"') == 4
    assert f'src="/audio/a/{first}"' in page.text and f"/?like={first}" in page.text
    assert client.get("/", params={"like": first}).text.count("<audio") == 10
    assert client.get("/listen").status_code == 404  # no --compare: no listening test
    assert listing(demo_indexes[0], demo) == before  # searching writes nothing


def test_bad_input_is_a_4xx_with_its_reason_and_no_traceback(demo_indexes, searchers):
    client = TestClient(create_app(ServeConfig(index=demo_indexes[0]), {"a": searchers["a"]}))
    cases = [
        (client.get("/api/search", params={"q": "x" * 10_000}), 400, "10,000 characters"),
        (client.get("/api/search", params={"q": "   "}), 400, "the query is empty"),
        (client.get("/", params={"q": "x" * 10_000}), 400, "10,000 characters"),
        (client.get("/", params={"q": ""}), 400, "the query is empty"),
        (client.post("/api/search/audio", files={"audio": ("a.flac", b"MZ\x90\x00 not audio",
                                                           "audio/flac")}), 415,
         "not readable as audio"),
        (client.post("/", files={"audio": ("notes.txt", b"hello", "text/plain")}), 415,
         "not readable as audio"),
        (client.post("/api/search/audio", files={"audio": ("a.wav", b"", "audio/wav")}), 400,
         "the upload is empty"),
        (client.get("/api/search", params={"q": "rock", "k": "many"}), 422, "k:"),
        (client.get("/api/search", params={"q": "rock", "k": 5000}), 400, "1 to 1000"),
        (client.get("/api/similar/nope"), 404, "no track 'nope'"),
        (client.get("/api/search", params={"q": "rock", "side": "b"}), 404, "no index 'b'"),
        (client.post("/api/votes", json={"trial": "x", "choice": "left"}), 404,
         "needs two runs"),
    ]
    for response, status, reason in cases:
        assert response.status_code == status, (reason, response.text[:300])
        assert reason in response.text and "Traceback" not in response.text
    page = client.get("/", params={"q": "x" * 10_000})
    assert 'id="error"' in page.text and 'name="q"' in page.text  # the page, with its box


def test_audio_is_served_only_from_inside_the_audio_root(demo_indexes, searchers, tmp_path):
    client = TestClient(create_app(ServeConfig(index=demo_indexes[0]), {"a": searchers["a"]}))
    for path in ("/audio/a/..%2F..%2F..%2Fetc%2Fpasswd", "/audio/a/../../etc/passwd",
                 "/audio/a/%2Fetc%2Fpasswd", "/audio/a/catalog.parquet"):
        response = client.get(path)
        assert response.status_code == 404 and "root:" not in response.text, path

    # an index whose rows point outside the root (edited by hand, or a symlink planted
    # in the audio folder) is refused at the door
    index, root = tmp_path / "index", tmp_path / "root"
    shutil.copytree(demo_indexes[0], index)
    (root / "audio").mkdir(parents=True)
    os.symlink("/etc/passwd", root / "audio" / "escape.flac")
    manifest = json.loads((index / "manifest.json").read_text())
    (index / "manifest.json").write_text(json.dumps({**manifest, "audio_root": str(root)}))
    part = sorted((index / "tracks").glob("*.parquet"))[0]
    table = pq.read_table(part)
    ids = table.column("track_id").to_pylist()
    audio = ["../../../../etc/passwd", "audio/escape.flac", "/etc/passwd"]
    table = table.set_column(table.schema.get_field_index("audio"), "audio",
                             pa.array((audio + [None] * len(ids))[:len(ids)], pa.string()))
    pq.write_table(table, part)
    client = TestClient(create_app(ServeConfig(index=index)))
    for track in ids[:3]:
        response = client.get(f"/audio/a/{track}")
        assert response.status_code == 403, response.text
        assert "outside the audio root" in response.json()["error"]
        assert "root:" not in response.text


def test_listening_test_records_blind_votes_and_reports_win_rates(demo_indexes, searchers,
                                                                   tmp_path):
    votes = tmp_path / "votes.sqlite"
    queries = tmp_path / "queries.txt"
    queries.write_text("# listening queries\nhappy pop\n\ncalm piano\n")
    before = listing(*demo_indexes)
    client = TestClient(create_app(ServeConfig(index=demo_indexes[0], compare=demo_indexes[1],
                                               votes=votes, queries=queries), searchers))
    assert 'value="happy pop"' in client.get("/listen").text  # the first query to ask
    winners = []
    for query, choice in (("happy pop", "left"), ("calm piano", "left"),
                          ("sad rock", "same"), ("tense jazz", "right")):
        trial = client.post("/api/trials", json={"query": query}).json()
        assert set(trial) == {"trial", "query", "left", "right"}
        shown = trial["left"] + trial["right"]
        assert len(trial["left"]) == len(trial["right"]) == 5
        assert all("score" not in h and h["audio_url"].startswith(f"/listen/audio/"
                                                                   f"{trial['trial']}/")
                   for h in shown)  # nothing tells the runs apart
        heard = client.get(trial["left"][0]["audio_url"])
        assert heard.status_code == 200 and heard.headers["content-type"] == "audio/flac"
        stored = Votes(votes).trial(trial["trial"])
        winners.append({"left": stored["left"], "right": stored["right"],
                        "same": "same"}[choice])
        # the left list is the run the trial says, ranked as that run ranks
        expected = searchers[stored["left"]].text(query, 5)
        assert [h["track_id"] for h in trial["left"]] == [h["track_id"] for h in expected]
        answer = client.post("/api/votes", json={"trial": trial["trial"], "choice": choice})
        assert answer.status_code == 200 and answer.json()["votes"] == len(winners)
    again = client.post("/api/votes", json={"trial": trial["trial"], "choice": "left"})
    assert again.status_code == 409 and "already has a vote" in again.json()["error"]
    assert client.post("/api/votes", json={"trial": trial["trial"], "choice": "both"}
                       ).status_code == 400
    assert client.post("/api/trials", json={"query": ""}).status_code == 400
    assert 'value="happy pop"' not in client.get("/listen").text  # voted on: next query

    labels = client.app.state.adswap.labels
    pair = client.get("/api/results").json()["pairs"]
    assert len(pair) == 1
    pair = pair[0]
    first = "a" if pair["first"] == labels["a"] else "b"
    assert pair["first_wins"] == winners.count(first)
    assert pair["second_wins"] == winners.count("b" if first == "a" else "a")
    assert pair["same"] == 1 and pair["votes"] == 4
    assert pair["ci95"] == pytest.approx(list(wilson(pair["first_wins"], 3)))
    page = client.get("/results").text
    assert labels["a"] in page and labels["b"] in page and "4 votes" in page
    # only the votes file was written
    assert listing(*demo_indexes) == before and votes.exists()


def test_wilson_interval_matches_hand_computed_values():
    assert wilson(0, 0) == (0.0, 1.0)
    low, high = wilson(8, 10)
    assert (round(low, 4), round(high, 4)) == (0.4902, 0.9433)
    low, high = wilson(50, 100)
    assert low == pytest.approx(1 - high)


def test_the_server_refuses_open_addresses_ports_in_use_and_same_run_comparisons(
        demo_indexes, searchers):
    with pytest.raises(ValueError, match="not a loopback address.*--allow-network"):
        ServeConfig(index=demo_indexes[0], host="0.0.0.0")
    assert ServeConfig(index=demo_indexes[0], host="0.0.0.0", allow_network=True)
    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        assert ServeConfig(index=demo_indexes[0], host=host)
    with pytest.raises(ValueError, match="same checkpoint"):
        create_app(ServeConfig(index=demo_indexes[0], compare=demo_indexes[0]),
                   {"a": searchers["a"], "b": searchers["a"]})

    taken = bind("127.0.0.1", 0)
    port = taken.getsockname()[1]
    try:
        result = CliRunner().invoke(cli, ["serve", str(demo_indexes[0]), "--port", str(port)])
        assert result.exit_code == 1 and f"port {port} on 127.0.0.1 is in use" in result.output
        assert "Traceback" not in result.output
    finally:
        taken.close()
    result = CliRunner().invoke(cli, ["serve", str(demo_indexes[0]), "--host", "10.1.2.3"])
    assert result.exit_code == 1 and "not a loopback address" in result.output
    with socket.socket() as probe:  # nothing was left listening
        assert probe.connect_ex(("127.0.0.1", port)) != 0
    assert json.loads((demo_indexes[0] / "manifest.json").read_text())["complete"]
