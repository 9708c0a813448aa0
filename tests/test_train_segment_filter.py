"""Tests for D2: training segments a trained model hears no call of their species in are dropped."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from birdclef import SAMPLE_RATE
from birdclef.train.segment_filter import drop_segments_without_call, primary_call_scores

from train_fixtures import MemoryCache

CLASSES = ["a", "b"]


class _Loudness(nn.Module):
    """Hears species a where the chunk is loud, species b never: p(a) = sigmoid(40 * (rms - 0.2))."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, wave: torch.Tensor) -> dict[str, torch.Tensor]:
        rms = wave.pow(2).mean(dim=1).sqrt()
        clip = torch.stack([40 * (rms - 0.2), torch.full_like(rms, -5.0)], dim=1) + self.w
        return {"clip": clip, "frame": clip[:, None, :].expand(-1, 4, -1)}


def _segments():
    rng = np.random.default_rng(0)
    loud = lambda s: (0.5 * np.sin(np.arange(int(s * SAMPLE_RATE)) / 3)).astype(np.float32)  # noqa: E731
    quiet = lambda s: (0.001 * rng.standard_normal(int(s * SAMPLE_RATE))).astype(np.float32)  # noqa: E731
    late = np.concatenate([quiet(10), loud(5)])  # the call only in the last window: kept (max over windows)
    waves = {"a1": loud(5), "a2": quiet(6), "a3": late, "b1": quiet(5), "b2": quiet(3)}
    segs = pd.DataFrame({"segment_id": list(waves), "primary_label": ["a", "a", "a", "b", "b"],
                         "start_s": 0.0, "end_s": [len(w) / SAMPLE_RATE for w in waves.values()]})
    return segs, MemoryCache(waves)


def test_scores_are_the_best_window_of_the_primary_species():
    segs, cache = _segments()
    scores = primary_call_scores(segs, cache, _Loudness(), CLASSES)
    assert scores[0] > 0.99 and scores[1] < 0.01 and scores[2] > 0.99
    np.testing.assert_allclose(scores[3:], 1 / (1 + np.exp(5)), rtol=1e-5)


def test_segments_without_a_call_are_dropped_but_every_class_keeps_its_best():
    segs, cache = _segments()
    kept, dropped = drop_segments_without_call(segs, cache, _Loudness(), CLASSES, threshold=0.5)
    assert dropped == 2
    assert kept["segment_id"].tolist()[:2] == ["a1", "a3"] and len(kept) == 3
    assert (kept["primary_label"] == "b").sum() == 1  # the floor: b is never left without data
    with pytest.raises(ValueError, match="threshold"):
        drop_segments_without_call(segs, cache, _Loudness(), CLASSES, threshold=1.0)
