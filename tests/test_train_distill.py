"""Teacher-in-the-loop targets (P6 blend, P7 online hard targets + symmetric binary KL) and their use in fit()."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from birdclef.train.datasets import FocalDataset
from birdclef.train.distill import DistillLoss, TeacherTargets, symmetric_binary_kl
from birdclef.train.fit import FitConfig, fit

from train_fixtures import TinyModel, toy_segments


class FixedTeacher(nn.Module):
    """Returns fixed logits whatever the input: clip (B, C), frame (B, T, C)."""

    def __init__(self, clip: list[float], frame_max: list[float]):
        super().__init__()
        self.clip = torch.logit(torch.tensor(clip))
        self.frame = torch.logit(torch.tensor(frame_max))
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, wave, spec_augment=None):
        b = wave.shape[0]
        frame = torch.stack([self.frame, torch.logit(torch.full_like(self.frame, 0.01))])  # (T=2, C)
        return {"clip": self.clip.expand(b, -1), "frame": frame.expand(b, -1, -1)}


def _batch():
    target = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.5, 0.0]])
    return {"wave": torch.zeros(2, 100), "target": target, "mask": torch.ones(2, 3), "weight": torch.ones(2)}


def _call(tf, batch):
    return tf(batch, torch.Generator().manual_seed(0), np.random.default_rng(0))


def test_blend_fills_only_non_positive_classes():
    tf = TeacherTargets(FixedTeacher([0.9, 0.2, 0.6], [0.9, 0.2, 0.6]), {"mode": "blend", "blend": 0.5})
    out = _call(tf, _batch())
    expected = torch.tensor([[1.0, 0.1, 0.3], [0.45, 0.5, 0.3]])
    torch.testing.assert_close(out["target"], expected)
    assert "teacher" not in out


def test_online_sets_hard_targets_where_both_views_are_confident():
    # class 0: clip .9, frame .9 -> 1; class 1: clip .2, frame .7 -> mean .45 > .4 and frame > .4 -> 1;
    # class 2: clip .6, frame .3 -> frame too low -> unchanged.
    tf = TeacherTargets(FixedTeacher([0.9, 0.2, 0.6], [0.9, 0.7, 0.3]), {"mode": "online", "threshold": 0.4})
    out = _call(tf, _batch())
    torch.testing.assert_close(out["target"], torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]]))
    torch.testing.assert_close(out["teacher"], torch.tensor([[0.9, 0.2, 0.6]] * 2))


def test_off_and_bad_mode():
    teacher = FixedTeacher([0.5] * 3, [0.5] * 3)
    batch = _batch()
    assert _call(TeacherTargets(teacher, {"mode": "off"}), batch) is batch
    with pytest.raises(ValueError, match="distill.mode"):
        TeacherTargets(teacher, {"mode": "soft"})


def test_symmetric_binary_kl_by_hand():
    assert float(symmetric_binary_kl(torch.logit(torch.tensor([[0.3, 0.8]])), torch.tensor([[0.3, 0.8]]))) < 1e-6
    s, t = 0.5, 0.8
    hand = (t * math.log(t / s) + (1 - t) * math.log((1 - t) / (1 - s))) + (
        s * math.log(s / t) + (1 - s) * math.log((1 - s) / (1 - t))
    )
    got = float(symmetric_binary_kl(torch.tensor([[0.0]]), torch.tensor([[t]])))
    assert got == pytest.approx(hand, rel=1e-5)


class MSE(nn.Module):
    def forward(self, out, target, mask=None, weight=None):
        return ((torch.sigmoid(out["clip"]) - target) ** 2).mean()


def test_distill_loss_adds_kl_only_with_a_teacher():
    loss = DistillLoss(MSE(), kl_weight=2.0)
    out = {"clip": torch.zeros(1, 2)}
    target = torch.tensor([[1.0, 0.0]])
    base = float(loss(out, target))
    assert base == pytest.approx(0.25)
    with_kl = float(loss(out, target, teacher=torch.tensor([[0.8, 0.8]])))
    assert with_kl == pytest.approx(0.25 + 2 * float(symmetric_binary_kl(out["clip"], torch.tensor([[0.8, 0.8]]))))


def test_fit_trains_a_student_with_the_online_teacher():
    segs, cache = toy_segments()
    ds = FocalDataset(segs, cache, ["a", "b", "c"], crop_s=1.0)
    torch.manual_seed(0)
    teacher = TinyModel(3)
    student = TinyModel(3)
    seen = []

    class Spy(DistillLoss):
        def forward(self, out, target, mask=None, weight=None, teacher=None):
            seen.append(teacher is not None)
            return super().forward(out, target, mask, weight, teacher)

    cfg = FitConfig.from_dict({"epochs": 1, "batch_size": 4, "progress": False})
    result = fit(student, ds, cfg, Spy(MSE(), 1.0), transforms=[TeacherTargets(teacher, {"mode": "online"})])
    assert seen and all(seen)
    assert np.isfinite(result.history[-1]["train_loss"])
