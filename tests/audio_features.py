"""Measurements of rendered audio, independent of the generator that made it."""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

FRAME, HOP = 1024, 256


def spectrogram(x: np.ndarray) -> np.ndarray:
    frames = sliding_window_view(np.pad(x, (FRAME // 2, FRAME // 2)), FRAME)[::HOP]
    return np.abs(np.fft.rfft(frames * np.hanning(FRAME), axis=1))  # (time, freq)


def _median_filter(s: np.ndarray, size: int, axis: int) -> np.ndarray:
    pad = [(0, 0), (0, 0)]
    pad[axis] = (size // 2, size // 2)
    windows = sliding_window_view(np.pad(s, pad, mode="edge"), size, axis=axis)
    return np.median(windows, axis=-1)


def percussive_fraction(x: np.ndarray) -> float:
    """Share of spectral energy that median-filter HPSS (Fitzgerald 2010) calls percussive."""
    s = spectrogram(x)
    harmonic = _median_filter(s, 17, axis=0)    # smooth over time: sustained partials
    percussive = _median_filter(s, 17, axis=1)  # smooth over frequency: broadband hits
    mask = percussive > harmonic
    return float((s[mask] ** 2).sum() / max((s**2).sum(), 1e-12))


def high_band_share(x: np.ndarray, sample_rate: int, cutoff_hz: float = 5000) -> float:
    """Share of energy above `cutoff_hz`: cymbals and snares put energy there, the
    pitched General MIDI instruments rarely do."""
    s = spectrogram(x) ** 2
    freqs = np.fft.rfftfreq(FRAME, 1 / sample_rate)
    return float(s[:, freqs > cutoff_hz].sum() / max(s.sum(), 1e-12))


def rms_db(x: np.ndarray) -> float:
    return float(20 * np.log10(np.sqrt(np.mean(x**2)) + 1e-12))


def spectral_centroid(x: np.ndarray, sample_rate: int) -> float:
    s = spectrogram(x) ** 2
    freqs = np.fft.rfftfreq(FRAME, 1 / sample_rate)
    return float((s * freqs).sum() / max(s.sum(), 1e-12))


def tempo_bpm(x: np.ndarray, sample_rate: int, low: float = 50, high: float = 200) -> float:
    """Beat rate from the autocorrelation of the spectral-flux onset envelope."""
    log_s = np.log1p(spectrogram(x))
    flux = np.maximum(np.diff(log_s, axis=0), 0).sum(axis=1)
    flux = flux - flux.mean()
    ac = np.correlate(flux, flux, mode="full")[len(flux) - 1:]
    frame_rate = sample_rate / HOP
    lags = np.arange(int(frame_rate * 60 / high), int(frame_rate * 60 / low) + 1)
    best = lags[np.argmax(ac[lags])]
    # refine the peak with a parabola through its neighbours
    a, b, c = ac[best - 1], ac[best], ac[best + 1]
    shift = 0.5 * (a - c) / (a - 2 * b + c) if (a - 2 * b + c) != 0 else 0.0
    return float(60 * frame_rate / (best + shift))


def same_tempo(estimate: float, truth: float, tolerance: float = 0.04) -> bool:
    """True if `estimate` is `truth` or its half/double (the usual octave ambiguity)."""
    return any(abs(estimate * k - truth) <= tolerance * truth for k in (0.5, 1.0, 2.0))


# Krumhansl-Kessler key profiles (probe-tone ratings), C major and C minor.
_MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
_MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


def chroma(x: np.ndarray, sample_rate: int) -> np.ndarray:
    """Energy per pitch class, from long-frame spectrum bins between 100 Hz and 2 kHz
    (long frames resolve semitones in the low register)."""
    frame = 8192
    frames = sliding_window_view(x, frame)[:: frame // 2]
    s = (np.abs(np.fft.rfft(frames * np.hanning(frame), axis=1)) ** 2).sum(axis=0)
    freqs = np.fft.rfftfreq(frame, 1 / sample_rate)
    keep = (freqs > 100) & (freqs < 2000)
    classes = np.round(12 * np.log2(freqs[keep] / 440.0) + 9).astype(int) % 12
    return np.bincount(classes, weights=s[keep], minlength=12)


def estimate_mode(x: np.ndarray, sample_rate: int) -> str:
    """'major' or 'minor', from the best-correlating of the 24 Krumhansl key profiles."""
    c = chroma(x, sample_rate)
    best = max(
        (np.corrcoef(c, np.roll(profile, shift))[0, 1], mode)
        for profile, mode in ((_MAJOR_PROFILE, "major"), (_MINOR_PROFILE, "minor"))
        for shift in range(12)
    )
    return best[1]
