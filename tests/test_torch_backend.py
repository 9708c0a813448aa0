"""Tests for birdclef.infer.torch_backend: a torch member's probabilities, and a group sharing mel front ends."""

from __future__ import annotations

import numpy as np
import pytest

from birdclef.infer.parity import synthetic_audio
from birdclef.infer.torch_backend import TorchGroup, TorchPredictor

from export_fixtures import CLASSES, exported


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return exported(tmp_path_factory)


def test_torch_predictor_gives_probabilities_of_the_checkpoint(built):
    member = built["spec"]["members"][0]
    out = TorchPredictor(member["checkpoint"], threads=1)(synthetic_audio(3))
    assert out["clip"].shape == (3, len(CLASSES)) and out["frame"].shape[0] == 3 and out["frame"].shape[2] == 4
    assert out["clip"].dtype == np.float32 and out["clip"].min() >= 0 and out["clip"].max() <= 1


def _tiny(mel: dict, seed: int):
    import torch

    from birdclef.models import create_model

    torch.manual_seed(seed)
    cfg = {"head": "sed", "backbone": "test_efficientnet", "pretrained": False, "mel": "m", "freq_pool": "mean",
           "drop_rate": 0.0, "drop_path_rate": 0.0}
    return create_model(cfg, 3, mel)


def test_torch_group_runs_each_mel_config_once_and_matches_each_member_alone(monkeypatch):
    from birdclef.features.frontend import MelFrontEnd

    mel_a = {"n_fft": 512, "hop_length": 320, "n_mels": 32, "fmin": 40, "fmax": 15000, "top_db": 80, "norm": "ref_max"}
    mel_b = {**mel_a, "n_mels": 48}
    models = [_tiny(mel_a, 0), _tiny(mel_b, 1), _tiny(mel_a, 2)]
    wave = synthetic_audio(3, seed=5)
    want = [TorchPredictor(m)(wave) for m in models]
    calls = []
    forward = MelFrontEnd.forward
    monkeypatch.setattr(MelFrontEnd, "forward", lambda self, x: calls.append(self.cfg.n_mels) or forward(self, x))
    got = TorchGroup(models)(wave)
    assert calls == [32, 48]  # members 0 and 2 share one front end pass; member 1 has its own
    assert len(got) == 3
    for g, w in zip(got, want, strict=True):
        for key in ("clip", "frame"):
            np.testing.assert_array_equal(g[key], w[key])
    assert not np.array_equal(got[0]["clip"], got[2]["clip"])  # same mel, different weights: different outputs
