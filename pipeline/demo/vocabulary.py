"""The demo's tag vocabulary and what each tag does to the music.

Every tag maps to concrete musical parameters, so a model can only learn the tags
by listening: genre sets tempo, groove (drum, bass and comping patterns, swing) and
harmony; mood sets mode, tempo, dynamics, register and note density; an instrument
tag decides which General MIDI programs play at all.

Patterns are 16 steps per 4/4 bar, 'x' = hit.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Genre:
    name: str
    tempo: tuple[int, int]
    swing: float                     # 0 straight, 1 full triplet swing of off-beat 8ths
    progression: tuple[int, ...]     # scale degrees (0 = tonic), one chord per bar
    sevenths: bool
    kick: str
    snare: str
    hat: str
    bass: str
    comp: str
    voicing: str                     # "block", "power" (root-fifth-octave) or "arpeggio"
    typical: tuple[str, ...]         # instruments this genre favours
    drum_weight: float               # how likely a track of this genre has drums


GENRES: dict[str, Genre] = {g.name: g for g in [
    Genre("rock", (112, 140), 0.0, (0, 4, 5, 3), False,
          "x.......x.x.....", "....x.......x...", "x.x.x.x.x.x.x.x.",
          "x.x.x.x.x.x.x.x.", "x.x.x.x.x.x.x.x.",
          "power", ("electric guitar", "bass", "drums", "organ"), 0.95),
    Genre("pop", (96, 120), 0.0, (0, 4, 5, 3), False,
          "x.....x.x.......", "....x.......x...", "x.x.x.x.x.x.x.x.",
          "x.....x.x.......", "x...x...x...x...",
          "block", ("piano", "synthesizer", "bass", "drums", "acoustic guitar"), 0.85),
    Genre("jazz", (130, 170), 0.7, (1, 4, 0, 5), True,
          "x...............", "....x.......x...", "x..x.xx..x.xx...",
          "x...x...x...x...", "x.....x.....x...",
          "block", ("piano", "saxophone", "trumpet", "bass", "drums"), 0.8),
    Genre("blues", (72, 96), 0.8, (0, 0, 3, 0, 4, 3, 0, 4), True,
          "x.......x.......", "....x.......x...", "x.xxx.xxx.xxx.xx",
          "x...x...x...x...", "x.x.x.x.x.x.x.x.",
          "block", ("electric guitar", "piano", "organ", "bass", "drums"), 0.8),
    Genre("hip hop", (82, 96), 0.35, (0, 5, 3, 4), False,
          "x......x..x.....", "....x.......x...", "x.x.x.x.x.x.x.x.",
          "x......x..x.....", "x...............",
          "block", ("electric piano", "synth pad", "bass", "drums"), 0.95),
    Genre("electronic", (122, 132), 0.0, (0, 0, 5, 6), False,
          "x...x...x...x...", "....x.......x...", "..x...x...x...x.",
          "..x...x...x...x.", "..x...x...x...x.",
          "block", ("synthesizer", "synth pad", "bass", "drums"), 0.95),
    Genre("reggae", (70, 88), 0.15, (0, 3, 0, 4), False,
          "........x.......", "........x.......", "x.x.x.x.x.x.x.x.",
          "..x.x...x...x.x.", "..x...x...x...x.",
          "block", ("organ", "electric guitar", "bass", "drums"), 0.9),
    Genre("funk", (98, 114), 0.1, (0, 0, 3, 0), True,
          "x..x..x...x..x..", "....x..x.x..x...", "xxxxxxxxxxxxxxxx",
          "x..x..x...x.xx..", "x..x.x...x.x.x..",
          "block", ("electric guitar", "bass", "drums", "trumpet", "saxophone"), 0.95),
    Genre("country", (100, 126), 0.0, (0, 3, 4, 0), False,
          "x.......x.......", "....x.......x...", "x.x.x.x.x.x.x.x.",
          "x...x...x...x...", "....x.......x...",
          "block", ("acoustic guitar", "violin", "bass", "drums"), 0.8),
    Genre("bossa nova", (126, 144), 0.0, (1, 4, 0, 0), True,
          "x..x....x..x....", "x..x..x...x..x..", "x.x.x.x.x.x.x.x.",
          "x..x....x..x....", "x..x..x...x..x..",
          "block", ("acoustic guitar", "flute", "bass", "piano"), 0.6),
    Genre("ambient", (60, 76), 0.0, (0, 3, 5, 4), False,
          "x...............", "................", "x.......x.......",
          "x...............", "x...............",
          "block", ("synth pad", "strings", "piano", "flute"), 0.15),
    Genre("classical", (72, 104), 0.0, (0, 3, 4, 0), False,
          "x.......x.......", "............x...", "x...x...x...x...",
          "x.......x.......", "x.x.x.x.x.x.x.x.",
          "arpeggio", ("violin", "cello", "strings", "flute", "piano"), 0.1),
]}


@dataclass(frozen=True)
class Mood:
    name: str
    mode: str | None          # "major", "minor" or None (either)
    energy: str               # "low", "mid", "high"; low and high never mix
    tempo_factor: float
    velocity: int             # MIDI velocity, i.e. dynamics
    register: int             # semitones added to melodic parts
    density: float            # melody notes per beat


MOODS: dict[str, Mood] = {m.name: m for m in [
    Mood("happy", "major", "mid", 1.08, 92, 5, 2.0),
    Mood("uplifting", "major", "high", 1.10, 104, 7, 2.0),
    Mood("playful", "major", "mid", 1.10, 88, 9, 3.0),
    Mood("romantic", "major", "low", 0.90, 64, 0, 1.0),
    Mood("dreamy", "major", "low", 0.86, 52, 9, 1.0),
    Mood("calm", None, "low", 0.82, 44, 0, 0.5),
    Mood("sad", "minor", "low", 0.80, 50, -3, 0.5),
    Mood("melancholic", "minor", "low", 0.86, 58, -2, 1.0),
    Mood("dark", "minor", "mid", 0.95, 76, -10, 1.0),
    Mood("tense", "minor", "mid", 1.06, 86, -5, 3.0),
    Mood("aggressive", "minor", "high", 1.20, 122, -7, 4.0),
    Mood("energetic", None, "high", 1.20, 112, 2, 4.0),
]}


def moods_compatible(a: Mood, b: Mood) -> bool:
    """Moods on one track must agree on mode and not mix low with high energy."""
    if a.mode and b.mode and a.mode != b.mode:
        return False
    return {a.energy, b.energy} != {"low", "high"}


@dataclass(frozen=True)
class Instrument:
    name: str
    program: int              # General MIDI program (0-based); -1 = drum kit
    roles: tuple[str, ...]    # preferred roles, first is best
    centre: int               # MIDI note at the middle of its comfortable range
    level_db: float           # mix level: evens out the soundfont's loudness differences


INSTRUMENTS: dict[str, Instrument] = {i.name: i for i in [
    Instrument("piano", 0, ("comp", "melody"), 62, 8.0),
    Instrument("electric piano", 4, ("comp", "melody"), 62, 2.5),
    Instrument("organ", 16, ("pad", "comp"), 60, -0.5),
    Instrument("acoustic guitar", 25, ("comp", "melody"), 57, 4.5),
    Instrument("electric guitar", 29, ("comp", "melody"), 55, 6.5),
    Instrument("bass", 33, ("bass",), 36, -5.0),
    Instrument("violin", 40, ("melody", "pad"), 74, -4.0),
    Instrument("cello", 42, ("bass", "melody", "pad"), 48, -2.0),
    Instrument("strings", 48, ("pad",), 60, 3.0),
    Instrument("trumpet", 56, ("melody",), 70, -2.0),
    Instrument("saxophone", 65, ("melody",), 66, -4.0),
    Instrument("flute", 73, ("melody",), 79, -6.0),
    Instrument("synthesizer", 81, ("melody", "comp"), 67, 6.0),
    Instrument("synth pad", 89, ("pad",), 60, -7.0),
    Instrument("drums", -1, ("drums",), 0, 3.5),
]}

MAJOR = (0, 2, 4, 5, 7, 9, 11)
MINOR = (0, 2, 3, 5, 7, 8, 10)

# General MIDI drum keys.
KICK, SNARE, RIM, CLOSED_HAT, RIDE = 36, 38, 37, 42, 51
