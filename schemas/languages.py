"""The languages adswap knows: one table of codes, each with the English name a prompt
asks an LLM for and its script.

Each consumer says which of them it supports:
- captions (`--languages`, pipeline/captions/prompts.py) and `translate-captions`: every
  language here (the LLM is asked for it by name);
- the template engine (pipeline/captions/engines/template.py): those it has sentence
  frames for;
- curation (pipeline/curate/language.py): the `language` rule checks those it has
  function words for and lets the others pass; the `script` rule checks every
  Latin-script language here;
- training (`data.languages`): every language here.

To add a language: add a row here; then, to have the `language` rule check it, its
function words in pipeline/curate/language.py, and, for the template engine, its frames.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Language:
    code: str    # ISO 639-1, as the views' `language` column holds it
    name: str    # in English, as prompts name it ("Write the caption in German.")
    script: str  # 'latin' for the script rule's look-alike check; else the script's name


LANGUAGES: dict[str, Language] = {language.code: language for language in (
    Language("en", "English", "latin"),
    Language("de", "German", "latin"),
    Language("fr", "French", "latin"),
    Language("it", "Italian", "latin"),
    Language("es", "Spanish", "latin"),
    Language("pt", "Portuguese", "latin"),
    Language("nl", "Dutch", "latin"),
    Language("pl", "Polish", "latin"),
    Language("sv", "Swedish", "latin"),
    Language("ja", "Japanese", "japanese"),
    Language("ko", "Korean", "hangul"),
    Language("zh", "Chinese", "han"),
)}


def unknown_languages(codes: Iterable[str], supported: Iterable[str] = LANGUAGES) -> list[str]:
    """A config problem for each code outside `supported` (a consumer's subset of the
    table), to start with the setting's name."""
    supported = tuple(supported)
    bad = [code for code in codes if code not in supported]
    return [f"languages: {', '.join(map(repr, bad))} unknown; known: "
            f"{', '.join(supported)}"] if bad else []
