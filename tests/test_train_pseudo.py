"""Tests for pseudo-label transforms (P2-P5) and their statistics."""

import numpy as np
import pytest

from birdclef.train.pseudo import label_stats, transform


@pytest.fixture
def windows():
    rng = np.random.default_rng(0)
    return rng.random((3, 12, 5)).astype(np.float32) * 0.8


def test_power_transform_matches_formula(windows):
    out = transform(windows, {}, tau=0.65)
    np.testing.assert_allclose(out.probs, windows ** (1 / 0.65), rtol=1e-5)
    assert out.keep.all() and (out.weight == 1).all()


def test_identity_with_tau_one_and_no_steps(windows):
    np.testing.assert_allclose(transform(windows, {}, 1.0).probs, windows, rtol=1e-6)


def test_file_blend_and_min_norm(windows):
    blended = transform(windows, {"file_blend": 0.3}).probs
    np.testing.assert_allclose(blended, 0.7 * windows + 0.3 * windows.mean(axis=1, keepdims=True), rtol=1e-5)
    normed = transform(windows, {"min_norm": True}).probs
    np.testing.assert_allclose(normed.min(axis=1), 0.0, atol=1e-7)


def test_thresholds(windows):
    low = transform(windows, {"low_threshold": 0.3}).probs
    assert ((low == 0) | (low >= 0.3)).all()
    high = transform(windows, {"high_threshold": 0.7})
    assert (high.probs[high.keep].max(axis=1) > 0.7).all()
    assert not high.keep.all()
    hard = transform(windows, {"hard_threshold": 0.4}).probs
    assert set(np.unique(hard)) <= {0.0, 1.0}


def test_entropy_downweights_and_drop_bottom(windows):
    ent = transform(windows, {"entropy": {"enabled": True, "max_entropy": 0.5, "weight": 0.25}})
    assert set(np.unique(ent.weight)) <= {0.25, 1.0} and (ent.weight == 0.25).any()
    dropped = transform(windows, {"drop_bottom": 0.25})
    assert dropped.keep.sum() == windows.shape[0] * windows.shape[1] - 9
    kept_sums = windows.sum(axis=2)[dropped.keep]
    assert kept_sums.min() >= windows.sum(axis=2)[~dropped.keep].max()


def test_sampler_weight_is_sum_of_per_species_max(windows):
    out = transform(windows, {})
    np.testing.assert_allclose(out.sampler_weights(), windows.max(axis=1).sum(axis=1), rtol=1e-5)


def test_label_stats(windows):
    stats = label_stats(transform(windows, {}))
    assert stats["windows"] == 36 and stats["windows_kept"] == 36
    assert 0 < stats["mean_max_prob"] <= 0.8
    assert stats["species_ever_above_0_5"] <= 5


def test_bad_tau():
    with pytest.raises(ValueError, match="tau"):
        transform(np.zeros((1, 2, 3)), {}, tau=0)


def test_confident_split_masks_the_middle_instead_of_zeroing_it(windows):
    """P11 (rank 10): above high -> 1, below low -> 0, between -> NaN (unknown, out of the loss)."""
    out = transform(windows, {"confident_split": {"enabled": True, "low": 0.2, "high": 0.6}})
    np.testing.assert_array_equal(out.probs[windows >= 0.6], 1.0)
    np.testing.assert_array_equal(out.probs[windows <= 0.2], 0.0)
    middle = (windows > 0.2) & (windows < 0.6)
    assert middle.any() and np.isnan(out.probs[middle]).all()
    assert not np.isnan(out.probs[~middle]).any()
    with pytest.raises(ValueError, match="low < high"):
        transform(windows, {"confident_split": {"enabled": True, "low": 0.6, "high": 0.2}})


def test_unknown_cells_stay_unknown_through_every_step(windows):
    w = windows.copy()
    w[:, :, 2] = np.nan
    cfg = {"file_blend": 0.3, "min_norm": True, "low_threshold": 0.1, "hard_threshold": 0.3,
           "entropy": {"enabled": True, "max_entropy": 0.5, "weight": 0.5}, "drop_bottom": 0.1}
    out = transform(w, cfg, tau=0.65)
    assert np.isnan(out.probs[:, :, 2]).all()
    assert not np.isnan(np.delete(out.probs, 2, axis=2)).any()
    assert np.isfinite(out.sampler_weights()).all() and np.isfinite(out.weight).all()


def test_file_blend_takes_a_given_file_average(windows):
    mean = np.full((3, 5), 0.5, dtype=np.float32)
    out = transform(windows, {"file_blend": 0.3}, file_mean=mean)
    np.testing.assert_allclose(out.probs, 0.7 * windows + 0.15, rtol=1e-5)
    with pytest.raises(ValueError, match="file_mean"):
        transform(windows, {"file_blend": 0.3}, file_mean=mean[:, :2])
