"""Signal primitives of the call families: harmonic tones on frequency tracks, envelopes, band noise."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import fft as sp_fft

from birdclef import SAMPLE_RATE

SR = SAMPLE_RATE
NYQUIST_GUARD = 0.45 * SR  # harmonics above this are dropped, so nothing aliases


def samples(seconds: float) -> int:
    """Seconds -> a whole number of samples (at least 1)."""
    return max(1, int(round(seconds * SR)))


def vary(rng: np.random.Generator, sigma: float) -> float:
    """A random factor around 1 (log-normal, ``sigma``): the per-call variation."""
    return float(np.exp(rng.normal(0.0, sigma)))


def loguniform(rng: np.random.Generator, low: float, high: float) -> float:
    """A value spread evenly on a log scale (frequencies)."""
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def tone(freq: np.ndarray, amps: Sequence[float], rng: np.random.Generator) -> np.ndarray:
    """Harmonic tone following an instantaneous frequency track (Hz per sample); amps[0] is the fundamental."""
    phase = (2 * np.pi / SR) * np.cumsum(freq) + rng.uniform(0, 2 * np.pi)
    out = np.zeros_like(phase)
    fmax = float(freq.max())
    for k, a in enumerate(amps, start=1):
        if a <= 0 or k * float(freq.min()) > NYQUIST_GUARD:
            continue
        part = a * np.sin(k * phase)
        if k * fmax > NYQUIST_GUARD:
            part[k * freq > NYQUIST_GUARD] = 0.0
        out += part
    return out


def fade(x: np.ndarray, attack_s: float, release_s: float) -> np.ndarray:
    """Raised-cosine fade in and out, in place; returns x."""
    for length, sl in ((samples(attack_s), slice(None)), (samples(release_s), slice(None, None, -1))):
        length = min(length, len(x) // 2)
        if length > 1:
            ramp = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, length))
            x[sl][:length] *= ramp
    return x


def contour(shape: str, f_lo: float, f_hi: float, n: int, vib_hz: float, vib_depth: float) -> np.ndarray:
    """Frequency track (Hz per sample) of one tonal note."""
    t = np.linspace(0.0, 1.0, n)
    ratio = f_hi / f_lo
    if shape == "up":
        f = f_lo * ratio**t
    elif shape == "down":
        f = f_hi * ratio**-t
    elif shape == "arch":
        f = f_lo * ratio ** np.sin(np.pi * t)
    elif shape == "dip":
        f = f_hi * ratio ** -np.sin(np.pi * t)
    else:  # "flat": a steady whistle, usually with vibrato
        f = np.full(n, np.sqrt(f_lo * f_hi))
    if vib_depth > 0:
        f = f * (1 + vib_depth * np.sin(2 * np.pi * vib_hz * np.arange(n) / SR))
    return f


def band_noise(n: int, lo: float, hi: float, rng: np.random.Generator) -> np.ndarray:
    """White noise restricted to [lo, hi] Hz by an FFT mask, unit RMS."""
    n_fft = sp_fft.next_fast_len(n, real=True)
    spec = sp_fft.rfft(rng.standard_normal(n_fft))
    freqs = sp_fft.rfftfreq(n_fft, 1 / SR)
    spec[(freqs < lo) | (freqs > hi)] = 0
    x = sp_fft.irfft(spec, n_fft)[:n]
    rms = float(np.sqrt(np.mean(x**2)))
    return x / rms if rms > 0 else x


def formant_amps(f0: float, formants: Sequence[tuple[float, float]], top_hz: float = 8000.0) -> list[float]:
    """Harmonic amplitudes of a source at f0 shaped by Gaussian formants (centre Hz, bandwidth Hz)."""
    ks = np.arange(1, max(2, int(min(top_hz, NYQUIST_GUARD) / f0)) + 1)
    env = sum(np.exp(-0.5 * ((ks * f0 - fc) / bw) ** 2) for fc, bw in formants)
    return list(0.05 + env / np.sqrt(ks))


def pulse_train(n: int, rate_hz: float, pulse_s: float) -> np.ndarray:
    """Amplitude envelope of sine-squared pulses of ``pulse_s`` at ``rate_hz``."""
    period = 1.0 / rate_hz
    t_in = np.mod(np.arange(n) / SR, period)
    width = min(pulse_s, 0.95 * period)
    return np.where(t_in < width, np.sin(np.pi * t_in / width) ** 2, 0.0)


def assemble(parts: list[tuple[float, np.ndarray]]) -> np.ndarray:
    """Mix segments given as (start seconds, waveform) into one buffer."""
    end = max(samples(t) + len(x) for t, x in parts)
    out = np.zeros(end)
    for t, x in parts:
        i = samples(t) if t > 0 else 0
        out[i : i + len(x)] += x
    return out


def repeat_count(rng: np.random.Generator, mean: float) -> int:
    """A count near ``mean`` (plus or minus one), at least 1."""
    return max(1, int(round(mean)) + int(rng.integers(-1, 2)))


def lowpass(x: np.ndarray, cutoff_hz: float, order: int) -> np.ndarray:
    """Zero-phase low-pass with a Butterworth magnitude response, applied in the frequency domain."""
    n_fft = sp_fft.next_fast_len(len(x), real=True)
    freqs = sp_fft.rfftfreq(n_fft, 1 / SR)
    spec = sp_fft.rfft(x, n_fft) / np.sqrt(1 + (freqs / cutoff_hz) ** (2 * order))
    return sp_fft.irfft(spec, n_fft)[: len(x)]
