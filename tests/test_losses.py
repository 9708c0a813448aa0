"""Tests for birdclef.train.losses against values worked out by hand on a 2 x 2 batch."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from birdclef.io import load_params
from birdclef.train.losses import SoftAUCLoss, build_loss, smooth_labels

# Two clips, two species: clip 0 has species 0, clip 1 has species 1.
LOGITS = torch.tensor([[0.0, 2.0], [-1.0, 1.0]])
TARGET = torch.tensor([[1.0, 0.0], [0.0, 1.0]])


def _softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def _bce(s: float, y: float) -> float:
    return y * _softplus(-s) + (1 - y) * _softplus(s)


def _out(logits: torch.Tensor = LOGITS, frame: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    return {"clip": logits, "frame": logits[:, None, :] if frame is None else frame}


CELLS = [(0.0, 1.0), (2.0, 0.0), (-1.0, 0.0), (1.0, 1.0)]  # (logit, target) per cell, row-major


def test_bce_is_mean_cell_bce():
    expected = sum(_bce(s, y) for s, y in CELLS) / 4  # = 0.86165
    assert build_loss({"name": "bce"})(_out(), TARGET).item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(0.861650, abs=1e-6)


def test_focal_matches_hand_formula():
    def cell(s, y, alpha=0.25, gamma=2.0):
        p_t = _sigmoid(s) if y else 1 - _sigmoid(s)
        return (alpha if y else 1 - alpha) * (1 - p_t) ** gamma * _bce(s, y)

    expected = sum(cell(s, y) for s, y in CELLS) / 4
    loss = build_loss({"name": "focal", "focal": {"alpha": 0.25, "gamma": 2}})
    assert loss(_out(), TARGET).item() == pytest.approx(expected, rel=1e-6)
    both = build_loss({"name": "bce_focal"})(_out(), TARGET).item()
    assert both == pytest.approx(expected + sum(_bce(s, y) for s, y in CELLS) / 4, rel=1e-6)


def test_ce_uses_softmax_over_species_with_normalised_multi_hot():
    # row 0: -log softmax([0, 2])[0] = log(1 + e^2); row 1: -log softmax([-1, 1])[1] = log(1 + e^-2)
    expected = (_softplus(2.0) + _softplus(-2.0)) / 2
    assert build_loss({"name": "ce"})(_out(), TARGET).item() == pytest.approx(expected, rel=1e-6)
    multi = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    log_p = [-_softplus(2.0), -_softplus(-2.0)]  # log softmax([0, 2])
    expected_multi = (-(0.5 * log_p[0] + 0.5 * log_p[1]) + _softplus(-2.0)) / 2
    assert build_loss({"name": "ce"})(_out(), multi).item() == pytest.approx(expected_multi, rel=1e-6)


def test_ce_mask_removes_cell_from_softmax():
    mask = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    # row 0 alone among unmasked species: softmax = 1, loss 0
    expected = (0.0 + _softplus(-2.0)) / 2
    assert build_loss({"name": "ce"})(_out(), TARGET, mask).item() == pytest.approx(expected, abs=1e-6)


def test_soft_auc_matches_hand_computation():
    # P = {s=0, s=1} (y=1), N = {s=2, s=-1} (y=0); every pair weight (1-0.5)(0.5-0) = 0.25
    pairs = [_softplus(-(0 - 2)), _softplus(-(0 + 1)), _softplus(-(1 - 2)), _softplus(-(1 + 1))]
    expected = 0.25 * sum(pairs) / 4  # = 0.242524
    assert SoftAUCLoss()(LOGITS, TARGET).item() == pytest.approx(expected, rel=1e-6)
    assert build_loss({"name": "soft_auc"})(_out(), TARGET).item() == pytest.approx(expected, rel=1e-6)


def test_soft_auc_with_soft_labels_weights_pairs_by_distance_from_half():
    target = torch.tensor([[0.8, 0.5], [0.1, 0.6]])  # 0.5 is neither positive nor negative
    # P = {(s=0, y=.8), (s=1, y=.6)}, N = {(s=-1, y=.1)}
    expected = (0.3 * 0.4 * _softplus(-1.0) + 0.1 * 0.4 * _softplus(-2.0)) / 2
    assert SoftAUCLoss()(LOGITS, target).item() == pytest.approx(expected, rel=1e-6)


def test_soft_auc_is_zero_without_positives_or_negatives():
    logits = LOGITS.clone().requires_grad_(True)
    for target in (torch.zeros(2, 2), torch.ones(2, 2), torch.full((2, 2), 0.5)):
        loss = SoftAUCLoss()(logits, target)
        assert loss.item() == 0.0
        loss.backward()  # still part of the graph


def test_soft_auc_chunking_gives_the_same_value(monkeypatch):
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 9, generator=gen)
    target = (torch.rand(6, 9, generator=gen) > 0.6).float()
    full = SoftAUCLoss()(logits, target)
    monkeypatch.setattr("birdclef.train.losses._AUC_CHUNK_PAIRS", 7)
    torch.testing.assert_close(SoftAUCLoss()(logits, target), full)


def test_soft_auc_weight_adds_to_main_loss():
    base = build_loss({"name": "bce"})(_out(), TARGET)
    auc = SoftAUCLoss()(LOGITS, TARGET)
    combined = build_loss({"name": "bce", "soft_auc_weight": 0.5})(_out(), TARGET)
    assert combined.item() == pytest.approx(base.item() + 0.5 * auc.item(), rel=1e-6)


def test_negative_penalty_hinges_negative_logits_above_margin():
    # negatives: s=2 -> relu(2 - 0.5) = 1.5; s=-1 -> 0; mean over 2 negatives = 0.75
    loss = build_loss({"name": "bce", "neg_penalty": {"weight": 2.0, "margin": 0.5}})
    expected = sum(_bce(s, y) for s, y in CELLS) / 4 + 2.0 * 0.75
    assert loss(_out(), TARGET).item() == pytest.approx(expected, rel=1e-6)


def test_label_smoothing_formula_and_effect_on_bce():
    smoothed = smooth_labels(torch.tensor([[1.0, 0.0, 0.0, 1.0]]), 0.1)
    torch.testing.assert_close(smoothed, torch.tensor([[0.95, 0.05, 0.05, 0.95]]))
    # 2 classes, one positive per row: targets become 0.95 / 0.05
    expected = sum(_bce(s, 0.95 if y else 0.05) for s, y in CELLS) / 4
    loss = build_loss({"name": "bce", "label_smoothing": 0.1})
    assert loss(_out(), TARGET).item() == pytest.approx(expected, rel=1e-6)


def test_sed_dual_averages_clip_and_max_frame_losses():
    frame = torch.tensor([[[0.0, -3.0], [1.0, 0.5]], [[-2.0, 2.0], [-4.0, 0.0]]])  # (B=2, T=2, C=2)
    frame_max = [(1.0, 1.0), (0.5, 0.0), (-2.0, 0.0), (2.0, 1.0)]
    expected = 0.5 * sum(_bce(s, y) for s, y in CELLS) / 4 + 0.5 * sum(_bce(s, y) for s, y in frame_max) / 4
    loss = build_loss({"name": "bce", "sed_dual": True})
    assert loss(_out(frame=frame), TARGET).item() == pytest.approx(expected, rel=1e-6)


def test_mask_and_sample_weight():
    mask = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    bce = build_loss({"name": "bce"})
    expected = (_bce(0.0, 1.0) + _bce(-1.0, 0.0) + _bce(1.0, 1.0)) / 3
    assert bce(_out(), TARGET, mask).item() == pytest.approx(expected, rel=1e-6)
    weight = torch.tensor([2.0, 0.0])
    expected_w = 2.0 * (_bce(0.0, 1.0) + _bce(2.0, 0.0)) / 4
    assert bce(_out(), TARGET, weight=weight).item() == pytest.approx(expected_w, rel=1e-6)


def test_losses_are_differentiable_and_finite_for_every_name():
    logits = torch.randn(4, 5, generator=torch.Generator().manual_seed(2)).requires_grad_(True)
    target = torch.zeros(4, 5)
    target[torch.arange(4), torch.tensor([0, 1, 2, 3])] = 1.0
    for name in ("bce", "focal", "bce_focal", "ce", "soft_auc"):
        loss = build_loss({"name": name, "label_smoothing": 0.05, "soft_auc_weight": 0.1})(_out(logits), target)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(logits.grad).all(), name
        logits.grad = None


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"name": "hinge"}, "unknown loss name"),
        ({"name": "bce", "smoothing": 0.1}, "unknown loss config key"),
        ({"name": "bce", "label_smoothing": 1.0}, "label_smoothing"),
    ],
)
def test_bad_loss_config_is_rejected(cfg, message):
    with pytest.raises(ValueError, match=message):
        build_loss(cfg)


def test_shape_mismatch_is_reported():
    with pytest.raises(ValueError, match="clip logits"):
        build_loss({"name": "bce"})(_out(), torch.zeros(2, 3))


def test_params_loss_section_builds():
    params = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    cfg = params["loss"] if "loss" in params else params["train"]["loss"]
    loss = build_loss(cfg)
    assert torch.isfinite(loss(_out(), TARGET))
