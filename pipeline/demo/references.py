"""Human-style reference captions for evaluation, from a grammar of its own.

These captions must not share a generator with any caption engine, or retrieval on
them would measure how well a model learned our templates. So, as a person describing
a clip would, each caption names only some of the tags (one genre, one or two moods,
one to three instruments), mostly in words of its own: the paraphrases below are never
shown to the caption prompts, the curation dictionary or the trainer. Sentence shapes
vary in order and length, from a three-word fragment to two sentences.
"""

from __future__ import annotations

import re

import numpy as np

from pipeline.demo.tracks import DemoTrack

# Each tag's ways of being said. The tag's own word comes first but is no likelier
# than the others, so about two thirds of the mentions are paraphrases.
PARAPHRASES: dict[str, tuple[str, ...]] = {
    # genres
    "rock": ("rock", "rock 'n' roll", "guitar-band rock", "classic rock"),
    "pop": ("pop", "poppy", "radio pop", "mainstream pop"),
    "jazz": ("jazz", "jazzy", "small-combo jazz", "swinging jazz"),
    "blues": ("blues", "bluesy", "twelve-bar blues", "juke-joint blues"),
    "hip hop": ("hip-hop", "rap", "boom-bap", "hip hop"),
    "electronic": ("electronic", "electronica", "club", "dance music"),
    "reggae": ("reggae", "roots reggae", "Jamaican", "skanking reggae"),
    "funk": ("funk", "funky", "slap-and-groove funk", "seventies funk"),
    "country": ("country", "country-western", "Nashville", "Americana"),
    "bossa nova": ("bossa nova", "bossa", "Brazilian", "Rio-style"),
    "ambient": ("ambient", "atmospheric", "drone-like", "new age"),
    "classical": ("classical", "orchestral", "chamber", "concert-hall"),
    # moods
    "happy": ("happy", "cheerful", "joyful", "sunny"),
    "uplifting": ("uplifting", "inspiring", "hopeful", "triumphant"),
    "playful": ("playful", "bouncy", "whimsical", "cheeky"),
    "romantic": ("romantic", "tender", "loving", "intimate"),
    "dreamy": ("dreamy", "hazy", "ethereal", "floating"),
    "calm": ("calm", "peaceful", "relaxed", "laid-back"),
    "sad": ("sad", "sorrowful", "mournful", "heartbroken"),
    "melancholic": ("melancholic", "wistful", "bittersweet", "nostalgic"),
    "dark": ("dark", "brooding", "ominous", "sinister"),
    "tense": ("tense", "nervous", "suspenseful", "uneasy"),
    "aggressive": ("aggressive", "fierce", "angry", "hard-hitting"),
    "energetic": ("energetic", "lively", "high-energy", "driving"),
    # instruments
    "piano": ("piano", "grand piano", "keys", "piano chords"),
    "electric piano": ("electric piano", "Rhodes", "e-piano", "Wurlitzer"),
    "organ": ("organ", "Hammond organ", "church organ", "B3"),
    "acoustic guitar": ("acoustic guitar", "strummed acoustic", "nylon-string guitar",
                        "unplugged guitar"),
    "electric guitar": ("electric guitar", "guitar riffs", "a Stratocaster", "twangy guitar"),
    "bass": ("bass", "bass guitar", "a bassline", "low end"),
    "violin": ("violin", "fiddle", "solo violin", "bowed violin"),
    "cello": ("cello", "cellos", "a low bowed cello", "violoncello"),
    "strings": ("strings", "a string section", "string ensemble", "orchestral strings"),
    "trumpet": ("trumpet", "muted trumpet", "brass", "a horn line"),
    "saxophone": ("saxophone", "sax", "tenor sax", "alto sax"),
    "flute": ("flute", "a breathy flute", "woodwind", "piccolo"),
    "synthesizer": ("synthesizer", "synth", "synth lead", "analog synth"),
    "synth pad": ("synth pad", "pads", "a warm pad", "washy pads"),
    "drums": ("drums", "a drum kit", "percussion", "a beat"),
}

# {genre}, {moods}, {instruments}; a capitalised name capitalises the first letter.
SHAPES = (
    "{moods} {genre} with {instruments}",
    "{genre}, {moods}, {instruments}",
    "A {moods} {genre} track with {instruments}.",
    "{Instruments} over a {moods} {genre} groove.",
    "This {genre} piece feels {moods}; you can hear {instruments}.",
    "Sounds {moods}. Mostly {instruments}, in a {genre} style.",
    "{Genre} tune, {moods} vibe, {instruments} up front.",
    "With {instruments}, this {genre} song has a {moods} feel.",
    "I'd call it {moods} {genre}: {instruments} and not much else.",
    "{Moods} music in a {genre} vein, built around {instruments}.",
    "background music, {genre}, quite {moods}, {instruments}",
    "A {genre} recording where {instruments} set a {moods} mood from start to finish.",
)


def _say(tag: str, rng: np.random.Generator) -> str:
    options = PARAPHRASES.get(tag, (tag,))
    return str(options[int(rng.integers(len(options)))])


def _join(words: list[str], rng: np.random.Generator) -> str:
    if len(words) == 1:
        return words[0]
    last = " and " if rng.random() < 0.7 else ", "
    return ", ".join(words[:-1]) + last + words[-1]


_ARTICLE = re.compile(r"\b([Aa]) (?=[aeiouAEIOU])")


def _upper(text: str) -> str:
    return text[:1].upper() + text[1:]


def reference_captions(track: DemoTrack, rng: np.random.Generator, count: int) -> list[str]:
    """`count` captions of one track, each from its own shape and its own tag subset."""
    captions = []
    for shape_index in rng.permutation(len(SHAPES))[:count]:
        genre = _say(str(rng.choice(track.genres)), rng)
        moods = rng.permutation(track.moods)[: int(rng.integers(1, 3))]
        mood = _join([_say(str(m), rng) for m in moods], rng)
        n_instruments = int(rng.integers(1, min(3, len(track.instruments)) + 1))
        instruments = _join([_say(str(i), rng)
                             for i in rng.permutation(track.instruments)[:n_instruments]], rng)
        text = SHAPES[shape_index].format(
            genre=genre, moods=mood, instruments=instruments, Genre=_upper(genre),
            Moods=_upper(mood), Instruments=_upper(instruments))
        captions.append(_ARTICLE.sub(r"\1n ", text))
    return captions

