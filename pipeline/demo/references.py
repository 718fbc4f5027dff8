"""Human-style reference captions for evaluation, from a grammar of its own.

These captions must not share a generator with any caption engine, or retrieval on
them would measure how well a model learned our templates. So they use their own
sentence shapes, paraphrases of the tags, and mention only some of the tags, as a
person describing a clip would.
"""

from __future__ import annotations

import numpy as np

from pipeline.demo.tracks import DemoTrack

_GENRE_WORDS = {
    "hip hop": ("hip-hop", "hip hop"), "electronic": ("electronic", "electronic dance"),
    "bossa nova": ("bossa nova", "bossa"), "classical": ("classical", "orchestral classical"),
}
_MOOD_WORDS = {
    "happy": ("happy", "cheerful"), "uplifting": ("uplifting", "uplifting"),
    "playful": ("playful", "bouncy"), "romantic": ("romantic", "tender"),
    "dreamy": ("dreamy", "hazy"), "calm": ("calm", "peaceful"), "sad": ("sad", "sorrowful"),
    "melancholic": ("melancholic", "wistful"), "dark": ("dark", "brooding"),
    "tense": ("tense", "nervous"), "aggressive": ("aggressive", "fierce"),
    "energetic": ("energetic", "lively"),
}
_INSTRUMENT_WORDS = {"drums": ("drums", "a drum kit"), "synthesizer": ("synthesizer", "synth"),
                     "bass": ("bass", "bass guitar")}

_SHAPES = (
    "A {mood} {genre} song with {instruments}.",
    "{Mood} {genre} music featuring {instruments}.",
    "This is a {genre} track; it sounds {mood}, with {instruments}.",
    "{Instruments} play a {mood} {genre} tune.",
    "I hear {instruments} in this {mood} piece of {genre}.",
)


def _word(table: dict, tag: str, rng: np.random.Generator) -> str:
    options = table.get(tag, (tag,))
    return str(options[int(rng.integers(len(options)))])


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def reference_captions(track: DemoTrack, rng: np.random.Generator, count: int) -> list[str]:
    captions = []
    for shape_index in rng.permutation(len(_SHAPES))[:count]:
        genre = " ".join(_word(_GENRE_WORDS, g, rng) for g in track.genres)
        moods = rng.permutation(track.moods)[: int(rng.integers(1, 3))]
        mood = " and ".join(_word(_MOOD_WORDS, m, rng) for m in moods)
        n_inst = int(rng.integers(2, len(track.instruments) + 1))
        instruments = _join([_word(_INSTRUMENT_WORDS, i, rng)
                             for i in rng.permutation(track.instruments)[:n_inst]])
        text = _SHAPES[shape_index].format(
            genre=genre, mood=mood, instruments=instruments, Mood=mood[:1].upper() + mood[1:],
            Instruments=instruments[:1].upper() + instruments[1:])
        captions.append(text)
    return captions
