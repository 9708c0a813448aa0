"""D2 (2025 rank 10): drop training segments in which a trained model finds no call of their primary species."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from birdclef import SAMPLE_RATE, WINDOW_SECONDS
from birdclef.infer.windows import predict_file
from birdclef.train.datasets import WaveSource, segment_span
from birdclef.train.evaluate import model_predictor


def primary_call_scores(
    segments: pd.DataFrame,
    cache: WaveSource,
    model: torch.nn.Module,
    classes: Sequence[str],
    device: str = "cpu",
    batch_size: int = 16,
) -> np.ndarray:
    """(segments,) the model's best 5-s window probability for each segment's primary species.

    A segment is scored over 5-s windows of its own audio (short ones tiled to one window), so a 30-s recording
    whose call sits at 20 s is kept: the max over its windows is what says "the call is there".
    """
    predict = model_predictor(model.eval(), device)
    index = {c: i for i, c in enumerate(classes)}
    scores = np.zeros(len(segments), dtype=np.float64)
    window = WINDOW_SECONDS * SAMPLE_RATE
    for row in range(len(segments)):
        key, offset, n = segment_span(segments, row, cache)
        wave = cache.read(key, offset, n)
        if len(wave) < window:
            wave = np.resize(wave, window) if len(wave) else np.zeros(window, np.float32)
        windows, _ = predict_file(predict, wave, batch_size=batch_size)
        scores[row] = float(windows[:, index[segments["primary_label"].iat[row]]].max())
    return scores


def drop_segments_without_call(
    segments: pd.DataFrame,
    cache: WaveSource,
    model: torch.nn.Module,
    classes: Sequence[str],
    threshold: float,
    device: str = "cpu",
) -> tuple[pd.DataFrame, int]:
    """The training segments the model hears their primary species in (best window >= ``threshold``).

    Every class keeps at least its best-scored segment, so a species the model has not learnt yet is never left
    without training data.

    Returns:
        The kept rows (original order) and the number dropped.
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"selftrain.drop_no_call.threshold must be in (0, 1), got {threshold}")
    if segments.empty:
        return segments, 0
    scores = primary_call_scores(segments, cache, model, classes, device)
    keep = scores >= threshold
    frame = pd.DataFrame({"label": segments["primary_label"].to_numpy(), "score": scores})
    best = frame.groupby("label")["score"].idxmax().to_numpy()
    keep[best] = True
    return segments[keep].reset_index(drop=True), int((~keep).sum())
