"""Find swap-dictionary descriptors in captions: what curation measures (tag recall,
hallucinated descriptors) and the spans TextSwap edits. Curation runs it; the spans it
finds are part of the curated views and the shards' samples (the contract), and the
trainer edits them there without matching again.

Matching is case-insensitive, on word boundaries, longest match first, accepts space,
hyphen or no separator inside multi-word terms ("hip hop", "hip-hop", "hiphop"), and
simple plurals ("drum" / "drums", "acoustic guitars"). All forms go into one regex
built as a character trie, so a caption is scanned once whatever the dictionary size.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from schemas.swap_dictionary import Descriptor, SwapDictionary

_SEPARATORS = re.compile(r"[\s\-]+")


class Match(NamedTuple):  # a tuple: millions are made per curation run
    category: str
    term: str       # the dictionary term, whatever surface form the caption used
    start: int
    end: int


_DROP_SEPARATORS = str.maketrans("", "", " \t\n\r\f\v-")


def _compact(text: str) -> str:
    return text.lower().translate(_DROP_SEPARATORS)


def _variants(word: str) -> list[str]:
    """The word and its simple singular/plural forms (on the last token)."""
    forms = [word, word + "s", word + "es"]
    if word.endswith("s") and len(word) > 3 and not word.endswith("ss"):
        forms.append(word[:-1])
    return forms


class _Trie:
    def __init__(self) -> None:
        self.children: dict[str, _Trie] = {}
        self.end = False

    def add(self, word: str) -> None:
        node = self
        for ch in word:
            node = node.children.setdefault(ch, _Trie())
        node.end = True

    def pattern(self) -> str:
        alternatives = []
        for ch in sorted(self.children):
            piece = r"[\s\-]*" if ch == " " else re.escape(ch)
            alternatives.append(piece + self.children[ch].pattern())
        if not alternatives:
            return ""
        body = alternatives[0] if len(alternatives) == 1 else "(?:" + "|".join(alternatives) + ")"
        # optional and greedy: the longest form is tried first, shorter ones on backtrack
        return f"(?:{body})?" if self.end else body


class DescriptorMatcher:
    def __init__(self, dictionary: SwapDictionary):
        self.by_form: dict[str, Descriptor] = {}
        spaced: set[str] = set()  # every surface form, separators as single spaces
        descriptors = sorted(dictionary.descriptors, key=lambda d: (d.category, d.term))
        # Terms and synonyms first, then derived plural forms only where still free, so a
        # real entry always beats another entry's plural.
        for derived in (False, True):
            for d in descriptors:
                for word in (d.term, *d.synonyms):
                    forms = _variants(word)[1:] if derived else [word]
                    for form in forms:
                        self.by_form.setdefault(_compact(form), d)
                        spaced.add(_SEPARATORS.sub(" ", form.lower()).strip())
        trie = _Trie()
        for form in spaced:
            trie.add(form)
        pattern = r"(?<![\w])" + trie.pattern() + r"(?![\w])"
        self.regex = re.compile(pattern, re.IGNORECASE) if spaced else None
        # ASCII text lowercases without moving characters, and a case-sensitive scan of
        # it is faster than a case-insensitive one.
        self._ascii_regex = re.compile(pattern) if spaced else None

    def find(self, text: str) -> list[Match]:
        if self.regex is None:
            return []
        matches = []
        by_form = self.by_form
        scan = self._ascii_regex.finditer(text.lower()) if text.isascii() \
            else self.regex.finditer(text)
        for m in scan:
            start, end = m.span()
            if end > start:
                d = by_form.get(m.group().lower().translate(_DROP_SEPARATORS))
                if d is not None:
                    matches.append(Match(d.category, d.term, start, end))
        return matches


def tag_recall(matches: Sequence[Match], tags: Mapping[str, Sequence[str]]) -> float:
    """Share of `tags` (category -> tags) that the matches name; 0 for no tags."""
    own = [(c, t) for c, values in tags.items() for t in values]
    if not own:
        return 0.0
    found = {(m.category, m.term) for m in matches}
    return sum(pair in found for pair in own) / len(own)
