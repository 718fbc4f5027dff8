"""A deterministic rule-based captioner: no model, no GPU. For smoke tests and as a
baseline; every row it writes says engine='template'."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.captions.engine_api import EngineSpec, Request, Result, Sampling

if TYPE_CHECKING:
    from pipeline.captions.engines import EngineConfig

# The languages this engine writes, each with its sentence frames and the word that joins
# the last two items of a list.
_FRAMES = {
    "en": ("A {mood} {genre} track with {instrument}.",
           "{Mood} {genre} music featuring {instrument}.",
           "A {genre} piece with {instrument}; the mood is {mood}."),
    "de": ("Ein {mood} {genre}-Stück mit {instrument}.",),
    "fr": ("Un morceau {genre} {mood} avec {instrument}.",),
    "es": ("Una pieza de {genre} {mood} con {instrument}.",),
    "it": ("Un brano {genre} {mood} con {instrument}.",),
}
_AND = {"en": "and", "de": "und", "fr": "et", "es": "y", "it": "e"}
SUPPORTED_LANGUAGES = tuple(_FRAMES)


def _join(words: Sequence[str], conjunction: str) -> str:
    words = list(words)
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + f" {conjunction} " + words[-1]


class TemplateEngine:
    name = "template"
    model_id = "rules"
    model_revision = "1"

    @classmethod
    def from_config(cls, config: EngineConfig, cache_dir: Path) -> TemplateEngine:
        return cls()

    def generate(self, requests: Sequence[Request], sampling: Sampling) -> list[Result]:
        return [self._one(r) for r in requests]

    def _one(self, request: Request) -> Result:
        frames = _FRAMES.get(request.language)
        if frames is None:
            return Result(request.request_id, "", "error",
                          error=f"template engine has no frames for {request.language!r}")
        conjunction = _AND[request.language]
        parts = {c: _join(request.tags.get(c, ()), conjunction)
                 for c in ("genre", "mood", "instrument")}
        pick = int(hashlib.blake2b(request.request_id.encode(), digest_size=4).hexdigest(), 16)
        frame = frames[pick % len(frames)]
        text = frame.format(genre=parts["genre"] or "music", mood=parts["mood"] or "",
                            instrument=parts["instrument"] or "various instruments",
                            Mood=(parts["mood"] or "").capitalize())
        # categories beyond the three the frames name (a tag map's `theme`) are listed,
        # so a template caption names every tag of its view
        others = [f"{c}: {_join(tags, conjunction)}" for c, tags in request.tags.items()
                  if c not in ("genre", "mood", "instrument") and tags]
        if others:
            text = text[:-1] + "; " + "; ".join(others) + "."
        text = " ".join(text.split()).replace(" .", ".")
        text = text[:1].upper() + text[1:]
        if text.startswith("A ") and text[2:3] and text[2:3].lower() in "aeiou":
            text = "An " + text[2:]
        return Result(request.request_id, text, "stop", prompt_tokens=0,
                      completion_tokens=len(text.split()))


# Writes from tags, not prompts: it has no model and cannot translate a caption.
ENGINE = EngineSpec("template", "rule-based, no model", TemplateEngine,
                    languages=SUPPORTED_LANGUAGES, uses_model=False, translates=False)
