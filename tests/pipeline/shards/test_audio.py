"""Clip audio: decoding every format, band-limited resampling, clip positions, faults."""

import io

import numpy as np
import pytest
import soundfile as sf

from pipeline.shards.audio import AudioReject, ClipConfig, clip_starts, load_mono, make_clips

RATE = 44_100


def tone(freq, seconds=2.0, rate=RATE, channels=1, level=0.5):
    t = np.arange(int(seconds * rate)) / rate
    wave = (level * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.stack([wave] * channels, axis=1) if channels > 1 else wave


def level_at(signal, rate, freq):
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(len(signal))))
    freqs = np.fft.rfftfreq(len(signal), 1 / rate)
    return spectrum[np.argmin(np.abs(freqs - freq))]


@pytest.mark.parametrize("container, subtype, suffix", [
    ("FLAC", "PCM_16", "flac"), ("WAV", "PCM_16", "wav"), ("OGG", "VORBIS", "ogg"),
    ("MP3", "MPEG_LAYER_III", "mp3")])
def test_every_format_decodes_downmixes_and_resamples(tmp_path, container, subtype, suffix):
    path = tmp_path / f"tone.{suffix}"
    sf.write(path, tone(1000, channels=2), RATE, format=container, subtype=subtype)
    mono = load_mono(path, 16_000)
    assert mono.ndim == 1 and mono.dtype == np.float32
    # MP3 encoders add a little padding; every other format keeps the length exactly
    assert abs(len(mono) - 32_000) <= (2_000 if suffix == "mp3" else 1)
    middle = mono[4_000:28_000]
    assert np.argmax(np.abs(np.fft.rfft(middle))) * 16_000 / len(middle) == pytest.approx(
        1000, abs=2)
    assert np.sqrt(np.mean(middle ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.05)


def test_resampling_is_band_limited(tmp_path):
    """A tone above the new Nyquist frequency must vanish, not alias into the band."""
    path = tmp_path / "mix.wav"
    sf.write(path, tone(1000) + tone(11_000), RATE, subtype="FLOAT")
    mono = load_mono(path, 16_000)
    passband = level_at(mono, 16_000, 1000)
    alias = level_at(mono, 16_000, 16_000 - 11_000)  # where 11 kHz would fold to
    assert 20 * np.log10(alias / passband) < -60


def test_clip_positions():
    # 1 kHz and 2 s clips: a clip is 2000 frames
    def starts(n, track="t", **kw):
        return clip_starts(n, ClipConfig(sample_rate=1000, clip_seconds=2, **kw), track)

    assert starts(10_000, clips_per_track=2, position="start") == [0, 2000]
    assert starts(10_000, clips_per_track=2, position="centre") == [3000, 5000]
    assert starts(2500, clips_per_track=2, position="centre") == [250]  # one window fits
    assert starts(9999, position="all") == [0, 2000, 4000, 6000]
    rand = starts(10_000, "a", clips_per_track=3, position="random", seed=1)
    assert rand == starts(10_000, "a", clips_per_track=3, position="random", seed=1)
    assert rand != starts(10_000, "b", clips_per_track=3, position="random", seed=1)
    assert rand != starts(10_000, "a", clips_per_track=3, position="random", seed=2)
    assert len(rand) == 3 and all(0 <= s <= 8000 for s in rand)
    with pytest.raises(AudioReject, match="shorter than one 2 s clip"):
        starts(1999)


def test_clips_are_encoded_with_their_times(tmp_path):
    path = tmp_path / "t.wav"
    signal = tone(440, seconds=5, rate=16_000)
    sf.write(path, signal, 16_000, subtype="FLOAT")
    for fmt in ("flac", "wav"):
        clips = make_clips(path, ClipConfig(clip_seconds=2, clips_per_track=2,
                                            position="start", audio_format=fmt), "t")
        assert [(c.start_s, c.end_s) for c in clips] == [(0, 2), (2, 4)]
        decoded, rate = sf.read(io.BytesIO(clips[1].data), dtype="float32")
        assert rate == 16_000 and decoded.shape == (32_000,)
        assert np.abs(decoded - signal[32_000:64_000]).max() < 1e-4
        assert sf.info(io.BytesIO(clips[0].data)).format == fmt.upper()


@pytest.mark.parametrize("make, reason", [
    (lambda p: None, "audio file is missing"),
    (lambda p: p.write_bytes(b"not audio at all" * 64), "unreadable audio"),
    (lambda p: sf.write(p, np.zeros(64_000, np.float32), 16_000, format="WAV"), "silent"),
    (lambda p: sf.write(p, tone(440, 0.5, 16_000), 16_000, format="WAV"), "shorter than"),
])
def test_faults_are_rejected_with_a_reason(tmp_path, make, reason):
    path = tmp_path / "bad.wav"
    make(path)
    with pytest.raises(AudioReject, match=reason):
        make_clips(path, ClipConfig(clip_seconds=2), "t")


def test_truncated_file_is_rejected(tmp_path):
    path = tmp_path / "cut.flac"
    sf.write(path, tone(440, 4, 16_000) + 0.01 * np.random.default_rng(0).standard_normal(
        64_000).astype(np.float32), 16_000, format="FLAC")
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(AudioReject, match="truncated|unreadable"):
        make_clips(path, ClipConfig(clip_seconds=1), "t")


def test_silent_clips_are_left_out_but_loud_ones_kept(tmp_path):
    path = tmp_path / "half.wav"
    signal = np.concatenate([np.zeros(32_000, np.float32), tone(440, 2, 16_000)])
    sf.write(path, signal, 16_000, subtype="FLOAT")
    clips = make_clips(path, ClipConfig(clip_seconds=2, position="all"), "t")
    assert [(c.index, c.start_s) for c in clips] == [(0, 2.0)]


def test_bad_clip_settings_list_every_problem():
    with pytest.raises(ValueError) as err:
        ClipConfig(sample_rate=10, clips_per_track=0, position="middle", audio_format="mp3")
    for word in ("sample_rate", "clips_per_track", "position", "audio_format"):
        assert word in str(err.value)
