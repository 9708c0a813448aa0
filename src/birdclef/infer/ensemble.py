"""Ensemble combination of member window scores (I6) and weight fitting by coordinate search.

numpy only: the Kaggle bundle copies this file next to a standalone script that has neither torch nor birdclef.
The metric for ``fit_weights`` is passed in as a callable, so this module never imports pandas or sklearn.

Combinations (``combination`` in params), applied per member and per class column before the weighted mean:
- ``mean``: probabilities as they are;
- ``minmax``: logits min-max scaled over all rows of the column to [0, 1] (rank 7);
- ``rank``: ranks over all rows of the column (ties averaged) scaled to [0, 1].
``minmax`` and ``rank`` are relative to the rows scored together (all test windows), as on Kaggle where the
whole test set is predicted before writing the submission.

Members that score only a subset of classes (taxon-group models, D3) are merged into the full class list: a
member gets weight 0 on the classes it does not have, and each class renormalises the weights of the members
that do have it.

The ensemble stage's side (running the members over labelled soundscapes, choosing the fit split, writing the spec)
is ``ensemble_spec``: it imports this module and the runner, and neither imports it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

COMBINATIONS = ("mean", "minmax", "rank")
_EPS = 1e-6


def expand_classes(pred: np.ndarray, member_classes: Sequence[str] | None, classes: Sequence[str]) -> np.ndarray:
    """Place a member's (N, C_m) scores into the full class list (N, C); classes it lacks are NaN.

    ``member_classes=None`` means the member scores exactly ``classes`` in that order.
    """
    pred = np.asarray(pred, dtype=np.float64)
    if member_classes is None:
        if pred.shape[1] != len(classes):
            raise ValueError(f"member has {pred.shape[1]} columns but the ensemble has {len(classes)} classes")
        return pred
    if pred.shape[1] != len(member_classes):
        raise ValueError(f"member has {pred.shape[1]} columns but lists {len(member_classes)} classes")
    index = {c: i for i, c in enumerate(classes)}
    unknown = [c for c in member_classes if c not in index]
    if unknown:
        raise ValueError(f"member classes not in the ensemble class list: {unknown[:10]}")
    out = np.full((pred.shape[0], len(classes)), np.nan)
    out[:, [index[c] for c in member_classes]] = pred
    return out


def scale(pred: np.ndarray, combination: str) -> np.ndarray:
    """Transform one member's (N, C) probabilities per column as ``combination`` says (NaN columns stay NaN)."""
    if combination == "mean":
        return pred
    if combination == "minmax":
        p = np.clip(pred, _EPS, 1 - _EPS)
        z = np.log(p) - np.log1p(-p)
        lo, hi = np.nanmin(z, axis=0, keepdims=True), np.nanmax(z, axis=0, keepdims=True)
        span = hi - lo
        return np.where(span > 0, (z - lo) / np.where(span > 0, span, 1.0), 0.5)
    if combination == "rank":
        return np.column_stack([_rank01(pred[:, c]) for c in range(pred.shape[1])])
    raise ValueError(f"combination must be one of {COMBINATIONS}, not {combination!r}")


def combine(
    preds: Sequence[np.ndarray],
    weights: Sequence[float],
    classes: Sequence[str],
    member_classes: Sequence[Sequence[str] | None] | None = None,
    combination: str = "mean",
) -> np.ndarray:
    """Weighted combination of member scores.

    Args:
        preds: one (N, C_m) array of window probabilities per member, rows aligned across members.
        weights: one non-negative weight per member.
        classes: the full ensemble class list (C).
        member_classes: per member its class list, or ``None`` for the full list (the default for all).
        combination: ``mean``, ``minmax`` or ``rank`` (see the module docstring).

    Returns:
        (N, C) float32 scores in [0, 1].
    """
    if len(preds) != len(weights) or not preds:
        raise ValueError(f"need one weight per member: {len(preds)} members, {len(weights)} weights")
    w = np.asarray(weights, dtype=np.float64)
    if np.any(w < 0) or not np.isfinite(w).all():
        raise ValueError(f"member weights must be finite and non-negative, got {list(w)}")
    member_classes = member_classes or [None] * len(preds)
    acc = norm = None
    for pred, mc, wm in zip(preds, member_classes, w, strict=True):
        s = scale(expand_classes(pred, mc, classes), combination)
        have = ~np.isnan(s)
        if acc is None:
            acc, norm = np.zeros(s.shape), np.zeros(s.shape)
        elif s.shape != acc.shape:
            raise ValueError(f"member rows differ: {s.shape[0]} vs {acc.shape[0]}")
        acc += np.where(have, wm * np.nan_to_num(s), 0.0)
        norm += np.where(have, wm, 0.0)
    missing = np.flatnonzero(norm[0] <= 0) if len(norm) else np.array([], dtype=int)
    if missing.size:
        names = [classes[i] for i in missing[:10]]
        raise ValueError(f"{missing.size} class(es) have no member with positive weight, e.g. {names}")
    return np.clip(acc / np.where(norm > 0, norm, 1.0), 0.0, 1.0).astype(np.float32)


def fit_weights(
    preds: Sequence[np.ndarray],
    score_fn: Callable[[np.ndarray], float],
    classes: Sequence[str],
    member_classes: Sequence[Sequence[str] | None] | None = None,
    combination: str = "mean",
    init: Sequence[float] | None = None,
    grid: Sequence[float] = (0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0),
    rounds: int = 3,
    min_gain: float = 1e-4,
) -> tuple[list[float], float]:
    """Fit member weights by coordinate search on ``score_fn`` (higher is better).

    Each round visits the members in order and sets one weight to the grid value (a multiple of the weight scale)
    that scores best, keeping the current value unless another beats it by ``min_gain``; a member's weight is
    never set to 0 if that would leave a class without members. Weights are returned normalised to sum 1.

    Fitting on the same labels the ensemble is then scored on is optimistic: report such scores as in-sample.

    Returns:
        ``(weights, best score)``.
    """
    n = len(preds)
    w = np.asarray(init if init is not None else [1.0] * n, dtype=np.float64)
    scaled = [
        scale(expand_classes(p, mc, classes), combination)
        for p, mc in zip(preds, member_classes or [None] * n, strict=True)
    ]

    def evaluate(weights: np.ndarray) -> float:
        try:
            # Already scaled, so combine as a plain weighted mean.
            return float(score_fn(combine(scaled, weights, classes, None, "mean")))
        except ValueError:
            return -np.inf

    best = evaluate(w)
    for _ in range(rounds):
        improved = False
        for m in range(n):
            for value in grid:
                trial = w.copy()
                trial[m] = value
                if not trial.any():
                    continue
                s = evaluate(trial)
                if s > best + min_gain:
                    best, w, improved = s, trial, True
        if not improved:
            break
    return list(w / w.sum()), best


def _rank01(x: np.ndarray) -> np.ndarray:
    # Average ranks of the finite entries scaled to [0, 1]; NaN stays NaN.
    out = np.full(x.shape, np.nan)
    ok = ~np.isnan(x)
    v = x[ok]
    if v.size == 0:
        return out
    if v.size == 1:
        out[ok] = 0.5
        return out
    uniq, inverse, counts = np.unique(v, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    avg_rank = ends - (counts - 1) / 2.0 - 1.0  # 0-based average rank of each tie group
    out[ok] = avg_rank[inverse] / (v.size - 1)
    return out
