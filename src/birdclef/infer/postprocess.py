"""Post-processing of soundscape predictions: delta-shift and peak-volume TTA, smoothing, file-level boosts.

numpy only: the Kaggle bundle copies this file next to a standalone script that has neither torch nor birdclef.

Every step is switched on and tuned through one params dict (the ``postprocess`` block of params.yaml)::

    delta_shift: {enabled: false, frames: 2}          # I2, member level, on the frame timeline
    peak_tta:    {enabled: false, peak: 0.1, weight: 0.5}   # I5, member level, wraps the predictor
    smoothing:   {enabled: true, kernel: [0.1, 0.8, 0.1], class_strength: null}  # I3, over a file's windows
    file_mean:   {enabled: false, weight: 0.3}        # I4 (rank 12), blend with the file mean
    topk_boost:  {enabled: false, k: 1}               # I4 (rank 2)
    max_boost:   {enabled: false, weight: 0.5}        # I4 (rank 7), logit space

Member-level steps run on each member before the ensemble combination (``wrap_predictor`` and
``frame_transform``); file-level steps run on the combined (n_windows, C) scores of one file, in the order
smoothing -> file_mean -> topk_boost -> max_boost (``apply_file``). Omitted keys take the defaults above.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

Predictor = Callable[[np.ndarray], dict[str, np.ndarray]]

DEFAULTS: dict[str, dict[str, Any]] = {
    "delta_shift": {"enabled": False, "frames": 2},
    "peak_tta": {"enabled": False, "peak": 0.1, "weight": 0.5},
    "smoothing": {"enabled": True, "kernel": [0.1, 0.8, 0.1], "class_strength": None},
    "file_mean": {"enabled": False, "weight": 0.3},
    "topk_boost": {"enabled": False, "k": 1},
    "max_boost": {"enabled": False, "weight": 0.5},
}
_EPS = 1e-6


def resolve(cfg: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Fill omitted steps/keys with ``DEFAULTS``; reject unknown steps or keys (a typo must not pass silently)."""
    out = copy.deepcopy(DEFAULTS)
    for step, values in (cfg or {}).items():
        if step not in DEFAULTS:
            raise ValueError(f"unknown post-processing step {step!r}; known: {sorted(DEFAULTS)}")
        unknown = set(values or {}) - set(DEFAULTS[step])
        if unknown:
            raise ValueError(f"postprocess.{step}: unknown key(s) {sorted(unknown)}; known: {sorted(DEFAULTS[step])}")
        out[step].update(values or {})
    kernel = np.asarray(out["smoothing"]["kernel"], dtype=float)
    if kernel.ndim != 1 or len(kernel) % 2 == 0 or np.any(kernel < 0) or kernel.sum() <= 0:
        raise ValueError(f"postprocess.smoothing.kernel must be an odd-length non-negative list, not {kernel}")
    return out


def delta_shift(frames: np.ndarray, d: int, weights: Sequence[float] = (0.25, 0.5, 0.25)) -> np.ndarray:
    """Delta-shift TTA (I2): ``0.25 f(t - d) + 0.5 f(t) + 0.25 f(t + d)`` on a frame timeline (n_frames, C).

    Ends repeat the first/last frame, so a constant timeline is unchanged.
    """
    if d <= 0:
        return frames
    n = frames.shape[0]
    idx = np.arange(n)
    before = frames[np.clip(idx - d, 0, n - 1)]
    after = frames[np.clip(idx + d, 0, n - 1)]
    return (weights[0] * before + weights[1] * frames + weights[2] * after).astype(frames.dtype)


def smooth(windows: np.ndarray, kernel: Sequence[float]) -> np.ndarray:
    """Convolve a file's window scores (n_windows, C) over time with ``kernel`` (odd length, centred).

    At the ends the kernel taps that fall outside the file are dropped and the rest renormalised, so an edge
    window is not pulled towards zero.
    """
    k = np.asarray(kernel, dtype=np.float64)
    half = len(k) // 2
    n = windows.shape[0]
    acc = np.zeros(windows.shape, dtype=np.float64)
    norm = np.zeros((n, 1))
    for offset, w in zip(range(-half, half + 1), k, strict=True):
        lo, hi = max(0, -offset), min(n, n - offset)
        acc[lo:hi] += w * windows[lo + offset : hi + offset]
        norm[lo:hi] += w
    return (acc / norm).astype(windows.dtype)


def class_strength(counts: np.ndarray, low: float = 0.5, high: float = 1.0) -> np.ndarray:
    """Per-class smoothing strength (I3, rank 10) from per-class train counts (C,).

    Rare classes have noisier scores, so they are smoothed more: strength goes linearly in ``log1p(count)`` from
    ``high`` for the rarest class to ``low`` for the most frequent one.
    """
    logs = np.log1p(np.maximum(np.asarray(counts, dtype=np.float64), 0))
    span = logs.max() - logs.min()
    rarity = np.ones_like(logs) if span == 0 else (logs.max() - logs) / span
    return low + (high - low) * rarity


def file_mean(windows: np.ndarray, weight: float) -> np.ndarray:
    """Blend each window with the file mean of its class: ``(1 - w) p + w mean_t p``."""
    return ((1 - weight) * windows + weight * windows.mean(axis=0, keepdims=True)).astype(windows.dtype)


def topk_boost(windows: np.ndarray, k: int = 1) -> np.ndarray:
    """File-level boost (I4, rank 2): ``p'[t, c] = p[t, c] * mean of the file's top-k p[., c]``."""
    k = max(1, min(int(k), windows.shape[0]))
    top = np.sort(windows, axis=0)[-k:].mean(axis=0, keepdims=True)
    return (windows * top).astype(windows.dtype)


def max_boost(windows: np.ndarray, weight: float) -> np.ndarray:
    """File-level max-logit boost (I4, rank 7): ``sigmoid(logit p + w * logit max_t p)``."""
    z = _logit(windows)
    return _sigmoid(z + weight * z.max(axis=0, keepdims=True)).astype(windows.dtype)


def apply_file(
    windows: np.ndarray, cfg: Mapping[str, Any] | None, class_counts: np.ndarray | None = None
) -> np.ndarray:
    """File-level post-processing of one file's scores (n_windows, C), clipped to [0, 1].

    Args:
        windows: (n_windows, C) scores of one file, windows in time order.
        cfg: the post-processing params (see the module docstring); ``None`` uses the defaults.
        class_counts: (C,) train counts per class; needed when ``smoothing.class_strength`` is set.
    """
    cfg = resolve(cfg)
    out = np.asarray(windows, dtype=np.float32)
    step = cfg["smoothing"]
    if step["enabled"]:
        smoothed = smooth(out, step["kernel"])
        if step["class_strength"]:
            if class_counts is None:
                raise ValueError("postprocess.smoothing.class_strength needs per-class train counts")
            s = class_strength(class_counts, **step["class_strength"]).astype(np.float32)[None, :]
            smoothed = (1 - s) * out + s * smoothed
        out = smoothed
    if cfg["file_mean"]["enabled"]:
        out = file_mean(out, cfg["file_mean"]["weight"])
    if cfg["topk_boost"]["enabled"]:
        out = topk_boost(out, cfg["topk_boost"]["k"])
    if cfg["max_boost"]["enabled"]:
        out = max_boost(out, cfg["max_boost"]["weight"])
    return np.clip(out, 0.0, 1.0)


def frame_transform(cfg: Mapping[str, Any] | None) -> Callable[[np.ndarray], np.ndarray] | None:
    """The member-level frame-timeline step (delta-shift TTA) for ``windows.predict_file``, or ``None``."""
    step = resolve(cfg)["delta_shift"]
    if not step["enabled"]:
        return None
    d = int(step["frames"])
    return lambda frames: delta_shift(frames, d)


def peak_normalised(predictor: Predictor, peak: float = 0.1, weight: float = 0.5) -> Predictor:
    """Peak-volume TTA (I5, rank 7): a predictor averaging the raw pass with a pass on peak-normalised audio.

    Each chunk is scaled so that its absolute peak is ``peak``; silent chunks are left as they are. Output =
    ``(1 - weight) * raw + weight * normalised`` for both clip and frame probabilities (costs a second pass).
    """

    def predict(wave: np.ndarray) -> dict[str, np.ndarray] | list[dict[str, np.ndarray]]:
        top = np.abs(wave).max(axis=1, keepdims=True)
        scale = np.where(top > 0, peak / np.maximum(top, 1e-12), 1.0).astype(wave.dtype)
        raw, norm = predictor(wave), predictor(wave * scale)
        if isinstance(raw, Mapping):
            return mix(raw, norm)
        return [mix(r, n) for r, n in zip(raw, norm, strict=True)]  # a group predictor: one output per member

    def mix(raw: Mapping[str, np.ndarray], norm: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {key: (1 - weight) * np.asarray(raw[key]) + weight * np.asarray(norm[key]) for key in ("clip", "frame")}

    return predict


def wrap_predictor(predictor: Predictor, cfg: Mapping[str, Any] | None) -> Predictor:
    """Apply the member-level predictor wrappers of ``cfg`` (peak-volume TTA when enabled).

    ``predictor`` may also be a group predictor (``windows.GroupPredictor``); the wrapper then applies to each
    of its outputs.
    """
    step = resolve(cfg)["peak_tta"]
    if not step["enabled"]:
        return predictor
    return peak_normalised(predictor, float(step["peak"]), float(step["weight"]))


# Mel front ends whose image does not change with the input's gain (frontend.MelFrontEnd): ``absmax`` scales the
# waveform to its own peak, ``ref_max`` and ``minmax`` scale the dB image to its own maximum (and minimum).
GAIN_INVARIANT_NORMS = ("ref_max", "minmax")


def peak_tta_problem(cfg: Mapping[str, Any] | None, mels: Mapping[str, Mapping[str, Any]]) -> str | None:
    """Why peak-volume TTA (I5) cannot apply to these members, or ``None`` when it can (or is off).

    A pass on peak-normalised audio differs from the raw pass only through the front end's response to gain; on a
    gain-invariant front end the two passes give the same image (to float rounding), so the TTA doubles the cost
    and changes nothing: a setting that cannot apply, refused rather than ignored.

    Args:
        cfg: the ``postprocess`` block.
        mels: ``{member name: mel config dict}`` of the members the TTA wraps (not a foundation teacher).
    """
    if not resolve(cfg)["peak_tta"]["enabled"] or not mels:
        return None
    invariant = {n: ("absmax" if m.get("absmax") else f"norm {m.get('norm', 'ref_max')}") for n, m in mels.items()
                 if m.get("absmax") or m.get("norm", "ref_max") in GAIN_INVARIANT_NORMS}  # fmt: skip
    if len(invariant) < len(mels):
        return None
    why = ", ".join(f"{n} ({v})" for n, v in invariant.items())
    return (f"postprocess.peak_tta cannot apply: every member's front end is gain-invariant ({why}), so the "
            "peak-normalised pass gives the same predictions; turn it off, or give a member a mel config with "
            "norm: db and absmax: false")  # fmt: skip


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1 - _EPS)
    return np.log(p) - np.log1p(-p)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1 + np.tanh(0.5 * z))
