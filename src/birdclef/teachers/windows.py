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

The numbers come from :func:`birdclef.teachers.runtime.run_windows` (numpy only, shared with the Kaggle bundle).
"""

from __future__ import annotations

import numpy as np

from birdclef import SAMPLE_RATE
from birdclef.teachers.base import Teacher
from birdclef.teachers.runtime import ACTIVATIONS, POOLS, activate, n_windows, run_windows, tile_offsets

__all__ = ["ACTIVATIONS", "POOLS", "activate", "n_windows", "predict_windows", "tile_offsets"]


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
    return run_windows(
        teacher.predict, wave, teacher_rate=teacher.sample_rate, window_s=teacher.window_s, sample_rate=sample_rate,
        stride_s=stride_s, pool=pool, activation=activation, batch_size=batch_size, peak_normalize=peak_normalize,
    )  # fmt: skip
