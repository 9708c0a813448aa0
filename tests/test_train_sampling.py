"""Tests for epoch sampling and class balancing."""

import numpy as np
import pytest

from birdclef.train.sampling import EpochSampler, class_balance_weights


def test_balance_modes_give_expected_class_mass():
    labels = ["a"] * 9 + ["b"]
    copies = [1] * 10
    mass = lambda w: (w[:9].sum(), w[9])  # noqa: E731
    assert mass(class_balance_weights(labels, copies, "none")) == pytest.approx((0.9, 0.1))
    assert mass(class_balance_weights(labels, copies, "equal")) == pytest.approx((0.5, 0.5))
    a, b = mass(class_balance_weights(labels, copies, "sqrt"))
    assert a / b == pytest.approx(3.0)


def test_copies_count_as_rows():
    w = class_balance_weights(["a", "b"], [3, 1], "none")
    assert w == pytest.approx([0.75, 0.25])


def test_unknown_mode_is_an_error():
    with pytest.raises(ValueError, match="balance"):
        class_balance_weights(["a"], [1], "log")


def test_epoch_order_depends_only_on_seed_and_epoch_and_resumes_midway():
    w = np.full(20, 0.05)
    s = EpochSampler(w, 12, seed=3, batch_size=4)
    s.set_epoch(2)
    full = list(s)
    s.set_epoch(2, start_batch=2)
    assert list(s) == full[8:]
    s.set_epoch(3)
    assert list(s) != full
    assert len({seed for _, seed in full}) == 12


def test_ranks_split_every_global_batch_between_them():
    w = np.full(20, 0.05)
    single = EpochSampler(w, 12, seed=1, batch_size=4)
    ranks = [EpochSampler(w, 12, seed=1, batch_size=4, rank=r, world=2) for r in range(2)]
    one, r0, r1 = list(single), list(ranks[0]), list(ranks[1])
    for b in range(3):
        assert one[4 * b : 4 * b + 4] == r0[2 * b : 2 * b + 2] + r1[2 * b : 2 * b + 2]
    with pytest.raises(ValueError, match="divisible"):
        EpochSampler(w, 12, seed=1, batch_size=3, world=2)


def test_equal_balance_honours_rare_class_copies():
    """clean.rare_copies = 2 doubles a rare class's share under balance: equal (it used to be cancelled: 0.5)."""
    labels = ["common"] * 9 + ["rare"]
    copies = [1] * 9 + [2]
    w = class_balance_weights(labels, copies, "equal")
    assert w[9] == pytest.approx(2 / 3)  # the rare segment's draw probability: mass 2 against 1
    assert w[:9] == pytest.approx([1 / 27] * 9)
    assert class_balance_weights(labels, [1] * 10, "equal")[9] == pytest.approx(0.5)  # no copies: classes equal
    rows = EpochSampler(w, 10_000, seed=0).rows()
    share = float(np.mean(rows == 9))
    assert abs(share - 2 / 3) < 3 * np.sqrt(2 / 3 * 1 / 3 / 10_000)  # drawn as often, within sampling error


def test_copies_enter_sqrt_balance_before_the_root():
    w = class_balance_weights(["a"] * 8 + ["b"] * 2, [1] * 8 + [2] * 2, "sqrt")
    assert w[:8].sum() / w[8:].sum() == pytest.approx(np.sqrt(8) / np.sqrt(4))
