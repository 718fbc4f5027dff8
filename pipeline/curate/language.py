"""A small language check for captions: function-word counts and script mixing.

Enough to catch a view written in the wrong language or a caption with look-alike
characters from another script; not a general language identifier.
"""

from __future__ import annotations

import re
import unicodedata

from schemas.languages import LANGUAGES

# The languages the `language` rule checks (schemas/languages has the rest): frequent
# function words, to tell one language's caption from another's.
FUNCTION_WORDS = {
    "en": "a an the and with of in on is this that its by from for to".split(),
    "de": "ein eine einer einem der die das und mit von im ist zu den dem des".split(),
    "fr": "un une le la les et avec de du des est dans au aux pour sur".split(),
    "es": "un una el la los las y con de del es en por para al".split(),
    "it": "un una il lo la gli le e con di del della è in per al".split(),
    "pt": "um uma o a os as e com de do da é em para no na".split(),
    "nl": "een de het en met van is in op voor".split(),
}
_TOKEN = re.compile(r"[^\W\d_]+", re.UNICODE)
LATIN_LANGUAGES = {code for code, lang in LANGUAGES.items() if lang.script == "latin"}
_LANGUAGES_OF: dict[str, tuple[str, ...]] = {}
for _lang, _words in FUNCTION_WORDS.items():
    for _word in _words:
        _LANGUAGES_OF[_word] = _LANGUAGES_OF.get(_word, ()) + (_lang,)


def foreign_language(text: str, expected: str) -> str | None:
    """The language a caption reads as, when that is not `expected`: it uses at least
    two function words of one other language and none of the expected one. Shared
    short words ("a", "as") make anything weaker too easy to get wrong."""
    if expected not in FUNCTION_WORDS:
        return None  # no word list for it: nothing to compare against
    scores: dict[str, int] = {}
    for token in _TOKEN.findall(text.lower()):
        for lang in _LANGUAGES_OF.get(token, ()):
            scores[lang] = scores.get(lang, 0) + 1
    if scores.get(expected, 0) or not scores:
        return None
    best = max(sorted(scores), key=lambda lang: scores[lang])
    return best if scores[best] >= 2 else None


def script_problem(text: str, language: str) -> str | None:
    """A letter from another script inside a Latin-script caption (a confusable such as
    Cyrillic 'о' for Latin 'o'), named so the reject says what was found."""
    if language not in LATIN_LANGUAGES or text.isascii():
        return None
    for ch in text:
        if ch.isalpha() and not unicodedata.name(ch, "").startswith("LATIN"):
            return f"contains {ch!r} ({unicodedata.name(ch, f'U+{ord(ch):04X}')})"
    return None


_STOP = set("a an the and with of".split())


def normalise_text(text: str) -> str:
    """For near-duplicate and decontamination checks: case, punctuation, articles and
    spacing do not make two captions different."""
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
    return " ".join(t for t in _TOKEN.findall(text.lower()) if t not in _STOP)
