"""Find swap-dictionary descriptors in captions: what curation measures (tag recall,
hallucinated descriptors) and the spans TextSwap edits. Curation runs it; the spans it
finds are part of the curated views and the shards' samples (the contract), and the
trainer edits them there without matching again.

Matching is case-insensitive, on word boundaries, longest match first, accepts space,
hyphen or no separator inside multi-word terms ("hip hop", "hip-hop", "hiphop"), and
simple plurals ("drum" / "drums", "acoustic guitars"). Longest first means a compound
is never credited to its parts: "electric guitar" is not `guitar`, "punk rock" is not
`rock`, "drum machine" is not `drums`. Give joined catalog tags (`electricguitar`) their
words with a tag map's display forms; then every spelling of them matches. All forms go
into one regex built as a character trie, so a caption is scanned once whatever the
dictionary size.
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
_SEEN_LIMIT = 100_000
_new_tuple = tuple.__new__


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
        self._seen: dict[str, tuple[str, str] | tuple[()]] = {}  # surface -> (category, term)

    def find(self, text: str) -> list[Match]:
        if self.regex is None:
            return []
        matches = []
        seen = self._seen
        scan = self._ascii_regex.finditer(text.lower()) if text.isascii() \
            else self.regex.finditer(text)
        for m in scan:
            start, end = m.span()
            if end > start:
                # A vocabulary has few spellings: each is looked up once, and a Match is
                # built as a plain tuple. Per match this was most of the time a caption
                # took (75,000 -> 190,000 captions/s with 200 compound tags).
                surface = m.group()
                found = seen.get(surface)
                if found is None:
                    found = self._lookup(surface)
                if found:
                    matches.append(_new_tuple(Match, found + (start, end)))
        return matches

    def _lookup(self, surface: str) -> tuple[str, str] | tuple[()]:
        d = self.by_form.get(surface.lower().translate(_DROP_SEPARATORS))
        found = (d.category, d.term) if d is not None else ()
        if len(self._seen) >= _SEEN_LIMIT:  # non-ASCII text can spell forms in many cases
            self._seen.clear()
        self._seen[surface] = found
        return found


def tag_recall(matches: Sequence[Match], tags: Mapping[str, Sequence[str]]) -> float:
    """Share of `tags` (category -> tags) that the matches name; 0 for no tags. Tags
    are display forms ('R&B'), terms their lower-cased keys: compared without case."""
    own = [(c, t.lower()) for c, values in tags.items() for t in values]
    if not own:
        return 0.0
    found = {(m.category, m.term) for m in matches}
    return sum(pair in found for pair in own) / len(own)
