"""Tests for the per-epoch evaluator: soundscape chunks follow the training crop length."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from birdclef import SAMPLE_RATE
from birdclef.train.evaluate import Evaluator

from train_fixtures import MemoryCache


class _Recorder(nn.Module):
    """Returns constant logits and records the length of every chunk it is fed."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.lengths: list[int] = []

    def forward(self, wave: torch.Tensor) -> dict[str, torch.Tensor]:
        self.lengths.append(wave.shape[1])
        b = wave.shape[0]
        return {"clip": torch.zeros(b, 2) + self.w, "frame": torch.zeros(b, 4, 2) + self.w}


@pytest.mark.parametrize("crop_s", [5.0, 10.0, 20.0])
def test_soundscape_chunks_are_the_training_crop_length(crop_s):
    cache = MemoryCache({"ss0": np.zeros(60 * SAMPLE_RATE, dtype=np.float32)}, {"ss0": "test_soundscape"})
    labels = pd.DataFrame({"row_id": [f"ss0_{5 * (i + 1)}" for i in range(12)], "a": [1, 0] * 6, "b": [0, 1] * 6})
    ev = Evaluator(["a", "b"], cache, None, labels, crop_s=crop_s)
    model = _Recorder()
    pred = ev.soundscape_predictions(model)
    assert set(model.lengths) == {int(crop_s * SAMPLE_RATE)}
    assert len(pred) == 12 and list(pred.columns) == ["row_id", "a", "b"]
