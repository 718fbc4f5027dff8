"""The openai engine against local HTTP servers that misbehave on purpose."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pipeline.captions.engines import EngineConfig, OpenAISettings, Request, Sampling
from pipeline.captions.engines.openai_engine import OpenAIEngine


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
    sent = {c["seed"]: c for c in server.calls}
    assert sent[3]["temperature"] == 0.0 and sent[3]["model"] == "m"


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
