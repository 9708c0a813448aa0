"""Run a teacher over a waveform: resample to its rate, tile each 5-s window with its windows, pool per 5-s window.

Tiling: a teacher whose window W is shorter than the project's 5-s window runs on ``n`` windows that lie inside
each 5-s window, the first starting at its start and the last ending at its end (BirdNET, W = 3 s: starts 0 and
2 s by default, or 0, 1, 2 s with ``stride_s: 1``). No teacher window reaches into a neighbouring 5-s window,
so a call lights only the windows it is in. A teacher with W >= 5 s runs once per 5-s window, centred on it
(Perch v2: exactly the window).

Pooling over a 5-s window's tiles: probabilities take the max (a species heard in any part of the window is
present in it, which is what a window label means; a mean would halve a call that only one of two tiles hears),
embeddings the mean (one vector for the whole 5 s that stays in the teacher's embedding space, which an
element-wise max of embeddings does not).
"""

from __future__ import annotations

import math

import numpy as np

from birdclef import SAMPLE_RATE, WINDOW_SECONDS
from birdclef.audio.decode import resample
from birdclef.teachers.base import Teacher

POOLS = ("max", "mean")
ACTIVATIONS = ("sigmoid", "softmax")
_EPS = 1e-6


def tile_offsets(window_s: float, stride_s: float | None = None, param: str = "teacher.stride_s") -> np.ndarray:
    """Start times (s) of the teacher windows tiling one 5-s window, relative to its start.

    Args:
        window_s: the teacher's window W in seconds.
        stride_s: seconds between tiles when W < 5 s; ``None``: the fewest tiles that cover the window
            (ceil(5 / W), evenly spaced). ``(5 - W) / stride_s`` must be a whole number, so that the last tile
            ends where the window ends.
        param: the param named in errors.

    Returns:
        (tiles,) float64 offsets; one negative offset ``-(W - 5) / 2`` when W >= 5 s.

    Raises:
        ValueError: a stride that does not tile the window, or a stride for a teacher with W >= 5 s.
    """
    span = WINDOW_SECONDS - window_s
    if span <= _EPS:
        if stride_s is not None:
            raise ValueError(f"{param} cannot apply: a {window_s:g}-s teacher runs once per 5-s window (leave it null)")
        return np.array([span / 2.0])
    if stride_s is None:
        n = math.ceil(WINDOW_SECONDS / window_s - _EPS)
        return np.linspace(0.0, span, n)
    steps = span / stride_s if stride_s > 0 else -1.0
    if steps < 1 - _EPS or abs(steps - round(steps)) > 1e-6:
        raise ValueError(
            f"{param} = {stride_s}: tiles of {window_s:g} s must end where the 5-s window ends, so "
            f"{span:g} / stride_s must be a whole number >= 1 (e.g. {span:g}, {span / 2:g} or {span / 4:g})"
        )
    return np.arange(round(steps) + 1) * float(stride_s)


def n_windows(samples: int, sample_rate: int = SAMPLE_RATE) -> int:
    """Number of 5-s windows of a waveform of ``samples`` (the last one zero-padded; at least one)."""
    return max(1, -(-samples // (WINDOW_SECONDS * sample_rate)))


def activate(logits: np.ndarray, activation: str = "sigmoid") -> np.ndarray:
    """Logits -> probabilities: ``sigmoid`` (multi-label, BirdNET's and Perch's default) or ``softmax`` over classes."""
    logits = np.asarray(logits, dtype=np.float64)
    if activation == "sigmoid":
        return (1.0 / (1.0 + np.exp(-np.clip(logits, -60.0, 60.0)))).astype(np.float32)
    if activation == "softmax":
        z = np.exp(logits - logits.max(axis=-1, keepdims=True))
        return (z / z.sum(axis=-1, keepdims=True)).astype(np.float32)
    raise ValueError(f"teacher.activation must be one of {ACTIVATIONS}, not {activation!r}")


def predict_windows(
    teacher: Teacher,
    wave: np.ndarray,
    *,
    sample_rate: int = SAMPLE_RATE,
    stride_s: float | None = None,
    pool: str = "max",
    activation: str = "sigmoid",
    batch_size: int = 16,
    peak_normalize: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Teacher probabilities and embeddings per 5-s window of one waveform.

    Args:
        teacher: the model.
        wave: (samples,) float32 mono at ``sample_rate`` (the project's 32 kHz).
        sample_rate: Hz of ``wave``; resampled (soxr HQ, as the decoder) to the teacher's rate.
        stride_s: tile stride (see :func:`tile_offsets`).
        pool: how a 5-s window pools its tiles' probabilities: ``max`` | ``mean`` (embeddings: always the mean).
        activation: see :func:`activate`.
        batch_size: teacher windows per model call.
        peak_normalize: scale each teacher window to this peak amplitude first (``None``: as recorded).

    Returns:
        ``(probs, embeddings)``: (n_windows, teacher classes) float32 and (n_windows, D) float32, window ``k``
        covering [5k, 5k + 5) s.
    """
    if pool not in POOLS:
        raise ValueError(f"teacher.pool must be one of {POOLS}, not {pool!r}")
    offsets = tile_offsets(teacher.window_s, stride_s)
    n_win = n_windows(len(wave), sample_rate)
    starts_s = (np.arange(n_win)[:, None] * WINDOW_SECONDS + offsets[None, :]).ravel()
    wave = resample(np.ascontiguousarray(wave, dtype=np.float32), sample_rate, teacher.sample_rate)
    starts = np.rint(starts_s * teacher.sample_rate).astype(np.int64)
    length = teacher.window_samples
    probs, embs = [], []
    for i in range(0, len(starts), batch_size):
        batch = np.stack([_crop(wave, int(s), length) for s in starts[i : i + batch_size]])
        if peak_normalize is not None:
            peak = np.abs(batch).max(axis=1, keepdims=True)
            batch = np.where(peak > 0, batch * (peak_normalize / np.maximum(peak, 1e-12)), batch).astype(np.float32)
        logits, emb = teacher.predict(batch)
        probs.append(activate(logits, activation))
        embs.append(emb.astype(np.float32))
    tiles = len(offsets)
    p = np.concatenate(probs).reshape(n_win, tiles, -1)
    e = np.concatenate(embs).reshape(n_win, tiles, -1)
    return (p.max(axis=1) if pool == "max" else p.mean(axis=1)), e.mean(axis=1)


def _crop(wave: np.ndarray, start: int, length: int) -> np.ndarray:
    """Samples [start, start + length) of ``wave``, zeros outside it."""
    if start >= 0 and start + length <= len(wave):
        return wave[start : start + length]
    out = np.zeros(length, dtype=np.float32)
    lo, hi = max(start, 0), min(start + length, len(wave))
    if hi > lo:
        out[lo - start : hi - start] = wave[lo:hi]
    return out
