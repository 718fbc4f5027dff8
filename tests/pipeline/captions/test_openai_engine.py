"""The openai engine against local HTTP servers that misbehave on purpose."""

import json
import threading
import time
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pipeline.captions.engines import EngineConfig, Request, Sampling
from pipeline.captions.engines.openai_engine import OpenAIEngine, OpenAISettings


class Server:
    """A chat-completions endpoint on 127.0.0.1 whose behaviour a test scripts."""

    def __init__(self, behaviour):
        self.calls = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.calls.append(body)
                status, reply = behaviour(len(outer.calls), body)
                if status == "sleep":
                    time.sleep(reply)
                    status, reply = 200, _ok(body)
                data = json.dumps(reply).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def _ok(body):
    last = body["messages"][-1]["content"]
    return {"choices": [{"message": {"content": f"Caption for {last}"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 5}}


@pytest.fixture
def serve():
    servers = []

    def start(behaviour):
        servers.append(Server(behaviour))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def requests(n):
    return [Request(f"id{i}", [{"role": "user", "content": f"tags {i}"}], {}, "en", seed=i)
            for i in range(n)]


def engine(url, **changes):
    settings = dict(url=url, concurrency=4, timeout_s=1.0, retries=2)
    return OpenAIEngine(EngineConfig(engine="openai", model="m",
                                     openai=OpenAISettings(**{**settings, **changes})))


def test_results_keep_their_ids_and_usage(serve):
    server = serve(lambda n, body: (200, _ok(body)))
    results = engine(server.url).generate(requests(12), Sampling(temperature=0.0))
    assert [r.request_id for r in results] == [f"id{i}" for i in range(12)]
    assert all(r.text == f"Caption for tags {r.request_id[2:]}" for r in results)
    assert results[0].prompt_tokens == 11 and results[0].completion_tokens == 5
    assert results[0].cached_tokens is None  # a server that does not report it
    sent = {c["seed"]: c for c in server.calls}
    assert sent[3]["temperature"] == 0.0 and sent[3]["model"] == "m"


def test_prompt_tokens_served_from_the_servers_prefix_cache_are_read(serve):
    def reply(n, body):
        answer = _ok(body)
        answer["usage"]["prompt_tokens_details"] = {"cached_tokens": 8}
        return 200, answer

    (result,) = engine(serve(reply).url).generate(requests(1), Sampling())
    assert result.cached_tokens == 8 and result.prompt_tokens == 11


def test_server_errors_are_retried(serve):
    server = serve(lambda n, body: (503, {"error": "busy"}) if n <= 2 else (200, _ok(body)))
    (result,) = engine(server.url).generate(requests(1), Sampling())
    assert result.finish_reason == "stop" and len(server.calls) == 3


def test_persistent_errors_fail_only_their_request(serve):
    server = serve(lambda n, body: (500, {}) if body["seed"] == 1 else (200, _ok(body)))
    results = engine(server.url).generate(requests(3), Sampling())
    assert [r.finish_reason for r in results] == ["stop", "error", "stop"]
    assert "HTTP 500" in results[1].error
    assert sum(c["seed"] == 1 for c in server.calls) == 3  # first try + 2 retries


def test_client_errors_are_not_retried(serve):
    server = serve(lambda n, body: (400, {"error": "bad model"}))
    (result,) = engine(server.url).generate(requests(1), Sampling())
    assert result.finish_reason == "error" and len(server.calls) == 1


def test_timeouts_are_retried_then_reported(serve):
    server = serve(lambda n, body: ("sleep", 3.0))
    started = time.monotonic()
    (result,) = engine(server.url, retries=1).generate(requests(1), Sampling())
    assert result.finish_reason == "error" and "timed out" in result.error.lower()
    assert len(server.calls) == 2 and time.monotonic() - started < 5


def test_malformed_reply_and_length_finish(serve):
    server = serve(lambda n, body: (200, {"nothing": True}) if body["seed"] == 0 else (200, {
        "choices": [{"message": {"content": "A very long"}, "finish_reason": "length"}]}))
    bad, cut = engine(server.url).generate(requests(2), Sampling())
    assert bad.finish_reason == "error" and "malformed" in bad.error
    assert cut.finish_reason == "length" and cut.prompt_tokens is None


def test_unreachable_server():
    (result,) = engine("http://127.0.0.1:9", retries=0).generate(requests(1), Sampling())
    assert result.finish_reason == "error" and "127.0.0.1:9" in result.error


class CappedServer:
    """vLLM's OpenAI server as it caps bad_words (one token a character here): more
    token sequences than `sequences` are refused with HTTP 400, more tokens than
    `tokens` in all break the engine (vLLM 0.33's GPU runner raises in its worker) and
    every later call fails with 500. With `tokenizes`, it has vLLM's /tokenize."""

    def __init__(self, sequences, tokens, tokenizes=True):
        self.sequences, self.tokens, self.tokenizes = sequences, tokens, tokenizes
        self.broken = False
        self.sent: list[list[str]] = []  # bad_words of each chat request
        self.tokenized = 0

    def __call__(self, n, body):
        if "prompt" in body:  # POST /tokenize
            if not self.tokenizes:
                return 404, {"detail": "Not Found"}
            self.tokenized += 1
            assert body["add_special_tokens"] is False
            return 200, {"count": len(body["prompt"]), "tokens": list(body["prompt"])}
        words = body.get("bad_words", [])
        self.sent.append(words)
        forms = [f for w in words for f in (w, " " + w)]
        if self.broken:
            return 500, {"error": "EngineDeadError"}
        if len(forms) > self.sequences:
            return 400, {"error": {"message": f"Too many bad words: {len(forms)}"}}
        if sum(map(len, forms)) > self.tokens:
            self.broken = True
            return 500, {"error": "Too many total bad word tokens"}
        return 200, _ok(body)


WORDS = tuple(f"{word}{suffix}" for word in ("rock", "jazz", "ambient", "hip-hop", "piano")
              for suffix in ("", "s", " music", "-ish"))  # 20 words, 4 to 12 characters


@pytest.mark.parametrize("tokenizes", [True, False])
def test_banned_words_are_cut_to_the_servers_two_caps(serve, tokenizes):
    """Both caps hold for every request, the words kept are the first ones (the
    commonest descriptors), and what was cut is counted; a server without /tokenize is
    given an upper bound of each word's tokens."""
    capped = CappedServer(sequences=16, tokens=90, tokenizes=tokenizes)
    server = serve(capped)
    banned = [replace(r, banned=WORDS) for r in requests(6)]
    results = engine(server.url, max_bad_words=16, max_bad_word_tokens=90).generate(
        banned, Sampling())
    assert all(r.finish_reason == "stop" for r in results), results
    assert not capped.broken and len(capped.sent) == 6
    for sent, result in zip(capped.sent, results, strict=True):
        assert sent == [w for w in WORDS if w in sent]  # in order
        assert result.banned_cut == len(WORDS) - len(sent) > 0
    kept = capped.sent[0]
    if tokenizes:  # exact: 2 sequences a word, len + len + 1 tokens
        assert len(kept) <= 8 and sum(2 * len(w) + 1 for w in kept) <= 90
        assert kept[:3] == ["rock", "rocks", "rock music"]
        assert capped.tokenized == 2 * len(WORDS)  # once per form, cached after
    else:  # the bound: 2 x bytes + 1 tokens a word, the same as the exact count here
        assert capped.tokenized == 0 and kept[:3] == ["rock", "rocks", "rock music"]


def test_a_server_that_refuses_banned_words_says_what_to_set(serve):
    capped = CappedServer(sequences=2, tokens=10_000)
    server = serve(capped)
    with pytest.raises(RuntimeError, match=r"refused the banned words(.|\n)*--max-bad-words"
                       r"(.|\n)*VLLM_MAX_NUM_BAD_WORDS and VLLM_MAX_BAD_WORDS_TOTAL_TOKENS"):
        engine(server.url, max_bad_words=64).generate(
            [replace(requests(1)[0], banned=WORDS)], Sampling())


def test_stage_stats_count_the_banned_words_cut(serve, tmp_path):
    from pipeline.captions.plan import DropConfig
    from pipeline.captions.stage import CaptionsConfig, run
    from tests.pipeline.captions.test_stage import make_catalog

    capped = CappedServer(sequences=4, tokens=40)
    server = serve(capped)
    make_catalog(tmp_path / "catalog.jsonl", 4)
    stats = run(CaptionsConfig(
        catalog=tmp_path / "catalog.jsonl", out=tmp_path / "views",
        drop=DropConfig(n_views=2), engine=EngineConfig(
            engine="openai", model="m", openai=OpenAISettings(
                url=server.url, max_bad_words=4, max_bad_word_tokens=40))))
    assert stats.views_generated == 8 and not capped.broken
    assert stats.banned_words_cut > 0
    assert all(len(words) <= 2 for words in capped.sent)
