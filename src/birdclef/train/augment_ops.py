"""Waveform augmentation primitives (mixing, SNR-scaled noise, band filters), noise banks and option parsing.

Every random draw takes an explicit ``torch.Generator``, so a seeded run is reproducible. Draws are made on the
generator's device and moved to the data's device.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from birdclef import SAMPLE_RATE

LABEL_MODES = ("weighted", "max", "sum_clip")
_FILTER_GRID = 1025  # frequencies of the random filter curve before interpolation to the rFFT bins


# ---------------------------------------------------------------- random draws


def uniform(gen: torch.Generator, n: int, low: float, high: float, device: torch.device | str) -> torch.Tensor:
    """``n`` draws from U(low, high), float32 on ``device``."""
    return (torch.rand(n, generator=gen, device=gen.device) * (high - low) + low).to(device)


def integers(gen: torch.Generator, n: int, low: int, high: int, device: torch.device | str) -> torch.Tensor:
    """``n`` integers uniform in [low, high] (both inclusive), int64 on ``device``."""
    return torch.randint(low, high + 1, (n,), generator=gen, device=gen.device).to(device)


def coin(gen: torch.Generator, n: int, p: float, device: torch.device | str) -> torch.Tensor:
    """``n`` Bernoulli(p) draws as a bool tensor on ``device``."""
    return (torch.rand(n, generator=gen, device=gen.device) < p).to(device)


def beta(gen: torch.Generator, n: int, alpha: float, device: torch.device | str) -> torch.Tensor:
    """``n`` draws from Beta(alpha, alpha) (torch's Beta takes no generator, so numpy seeded from ``gen``)."""
    seed = int(torch.randint(0, 2**62, (1,), generator=gen, device=gen.device).item())
    draws = np.random.default_rng(seed).beta(alpha, alpha, size=n)
    return torch.as_tensor(draws, dtype=torch.float32, device=device)


def partners(gen: torch.Generator, n: int, device: torch.device | str) -> torch.Tensor:
    """A random derangement of ``range(n)`` (n >= 2): nobody is mixed with itself."""
    order = torch.randperm(n, generator=gen, device=gen.device)
    out = torch.empty_like(order)
    out[order] = order.roll(-1)  # each element points at the next one of a random cycle
    return out.to(device)


# ---------------------------------------------------------------- mixing


def _col(x: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor | float:
    return x.to(like.dtype).reshape(-1, 1) if torch.is_tensor(x) else float(x)


def mix(
    wave_a: torch.Tensor,
    y_a: torch.Tensor,
    wave_b: torch.Tensor,
    y_b: torch.Tensor,
    weight: float | torch.Tensor,
    label_mode: str = "weighted",
    weight_b: float | torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix two batches of waveforms and their labels.

    Args:
        wave_a, wave_b: (B, N) waveforms.
        y_a, y_b: (B, C) labels in [0, 1].
        weight: weight of ``a``, a float or a (B,) tensor; ``b`` gets ``1 - weight`` unless ``weight_b`` is given.
        label_mode: ``weighted`` (labels mixed with the wave weights, normalised to sum 1), ``max``
            (element-wise max) or ``sum_clip`` (clamp(y_a + y_b, 0, 1), "hard" mixing).
        weight_b: the weight of ``b`` when it is not ``1 - weight`` (SuMix).

    Returns:
        (wave (B, N), labels (B, C) in [0, 1]).
    """
    if wave_a.shape != wave_b.shape or y_a.shape != y_b.shape:
        raise ValueError(
            f"cannot mix {tuple(wave_a.shape)}/{tuple(y_a.shape)} with {tuple(wave_b.shape)}/{tuple(y_b.shape)}"
        )
    wa = _col(weight, wave_a)
    wb = 1 - wa if weight_b is None else _col(weight_b, wave_a)
    wave = wa * wave_a + wb * wave_b.to(wave_a.dtype)
    return wave, mix_labels(y_a, y_b, weight, label_mode, weight_b)


def mix_labels(
    y_a: torch.Tensor,
    y_b: torch.Tensor,
    weight: float | torch.Tensor,
    label_mode: str = "weighted",
    weight_b: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """The label half of ``mix``: (B, C) labels of ``a`` and ``b`` combined by ``label_mode``."""
    if label_mode not in LABEL_MODES:
        raise ValueError(f"label_mode must be one of {LABEL_MODES}, not {label_mode!r}")
    y_b = y_b.to(y_a.dtype)
    if label_mode == "max":
        return torch.maximum(y_a, y_b)
    if label_mode == "sum_clip":
        return (y_a + y_b).clamp(0.0, 1.0)
    wa = _col(weight, y_a)
    wb = 1 - wa if weight_b is None else _col(weight_b, y_a)
    return (wa * y_a + wb * y_b) / (wa + wb)


def mix_masks(mask_a: torch.Tensor, y_a: torch.Tensor, mask_b: torch.Tensor, y_b: torch.Tensor) -> torch.Tensor:
    """Loss mask of a mixed sample: a cell is known if it is a known positive in either source, else only if it
    is known in both (a masked secondary label of ``a`` stays unknown unless ``b`` brings it)."""
    known_pos = ((y_a > 0) & (mask_a > 0)) | ((y_b > 0) & (mask_b > 0))
    return torch.where(known_pos, torch.ones_like(mask_a), mask_a * mask_b)


def time_cutmix(wave_a: torch.Tensor, wave_b: torch.Tensor, start: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
    """Replace samples [start, start + length) of each row of ``wave_a`` by the same span of ``wave_b``.

    Args: wave_a, wave_b (B, N); start, length (B,) in samples.
    """
    pos = torch.arange(wave_a.shape[1], device=wave_a.device)[None, :]
    inside = (pos >= start[:, None]) & (pos < (start + length)[:, None])
    return torch.where(inside, wave_b, wave_a)


# ---------------------------------------------------------------- levels and filters


def rms(wave: torch.Tensor) -> torch.Tensor:
    """Root mean square of each row (B, N) -> (B, 1), floored so silent rows do not divide by zero."""
    return wave.pow(2).mean(dim=1, keepdim=True).sqrt().clamp_min(1e-6)


def add_at_snr(wave: torch.Tensor, noise: torch.Tensor, snr_db: torch.Tensor) -> torch.Tensor:
    """Add ``noise`` (B, N) scaled so that rms(wave) / rms(noise) = 10 ** (snr_db / 20) per row."""
    scale = rms(wave) / (rms(noise) * 10 ** (snr_db.reshape(-1, 1) / 20))
    return wave + scale * noise


def band_gain_db(edges_hz: torch.Tensor, gains_db: torch.Tensor, n_points: int) -> torch.Tensor:
    """Gain in dB at ``n_points`` frequencies evenly spaced over [0, Nyquist], linear between (edge, gain) points.

    Args:
        edges_hz: (B, K) non-decreasing frequencies in Hz per row, the first 0 and the last the Nyquist frequency.
        gains_db: (B, K) gains in dB at those frequencies.
        n_points: number of output frequencies.

    Returns: (B, n_points) gains in dB.
    """
    freqs = torch.linspace(0, SAMPLE_RATE / 2, n_points, device=edges_hz.device).expand(edges_hz.shape[0], -1)
    right = torch.searchsorted(edges_hz.contiguous(), freqs.contiguous()).clamp(1, edges_hz.shape[1] - 1)
    left = right - 1
    e_left, e_right = edges_hz.gather(1, left), edges_hz.gather(1, right)
    frac = ((freqs - e_left) / (e_right - e_left).clamp_min(1e-6)).clamp(0, 1)
    g_left, g_right = gains_db.gather(1, left), gains_db.gather(1, right)
    return g_left + frac * (g_right - g_left)


def random_filter(
    wave: torch.Tensor, gen: torch.Generator, min_bands: int, max_bands: int, max_db: float
) -> torch.Tensor:
    """A6 (FilterAugment, linear type): each row through its own random filter with ``n`` bands (n uniform in
    [min_bands, max_bands]), band edges uniform on the mel scale and gains uniform in [-max_db, max_db] dB at the
    edges, interpolated linearly in dB in between; applied in the frequency domain."""
    k, n_samples = wave.shape
    top = 2595 * math.log10(1 + (SAMPLE_RATE / 2) / 700)
    bands = integers(gen, k, min_bands, max_bands, gen.device)
    # Every row gets max_bands - 1 inner edges; a row with fewer bands parks the extra ones at Nyquist.
    inner = torch.rand(k, max_bands - 1, generator=gen, device=gen.device) * top
    unused = torch.arange(max_bands - 1, device=gen.device)[None, :] >= (bands - 1)[:, None]
    inner = torch.sort(inner.masked_fill(unused, top), dim=1).values
    mels = torch.cat([inner.new_zeros(k, 1), inner, inner.new_full((k, 1), top)], dim=1)
    edges = 700 * (10 ** (mels / 2595) - 1)
    gains = (torch.rand(k, max_bands + 1, generator=gen, device=gen.device) * 2 - 1) * max_db
    # Parked edges repeat the gain of the row's real Nyquist edge, so the curve stays flat there.
    last = gains.gather(1, bands[:, None])
    beyond = torch.arange(max_bands + 1, device=gen.device)[None, :] > bands[:, None]
    gains = torch.where(beyond, last, gains)
    # A coarse curve (16 Hz steps) stretched to every rFFT bin: the curve is smooth, the bins are many.
    coarse = band_gain_db(edges, gains, _FILTER_GRID).to(wave.device)
    spec = torch.fft.rfft(wave, dim=1)
    db = F.interpolate(coarse[:, None], size=spec.shape[1], mode="linear")[:, 0]
    return torch.fft.irfft(spec * 10 ** (db / 20), n=n_samples, dim=1)


# ---------------------------------------------------------------- noise banks


class NoiseBank:
    """Background clips (quiet soundscape segments, human voice) to draw fixed-length noise crops from.

    Args:
        clips: 1-D float waveforms at 32 kHz, any lengths (samples).
    """

    def __init__(self, clips: Sequence[np.ndarray]) -> None:
        if len(clips) == 0:
            raise ValueError("NoiseBank needs at least one clip")
        self.clips: list[torch.Tensor] = []
        for i, clip in enumerate(clips):
            arr = np.asarray(clip, dtype=np.float32)
            if arr.ndim != 1 or arr.size == 0:
                raise ValueError(f"NoiseBank clip {i}: expected a non-empty 1-D waveform, got shape {arr.shape}")
            if not np.isfinite(arr).all():
                raise ValueError(f"NoiseBank clip {i}: contains NaN or inf")
            self.clips.append(torch.from_numpy(arr.copy()))

    def __len__(self) -> int:
        return len(self.clips)

    def sample(self, n: int, length: int, gen: torch.Generator) -> torch.Tensor:
        """``n`` random crops of ``length`` samples, (n, length) float32 on CPU.

        Clips are chosen uniformly; a clip shorter than ``length`` is tiled from a random phase.
        """
        out = torch.empty(n, length)
        for row, i in enumerate(torch.randint(len(self.clips), (n,), generator=gen, device=gen.device).tolist()):
            clip = self.clips[i]
            if len(clip) >= length:
                start = int(torch.randint(len(clip) - length + 1, (1,), generator=gen, device=gen.device))
                out[row] = clip[start : start + length]
            else:
                start = int(torch.randint(len(clip), (1,), generator=gen, device=gen.device))
                reps = math.ceil((start + length) / len(clip))
                out[row] = clip.repeat(reps)[start : start + length]
        return out


class CacheNoiseBank(NoiseBank):
    """A :class:`NoiseBank` whose clips are spans of the waveform cache, read when drawn (memory O(spans)).

    Holding the quietest 30% of every train-soundscape window in RAM took ~22 GB at competition scale (twice with the
    torch copy, once per DDP rank); this keeps ``(key, start, length)`` and reads each crop from the memory-mapped
    cache. It draws the same random numbers as a ``NoiseBank`` of the same clips, so the crops are identical.

    Args:
        cache: waveform cache (``read(key, start, length)``).
        spans: ``(key, first sample, samples)`` per clip.
    """

    def __init__(self, cache: Any, spans: Sequence[tuple[str, int, int]]) -> None:
        if len(spans) == 0:
            raise ValueError("NoiseBank needs at least one clip")
        bad = [i for i, (_, _, n) in enumerate(spans) if n <= 0]
        if bad:
            raise ValueError(f"NoiseBank span {bad[0]}: expected a positive length, got {spans[bad[0]]}")
        self.cache = cache
        self.spans = [(str(k), int(s), int(n)) for k, s, n in spans]

    def __len__(self) -> int:
        return len(self.spans)

    def sample(self, n: int, length: int, gen: torch.Generator) -> torch.Tensor:
        """``n`` random crops of ``length`` samples, (n, length) float32 on CPU (see ``NoiseBank.sample``)."""
        out = torch.empty(n, length)
        for row, i in enumerate(torch.randint(len(self.spans), (n,), generator=gen, device=gen.device).tolist()):
            key, first, size = self.spans[i]
            if size >= length:
                start = int(torch.randint(size - length + 1, (1,), generator=gen, device=gen.device))
                out[row] = torch.from_numpy(np.asarray(self.cache.read(key, first + start, length), dtype=np.float32))
            else:
                start = int(torch.randint(size, (1,), generator=gen, device=gen.device))
                clip = torch.from_numpy(np.asarray(self.cache.read(key, first, size), dtype=np.float32))
                reps = math.ceil((start + length) / size)
                out[row] = clip.repeat(reps)[start : start + length]
        return out


# ---------------------------------------------------------------- options


def section(cfg: Mapping[str, Any] | None, name: str) -> Mapping[str, Any]:
    """The ``name`` sub-section of an ``augment`` params dict, or ``cfg`` itself when it is that sub-section."""
    cfg = cfg or {}
    if "wave" in cfg or "spec" in cfg:
        return cfg.get(name) or {}
    return cfg


def resolve_options(
    cfg: Mapping[str, Any], defaults: Mapping[str, Mapping[str, Any]], where: str
) -> dict[str, dict[str, Any]]:
    """Active techniques with their full options.

    A technique absent from ``cfg`` is off; a present one takes ``defaults`` for the keys it leaves out and is
    active when ``enabled`` (default true) and ``p > 0``.

    Raises:
        ValueError: unknown technique or option names (a typo must not silently turn an augmentation off).
    """
    unknown = set(cfg) - set(defaults)
    if unknown:
        raise ValueError(f"{where}: unknown augmentation(s) {sorted(unknown)}; known: {sorted(defaults)}")
    active = {}
    for name, opts in cfg.items():
        opts = dict(opts or {})
        bad = set(opts) - set(defaults[name]) - {"enabled", "p"}
        if bad:
            raise ValueError(f"{where}.{name}: unknown option(s) {sorted(bad)}; known: {sorted(defaults[name])}")
        merged = {"enabled": True, **defaults[name], **opts}
        if not 0.0 <= float(merged["p"]) <= 1.0:
            raise ValueError(f"{where}.{name}.p must be in [0, 1], not {merged['p']!r}")
        if merged["enabled"] and float(merged["p"]) > 0:
            active[name] = merged
    return active
