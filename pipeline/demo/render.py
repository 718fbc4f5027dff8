"""Render an arrangement to mono audio with the General MIDI soundfont in `pretty_midi`."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from pipeline.demo.arrangement import DRUM_CHANNEL, Arrangement, Note

FADE_S = 0.25
# Headroom for five parts at full velocity, so the soft clip below only rounds rare peaks.
MASTER_DB = -4.0


def soundfont_path() -> Path:
    import pretty_midi

    path = Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; reinstall pretty_midi (make setup)")
    return path


@functools.lru_cache(maxsize=1)
def _soundfont_bytes() -> bytes:
    return soundfont_path().read_bytes()


def render(arrangement: Arrangement, duration_s: float, sample_rate: int) -> np.ndarray:
    """Render each part on its own and mix them at the arrangement's levels.

    Rendering parts separately lets the mix set exact levels in dB (MIDI channel
    volume follows a soundfont-specific curve); the synthesiser is fast enough that
    the extra passes cost little.
    """
    import tinysoundfont

    synth = tinysoundfont.Synth(samplerate=sample_rate)
    sfid = synth.sfload(_soundfont_bytes())
    total = int(round(duration_s * sample_rate))
    mix = np.zeros(total, dtype=np.float64)
    for channel, program in sorted(arrangement.programs.items()):
        if channel == DRUM_CHANNEL:
            synth.program_select(channel, sfid, 128, 0, is_drums=True)
        else:
            synth.program_select(channel, sfid, 0, program)
        notes = [n for n in arrangement.notes if n.channel == channel]
        part = _render_part(synth, notes, total, sample_rate)
        mix += part * 10 ** ((arrangement.levels_db[channel] + MASTER_DB) / 20)
        synth.sounds_off()

    fade = min(int(FADE_S * sample_rate), total)
    mix[total - fade:] *= np.linspace(1.0, 0.0, fade)
    # The soft clip only touches rare peaks, so loudness still follows the mood.
    return np.tanh(mix).astype(np.float32)


def _render_part(synth, notes: list[Note], total: int, sample_rate: int) -> np.ndarray:
    """Sample-accurate: synthesise up to each note event, then apply it."""
    events = []
    for note in notes:
        events.append((int(note.start * sample_rate), 1, note.channel, note.key, note.velocity))
        events.append((int(note.end * sample_rate), 0, note.channel, note.key, 0))
    events.sort()  # note-offs (0) before note-ons (1) at the same sample

    buffer = memoryview(bytearray(total * 2 * 4))
    position = 0
    for sample, is_on, channel, key, velocity in events:
        sample = min(sample, total)
        if sample > position:
            synth.generate_simple(sample - position, buffer=buffer[position * 8:sample * 8])
            position = sample
        if is_on:
            synth.noteon(channel, key, velocity)
        else:
            synth.noteoff(channel, key)
    if position < total:
        synth.generate_simple(total - position, buffer=buffer[position * 8:total * 8])
    return np.frombuffer(buffer, dtype=np.float32).reshape(-1, 2).mean(axis=1)
