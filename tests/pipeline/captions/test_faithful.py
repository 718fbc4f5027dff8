"""Faithful decoding: the banned words built for a view, and how the stage and the
engines carry them (the vLLM test that they work is in test_vllm.py)."""

import json

import pytest

from pipeline.captions.engines import EngineConfig, Request, Sampling
from pipeline.captions.engines.template import TemplateEngine
from pipeline.captions.faithful import (
    BannedWords,
    FaithfulConfig,
    build_banned_words,
    surface_forms,
)
from pipeline.captions.plan import DropConfig
from pipeline.captions.stage import CaptionsConfig, run
from pipeline.curate.dictionary import build_dictionary
from schemas.config import ConfigError
from schemas.swap_dictionary import Descriptor
from tests.pipeline.captions.test_openai_engine import _ok, engine, serve  # noqa: F401
from tests.pipeline.captions.test_stage import rows

CATS = ("genre", "mood", "instrument")
VOCABULARY = [("genre", "jazz"), ("genre", "rock"), ("genre", "hip hop"), ("genre", "pop"),
              ("mood", "calm"), ("mood", "dark"), ("instrument", "electric piano"),
              ("instrument", "piano"), ("instrument", "drums"), ("instrument", "bass"),
              ("instrument", "bassoon"), ("instrument", "violin")]


@pytest.fixture
def banned(tmp_path):
    extras = tmp_path / "extras.yaml"
    extras.write_text("genre:\n  - term: hip hop\n    synonyms: [rap]\n"
                      "instrument:\n  - term: violin\n    synonyms: [fiddle]\n")
    return BannedWords(build_dictionary(VOCABULARY, CATS, extras), {}, max_words=1024)


TRACK = {"genre": ["jazz"], "mood": ["calm"], "instrument": ["electric piano", "drums",
                                                            "bassoon"]}


def test_surface_forms():
    forms = surface_forms(Descriptor("genre", "hip hop", ("rap",)))
    assert forms == ["hip hop", "Hip hop", "hip hops", "Hip hops", "hip-hop", "Hip-hop",
                     "hip-hops", "Hip-hops", "rap", "Rap", "raps", "Raps"]
    assert surface_forms(Descriptor("instrument", "drums"))[:4] == ["drums", "Drums", "drum",
                                                                     "Drum"]
    assert "basses" in surface_forms(Descriptor("instrument", "bass"))


def test_banned_words_for_a_view(banned):
    view = {"genre": ["jazz"], "mood": ["calm"], "instrument": ["drums"]}
    words = set(banned.for_request(view, TRACK))
    # other descriptors of the view's categories, in every spelling, synonyms included
    for word in ("rock", "Rock", "rocks", "pop", "hip hop", "hip-hop", "Hip-hop", "rap",
                 "Rap", "dark", "Dark", "violin", "violins", "fiddle", "Fiddle"):
        assert word in words, word
    # the track's own tags stay allowed, whether or not this view names them
    for word in ("jazz", "Jazz", "calm", "electric piano", "drums", "drum", "bassoon"):
        assert word not in words, word
    # a form that starts a word of the track's own would block it: "piano" (electric
    # piano) and "bass" (bassoon) stay allowed; curation still catches them
    assert not {"piano", "Piano", "bass", "Bass"} & words


def test_only_the_views_categories_are_banned(banned):
    words = banned.for_request({"genre": ["jazz"]}, TRACK)
    assert "rock" in words and "dark" not in words and "violin" not in words


def test_max_words_keeps_the_commonest_descriptors(tmp_path):
    dictionary = build_dictionary(VOCABULARY, CATS)
    frequency = {("genre", "pop"): 50, ("genre", "rock"): 10}
    capped = BannedWords(dictionary, frequency, max_words=4)
    assert capped.for_request({"genre": []}, {"genre": ["jazz"]}) == (
        "pop", "Pop", "pops", "Pops")
    assert capped.fingerprint != BannedWords(dictionary, frequency, 5).fingerprint
    with pytest.raises(ConfigError, match="max_words"):
        FaithfulConfig(max_words=0)


def test_the_dictionary_is_the_catalogs_vocabulary_plus_extras(tmp_path):
    catalog = tmp_path / "catalog.jsonl"
    catalog.write_text("\n".join(json.dumps({
        "track_id": f"t{i}", "audio": f"{i}.flac",
        "tags": {"genre": [g], "mood": ["calm"], "instrument": ["piano"]}})
        for i, g in enumerate(["rock", "rock", "jazz"])) + "\n")
    plain = build_banned_words(catalog, CATS, FaithfulConfig())
    assert plain.for_request({"genre": []}, {"genre": ["jazz"]})[0] == "rock"
    extras = tmp_path / "extras.yaml"
    extras.write_text("genre:\n  - synthwave\n")
    more = build_banned_words(catalog, CATS, FaithfulConfig(extras=extras))
    assert "synthwave" in more.for_request({"genre": []}, {"genre": ["jazz"]})
    assert more.fingerprint != plain.fingerprint


class Recording(TemplateEngine):
    name = "vllm"

    def __init__(self):
        super().__init__()
        self.requests: list[Request] = []

    def generate(self, requests, sampling):
        self.requests += requests
        return super().generate(requests, sampling)


def test_the_stage_sends_banned_words_and_records_them(tmp_path):
    catalog = tmp_path / "catalog.jsonl"
    catalog.write_text("\n".join(json.dumps({
        "track_id": f"t{i}", "audio": f"{i}.flac",
        "tags": {"genre": [g], "mood": ["calm"], "instrument": ["piano", "drums"]}})
        for i, g in enumerate(["rock", "jazz", "pop"])) + "\n")

    def captions(out, **changes):
        recording = Recording()
        run(CaptionsConfig(catalog=catalog, out=tmp_path / out, drop=DropConfig(n_views=2),
                           engine=EngineConfig(engine="vllm", model="unused",
                                               recycle_requests=0), **changes),
            engine_factory=lambda *_: recording)
        return recording.requests, rows(tmp_path / out)

    sent, found = captions("on")
    by_track = {r.request_id.split("/")[0]: set(r.banned) for r in sent}
    assert {"jazz", "pop"} <= by_track["t0"] and "rock" not in by_track["t0"]
    assert "drums" not in by_track["t0"] and "calm" not in by_track["t0"]
    fingerprint = json.loads(found[0]["sampling"])["banned_words"]
    assert len(fingerprint) == 16
    off_sent, off_found = captions("off", faithful=FaithfulConfig(enabled=False))
    assert all(r.banned == () for r in off_sent)
    assert "banned_words" not in json.loads(off_found[0]["sampling"])
    # faithful decoding changes what is sampled, so it is part of each view's identity
    assert {r["content_key"] for r in found}.isdisjoint(r["content_key"] for r in off_found)


def test_the_openai_engine_sends_bad_words_and_explains_a_refusal(serve):  # noqa: F811
    server = serve(lambda n, body: (200, _ok(body)))
    request = Request("a", [{"role": "user", "content": "tags"}], {}, "en", seed=1,
                      banned=("rock", "Rock"))
    engine(server.url).generate([request], Sampling())
    chats = [c for c in server.calls if "messages" in c]  # the others ask for tokens
    assert chats[0]["bad_words"] == ["rock", "Rock"]
    plain = Request("b", [{"role": "user", "content": "tags"}], {}, "en", seed=2)
    engine(server.url).generate([plain], Sampling())
    assert "bad_words" not in [c for c in server.calls if "messages" in c][1]
    refusing = serve(lambda n, body: (400, {"error": {
        "message": "Too many bad words after tokenization: 300.", "param": "bad_words"}}))
    with pytest.raises(RuntimeError, match="VLLM_MAX_NUM_BAD_WORDS and "
                       "VLLM_MAX_BAD_WORDS_TOTAL_TOKENS.*--no-faithful"):
        engine(refusing.url).generate([request], Sampling())
