"""Tests for the Noisy Student batch policies (PseudoMixer): values under mixup, replace and concat."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from birdclef import SAMPLE_RATE, WINDOW_SECONDS
from birdclef.train.datasets import PseudoBank
from birdclef.train.losses import BCELoss
from birdclef.train.selftrain import PseudoMixer

from train_fixtures import MemoryCache

WIN = WINDOW_SECONDS * SAMPLE_RATE
C = 4
CLASSES = [f"s{i}" for i in range(C)]


def _bank(weight: float = 1.0, nan_class: int | None = None) -> PseudoBank:
    """Two soundscapes of 4 windows; window w is labelled class w (prob 0.9), audio constant = window code."""
    waves, rows = {}, []
    for f in range(2):
        key = f"ss{f}"
        waves[key] = np.concatenate([np.full(WIN, 0.1 * (f + 1) + 0.01 * w, dtype=np.float32) for w in range(C)])
        for w in range(C):
            probs = np.full(C, 0.05, dtype=np.float32)
            probs[w] = 0.9
            if nan_class is not None:
                probs[nan_class] = np.nan
            window = {"soundscape_id": key, "start_s": float(w * WINDOW_SECONDS),
                      "end_s": float((w + 1) * WINDOW_SECONDS), "weight": weight}
            rows.append({**window, **dict(zip(CLASSES, probs, strict=True))})
    cache = MemoryCache(waves, {k: "train_soundscape" for k in waves})
    return PseudoBank(pd.DataFrame(rows), {"ss0": 1.0, "ss1": 1.0}, cache, CLASSES, 5)


def _batch(n: int = 8, primary: int = 0) -> dict[str, torch.Tensor]:
    target = torch.zeros(n, C)
    target[:, primary] = 1.0
    return {"wave": torch.full((n, WIN), 0.5), "target": target, "mask": torch.ones(n, C), "weight": torch.ones(n)}


def _call(mixer: PseudoMixer, batch: dict[str, torch.Tensor], seed: int = 0) -> dict[str, torch.Tensor]:
    return mixer(batch, torch.Generator().manual_seed(seed), np.random.default_rng(seed))


def test_mixup_mixes_waves_at_the_constant_weight_and_takes_the_label_max():
    mixer = PseudoMixer(_bank(), {"policy": "mixup", "mix_share": 1.0, "mix_weight": 0.5, "label_mode": "max"})
    out = _call(mixer, _batch())
    pseudo = (out["wave"][:, 0] - 0.5 * 0.5) / 0.5  # the pseudo crop's constant value
    for i in range(8):
        w = int(round(float(pseudo[i]) * 100)) % 10  # the window the crop came from (value 0.1 (f + 1) + 0.01 w)
        expected = np.full(C, 0.05, dtype=np.float32)
        expected[w] = 0.9
        expected[0] = 1.0  # the focal primary
        np.testing.assert_allclose(out["target"][i].numpy(), expected, rtol=1e-6)
    assert out["weight"].eq(1.0).all() and out["mask"].eq(1.0).all()


def test_mixup_share_is_the_expected_fraction_of_samples():
    mixer = PseudoMixer(_bank(), {"policy": "mixup", "mix_share": 0.5, "mix_weight": 0.5})
    mixed = 0
    for seed in range(200):
        out = _call(mixer, _batch(), seed)
        mixed += int((out["wave"][:, 0] != 0.5).sum())
    assert abs(mixed / 1600 - 0.5) < 4 * np.sqrt(0.25 / 1600)


def test_entropy_weight_reaches_the_loss_under_mixup():
    """P4 (rank 11): a down-weighted pseudo window scales the loss of every sample it is mixed into."""
    batch = _batch()
    full = _call(PseudoMixer(_bank(weight=1.0), {"policy": "mixup", "mix_share": 1.0}), batch)
    low = _call(PseudoMixer(_bank(weight=0.25), {"policy": "mixup", "mix_share": 1.0}), batch)
    np.testing.assert_allclose(low["weight"].numpy(), 0.25)
    logits = torch.linspace(-2, 2, 8 * C).reshape(8, C)
    loss = BCELoss()
    full_loss = loss(logits, full["target"], full["mask"], full["weight"])
    low_loss = loss(logits, low["target"], low["mask"], low["weight"])
    assert float(low_loss) == pytest.approx(0.25 * float(full_loss), rel=1e-6)


def test_replace_takes_a_crop_of_the_samples_own_class():
    bank = _bank()
    mixer = PseudoMixer(bank, {"policy": "replace", "replace_p": 1.0, "replace_min_prob": 0.5})
    for primary in range(C):
        out = _call(mixer, _batch(primary=primary), seed=primary)
        assert out["target"].argmax(dim=1).eq(primary).all()
        # The audio is that of a window labelled `primary` (window index = class index in _bank).
        window = torch.round((out["wave"][:, 0] * 100) % 10).long()
        assert window.eq(primary).all()
        assert out["target"][:, primary].eq(0.9).all()


def test_replace_keeps_the_sample_when_no_crop_is_confident_enough():
    mixer = PseudoMixer(_bank(), {"policy": "replace", "replace_p": 1.0, "replace_min_prob": 0.95})
    batch = _batch()
    out = _call(mixer, batch)
    torch.testing.assert_close(out["wave"], batch["wave"])
    torch.testing.assert_close(out["target"], batch["target"])


@pytest.mark.parametrize("share, k", [(0.5, 4), (0.25, 2), (1.0, 8)])
def test_concat_replaces_the_last_share_of_the_batch(share, k):
    mixer = PseudoMixer(_bank(weight=0.5), {"policy": "concat", "mix_share": share})
    batch = _batch()
    out = _call(mixer, batch)
    torch.testing.assert_close(out["wave"][: 8 - k], batch["wave"][: 8 - k])
    assert out["weight"][: 8 - k].eq(1.0).all() and out["weight"][8 - k :].eq(0.5).all()
    assert (out["wave"][8 - k :, 0] != 0.5).all()
    assert out["target"][8 - k :].max(dim=1).values.eq(0.9).all()


def test_unknown_pseudo_cells_leave_the_loss_except_under_a_focal_positive():
    bank = _bank(nan_class=2)
    concat = _call(PseudoMixer(bank, {"policy": "concat", "mix_share": 1.0}), _batch())
    assert concat["mask"][:, 2].eq(0).all() and concat["mask"].sum() == 8 * (C - 1)
    mixed = _call(PseudoMixer(bank, {"policy": "mixup", "mix_share": 1.0, "label_mode": "max"}), _batch(primary=2))
    assert mixed["mask"][:, 2].eq(1).all()  # focal positive: max(1, unknown) = 1 is known
    weighted = _call(PseudoMixer(bank, {"policy": "mixup", "mix_share": 1.0, "label_mode": "weighted"}),
                     _batch(primary=2))
    assert weighted["mask"][:, 2].eq(0).all()  # a weighted mean with an unknown is unknown


def test_label_sum_cap_keeps_pseudo_labels_below_the_focal_sum():
    """T4: crop labels sum to 0.9 + 3 x 0.05 = 1.05 > 1 (one focal positive); capped at 0.5 x 1 they sum to 0.5."""
    bank = _bank()
    concat = _call(PseudoMixer(bank, {"policy": "concat", "mix_share": 0.5, "label_sum_cap": 0.5}), _batch())
    np.testing.assert_allclose(concat["target"][4:].sum(dim=1).numpy(), 0.5, rtol=1e-6)
    np.testing.assert_allclose(concat["target"][:4].sum(dim=1).numpy(), 1.0)  # focal samples untouched
    loose = _call(PseudoMixer(bank, {"policy": "concat", "mix_share": 0.5, "label_sum_cap": 2.0}), _batch())
    np.testing.assert_allclose(loose["target"][4:].sum(dim=1).numpy(), 1.05, rtol=1e-6)  # under the cap
    mixed = _call(PseudoMixer(bank, {"policy": "mixup", "mix_share": 1.0, "label_mode": "weighted",
                                     "label_sum_cap": 0.5}), _batch())
    # weighted: 0.5 * focal (sum 1) + 0.5 * capped pseudo (sum 0.5) = 0.75
    np.testing.assert_allclose(mixed["target"].sum(dim=1).numpy(), 0.75, rtol=1e-5)
    with pytest.raises(ValueError, match="label_sum_cap"):
        PseudoMixer(bank, {"label_sum_cap": 0})
