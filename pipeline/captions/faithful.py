"""Faithful decoding: keep the LLM from naming descriptors the track does not have.

Each request carries, as banned words, the surface forms of every dictionary
descriptor of the view's categories that is not one of the track's own tags. The
engine masks the last token of a banned word's token sequence whenever the tokens
before it were just written (the word bare and after a space), so the model cannot
finish writing it and picks another word: the vllm engine with its own logits
processor (banned_tokens.py), the openai engine through the server's
`bad_words` (vLLM's OpenAI server takes them).

The dictionary is the one curation checks captions against: the catalog's tag
vocabulary plus the same optional extras file (`adswap curate --extras`), so what is
banned is what the hallucination rule would reject. Surface forms are each term and
synonym with its simple plural or singular, a hyphenated spelling of multi-word terms,
and a capitalised first letter.

A form that starts a word of one of the track's own forms is not banned: banning
"piano" would mask the token the track's own "electric piano" needs, and banning "bass"
the first token of its "bassoon". Curation still rejects a bare "piano" written for
such a track. Every banned form costs the engine a check at every decoding step, so
a request holds at most `max_words` forms, the catalog's commonest descriptors first.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.curate.dictionary import build_dictionary
from schemas.catalog import CatalogConfig, iter_catalog, normalise_tag
from schemas.config import Config, setting
from schemas.swap_dictionary import Descriptor, SwapDictionary

# vLLM's OpenAI server refuses a request whose bad_words tokenize to more sequences
# than VLLM_MAX_NUM_BAD_WORDS (default 128); a word gives at most two (with and without
# a leading space), so a server started with twice this takes any request.
MAX_WORDS_LIMIT = 4096


@dataclass(frozen=True)
class FaithfulConfig(Config):
    enabled: bool = setting(True, flag="faithful", help="Faithful decoding: ban the surface "
                            "forms of every dictionary descriptor the track lacks (vllm, "
                            "and openai servers that take vLLM's bad_words).")
    extras: Path | None = setting(None, help="Extra descriptors and synonyms (YAML, in the "
                                  "format of curate's extras) to ban beside the catalog's "
                                  "vocabulary; give curate the same file.")
    max_words: int = setting(1024, help="Banned forms per request at most; past it the "
                             "catalog's rarest descriptors go unbanned.")

    def check(self) -> list[str]:
        if not 1 <= self.max_words <= MAX_WORDS_LIMIT:
            return [f"max_words must be between 1 and {MAX_WORDS_LIMIT}"]
        return []


_SEPARATORS = re.compile(r"[\s\-]+")


def _plural_forms(word: str) -> list[str]:
    """The word and its simple plural or singular (on the last word)."""
    if word.endswith("ss") or word.endswith(("x", "ch", "sh")):
        return [word, word + "es"]
    if word.endswith("s") and len(word) > 3:
        return [word, word[:-1]]
    return [word, word + "s"]


def surface_forms(descriptor: Descriptor) -> list[str]:
    """The spellings a caption may use for a descriptor, lower-case and capitalised."""
    forms: list[str] = []
    for word in (descriptor.term, *descriptor.synonyms):
        spaced = _SEPARATORS.sub(" ", word.strip().lower())
        spellings = [spaced, spaced.replace(" ", "-")] if " " in spaced else [spaced]
        for spelling in spellings:
            for form in _plural_forms(spelling):
                forms += [form, form[:1].upper() + form[1:]]
    return list(dict.fromkeys(forms))


class BannedWords:
    """The banned forms of a request, from the view's categories, the track's tags and
    the dictionary; `fingerprint` changes whenever the result of any request could."""

    def __init__(self, dictionary: SwapDictionary, frequency: Mapping[tuple[str, str], int],
                 max_words: int):
        self.max_words = max_words
        descriptors = sorted(dictionary.descriptors, key=lambda d: (
            -frequency.get((d.category, d.term), 0), d.category, d.term))
        self._forms = {(d.category, d.term): surface_forms(d) for d in descriptors}
        self._owner = {_SEPARATORS.sub(" ", w.lower()): (d.category, d.term)
                       for d in descriptors for w in (d.term, *d.synonyms)}
        body = json.dumps([dictionary.to_json(), list(self._forms), max_words],
                          sort_keys=True)
        self.fingerprint = hashlib.sha256(body.encode()).hexdigest()[:16]

    def for_request(self, view: Mapping[str, Sequence[str]],
                    track_tags: Mapping[str, Sequence[str]]) -> tuple[str, ...]:
        """Banned forms for a view (its categories) of a track (its tags are allowed)."""
        return self._banned(tuple(view), tuple((c, tuple(v)) for c, v in track_tags.items()))

    # one instance per run, so the cache lives as long as it should; a track's views
    # come one after another and share their banned words
    @functools.lru_cache(maxsize=4096)  # noqa: B019
    def _banned(self, categories: tuple[str, ...],
                track_tags: tuple[tuple[str, tuple[str, ...]], ...]) -> tuple[str, ...]:
        own = set()
        allowed_text = []
        for category, tags in track_tags:
            for tag in tags:
                key = self._owner.get(_SEPARATORS.sub(" ", normalise_tag(tag)), (category, tag))
                own.add(key)
                allowed_text += [f.lower() for f in self._forms.get(key, [tag])]
        allowed = " | ".join(allowed_text)
        banned: list[str] = []
        for key, forms in self._forms.items():
            if key[0] not in categories or key in own:
                continue
            for form in forms:
                if re.search(r"(?<![a-z0-9])" + re.escape(form.lower()), allowed):
                    continue  # the track's own words start with it: banning would block them
                banned.append(form)
                if len(banned) == self.max_words:
                    return tuple(banned)
        return tuple(banned)


def build_banned_words(catalog: Path, categories: Iterable[str],
                       config: FaithfulConfig) -> BannedWords:
    """The catalog's vocabulary (one pass over it) plus the extras, as curation builds it."""
    frequency: Counter = Counter()
    for track, _ in iter_catalog(catalog, CatalogConfig(categories=tuple(categories))):
        if track is not None:
            frequency.update((c, t) for c, tags in track.tags.items() for t in tags)
    dictionary = build_dictionary(frequency, categories, config.extras)
    return BannedWords(dictionary, frequency, config.max_words)
