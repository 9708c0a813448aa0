"""Tests for P10 mutual learning: the pair's loss values, gradients to both, and two members from one fit()."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from birdclef.models import load_checkpoint
from birdclef.train.losses import BCELoss
from birdclef.train.member import MemberInputs, Peer, train_member
from birdclef.train.mutual import MutualLoss, MutualPair

from train_fixtures import toy_segments

MEL = {"n_fft": 512, "hop_length": 320, "n_mels": 32, "fmin": 40, "fmax": 15000}


class _Clip(torch.nn.Module):
    def forward(self, out, target, mask=None, weight=None):
        return BCELoss()(out["clip"], target, mask, weight)


def test_mutual_loss_is_both_losses_plus_the_weighted_symmetric_kl():
    target = torch.tensor([[1.0, 0.0]])
    a = {"clip": torch.tensor([[2.0, -1.0]], requires_grad=True)}
    b = {"clip": torch.tensor([[0.0, 1.0]], requires_grad=True)}
    base = _Clip()
    pa, pb = torch.sigmoid(a["clip"]), torch.sigmoid(b["clip"])
    kl = (pb * (pb / pa).log() + (1 - pb) * ((1 - pb) / (1 - pa)).log()
          + pa * (pa / pb).log() + (1 - pa) * ((1 - pa) / (1 - pb)).log()).mean()
    for w in (0.0, 0.5, 2.0):
        loss = MutualLoss(base, w)({**a, "peer": b}, target)
        expected = base(a, target) + base(b, target) + w * kl
        assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    MutualLoss(base, 1.0)({**a, "peer": b}, target).backward()
    assert a["clip"].grad.abs().sum() > 0 and b["clip"].grad.abs().sum() > 0  # neither is a frozen teacher
    with pytest.raises(ValueError, match="weight"):
        MutualLoss(base, -1.0)


def test_pair_forward_carries_both_models_outputs():
    a, b = torch.nn.Linear(4, 2), torch.nn.Linear(4, 2)

    class Wrap(torch.nn.Module):
        def __init__(self, lin):
            super().__init__()
            self.lin = lin

        def forward(self, wave, spec_augment=None):
            return {"clip": self.lin(wave), "frame": self.lin(wave)[:, None]}

    pair = MutualPair(Wrap(a), Wrap(b))
    x = torch.randn(3, 4)
    out = pair(x)
    torch.testing.assert_close(out["clip"], a(x))
    torch.testing.assert_close(out["peer"]["clip"], b(x))


def _params(mutual: bool) -> dict:
    model = {"head": "sed", "backbone": "test_efficientnet", "pretrained": False, "mel": "m"}
    return {
        "models": {"tiny": model, "tiny_cnn": {**model, "head": "cnn"}},
        "mels": {"m": MEL},
        "train": {"crop_s": 1.0, "crop_policy": "random", "secondary_value": 0.5, "val_fold": 0,
                  "mutual": {"enabled": mutual, "weight": 1.0},
                  "loop": {"epochs": 1, "batch_size": 4, "progress": False}, "augment": {}, "loss": {"name": "bce"}},
        "selftrain": {},
    }  # fmt: skip


def test_a_mutual_pair_trains_both_members_in_one_fit_and_writes_each(tmp_path):
    segs, cache = toy_segments()
    taxonomy = pd.DataFrame({"primary_label": ["a", "b", "c"], "class_name": ["Aves", "Amphibia", "Aves"]})
    inputs = MemberInputs(segments=segs, taxonomy=taxonomy, cache=cache)
    peer = Peer("it0_tiny_cnn", "tiny_cnn", inputs, tmp_path / "tiny_cnn")
    metrics = train_member("it0_tiny", "tiny", _params(True), {"k": 0}, inputs, tmp_path / "tiny", peer=peer)
    a, _ = load_checkpoint(tmp_path / "tiny" / "model.pt")
    b, _ = load_checkpoint(tmp_path / "tiny_cnn" / "model.pt")
    assert a.cfg.head == "sed" and b.cfg.head == "cnn" and b.classes == ["a", "b", "c"]
    assert 0 <= metrics["val_auc"] <= 1 and 0 <= peer.metrics["val_auc"] <= 1
    assert metrics["train_seconds"] == peer.metrics["train_seconds"]  # one fit for both
    with pytest.raises(ValueError, match="train.mutual"):
        train_member("it0_tiny", "tiny", _params(True), {"k": 0}, inputs, tmp_path / "x")  # on, but no peer
