"""Backgrounds (base noise, wind, rain, insect chorus, stream), distance effects and in-band SNR scaling."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import fft as sp_fft

from birdclef import SAMPLE_RATE
from birdclef.synth._dsp import lowpass

SR = SAMPLE_RATE
_N_FFT = 256  # background synthesis frame: 8 ms, 125 Hz bins
_HOP = _N_FFT // 2  # 4 ms: amplitude patterns up to ~60 Hz (insect pulsing) survive
_FREQS = np.fft.rfftfreq(_N_FFT, 1 / SR)
_WINDOW = np.sqrt(np.hanning(_N_FFT + 1)[:_N_FFT]).astype(np.float32)  # sqrt-Hann at 50 % overlap: flat gain


@dataclass(frozen=True)
class NoiseProfile:
    """The background of one recording, as levels relative to the base noise.

    Attributes:
        redness: base noise colour, 0 = pink (1/f power), 1 = brown (1/f^2).
        wind_db: wind level relative to the base noise in dB (None: no wind).
        rain_db: rain level in dB (None: no rain).
        chorus_db: unlabelled insect chorus level in dB (None: none).
        chorus_band: (low, high) Hz band of the insect chorus.
        stream_db: stream / river level in dB (None: none).
        level_dbfs: RMS level of the whole background in dBFS.
    """

    redness: float
    wind_db: float | None
    rain_db: float | None
    chorus_db: float | None
    chorus_band: tuple[float, float]
    stream_db: float | None
    level_dbfs: float

    def to_dict(self) -> dict[str, object]:
        """Plain dict for the truth tables."""
        return asdict(self)


@dataclass(frozen=True)
class Background:
    """A rendered background and its known short-time power spectrum (for in-band SNR).

    Attributes:
        wave: the waveform (samples,), float64.
        power: mean-square contribution of each frequency bin per frame, (frames, bins); frame k is centred
            near sample ``k * hop``; bins are those of ``_FREQS``.
    """

    wave: np.ndarray
    power: np.ndarray

    def band_power(self, start: int, stop: int, lo: float, hi: float) -> float:
        """Mean-square power between ``lo`` and ``hi`` Hz over samples [start, stop)."""
        f0, f1 = start // _HOP, max(start // _HOP + 1, -(-stop // _HOP))
        freqs, half_bin = _FREQS, _FREQS[1] / 2
        band = (freqs >= lo - half_bin) & (freqs <= hi + half_bin)
        if not band.any():
            band[int(np.argmin(np.abs(freqs - (lo + hi) / 2)))] = True
        return float(self.power[f0:f1, band].sum(axis=1).mean())


def render_background(profile: NoiseProfile, n: int, rng: np.random.Generator) -> Background:
    """Render a background of ``n`` samples at 32 kHz with RMS ``profile.level_dbfs``.

    Every component is a power spectrum shape times a power envelope over time (gusts, rain intensity, insect
    pulsing); their sum is synthesised at once as random-phase short-time spectra with overlap-add.

    Args:
        profile: which components and how loud.
        n: length in samples.
        rng: generator for the noise.
    """
    frames = n // _HOP + 2
    t = np.arange(frames) * (_HOP / SR)
    f = np.maximum(_FREQS, 1.0)
    above20 = _FREQS > 20
    comps: list[tuple[np.ndarray, np.ndarray, float]] = [  # (power envelope, power spectrum, dB)
        (np.ones(frames), above20 * ((1 - profile.redness) / f + profile.redness * 300 / f**2), 0.0)
    ]
    if profile.wind_db is not None:
        cut = rng.uniform(250, 700)
        gusts = _slow_envelope(t, rng.uniform(0.1, 0.5), rng) ** 3
        comps.append((gusts, above20 / f**2 / (1 + (f / cut) ** 8), profile.wind_db))
    if profile.rain_db is not None:
        intensity = _slow_envelope(t, 0.05, rng)
        drops = rng.poisson(rng.uniform(0.3, 1.5), frames) * rng.lognormal(0, 0.7, frames)  # droplet clicks
        hiss = (_FREQS > 500) / (1 + (_FREQS / 9000) ** 2)
        centre = rng.uniform(1500, 5000)
        comps.append((intensity, hiss, profile.rain_db))
        comps.append((intensity * drops, np.exp(-0.5 * (np.log(f / centre) / 0.6) ** 2), profile.rain_db + 3))
    if profile.chorus_db is not None:
        lo, hi = profile.chorus_band
        for _ in range(3):  # groups of narrow bands, each group pulsing at its own rate
            centres = np.exp(rng.uniform(np.log(lo), np.log(hi), int(rng.integers(2, 5))))
            shape = sum(np.exp(-0.5 * ((_FREQS - c) / 70.0) ** 2) for c in centres)
            pulse = (0.4 + 0.6 * (0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(10, 50) * t + rng.uniform(0, 6.3))))
            comps.append((pulse**2 * _slow_envelope(t, 0.1, rng), shape, profile.chorus_db))
    if profile.stream_db is not None:
        comps.append((np.ones(frames), ((_FREQS > 150) & (_FREQS < 3000)) * 1.0, profile.stream_db))

    envelopes = np.stack([env / env.mean() * 10 ** (db / 10) for env, _, db in comps], axis=1)
    spectra = np.stack([s / max(float(s.sum()), 1e-20) for _, s, _ in comps])
    power = sum(envelopes[:, c, None] * spectra[c] for c in range(len(comps)))  # (frames, bins); tiny for BLAS
    # single precision: the noise is random anyway and this is the hot loop of the generator
    noise = rng.standard_normal((frames, len(_FREQS), 2), dtype=np.float32).view(np.complex64)[..., 0]
    grains = sp_fft.irfft(noise * np.sqrt(power).astype(np.float32), _N_FFT, axis=1) * _WINDOW
    wave = np.zeros((frames + 1) * _HOP, dtype=np.float32)
    wave[: frames * _HOP] += grains[:, :_HOP].ravel()
    wave[_HOP : (frames + 1) * _HOP] += grains[:, _HOP:].ravel()
    wave = wave[_HOP : _HOP + n].astype(np.float64)
    scale = 10 ** (profile.level_dbfs / 20) / max(float(np.sqrt(np.mean(wave**2))), 1e-20)
    # expected mean square per frame is proportional to power.sum(1): calibrate that proportion on this wave
    k = scale**2 * float(np.mean(wave**2)) / float(power.sum(axis=1).mean())
    return Background(wave * scale, power * k)


def distance(x: np.ndarray, lowpass_hz: float, rt60_s: float, wet: float, rng: np.random.Generator) -> np.ndarray:
    """Make a call sound distant: air absorption (2nd-order Butterworth-shaped low-pass) and a Schroeder reverb.

    Args:
        x: the dry call (samples,).
        lowpass_hz: low-pass cut-off in Hz.
        rt60_s: reverberation time (60 dB decay) in seconds.
        wet: share of reverberated sound in [0, 1].
        rng: generator for the reverb's delays.

    Returns:
        The distant call, longer than ``x`` by the reverb tail (about ``rt60_s / 2``).
    """
    y = lowpass(np.concatenate([x, np.zeros(int(0.5 * rt60_s * SR))]), lowpass_hz, order=2)
    if wet <= 0:
        return y
    tail = np.zeros_like(y)
    for delay_s in rng.uniform(0.025, 0.045, 4):  # parallel feedback combs (block-wise: the delay is the block)
        d = int(delay_s * SR)
        tail += _comb(y, d, 10 ** (-3 * d / (rt60_s * SR)))
    tail = _allpass(tail, int(rng.uniform(0.011, 0.017) * SR), 0.6)
    tail *= np.sqrt(np.mean(y**2) / max(float(np.mean(tail**2)), 1e-20))
    return (1 - wet) * y + wet * tail


def gain_for_snr(call: np.ndarray, background: Background, start: int, snr_db: float) -> float:
    """Gain that puts ``call`` at ``snr_db`` over the background in the call's own frequency band.

    The in-band SNR is what decides audibility: a 5 kHz whistle at -10 dB full-band SNR over brown noise is plain
    to see, the same whistle over a 5 kHz insect chorus is not. The band holds 90 % of the call's energy; the
    background power is taken over the samples the call covers.

    Args:
        call: the call (samples,).
        background: the background it is added to.
        start: the call's first sample in the background.
        snr_db: wanted in-band SNR in dB.
    """
    n_fft = sp_fft.next_fast_len(len(call), real=True)
    freqs = sp_fft.rfftfreq(n_fft, 1 / SR)
    p_call = np.abs(sp_fft.rfft(call, n_fft)) ** 2
    lo, hi = _energy_band(p_call, freqs)
    band = (freqs >= lo) & (freqs <= hi)
    call_power = 2 * float(p_call[band].sum()) / (n_fft * len(call))
    bg_power = background.band_power(start, start + len(call), lo, hi)
    return float(np.sqrt(max(bg_power, 1e-16) * 10 ** (snr_db / 10) / max(call_power, 1e-20)))


def _energy_band(power: np.ndarray, freqs: np.ndarray, share: float = 0.9) -> tuple[float, float]:
    """The (low, high) Hz band holding the central ``share`` of a power spectrum."""
    cum = np.cumsum(power)
    if cum[-1] <= 0:
        return 0.0, SR / 2
    tail = (1 - share) / 2
    lo = freqs[int(np.searchsorted(cum, tail * cum[-1]))]
    hi = freqs[min(int(np.searchsorted(cum, (1 - tail) * cum[-1])), len(freqs) - 1)]
    return float(lo), float(hi) + 1.0


def _slow_envelope(t: np.ndarray, rate_hz: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth positive random envelope over times ``t`` (s) varying at about ``rate_hz``."""
    knots = max(4, int(t[-1] * rate_hz) + 2)
    return np.interp(t, np.linspace(0, t[-1], knots), np.exp(rng.normal(0, 0.6, knots)))


def _comb(x: np.ndarray, d: int, g: float) -> np.ndarray:
    """Feedback comb y[n] = x[n] + g y[n - d], computed one delay-length block at a time."""
    y = x.copy()
    for i in range(d, len(y), d):
        j = min(i + d, len(y))
        y[i:j] += g * y[i - d : j - d]
    return y


def _allpass(x: np.ndarray, d: int, g: float) -> np.ndarray:
    """Schroeder all-pass y[n] = -g x[n] + x[n - d] + g y[n - d], block-wise."""
    y = -g * x
    for i in range(d, len(y), d):
        j = min(i + d, len(y))
        y[i:j] += x[i - d : j - d] + g * y[i - d : j - d]
    return y
