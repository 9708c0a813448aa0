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

Ensembles: members with the same chunking run in one pass (``predict_file_group`` with a ``GroupPredictor``;
``group_by_chunking`` and ``predict_members`` do the bookkeeping), so the chunks are stacked once per batch and
an export's front end runs once per mel config, whatever the number of members.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

SAMPLE_RATE = 32_000
"""Hz; mirrors ``birdclef.SAMPLE_RATE`` (this file must import nothing from birdclef; a test checks they agree)."""

Predictor = Callable[[np.ndarray], dict[str, np.ndarray]]
"""``(wave (B, samples) float32 at 32 kHz) -> {"clip": (B, C) probs, "frame": (B, T, C) probs}``."""

GroupPredictor = Callable[[np.ndarray], Sequence[dict[str, np.ndarray]]]
"""Several members on the same batch: ``wave (B, samples) -> [Predictor output of each member]``, so members that
share a chunking (and a mel config) are fed one stacked batch (and one front end) instead of one each."""


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
    return predict_file_group(
        lambda batch: [predictor(batch)],
        wave,
        chunk_s=chunk_s,
        stride_s=stride_s,
        window_s=window_s,
        batch_size=batch_size,
        pool=pool,
        pad=pad,
        n_windows=n_windows,
        frame_transform=frame_transform,
        sample_rate=sample_rate,
    )[0]


def predict_file_group(
    predictor: GroupPredictor,
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
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``predict_file`` for several members fed the same chunks: one chunking, one batch stack, M outputs.

    Args:
        predictor: see ``GroupPredictor`` (it returns the same number of outputs on every call).
        Others: as ``predict_file``.

    Returns:
        One ``(windows, frames)`` pair per output of ``predictor``, in its order.
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
    padded = np.pad(wave, (left, right)) if left or right else wave
    timelines: list[_Timeline] = []
    for lo in range(0, len(starts), batch_size):
        batch_starts = starts[lo : lo + batch_size]
        batch = _stack_chunks(padded, batch_starts + left, chunk)
        outputs = predictor(batch)
        if timelines and len(outputs) != len(timelines):
            raise ValueError(f"predictor changed its number of outputs from {len(timelines)} to {len(outputs)}")
        for k, out in enumerate(outputs):
            values, spans = _chunk_frames(out, batch_starts, chunk, window)
            if k == len(timelines):
                n_bins = n_windows * frames_per_window(spans.shape[1], chunk_s, window_s)
                timelines.append(_Timeline(spans.shape[1], n_bins, n_samples / n_bins, values.shape[-1]))
            timelines[k].add(values, spans)
    results = []
    for timeline in timelines:
        frames = timeline.frames(sample_rate, f"chunk_s={chunk_s}, stride_s={stride_s}, pad={pad}")
        if frame_transform is not None:
            frames = frame_transform(frames)
        results.append((pool_frames(frames, n_windows, pool), frames))
    return results


def stack_predictors(predictors: Sequence[Predictor]) -> GroupPredictor:
    """A ``GroupPredictor`` calling each predictor on the same batch (for members that share nothing else)."""
    predictors = list(predictors)
    return lambda batch: [predict(batch) for predict in predictors]


def group_by_chunking(chunkings: Sequence[Mapping[str, Any]]) -> list[tuple[dict[str, Any], list[int]]]:
    """Members with identical ``predict_file`` keyword arguments, which can share one chunking pass.

    Args:
        chunkings: each member's keyword arguments for ``predict_file`` (chunk_s, stride_s, ...).

    Returns:
        ``(chunking, member positions)`` per distinct chunking, in order of first appearance.
    """
    groups: list[tuple[dict[str, Any], list[int]]] = []
    for i, chunking in enumerate(chunkings):
        for shared, members in groups:
            if shared == dict(chunking):
                members.append(i)
                break
        else:
            groups.append((dict(chunking), [i]))
    return groups


def predict_members(
    groups: Sequence[tuple[GroupPredictor, Mapping[str, Any], Sequence[int]]],
    wave: np.ndarray,
    n_windows: int | None = None,
    frame_transform: Callable[[np.ndarray], np.ndarray] | None = None,
) -> list[np.ndarray]:
    """Window scores of every member of an ensemble for one recording, one ``predict_file_group`` per group.

    Args:
        groups: ``(group predictor, chunking, member positions)``; the predictor returns one output per
            position, in that order (see ``group_by_chunking``).
        wave, n_windows, frame_transform: as ``predict_file``.

    Returns:
        (n_windows, C_m) window probabilities per member, in member-position order.
    """
    n_members = max((max(members, default=-1) + 1 for _, _, members in groups), default=0)
    out: list[np.ndarray | None] = [None] * n_members
    for predictor, chunking, members in groups:
        results = predict_file_group(predictor, wave, n_windows=n_windows, frame_transform=frame_transform, **chunking)
        if len(results) != len(members):
            raise ValueError(f"group predictor gave {len(results)} outputs for {len(members)} members")
        for position, (windows, _) in zip(members, results, strict=True):
            out[position] = windows
    missing = [i for i, w in enumerate(out) if w is None]
    if missing:
        raise ValueError(f"member positions {missing} belong to no group")
    return out  # type: ignore[return-value]


class _Timeline:
    """One member's overlap-weighted frame timeline over one recording (``n_bins`` bins of ``width`` samples)."""

    def __init__(self, n_frames: int, n_bins: int, width: float, n_classes: int) -> None:
        self.n_frames, self.width = n_frames, width
        self.acc = np.zeros((n_bins, n_classes))
        self.weight = np.zeros(n_bins)

    def add(self, values: np.ndarray, spans: np.ndarray) -> None:
        if spans.shape[1] != self.n_frames:
            raise ValueError(f"predictor changed its frame count from {self.n_frames} to {spans.shape[1]}")
        _accumulate(self.acc, self.weight, values.reshape(-1, values.shape[-1]), spans.reshape(-1, 2), self.width)

    def frames(self, sample_rate: int, how: str) -> np.ndarray:
        """(n_bins, C) float32: the mean of the values over each bin; raises if a bin got none."""
        if np.any(self.weight <= 0):
            gap = int(np.argmin(self.weight > 0)) * self.width / sample_rate
            raise ValueError(
                f"chunks leave the timeline uncovered near {gap:.2f} s ({how}); use a smaller stride or pad=True"
            )
        return (self.acc / self.weight[:, None]).astype(np.float32)


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
    for k in range(int(math.ceil((b - a).max() / width - 1e-9)) + 1):  # a span of 1 + 3e-15 bins reaches 2 bins
        bins = first + k
        overlap = np.minimum(b, (bins + 1) * width) - np.maximum(a, bins * width)
        # Overlaps of a rounding error (a span ending a hair into the next bin) are not overlaps.
        keep = (bins >= 0) & (bins < len(weight)) & (overlap > 1e-9 * width)
        hit = bins[keep]
        if np.unique(hit).size == hit.size:  # no bin twice in this pass: plain fancy indexing (np.add.at is slow)
            acc[hit] += overlap[keep, None] * values[keep]
            weight[hit] += overlap[keep]
        else:
            np.add.at(acc, hit, overlap[keep, None] * values[keep])
            np.add.at(weight, hit, overlap[keep])


def _stack_chunks(wave: np.ndarray, starts: np.ndarray, chunk: int) -> np.ndarray:
    # (len(starts), chunk) chunks of a 1-D wave; back-to-back chunks (stride == chunk) are a view, not a copy.
    if len(starts) > 1 and np.all(np.diff(starts) == chunk):
        return wave[int(starts[0]) : int(starts[0]) + len(starts) * chunk].reshape(len(starts), chunk)
    return np.stack([wave[s : s + chunk] for s in starts])


def _samples(seconds: float, sample_rate: int) -> int:
    n = round(seconds * sample_rate)
    if abs(n - seconds * sample_rate) > 1e-6 * sample_rate:
        raise ValueError(f"{seconds} s is not a whole number of samples at {sample_rate} Hz")
    return int(n)
