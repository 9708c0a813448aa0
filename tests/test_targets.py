"""Tests for birdclef.train.targets.make_targets."""

from __future__ import annotations

import pytest
import torch

from birdclef.train.targets import make_targets


def test_primary_and_secondary_with_float_value():
    target, mask = make_targets([0, 2, -1], [[3], [], [1]], num_classes=4, secondary_value=0.5)
    expected = torch.tensor([[1.0, 0.0, 0.0, 0.5], [0.0, 0.0, 1.0, 0.0], [0.0, 0.5, 0.0, 0.0]])
    torch.testing.assert_close(target, expected)
    torch.testing.assert_close(mask, torch.ones(3, 4))
    assert target.dtype == torch.float32 and mask.dtype == torch.float32


def test_mask_mode_excludes_secondary_cells():
    target, mask = make_targets([1, 0], [[0, 2], []], num_classes=3, secondary_value="mask")
    torch.testing.assert_close(target, torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]))
    torch.testing.assert_close(mask, torch.tensor([[0.0, 1.0, 0.0], [1.0, 1.0, 1.0]]))


def test_primary_wins_over_secondary_of_the_same_class():
    for value in (0.3, "mask"):
        target, mask = make_targets([1], [[1]], num_classes=2, secondary_value=value)
        assert target[0, 1] == 1.0 and mask[0, 1] == 1.0


@pytest.mark.parametrize(
    ("primary", "secondary", "value", "message"),
    [
        ([5], [[]], 1.0, "row 0: primary class index 5"),
        ([0, 1], [[], [9]], 1.0, "row 1: secondary class index 9"),
        ([0], [[], []], 1.0, "1 primary labels but 2"),
        ([0], [[1]], 1.5, "secondary_value"),
        ([0], [[1]], "drop", "secondary_value"),
    ],
)
def test_bad_input_is_rejected_with_the_row(primary, secondary, value, message):
    with pytest.raises(ValueError, match=message):
        make_targets(primary, secondary, num_classes=3, secondary_value=value)
