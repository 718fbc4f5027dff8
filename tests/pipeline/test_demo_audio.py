"""The demo's audio follows its tags: checked by measuring the rendered audio."""

import dataclasses

import numpy as np
import pytest
import soundfile

from pipeline.demo.arrangement import arrange
from pipeline.demo.render import render
from tests.audio_features import (
    estimate_mode,
    high_band_share,
    percussive_fraction,
    rms_db,
    same_tempo,
    spectral_centroid,
    tempo_bpm,
)

SR = 22050


def rendered(tags, seed=0, duration=8.0):
    arrangement = arrange(tags, np.random.default_rng(seed), duration)
    return arrangement, render(arrangement, duration, SR)


@pytest.mark.parametrize("genre", ["rock", "jazz", "hip hop", "electronic", "reggae", "country"])
def test_drums_tag_adds_percussive_energy(genre):
    base = {"genre": [genre], "mood": ["happy", "playful"],
            "instrument": ["piano", "bass", "flute"]}
    _, without = rendered(base)
    _, with_drums = rendered({**base, "instrument": base["instrument"] + ["drums"]})
    assert percussive_fraction(with_drums) > 1.3 * percussive_fraction(without)


def test_drum_tagged_catalog_tracks_are_more_percussive(demo_catalog):
    out, catalog = demo_catalog
    drums, others = [], []
    for track in catalog.tracks:
        audio, _ = soundfile.read(out / track.audio, dtype="float32")
        (drums if "drums" in track.tags["instrument"] else others).append(
            high_band_share(audio, SR))
    assert drums and others
    # probability that a drum track out-scores a drumless one (ROC AUC)
    auc = np.mean([d > o for d in drums for o in others])
    assert auc > 0.9, auc


@pytest.mark.parametrize("genre", ["rock", "hip hop", "electronic", "reggae", "blues", "country"])
def test_measured_tempo_matches_the_arrangement(genre):
    arrangement, audio = rendered({"genre": [genre], "mood": ["happy", "uplifting"],
                                   "instrument": ["drums"]}, duration=10.0)
    assert same_tempo(tempo_bpm(audio, SR), arrangement.tempo)


@pytest.mark.parametrize("genre", ["electronic", "rock", "hip hop", "reggae", "country"])
@pytest.mark.parametrize("moods", [("energetic", "aggressive"), ("sad", "calm")])
def test_genre_and_mood_set_the_tempo(genre, moods):
    """The measured beat lies in the genre's tempo band scaled by the moods' factor
    (up to the octave ambiguity of any beat tracker)."""
    from pipeline.demo.vocabulary import GENRES, MOODS

    _, audio = rendered({"genre": [genre], "mood": list(moods), "instrument": ["drums"]},
                        duration=10.0)
    factor = np.mean([MOODS[m].tempo_factor for m in moods])
    low, high = (bpm * factor for bpm in GENRES[genre].tempo)
    measured = tempo_bpm(audio, SR)
    assert any(0.96 * low <= measured * k <= 1.04 * high for k in (0.5, 1, 2)), measured


def test_mood_sets_loudness():
    instruments = ["piano", "bass", "flute", "drums"]
    for genre in ("pop", "rock", "jazz"):
        _, loud = rendered({"genre": [genre], "mood": ["aggressive", "energetic"],
                            "instrument": instruments})
        _, quiet = rendered({"genre": [genre], "mood": ["calm", "sad"],
                             "instrument": instruments})
        assert rms_db(loud) - rms_db(quiet) > 6, genre


def test_mood_sets_register():
    for seed in range(3):
        _, high = rendered({"genre": ["pop"], "mood": ["playful", "happy"],
                            "instrument": ["flute"]}, seed=seed)
        _, low = rendered({"genre": ["pop"], "mood": ["dark", "tense"],
                           "instrument": ["flute"]}, seed=seed)
        assert spectral_centroid(high, SR) > 1.25 * spectral_centroid(low, SR)


def test_mood_sets_mode():
    """Happy moods are in major, sad ones in minor, as a key finder hears it."""
    results = []
    for genre in ("pop", "classical", "jazz", "country"):
        for moods, mode in ((["happy", "uplifting"], "major"), (["sad", "melancholic"], "minor")):
            for seed in range(2):
                _, audio = rendered({"genre": [genre], "mood": moods,
                                     "instrument": ["piano", "strings", "flute"]}, seed, 10.0)
                results.append(estimate_mode(audio, SR) == mode)
    assert np.mean(results) >= 0.85, results


@pytest.mark.parametrize("seed", range(4))
def test_every_tagged_instrument_is_audible(seed):
    rng = np.random.default_rng(seed)
    from pipeline.demo.vocabulary import INSTRUMENTS

    names = list(rng.choice(list(INSTRUMENTS), size=5, replace=False))
    arrangement, full = rendered({"genre": ["pop"], "mood": ["happy", "calm"],
                                  "instrument": names}, seed=seed)
    assert set(arrangement.roles) == set(names)
    for channel in arrangement.programs:
        muted = dataclasses.replace(
            arrangement, notes=tuple(n for n in arrangement.notes if n.channel != channel))
        part = full - render(muted, 8.0, SR)
        # each part carries at least 1/30 of the mix's energy (-15 dB)
        assert rms_db(part) - rms_db(full) > -15, (names, channel)


def test_untagged_programs_are_not_played():
    arrangement, _ = rendered({"genre": ["jazz"], "mood": ["happy", "calm"],
                               "instrument": ["trumpet", "cello", "organ"]})
    from pipeline.demo.vocabulary import INSTRUMENTS

    assert sorted(arrangement.programs.values()) == sorted(
        INSTRUMENTS[n].program for n in ("trumpet", "cello", "organ"))
    assert {n.channel for n in arrangement.notes} == set(arrangement.programs)
