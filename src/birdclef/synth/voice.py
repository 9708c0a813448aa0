"""Speech-like human voice (a recordist's spoken announcement): glottal source, vowel formants, syllables, pauses."""

from __future__ import annotations

import numpy as np
import soxr
from scipy import fft as sp_fft

from birdclef import SAMPLE_RATE

SR = 16_000  # speech is synthesised band-limited to 8 kHz, then resampled to the dataset rate
_HOP_S = 0.005  # control tracks (pitch, formants, loudness) are built at 200 frames per second

# First three formants (Hz) and bandwidths of some vowels of an adult male voice; scaled up for higher voices.
_VOWELS = np.array(
    [
        (730, 1090, 2440),  # a
        (530, 1840, 2480),  # e
        (270, 2290, 3010),  # i
        (570, 840, 2410),  # o
        (300, 870, 2240),  # u
        (660, 1720, 2410),  # ae
        (490, 1350, 1690),  # er
    ],
    dtype=float,
)
_BANDWIDTHS = np.array([90.0, 110.0, 170.0])
_FRICATIVE_BANDS = ((3800.0, 7800.0), (2000.0, 5000.0), (1200.0, 7000.0))  # s, sh, f


def render_speech(duration_s: float, rng: np.random.Generator) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Render a spoken phrase group of about ``duration_s`` seconds.

    The voice is a harmonic glottal source (f0 90-250 Hz with declination, jitter and stress) shaped by a cascade
    of three vowel formants that glide from syllable to syllable, syllables at about 4 per second with fricative
    and plosive onsets, short pauses between words and longer ones between phrases.

    Args:
        duration_s: target length in seconds (the result may be a little shorter).
        rng: generator for speaker, words and timing.

    Returns:
        (waveform, segments): the waveform (samples,) at 32 kHz with peak 1, and the (start_s, end_s) spans of
        continuous speech (phrases) relative to the start of the waveform.
    """
    f0_base = rng.uniform(90, 250)
    formant_scale = 1.0 + 0.18 * (f0_base - 90) / 160  # higher voices have shorter vocal tracts
    rate = rng.uniform(3.5, 5.5)  # syllables per second
    n_frames = max(1, int(duration_s / _HOP_S))
    f0 = np.zeros(n_frames)
    formants = np.tile(_VOWELS[0] * formant_scale, (n_frames, 1))
    voiced = np.zeros(n_frames)
    noise_amp = np.zeros(n_frames)
    noise_band = np.zeros(n_frames, dtype=int)
    segments: list[tuple[float, float]] = []

    frame, phrase_start = 0, 0
    vowel = _VOWELS[int(rng.integers(len(_VOWELS)))] * formant_scale
    while True:
        words = int(rng.integers(2, 6))
        for _ in range(words):
            for _ in range(int(rng.integers(1, 4))):
                syl = int(rng.uniform(0.8, 1.25) / rate / _HOP_S)
                if frame + syl >= n_frames:
                    break
                onset = int(rng.uniform(0.25, 0.4) * syl) if rng.random() < 0.75 else 0
                if onset:
                    kind = int(rng.integers(len(_FRICATIVE_BANDS) + 1))
                    if kind < len(_FRICATIVE_BANDS):  # fricative: hiss before the vowel
                        noise_amp[frame : frame + onset] = rng.uniform(0.15, 0.35)
                        noise_band[frame : frame + onset] = kind
                    else:  # plosive: closure silence, then a short burst
                        noise_amp[frame + onset - 3 : frame + onset] = 0.5
                        noise_band[frame + onset - 3 : frame + onset] = 2
                target = _VOWELS[int(rng.integers(len(_VOWELS)))] * formant_scale * rng.uniform(0.95, 1.05)
                v0, v1 = frame + onset, frame + syl
                glide = np.linspace(0, 1, v1 - v0)[:, None] ** 0.5
                formants[v0:v1] = vowel + (target - vowel) * glide
                stress = rng.uniform(0.9, 1.2)
                f0[v0:v1] = f0_base * stress * np.linspace(1.02, 0.97, v1 - v0)
                voiced[v0:v1] = np.sin(np.linspace(0, np.pi, v1 - v0)) ** 0.6 * stress
                vowel = target
                frame = v1
            frame += int(rng.uniform(0.03, 0.12) / _HOP_S)  # gap between words, bridged by listeners and VADs
        end = min(frame, n_frames)
        if end - phrase_start > int(0.3 / _HOP_S):
            segments.append((phrase_start * _HOP_S, end * _HOP_S))
        frame += int(rng.uniform(0.3, 0.7) / _HOP_S)  # pause between phrases
        if frame >= n_frames - int(0.6 / _HOP_S):
            break
        phrase_start = frame

    # declination over the whole utterance and slow pitch wander (jitter)
    t_frames = np.arange(n_frames) / n_frames
    wander = np.cumsum(rng.normal(0, 0.004, n_frames))
    f0 = np.where(f0 > 0, f0 * (1.12 - 0.25 * t_frames) * np.exp(wander - wander.mean()), f0_base)
    wave = _voiced_part(f0, formants, voiced) + _noise_part(noise_amp, noise_band, rng)
    last = int(round((segments[-1][1] if segments else duration_s) * SR))
    wave = soxr.resample(wave[: max(last, 1)], SR, SAMPLE_RATE)
    peak = float(np.max(np.abs(wave)))
    return (wave / peak if peak > 0 else wave), segments


def _upsample(v: np.ndarray, hop: int) -> np.ndarray:
    """Frame values -> per-sample values, linear between frames (the last frame is held)."""
    w = np.arange(hop) / hop
    nxt = np.append(v[1:], v[-1])
    return (v[:, None] * (1 - w) + nxt[:, None] * w).ravel()


def _voiced_part(f0: np.ndarray, formants: np.ndarray, voiced: np.ndarray) -> np.ndarray:
    """Additive synthesis: harmonics of f0 weighted by the formant cascade, gains interpolated per sample."""
    hop = int(_HOP_S * SR)
    phase = (2 * np.pi / SR) * np.cumsum(_upsample(f0, hop))
    ks = np.arange(1, int(4500 / f0.min()) + 1)
    fk = ks[:, None] * f0[None, :]  # (harmonics, frames)
    gain = voiced[None, :] / ks[:, None]  # glottal roll-off (-12 dB/oct) with lip radiation (+6 dB/oct)
    for j in range(3):
        fc, bw = formants[None, :, j], _BANDWIDTHS[j]
        gain = gain * fc**2 / np.sqrt((fc**2 - fk**2) ** 2 + (bw * fk) ** 2)
    gain[fk > 7000] = 0
    # sin(k phase) by the Chebyshev recursion: two multiply-adds per harmonic instead of a sine
    two_cos = 2 * np.cos(phase)
    s_prev, s_cur = np.zeros_like(phase), np.sin(phase)
    out = np.zeros_like(phase)
    for k in range(len(ks)):
        if gain[k].any():
            out += _upsample(gain[k], hop) * s_cur
        s_prev, s_cur = s_cur, two_cos * s_cur - s_prev
    return out


def _noise_part(noise_amp: np.ndarray, noise_band: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Fricative and burst noise, band-limited per kind, following the frame amplitude track."""
    hop = int(_HOP_S * SR)
    n = len(noise_amp) * hop
    out = np.zeros(n)
    t = np.arange(n)
    n_fft = sp_fft.next_fast_len(n, real=True)
    freqs = sp_fft.rfftfreq(n_fft, 1 / SR)
    for kind, (lo, hi) in enumerate(_FRICATIVE_BANDS):
        amp = np.where(noise_band == kind, noise_amp, 0.0)
        if not amp.any():
            continue
        spec = sp_fft.rfft(rng.standard_normal(n_fft))
        spec[(freqs < lo) | (freqs > hi)] = 0
        band = sp_fft.irfft(spec, n_fft)[:n]
        band /= max(float(np.sqrt(np.mean(band**2))), 1e-12)
        out += band * np.interp(t, np.arange(len(amp)) * hop, amp)
    return out
