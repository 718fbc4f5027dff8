"""Any OpenAI-compatible chat server (vLLM's, SGLang, llama.cpp server), for users who
already run one. Bounded concurrency, a timeout per call and retries with backoff on
timeouts, connection errors, 429 and 5xx; other errors fail that request only."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pipeline.captions.engines import EngineConfig, Request, Result, Sampling
from pipeline.captions.faithful import MAX_WORDS_LIMIT

_RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


class OpenAIEngine:
    name = "openai"

    @classmethod
    def from_config(cls, config: EngineConfig, cache_dir: Path) -> OpenAIEngine:
        return cls(config)  # the server holds the model; nothing is cached here

    def __init__(self, config: EngineConfig):
        self.config = config
        self.model_id = config.model
        self.model_revision = config.revision
        self.endpoint = config.openai.url.rstrip("/") + "/v1/chat/completions"

    def generate(self, requests: Sequence[Request], sampling: Sampling) -> list[Result]:
        with ThreadPoolExecutor(self.config.openai.concurrency) as pool:
            return list(pool.map(lambda r: self._one(r, sampling), requests))

    def _one(self, request: Request, sampling: Sampling) -> Result:
        fields = {"model": self.config.model, "messages": request.messages,
                  "temperature": sampling.temperature, "top_p": sampling.top_p,
                  "max_tokens": sampling.max_tokens, "seed": request.seed}
        if request.banned:  # vLLM's extra sampling parameter (faithful decoding)
            fields["bad_words"] = list(request.banned)
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
                return Result(request.request_id, choice["message"]["content"] or "",
                              "length" if choice.get("finish_reason") == "length" else "stop",
                              prompt_tokens=usage.get("prompt_tokens"),
                              completion_tokens=usage.get("completion_tokens"))
            except urllib.error.HTTPError as err:
                error = f"HTTP {err.code} from {self.endpoint}"
                if err.code == 400 and request.banned:
                    detail = err.read().decode("utf-8", "replace")
                    if "bad_words" in detail or "bad words" in detail:
                        raise RuntimeError(
                            f"{self.endpoint} refused the banned words of faithful "
                            f"decoding: {detail[:300]}. A vLLM server takes them when "
                            f"started with VLLM_MAX_NUM_BAD_WORDS={2 * MAX_WORDS_LIMIT}; "
                            "other servers may not: run with --no-faithful there.") from err
                if err.code not in _RETRY_STATUS:
                    break
            except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
                error = f"{type(err).__name__}: {getattr(err, 'reason', err)} ({self.endpoint})"
            except (KeyError, IndexError, TypeError, json.JSONDecodeError) as err:
                error = f"malformed reply from {self.endpoint}: {err!r}"
                break
        return Result(request.request_id, "", "error", error=error)
