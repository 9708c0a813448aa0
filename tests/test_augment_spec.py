"""Tests for birdclef.train.augment_spec.SpecAugment."""

from __future__ import annotations

import pytest
import torch

from birdclef.train.augment_spec import SPEC_DEFAULTS, SpecAugment


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _mel(b: int = 4, c: int = 1, f: int = 32, t: int = 60) -> torch.Tensor:
    return torch.rand(b, c, f, t, generator=_gen(11)) * 0.8 + 0.1  # min 0.1 so masking is visible


@pytest.mark.parametrize("name", list(SPEC_DEFAULTS))
def test_each_technique_changes_the_mel_at_p1_and_nothing_at_p0(name):
    mel = _mel()
    out = SpecAugment({"spec": {name: {"p": 1.0}}})(mel, _gen())
    assert out.shape == mel.shape
    assert all(not torch.equal(out[i], mel[i]) for i in range(mel.shape[0]))  # every sample was hit
    for off in ({"p": 0.0}, {"p": 1.0, "enabled": False}):
        assert torch.equal(SpecAugment({"spec": {name: off}})(mel, _gen()), mel)


@pytest.mark.parametrize("name", list(SPEC_DEFAULTS))
def test_same_seed_same_output(name):
    mel = _mel(b=8)
    aug = SpecAugment({"spec": {name: {"p": 0.5}}})
    assert torch.equal(aug(mel, _gen(3)), aug(mel, _gen(3)))
    assert not torch.equal(aug(mel, _gen(3)), aug(mel, _gen(4)))


def test_frequency_masks_are_whole_bins_at_the_clip_minimum_across_channels():
    mel = _mel(c=3)
    out = SpecAugment({"freq_mask": {"p": 1.0, "count": 3, "max_width": 4}})(mel, _gen(1))
    floor = mel.amin(dim=(1, 2, 3))
    for i in range(mel.shape[0]):
        changed = (out[i] != mel[i]).any(dim=2)  # (channels, bins)
        assert (changed == changed[0]).all()  # same bins in every channel
        bins = changed[0].nonzero().squeeze(1)
        assert 1 <= len(bins) <= 12
        assert (out[i][:, bins] == floor[i]).all()


def test_time_masks_cover_at_most_count_times_width_frames():
    mel = _mel()
    out = SpecAugment({"time_mask": {"p": 1.0, "count": 2, "max_width": 5}})(mel, _gen(2))
    for i in range(mel.shape[0]):
        frames = (out[i] != mel[i]).any(dim=(0, 1)).nonzero().squeeze(1)
        assert 1 <= len(frames) <= 10
        assert (out[i][..., frames] == mel[i].min()).all()


def test_erasing_fills_one_rectangle_with_noise_in_the_clip_range():
    mel = _mel()
    out = SpecAugment({"erasing": {"p": 1.0, "min_area": 0.1, "max_area": 0.1, "max_aspect": 2.0}})(mel, _gen(5))
    for i in range(mel.shape[0]):
        changed = (out[i] != mel[i])[0]
        rows = changed.any(dim=1).nonzero().squeeze(1)
        cols = changed.any(dim=0).nonzero().squeeze(1)
        area = (rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1)
        assert abs(int(area) - 0.1 * 32 * 60) <= 0.1 * 32 * 60 * 0.5  # rounding of height and width
        assert out[i].min() >= mel[i].min() and out[i].max() <= mel[i].max()


def test_defaults_apply_to_whole_augment_section():
    aug = SpecAugment({"wave": {"gain": {}}, "spec": {"freq_mask": {}, "time_mask": {"enabled": False}}})
    assert set(aug.options) == {"freq_mask"} and aug.options["freq_mask"]["max_width"] == 10


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"freq_mask": {"count": 0}}, "count must be >= 1"),
        ({"erasing": {"min_area": 0.5, "max_area": 0.1}}, "erasing"),
        ({"freqmask": {}}, "unknown augmentation"),
    ],
)
def test_bad_options_are_rejected(cfg, message):
    with pytest.raises(ValueError, match=message):
        SpecAugment({"spec": cfg})


def test_wrong_rank_is_rejected():
    with pytest.raises(ValueError, match="SpecAugment expects"):
        SpecAugment({"spec": {"freq_mask": {"p": 1.0}}})(torch.zeros(2, 32, 60), _gen())
