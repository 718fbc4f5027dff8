"""One table of languages (schemas/languages); every consumer's languages are in it."""

import pytest

from pipeline.captions.engines import ENGINES
from pipeline.captions.engines.template import _AND, _FRAMES
from pipeline.captions.prompts import load_template
from pipeline.curate.language import FUNCTION_WORDS, LATIN_LANGUAGES, script_problem
from pipeline.translate import TranslateConfig
from schemas.config import ConfigError
from schemas.languages import LANGUAGES
from trainer.config import DataConfig


def test_every_consumer_supports_only_languages_of_the_table():
    # the template engine's row lists the languages it has frames and a conjunction for
    assert set(ENGINES["template"].languages) == set(_FRAMES) == set(_AND) <= set(LANGUAGES)
    assert set(FUNCTION_WORDS) <= set(LANGUAGES)
    assert LATIN_LANGUAGES == {c for c, lang in LANGUAGES.items() if lang.script == "latin"}
    assert all(code == lang.code and lang.name for code, lang in LANGUAGES.items())


def test_the_table_feeds_prompts_translation_and_training():
    template = load_template("caption-v1")
    for code, language in LANGUAGES.items():
        prompt = template.messages({"genre": ["rock"]}, code)[-1]["content"]
        assert (language.name in prompt) == (code != "en")
        TranslateConfig(file="x.csv", out="y.csv", languages=(code,))
        DataConfig(languages=(code,))
    for make in (lambda: TranslateConfig(file="x.csv", out="y.csv", languages=("de", "xx")),
                 lambda: DataConfig(languages=("eng",))):
        with pytest.raises(ConfigError, match="languages: '(xx|eng)' unknown; known: en, de"):
            make()


def test_the_script_rule_covers_each_latin_language():
    for code in LATIN_LANGUAGES:
        assert script_problem("A r\u043eck song", code) is not None  # Cyrillic o
    assert script_problem("\u30ed\u30c3\u30af", "ja") is None
