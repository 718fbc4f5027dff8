"""Sample the demo catalog's artists, tags and splits (no audio here)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.demo.vocabulary import GENRES, INSTRUMENTS, MOODS, moods_compatible

_FIRST = ("Velvet", "Copper", "Midnight", "Paper", "Silver", "Hollow", "Golden", "Neon",
          "Quiet", "Wild", "Electric", "Lunar", "Rusty", "Crystal", "Wandering", "Amber")
_SECOND = ("Lanterns", "Foxes", "Harbour", "Orchard", "Engines", "Tides", "Comets",
           "Pilots", "Gardens", "Echoes", "Rivers", "Owls", "Satellites", "Meadows")


@dataclass(frozen=True)
class Artist:
    artist_id: str
    name: str
    genres: tuple[str, ...]
    mode: str              # leans major or minor
    instruments: tuple[str, ...]


@dataclass(frozen=True)
class DemoTrack:
    index: int
    track_id: str
    artist: Artist
    genres: tuple[str, ...]
    moods: tuple[str, ...]
    instruments: tuple[str, ...]
    duration_s: float
    split: str


def make_artists(count: int, rng: np.random.Generator) -> list[Artist]:
    names = [f"{a} {b}" for a in _FIRST for b in _SECOND]
    order = rng.permutation(len(names))
    artists = []
    for k in range(count):
        genres = tuple(rng.choice(list(GENRES), size=int(rng.integers(1, 3)), replace=False))
        typical = sorted({i for g in genres for i in GENRES[g].typical})
        instruments = tuple(rng.choice(typical, size=min(4, len(typical)), replace=False))
        name = names[order[k % len(names)]] + ("" if k < len(names) else f" {k // len(names)}")
        artists.append(Artist(f"artist-{k:03d}", name, genres,
                              str(rng.choice(["major", "minor"])), instruments))
    return artists


def assign_splits(artists: list[Artist], rng: np.random.Generator,
                  valid_fraction: float) -> dict[str, str]:
    """Whole artists go to one split, so no artist is heard in training and validation.
    (Test artists are drawn apart: see demo_data.plan_tracks.)"""
    order = [artists[i].artist_id for i in rng.permutation(len(artists))]
    n_valid = max(1, round(len(order) * valid_fraction)) if len(order) >= 2 and \
        valid_fraction > 0 else 0
    return {artist_id: "valid" if k < n_valid else "train" for k, artist_id in enumerate(order)}


def make_track(index: int, artist: Artist, split: str, rng: np.random.Generator,
               duration_range: tuple[float, float]) -> DemoTrack:
    n_genres = 2 if rng.random() < 0.3 else 1
    pool = list(artist.genres) if rng.random() < 0.8 else list(GENRES)
    genres = list(rng.choice(pool, size=min(n_genres, len(pool)), replace=False))
    if len(genres) < n_genres:
        genres.append(str(rng.choice([g for g in GENRES if g not in genres])))
    moods = _moods(artist, rng, int(rng.integers(2, 5)))
    instruments = _instruments(artist, genres, rng, int(rng.integers(3, 6)))
    low, high = duration_range
    duration = round(float(rng.uniform(low, high)) * 2) / 2
    return DemoTrack(index=index, track_id=f"demo-{index:05d}", artist=artist,
                     genres=tuple(genres), moods=moods, instruments=instruments,
                     duration_s=duration, split=split)


def make_variant(index: int, base: DemoTrack, rng: np.random.Generator,
                 duration_range: tuple[float, float]) -> DemoTrack:
    """Another track by the same artist with exactly one tag swapped: the near neighbours
    that make TextSwap's hard negatives (one wrong attribute) worth learning from."""
    genres, moods, instruments = list(base.genres), list(base.moods), list(base.instruments)
    category = int(rng.integers(3))
    if category == 0:
        k = int(rng.integers(len(genres)))
        genres[k] = str(rng.choice([g for g in GENRES if g not in genres]))
    elif category == 1:
        k = int(rng.integers(len(moods)))
        rest = [MOODS[m] for i, m in enumerate(moods) if i != k]
        fits = [m for m in MOODS.values() if m.name not in moods
                and all(moods_compatible(m, r) for r in rest)]
        if fits:
            moods[k] = fits[int(rng.integers(len(fits)))].name
    else:
        k = int(rng.integers(len(instruments)))
        instruments[k] = str(rng.choice([i for i in INSTRUMENTS if i not in instruments]))
    low, high = duration_range
    return DemoTrack(index=index, track_id=f"demo-{index:05d}", artist=base.artist,
                     genres=tuple(genres), moods=tuple(moods), instruments=tuple(instruments),
                     duration_s=round(float(rng.uniform(low, high)) * 2) / 2, split=base.split)


def _moods(artist: Artist, rng: np.random.Generator, count: int) -> tuple[str, ...]:
    leaning = [m for m in MOODS.values() if m.mode in (artist.mode, None)]
    chosen = [leaning[int(rng.integers(len(leaning)))] if rng.random() < 0.75
              else list(MOODS.values())[int(rng.integers(len(MOODS)))]]
    while len(chosen) < count:
        fits = [m for m in MOODS.values()
                if m not in chosen and all(moods_compatible(m, c) for c in chosen)]
        if not fits:
            break
        chosen.append(fits[int(rng.integers(len(fits)))])
    return tuple(m.name for m in chosen)


def _instruments(artist: Artist, genres: list[str], rng: np.random.Generator,
                 count: int) -> tuple[str, ...]:
    names = list(INSTRUMENTS)
    typical = {i for g in genres for i in GENRES[g].typical}
    weights = np.array([1.0 + 4.0 * (n in typical) + 3.0 * (n in artist.instruments)
                        for n in names])
    drums_p = float(np.mean([GENRES[g].drum_weight for g in genres]))
    weights[names.index("drums")] = 0.0
    with_drums = rng.random() < drums_p
    picked = list(rng.choice(names, size=count - with_drums, replace=False,
                             p=weights / weights.sum()))
    if with_drums:
        picked.append("drums")
    return tuple(str(n) for n in picked)
