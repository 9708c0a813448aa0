"""Windowed prediction over one recording: overlapping chunks -> one frame timeline -> 5-s window scores.

numpy only: the Kaggle bundle copies this file next to a standalone script that has neither torch nor birdclef.

Timeline rules (TECHNIQUES.md I1):
- A recording is first fitted to a whole number of windows (``n_windows_for``): the duration is rounded to the
  nearest multiple of ``window_s`` (a half-window tail counts as a window), with at least one window; the wave is
  zero-padded or cut at the end to that length.
- Chunks of ``chunk_s`` start every ``stride_s``. With ``pad=True`` both ends are zero-padded by
  ``(chunk_s - window_s) / 2`` so the first and the last window sit at the centre of a chunk (rank 1).
- A SED member (T > 1 frames per chunk) spreads frame ``j`` of a chunk over ``[start + j*chunk/T,
  start + (j+1)*chunk/T)``; every bin of the common frame timeline averages the frames that overlap it, weighted
  by the overlap. A CNN member (T = 1) gives one clip probability per chunk, which stands for the central
  ``window_s`` of the chunk (the window it is centred on), so with ``stride_s == window_s`` each window takes
  exactly the clip probability of the chunk centred on it, and with a smaller stride the overlap-weighted mean
  of its neighbours.
- The timeline has ``round(window_s * T / chunk_s)`` bins per window (1 for T = 1); windows pool their bins by
  mean or max.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

SAMPLE_RATE = 32_000
"""Hz; mirrors ``birdclef.SAMPLE_RATE`` (this file must import nothing from birdclef; a test checks they agree)."""

Predictor = Callable[[np.ndarray], dict[str, np.ndarray]]
"""``(wave (B, samples) float32 at 32 kHz) -> {"clip": (B, C) probs, "frame": (B, T, C) probs}``."""


def n_windows_for(n_samples: int, window_s: float = 5.0, sample_rate: int = SAMPLE_RATE) -> int:
    """Number of scored windows for a recording of ``n_samples`` samples.

    Rule: duration / window rounded half up, at least 1 (4.9 s -> 1, 57.4 s -> 11, 57.5 s -> 12, 61 s -> 12).
    """
    window = _samples(window_s, sample_rate)
    return max(1, (int(n_samples) + window // 2) // window)


def fit_length(wave: np.ndarray, n_samples: int) -> np.ndarray:
    """Zero-pad or cut a 1-D wave at its end to exactly ``n_samples`` samples."""
    if wave.shape[0] >= n_samples:
        return wave[:n_samples]
    return np.concatenate([wave, np.zeros(n_samples - wave.shape[0], dtype=wave.dtype)])


def chunk_starts(
    n_samples: int,
    chunk_s: float,
    stride_s: float,
    pad: bool = True,
    window_s: float = 5.0,
    sample_rate: int = SAMPLE_RATE,
) -> np.ndarray:
    """Start sample of every chunk over a timeline of ``n_samples`` samples (a whole number of windows).

    Args:
        n_samples: timeline length in samples (after ``fit_length``).
        chunk_s: chunk length fed to the model, seconds (>= ``window_s``).
        stride_s: seconds between chunk starts (< ``chunk_s`` means overlapping chunks).
        pad: centre the first and last window in a chunk (starts may be negative or run past the end; the
            caller zero-pads). Without padding the chunks start at 0 and the last one ends at the end.
        window_s: scored window length, seconds.
        sample_rate: Hz.

    Returns:
        int64 array (n_chunks,) of start samples, increasing; the last chunk always reaches the end.
    """
    chunk, stride, window = (_samples(s, sample_rate) for s in (chunk_s, stride_s, window_s))
    if chunk < window:
        raise ValueError(f"chunk_s ({chunk_s}) must be at least window_s ({window_s})")
    if stride <= 0:
        raise ValueError(f"stride_s must be positive, not {stride_s}")
    if pad:
        first = -((chunk - window) // 2)
        last = n_samples - window + first
    else:
        first, last = 0, max(n_samples - chunk, 0)
    starts = np.arange(first, last + 1, stride, dtype=np.int64)
    if starts[-1] < last:
        starts = np.append(starts, np.int64(last))
    return starts


def frames_per_window(n_frames: int, chunk_s: float, window_s: float = 5.0) -> int:
    """Bins per window on the common timeline for a member giving ``n_frames`` frames per chunk."""
    if n_frames <= 1:
        return 1
    return max(1, round(window_s * n_frames / chunk_s))


def pool_frames(frames: np.ndarray, n_windows: int, pool: str = "mean") -> np.ndarray:
    """Pool a frame timeline (n_windows * k, C) into windows (n_windows, C) by ``mean`` or ``max``."""
    n_bins, n_classes = frames.shape
    if n_bins % n_windows:
        raise ValueError(f"{n_bins} timeline bins do not split into {n_windows} windows")
    blocks = frames.reshape(n_windows, n_bins // n_windows, n_classes)
    if pool == "mean":
        return blocks.mean(axis=1)
    if pool == "max":
        return blocks.max(axis=1)
    raise ValueError(f"pool must be 'mean' or 'max', not {pool!r}")


def predict_file(
    predictor: Predictor,
    wave: np.ndarray,
    chunk_s: float = 5.0,
    stride_s: float = 5.0,
    window_s: float = 5.0,
    batch_size: int = 16,
    pool: str = "mean",
    pad: bool = True,
    n_windows: int | None = None,
    frame_transform: Callable[[np.ndarray], np.ndarray] | None = None,
    sample_rate: int = SAMPLE_RATE,
) -> tuple[np.ndarray, np.ndarray]:
    """Run ``predictor`` over overlapping chunks of one recording and score its 5-s windows.

    Args:
        predictor: see ``Predictor``.
        wave: (samples,) float32 mono at ``sample_rate``.
        chunk_s, stride_s, window_s, pad: see ``chunk_starts``.
        batch_size: chunks per predictor call.
        pool: how a window pools its timeline bins: ``mean`` or ``max``.
        n_windows: force this many windows (pad/cut the wave); ``None`` applies ``n_windows_for``.
        frame_transform: applied to the frame timeline (n_bins, C) before pooling (e.g. delta-shift TTA).
        sample_rate: Hz.

    Returns:
        ``windows`` (n_windows, C) and ``frames`` (n_windows * bins_per_window, C), float32 probabilities.
    """
    if wave.ndim != 1:
        raise ValueError(f"wave must be 1-D (samples,), got shape {wave.shape}")
    window = _samples(window_s, sample_rate)
    chunk = _samples(chunk_s, sample_rate)
    n_windows = n_windows or n_windows_for(wave.shape[0], window_s, sample_rate)
    n_samples = n_windows * window
    wave = fit_length(np.asarray(wave, dtype=np.float32), n_samples)
    starts = chunk_starts(n_samples, chunk_s, stride_s, pad, window_s, sample_rate)

    left = max(0, -int(starts[0]))
    right = max(0, int(starts[-1]) + chunk - n_samples)
    padded = np.pad(wave, (left, right))
    acc = weight = None
    n_bins = bin_width = n_frames = 0
    for lo in range(0, len(starts), batch_size):
        batch_starts = starts[lo : lo + batch_size]
        batch = np.stack([padded[s + left : s + left + chunk] for s in batch_starts])
        values, spans = _chunk_frames(predictor(batch), batch_starts, chunk, window)
        if acc is None:
            n_frames = spans.shape[1]
            n_bins = n_windows * frames_per_window(n_frames, chunk_s, window_s)
            bin_width = n_samples / n_bins
            acc = np.zeros((n_bins, values.shape[-1]))
            weight = np.zeros(n_bins)
        elif spans.shape[1] != n_frames:
            raise ValueError(f"predictor changed its frame count from {n_frames} to {spans.shape[1]}")
        _accumulate(acc, weight, values.reshape(-1, values.shape[-1]), spans.reshape(-1, 2), bin_width)
    if np.any(weight <= 0):
        gap = int(np.argmin(weight > 0)) * bin_width / sample_rate
        raise ValueError(
            f"chunks leave the timeline uncovered near {gap:.2f} s (chunk_s={chunk_s}, stride_s={stride_s}, "
            f"pad={pad}); use a smaller stride or pad=True"
        )
    frames = (acc / weight[:, None]).astype(np.float32)
    if frame_transform is not None:
        frames = frame_transform(frames)
    return pool_frames(frames, n_windows, pool), frames


def _chunk_frames(
    out: dict[str, np.ndarray], starts: np.ndarray, chunk: int, window: int
) -> tuple[np.ndarray, np.ndarray]:
    # -> values (B, T, C) and each value's [start, end) span in timeline samples (B, T, 2).
    clip = np.asarray(out["clip"], dtype=np.float64)
    frame = np.asarray(out["frame"], dtype=np.float64)
    if clip.ndim != 2 or frame.ndim != 3 or frame.shape[0] != clip.shape[0] or frame.shape[2] != clip.shape[1]:
        raise ValueError(f"predictor must return clip (B, C) and frame (B, T, C); got {clip.shape}, {frame.shape}")
    if clip.shape[0] != len(starts):
        raise ValueError(f"predictor returned {clip.shape[0]} rows for a batch of {len(starts)} chunks")
    if not (np.isfinite(clip).all() and np.isfinite(frame).all()):
        raise ValueError("predictor returned non-finite probabilities")
    n_frames = frame.shape[1]
    if n_frames == 1:
        # A clip score describes the window the chunk is centred on.
        lo = starts[:, None] + (chunk - window) / 2
        return clip[:, None, :], np.stack([lo, lo + window], axis=-1)
    edges = starts[:, None] + np.arange(n_frames + 1)[None, :] * (chunk / n_frames)
    return frame, np.stack([edges[:, :-1], edges[:, 1:]], axis=-1)


def _accumulate(acc: np.ndarray, weight: np.ndarray, values: np.ndarray, spans: np.ndarray, width: float) -> None:
    # Adds every value to the bins its span overlaps, weighted by the overlap (in samples).
    a, b = spans[:, 0], spans[:, 1]
    first = np.floor(a / width).astype(np.int64)
    for k in range(int(math.ceil((b - a).max() / width)) + 1):
        bins = first + k
        overlap = np.minimum(b, (bins + 1) * width) - np.maximum(a, bins * width)
        keep = (bins >= 0) & (bins < len(weight)) & (overlap > 0)
        np.add.at(acc, bins[keep], overlap[keep, None] * values[keep])
        np.add.at(weight, bins[keep], overlap[keep])


def _samples(seconds: float, sample_rate: int) -> int:
    n = round(seconds * sample_rate)
    if abs(n - seconds * sample_rate) > 1e-6 * sample_rate:
        raise ValueError(f"{seconds} s is not a whole number of samples at {sample_rate} Hz")
    return int(n)
