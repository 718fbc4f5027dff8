"""Turn a track's tags into a multi-part MIDI arrangement (a list of timed notes)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.demo.vocabulary import (
    CLOSED_HAT,
    GENRES,
    INSTRUMENTS,
    KICK,
    MAJOR,
    MINOR,
    MOODS,
    RIDE,
    RIM,
    SNARE,
    Genre,
    Instrument,
)

DRUM_CHANNEL = 9
STEPS = 16
# Which kit piece plays the "snare" and "hat" lanes, where a genre differs from a rock kit.
SNARE_KEY = {"bossa nova": RIM, "reggae": RIM}
HAT_KEY = {"jazz": RIDE, "ambient": RIDE, "classical": RIDE}


@dataclass(frozen=True)
class Note:
    start: float
    end: float
    channel: int
    key: int
    velocity: int


@dataclass(frozen=True)
class Arrangement:
    tempo: float
    mode: str
    tonic: int
    programs: Mapping[int, int]     # channel -> General MIDI program (-1: drum kit)
    levels_db: Mapping[int, float]  # channel -> mix level, so every tagged part is audible
    roles: Mapping[str, str]        # instrument tag -> role it plays
    notes: tuple[Note, ...]


def arrange(tags: Mapping[str, Sequence[str]], rng: np.random.Generator,
            duration_s: float) -> Arrangement:
    genres = [GENRES[g] for g in tags.get("genre", ())] or [GENRES["pop"]]
    moods = [MOODS[m] for m in tags.get("mood", ())] or [MOODS["calm"]]
    instruments = [INSTRUMENTS[i] for i in tags.get("instrument", ())]
    if not instruments:
        raise ValueError("a demo track needs at least one instrument")
    primary, secondary = genres[0], genres[-1]

    mode = next((m.mode for m in moods if m.mode), "major")
    velocity = float(np.mean([m.velocity for m in moods]))
    register = int(round(np.mean([m.register for m in moods])))
    density = float(np.mean([m.density for m in moods]))
    low, high = np.mean([g.tempo for g in genres], axis=0)
    tempo = float(np.clip(rng.uniform(low, high) * np.mean([m.tempo_factor for m in moods]),
                          56, 184))
    song = _Song(tempo=tempo, swing=float(np.mean([g.swing for g in genres])),
                 scale=MAJOR if mode == "major" else MINOR, tonic=int(rng.integers(0, 12)),
                 progression=primary.progression,
                 sevenths=primary.sevenths or secondary.sevenths, duration_s=duration_s)

    roles = _assign_roles(instruments, rng)
    programs: dict[int, int] = {}
    levels_db: dict[int, float] = {}
    notes: list[Note] = []
    free = iter(c for c in range(16) if c != DRUM_CHANNEL)
    motif = _motif(rng, density)
    for inst in instruments:
        role = roles[inst.name]
        channel = DRUM_CHANNEL if role == "drums" else next(free)
        programs[channel] = inst.program
        levels_db[channel] = inst.level_db
        vel = velocity
        if role == "drums":
            notes += _drums(song, primary, channel, vel)
        elif role == "bass":
            notes += _bass(song, secondary, inst, channel, vel, rng)
        elif role == "comp":
            notes += _comp(song, secondary, inst, channel, vel * 0.8)
        elif role == "pad":
            notes += _pad(song, inst, channel, vel * 0.7)
        elif role == "melody":
            notes += _melody(song, motif, inst, channel, vel, register, density, rng)
        else:  # counter: a sparser line a third below the melody
            notes += _melody(song, motif[::2], inst, channel, vel * 0.85, register - 3,
                             density / 2, rng, offset=-2)
    notes = [n for n in notes if n.start < duration_s]
    notes.sort(key=lambda n: (n.start, n.channel, n.key))
    return Arrangement(tempo=tempo, mode=mode, tonic=song.tonic, programs=programs,
                       levels_db=levels_db, roles=roles, notes=tuple(notes))


@dataclass(frozen=True)
class _Song:
    tempo: float
    swing: float
    scale: tuple[int, ...]
    tonic: int
    progression: tuple[int, ...]
    sevenths: bool
    duration_s: float

    @property
    def step_s(self) -> float:
        return 60.0 / self.tempo / 4

    @property
    def bars(self) -> int:
        return math.ceil(self.duration_s / (STEPS * self.step_s)) + 1

    def time(self, bar: int, step: float) -> float:
        # Off-beat 8ths are pushed late by up to a third of a beat: the swing feel.
        delay = self.swing * 4 * self.step_s / 6 if step % 4 == 2 else 0.0
        return (bar * STEPS + step) * self.step_s + delay

    def chord(self, bar: int) -> list[int]:
        """Scale indices of the bar's chord (stacked thirds on the progression degree)."""
        root = self.progression[bar % len(self.progression)]
        return [root, root + 2, root + 4] + ([root + 6] if self.sevenths else [])

    def pitch(self, index: int, centre: int) -> int:
        """MIDI pitch of scale index `index` in the octave nearest to `centre`."""
        base = self.tonic + 12 * (index // 7) + self.scale[index % 7]
        return base + 12 * round((centre - base - 6) / 12)

    def line_pitch(self, index: int, centre: int) -> int:
        """MIDI pitch of scale index `index` counted from the tonic nearest `centre`,
        so a melody moves by steps instead of folding into one octave."""
        tonic = self.pitch(0, centre)
        return tonic + 12 * (index // 7) + self.scale[index % 7]


def _assign_roles(instruments: list[Instrument], rng: np.random.Generator) -> dict[str, str]:
    roles: dict[str, str] = {}
    for inst in instruments:
        if "drums" in inst.roles:
            roles[inst.name] = "drums"
    bass = [i for i in instruments if i.roles[0] == "bass"] or \
        [i for i in instruments if "bass" in i.roles and i.name not in roles]
    if bass:
        roles[bass[0].name] = "bass"
    lead = [i for i in instruments if i.name not in roles and i.roles[0] == "melody"] or \
        [i for i in instruments if i.name not in roles and "melody" in i.roles]
    if lead:
        roles[lead[int(rng.integers(len(lead)))].name] = "melody"
    for inst in instruments:
        if inst.name not in roles:
            first = inst.roles[0]
            roles[inst.name] = first if first in ("comp", "pad") else "counter"
    return roles


def _hits(pattern: str) -> list[int]:
    return [i for i, ch in enumerate(pattern) if ch == "x"]


def _vel(value: float) -> int:
    return int(np.clip(round(value), 1, 127))


def _drums(song: _Song, genre: Genre, channel: int, vel: float) -> list[Note]:
    lanes = [(genre.kick, KICK, 1.0), (genre.snare, SNARE_KEY.get(genre.name, SNARE), 0.9),
             (genre.hat, HAT_KEY.get(genre.name, CLOSED_HAT), 0.65)]
    notes = []
    for bar in range(song.bars):
        for pattern, key, weight in lanes:
            for step in _hits(pattern):
                accent = 1.0 if step % 4 == 0 else 0.85
                t = song.time(bar, step)
                notes.append(Note(t, t + song.step_s, channel, key, _vel(vel * weight * accent)))
    return notes


def _bass(song: _Song, genre: Genre, inst: Instrument, channel: int, vel: float,
          rng: np.random.Generator) -> list[Note]:
    hits = _hits(genre.bass)
    walk = (0, 2, 4, 2) if song.sevenths else (0, 0, 4, 0)
    notes = []
    for bar in range(song.bars):
        root = song.chord(bar)[0]
        for k, step in enumerate(hits):
            nxt = hits[k + 1] if k + 1 < len(hits) else STEPS
            index = root + walk[k % 4] if rng.random() < 0.8 else root
            start = song.time(bar, step)
            end = song.time(bar, step) + (nxt - step) * song.step_s * 0.9
            notes.append(Note(start, end, channel, song.pitch(index, inst.centre), _vel(vel)))
    return notes


def _voicing(song: _Song, chord: list[int], centre: int, style: str) -> list[int]:
    if style == "power":
        root = song.pitch(chord[0], centre - 5)
        return [root, root + 7, root + 12]
    return sorted(song.pitch(i, centre) for i in chord)


def _comp(song: _Song, genre: Genre, inst: Instrument, channel: int, vel: float) -> list[Note]:
    hits = _hits(genre.comp)
    notes = []
    for bar in range(song.bars):
        keys = _voicing(song, song.chord(bar), inst.centre, genre.voicing)
        for k, step in enumerate(hits):
            nxt = hits[k + 1] if k + 1 < len(hits) else STEPS
            length = (nxt - step) * song.step_s * (0.95 if len(hits) <= 2 else 0.6)
            start = song.time(bar, step)
            chord = [keys[k % len(keys)]] if genre.voicing == "arpeggio" else keys
            notes += [Note(start, start + length, channel, key, _vel(vel)) for key in chord]
    return notes


def _pad(song: _Song, inst: Instrument, channel: int, vel: float) -> list[Note]:
    notes = []
    for bar in range(song.bars):
        start, end = song.time(bar, 0), song.time(bar + 1, 0) - 0.02
        notes += [Note(start, end, channel, key, _vel(vel))
                  for key in _voicing(song, song.chord(bar), inst.centre, "block")]
    return notes


def _motif(rng: np.random.Generator, density: float) -> list[tuple[int, int]]:
    """A two-bar rhythm with scale offsets from the chord root; repeated, it is a tune."""
    grid = max(1, round(4 / density))
    steps = [s for s in range(0, 2 * STEPS, grid) if s == 0 or rng.random() < 0.85]
    offsets, current = [], 0
    for step in steps:
        current += int(rng.choice([-2, -1, -1, 0, 1, 1, 2, 3, -3]))
        current = int(np.clip(current, -3, 9))
        if step % 8 == 0:  # strong beats land on a chord tone
            current = min((0, 2, 4, 7, 9), key=lambda c: abs(c - current))
        offsets.append(current)
    return list(zip(steps, offsets, strict=True))


def _melody(song: _Song, motif: list[tuple[int, int]], inst: Instrument, channel: int,
            vel: float, register: int, density: float, rng: np.random.Generator,
            offset: int = 0) -> list[Note]:
    legato = 0.95 if density <= 1.5 else 0.6
    centre = inst.centre + register
    notes = []
    for block in range(0, song.bars, 2):
        for k, (step, degree) in enumerate(motif):
            bar, within = block + step // STEPS, step % STEPS
            if bar >= song.bars:
                break
            nxt = motif[k + 1][0] if k + 1 < len(motif) else 2 * STEPS
            if block % 4 == 2 and rng.random() < 0.3:  # vary the repeat a little
                degree += int(rng.choice([-1, 1]))
            index = song.chord(bar)[0] + degree + offset
            start = song.time(bar, within)
            end = start + (nxt - step) * song.step_s * legato
            notes.append(Note(start, end, channel, song.line_pitch(index, centre),
                              _vel(vel * (1.0 if within % 4 == 0 else 0.88))))
    return notes
