"""Any OpenAI-compatible chat server (vLLM's, SGLang, llama.cpp server), for users who
already run one. Bounded concurrency, a timeout per call and retries with backoff on
timeouts, connection errors, 429 and 5xx; other errors fail that request only.

Faithful decoding's banned words go as vLLM's `bad_words`, which a vLLM server caps
per request twice: in token sequences (VLLM_MAX_NUM_BAD_WORDS, refused with HTTP 400)
and in their tokens together (VLLM_MAX_BAD_WORDS_TOTAL_TOKENS, which vLLM 0.33's GPU
model runner enforces inside its engine, where going over fails the server, not the
request). Each request's list is cut to fit both (`max_bad_words`,
`max_bad_word_tokens`), the rarest words first, counted in the stats. A word's tokens
come from the server's own tokenizer (vLLM's /tokenize), counted bare and after a
space as vLLM tokenizes it; a server without /tokenize gets an upper bound (a token is
at least one byte in the tokenizers LLMs use)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.captions.engine_api import EngineSpec, Request, Result, Sampling
from pipeline.captions.faithful import MAX_WORDS_LIMIT
from schemas.config import Config, setting

if TYPE_CHECKING:
    from pipeline.captions.engines import EngineConfig

_RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


@dataclass(frozen=True)
class OpenAISettings(Config):
    url: str = setting("http://127.0.0.1:8000", help="Server address (openai).")
    concurrency: int = setting(8, help="Requests in flight (openai).")
    timeout_s: float = setting(60.0, flag="timeout", help="Seconds per request (openai).")
    retries: int = setting(3, help="Retries per request on timeouts, 429 and 5xx (openai).")
    max_bad_words: int = setting(128, help="Token sequences of banned words a request may "
                                 "carry: the server's VLLM_MAX_NUM_BAD_WORDS (openai; a "
                                 "word counts as two, bare and after a space).")
    max_bad_word_tokens: int = setting(1024, help="Tokens of those sequences together: the "
                                       "server's VLLM_MAX_BAD_WORDS_TOTAL_TOKENS (openai). "
                                       "Past either cap the rarest banned words are left "
                                       "out, and counted (banned_words_cut).")

    def check(self) -> list[str]:
        problems = []
        if self.max_bad_words < 2 or self.max_bad_word_tokens < 2:
            problems.append("max_bad_words and max_bad_word_tokens must be >= 2")
        if self.concurrency < 1:
            problems.append("concurrency must be >= 1")
        if self.timeout_s <= 0:
            problems.append("timeout_s must be > 0")
        if self.retries < 0:
            problems.append("retries must be >= 0")
        return problems


class OpenAIEngine:
    name = "openai"

    @classmethod
    def from_config(cls, config: EngineConfig, cache_dir: Path) -> OpenAIEngine:
        return cls(config)  # the server holds the model; nothing is cached here

    def __init__(self, config: EngineConfig):
        self.config = config
        self.model_id = config.model
        self.model_revision = config.revision
        base = config.openai.url.rstrip("/")
        self.endpoint = base + "/v1/chat/completions"
        self.tokenize_endpoint = base + "/tokenize"
        self._costs: dict[str, tuple[int, int]] = {}  # word -> (sequences, tokens)
        self._server_tokenizes = True

    def generate(self, requests: Sequence[Request], sampling: Sampling) -> list[Result]:
        with ThreadPoolExecutor(self.config.openai.concurrency) as pool:
            words = {w for r in requests for w in r.banned if w not in self._costs}
            for word, cost in zip(words, pool.map(self._cost, words), strict=True):
                self._costs[word] = cost
            return list(pool.map(lambda r: self._one(r, sampling), requests))

    def _cost(self, word: str) -> tuple[int, int]:
        """(token sequences, tokens) the server makes of a banned word."""
        if self._server_tokenizes:
            try:
                lengths = [self._token_count(text) for text in (word, " " + word)]
                return sum(n > 0 for n in lengths), sum(lengths)
            except (urllib.error.URLError, OSError, KeyError, TypeError, ValueError):
                self._server_tokenizes = False  # not vLLM's server: bound it instead
        size = len(word.encode())
        return 2, 2 * size + 1

    def _token_count(self, text: str) -> int:
        body = json.dumps({"model": self.config.model, "prompt": text,
                           "add_special_tokens": False}).encode()
        http = urllib.request.Request(self.tokenize_endpoint, data=body, method="POST",
                                      headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(http, timeout=self.config.openai.timeout_s) as response:
            return int(json.loads(response.read())["count"])

    def _within_caps(self, banned: Sequence[str]) -> tuple[list[str], int]:
        """The banned words that fit the server's caps, in their order (commonest
        descriptors first), and how many did not."""
        settings = self.config.openai
        kept, sequences, tokens = [], 0, 0
        for word in banned:
            more, count = self._costs[word]
            if (sequences + more <= settings.max_bad_words
                    and tokens + count <= settings.max_bad_word_tokens):
                kept.append(word)
                sequences, tokens = sequences + more, tokens + count
        return kept, len(banned) - len(kept)

    def _one(self, request: Request, sampling: Sampling) -> Result:
        fields = {"model": self.config.model, "messages": request.messages,
                  "temperature": sampling.temperature, "top_p": sampling.top_p,
                  "max_tokens": sampling.max_tokens, "seed": request.seed}
        banned, cut = self._within_caps(request.banned)
        if banned:  # vLLM's extra sampling parameter (faithful decoding)
            fields["bad_words"] = banned
        body = json.dumps(fields).encode()
        error = ""
        for attempt in range(self.config.openai.retries + 1):
            if attempt:
                time.sleep(min(0.5 * 2 ** (attempt - 1), 8.0))
            http = urllib.request.Request(self.endpoint, data=body, method="POST",
                                          headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(http, timeout=self.config.openai.timeout_s) as response:
                    reply = json.loads(response.read())
                choice = reply["choices"][0]
                usage = reply.get("usage") or {}
                # vLLM servers report it with --enable-prompt-tokens-details
                details = usage.get("prompt_tokens_details") or {}
                return Result(request.request_id, choice["message"]["content"] or "",
                              "length" if choice.get("finish_reason") == "length" else "stop",
                              prompt_tokens=usage.get("prompt_tokens"),
                              completion_tokens=usage.get("completion_tokens"),
                              cached_tokens=details.get("cached_tokens"), banned_cut=cut)
            except urllib.error.HTTPError as err:
                error = f"HTTP {err.code} from {self.endpoint}"
                if err.code == 400 and banned:
                    detail = err.read().decode("utf-8", "replace")
                    if "bad_words" in detail or "bad words" in detail:
                        raise RuntimeError(self._refused(detail)) from err
                if err.code not in _RETRY_STATUS:
                    break
            except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
                error = f"{type(err).__name__}: {getattr(err, 'reason', err)} ({self.endpoint})"
            except (KeyError, IndexError, TypeError, json.JSONDecodeError) as err:
                error = f"malformed reply from {self.endpoint}: {err!r}"
                break
        return Result(request.request_id, "", "error", error=error, banned_cut=cut)

    def _refused(self, detail: str) -> str:
        settings = self.config.openai
        return (f"{self.endpoint} refused the banned words of faithful decoding: "
                f"{detail[:300]}. This run sends at most {settings.max_bad_words} token "
                f"sequences of {settings.max_bad_word_tokens} tokens in all "
                "(--max-bad-words, --max-bad-word-tokens): set them to the server's "
                "VLLM_MAX_NUM_BAD_WORDS and VLLM_MAX_BAD_WORDS_TOTAL_TOKENS (raise both on "
                f"the server to ban more, up to {2 * MAX_WORDS_LIMIT} sequences); servers "
                "other than vLLM's may not take bad_words at all: run with --no-faithful "
                "there.")


ENGINE = EngineSpec("openai", "an OpenAI-compatible server", OpenAIEngine,
                    settings=OpenAISettings)
