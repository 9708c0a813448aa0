"""Pseudo-label transforms for Noisy Student self-training (TECHNIQUES.md P2-P5) and their statistics."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class PseudoLabels:
    """Soft labels of a set of soundscapes.

    Attributes:
        probs: (files, windows, C) probabilities per 5-s window after the transforms.
        weight: (files, windows) loss weight of each window (entropy selection lowers it).
        keep: (files, windows) bool, windows that stay in the training pool.
    """

    probs: np.ndarray
    weight: np.ndarray
    keep: np.ndarray

    def sampler_weights(self) -> np.ndarray:
        """(files,) P3 sampler weight: sum over species of the max over kept windows of p (unknown cells count 0)."""
        kept = np.where(self.keep[..., None], np.nan_to_num(self.probs, nan=0.0), 0.0)
        return kept.max(axis=1).sum(axis=1)


def _binary_entropy(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return -(p * np.log2(p) + (1 - p) * np.log2(1 - p))


def transform(
    windows: np.ndarray, cfg: Mapping[str, Any], tau: float = 1.0, file_mean: np.ndarray | None = None
) -> PseudoLabels:
    """Turn teacher predictions into soft labels; every step is switchable and they compose in this order.

    1. ``file_blend`` (P5, rank 14): p = (1 - w) * p + w * the file average, w = 0.3; the file average is
       ``file_mean`` when given (rank 14: the teacher's chunks at a 1-s stride, ``file_blend_stride_s``), else the
       mean of the file's windows.
    2. ``min_norm`` (P4, rank 7): p - min over the file's windows, per species.
    3. power (P2, rank 1): p ** (1 / tau); tau < 1 sharpens (1.0, 0.65, 0.55, 0.6 for iterations 1-4).
    4. ``low_threshold`` (P4, rank 2): zero p below it (0.1); ``high_threshold``: keep only windows whose max p
       exceeds it (0.5).
    5. ``hard_threshold`` (P4, rank 8): p = 1 where p > t (0.4), else 0.
    6. ``entropy`` (P4, rank 11): windows whose mean binary entropy exceeds ``max_entropy`` get loss weight
       ``weight`` (down-weighted, not dropped).
    7. ``drop_bottom`` (P4, rank 4): drop the given fraction of windows with the smallest label sum (0.2).
    8. ``confident_split`` (P11, rank 10): p >= ``high`` becomes 1, p <= ``low`` becomes 0, and the cells in
       between become NaN: unknown, left out of the loss by the training mask (not trained towards 0).

    Args:
        windows: (files, windows, C) teacher probabilities; NaN cells (a species the teacher does not know) stay
            NaN through every step and never count as a label.
        cfg: the ``pseudo.transforms`` params; a step with a falsy value / ``enabled: false`` is skipped.
        tau: power-transform temperature of this iteration.
        file_mean: (files, C) file averages for ``file_blend``.
    """
    with warnings.catch_warnings():
        # An all-NaN column (a species no teacher covers) makes nanmean / nanmin warn; NaN is the right answer.
        warnings.filterwarnings("ignore", "All-NaN slice|Mean of empty slice", RuntimeWarning)
        return _transform(windows, cfg, tau, file_mean)


def _transform(windows: np.ndarray, cfg: Mapping[str, Any], tau: float, file_mean: np.ndarray | None) -> PseudoLabels:
    p = np.asarray(windows, dtype=np.float64).copy()
    weight = np.ones(p.shape[:2])
    keep = np.ones(p.shape[:2], dtype=bool)
    if (w := float(cfg.get("file_blend", 0.0))) > 0:
        mean = np.nanmean(p, axis=1, keepdims=True) if file_mean is None else np.asarray(file_mean)[:, None, :]
        if mean.shape != (p.shape[0], 1, p.shape[2]):
            raise ValueError(f"file_mean must be (files, C) = {(p.shape[0], p.shape[2])}, got {mean.shape[::2]}")
        p = (1 - w) * p + w * mean
    if cfg.get("min_norm", False):
        p = p - np.nanmin(p, axis=1, keepdims=True)
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    p = np.clip(p, 0.0, 1.0) ** (1.0 / tau)
    if (low := float(cfg.get("low_threshold", 0.0))) > 0:
        p = np.where(p < low, 0.0, p)
    if (high := float(cfg.get("high_threshold", 0.0))) > 0:
        keep &= np.nan_to_num(p, nan=0.0).max(axis=2) > high
    if (hard := float(cfg.get("hard_threshold", 0.0))) > 0:
        p = np.where(np.isnan(p), np.nan, (p > hard).astype(np.float64))
    ent = cfg.get("entropy", {}) or {}
    if ent.get("enabled", False):
        noisy = np.nanmean(_binary_entropy(p), axis=2) > float(ent.get("max_entropy", 0.05))
        weight = np.where(noisy, float(ent.get("weight", 0.5)), weight)
    if (frac := float(cfg.get("drop_bottom", 0.0))) > 0:
        sums = np.where(keep, np.nansum(p, axis=2), np.inf)
        n_drop = int(np.floor(frac * keep.sum()))
        if n_drop:
            order = np.argsort(sums, axis=None, kind="stable")[:n_drop]
            keep.flat[order] = False
    split = cfg.get("confident_split", {}) or {}
    if split.get("enabled", False):
        low, high = float(split.get("low", 0.1)), float(split.get("high", 0.5))
        if not 0.0 <= low < high <= 1.0:
            raise ValueError(f"pseudo.transforms.confident_split needs 0 <= low < high <= 1, got {low}, {high}")
        p = np.where(p >= high, 1.0, np.where(p <= low, 0.0, np.nan))
    return PseudoLabels(p.astype(np.float32), weight.astype(np.float32), keep)


def label_stats(labels: PseudoLabels) -> dict[str, float]:
    """Flat statistics for metrics/pseudo/<k>.json."""
    kept = np.nan_to_num(labels.probs[labels.keep], nan=0.0)
    maxp = kept.max(axis=1) if len(kept) else np.zeros(0)
    return {
        "windows": int(labels.keep.size),
        "windows_kept": int(labels.keep.sum()),
        "mean_max_prob": float(maxp.mean()) if len(maxp) else 0.0,
        "share_windows_above_0_5": float((maxp > 0.5).mean()) if len(maxp) else 0.0,
        "species_ever_above_0_5": int((kept > 0.5).any(axis=0).sum()) if len(kept) else 0,
        "mean_loss_weight": float(labels.weight[labels.keep].mean()) if labels.keep.any() else 0.0,
        "share_cells_unknown": float(np.isnan(labels.probs[labels.keep]).mean()) if labels.keep.any() else 0.0,
    }


def teacher_predictions(
    predictors: list[Any],
    waves: Any,
    ids: list[str],
    chunk_s: float = 5.0,
    stride_s: float = 2.5,
    pool: str = "mean",
    batch_size: int = 16,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean prediction of a teacher ensemble over soundscapes, per 5-s window and per frame (I1).

    Args:
        predictors: windows.Predictor callables (one per teacher member), all with the same class order.
        waves: source of waveforms with ``read(key) -> (samples,)`` (the waveform cache).
        ids: soundscape keys, all of the same length.
        chunk_s, stride_s: chunk length and stride in seconds; stride < chunk overlaps chunks and averages
            their framewise predictions, both ends padded so the first and last windows are centred.
        pool: how a window pools its frames (mean | max).
        batch_size: chunks per forward pass.
        progress: show a progress bar.

    Returns:
        ``windows`` (files, windows, C) and ``frames`` (files, bins, C) float32 probabilities.
    """
    from tqdm.auto import tqdm

    from birdclef.infer.windows import predict_file

    all_w, all_f = [], []
    for key in tqdm(ids, desc="pseudo-labelling", disable=not progress):
        wave = waves.read(key)
        outs = [predict_file(p, wave, chunk_s, stride_s, batch_size=batch_size, pool=pool) for p in predictors]
        all_w.append(np.mean([o[0] for o in outs], axis=0))
        all_f.append(np.mean([o[1] for o in outs], axis=0))
    return np.stack(all_w).astype(np.float32), np.stack(all_f).astype(np.float32)
