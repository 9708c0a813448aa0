"""P10 mutual learning (2025 rank 8, after the 2023 solutions): two members trained together, each also fitting
the other's predictions through a symmetric binary KL term, in the one ``fit()`` loop."""

from __future__ import annotations

import torch
from torch import nn

from birdclef.train.distill import symmetric_binary_kl


class MutualPair(nn.Module):
    """Two models on the same batch: ``forward`` returns the first's outputs plus ``"peer"``: the second's.

    Evaluation and checkpoints use each model on its own (``pair.a``, ``pair.b``); the pair only exists to train.
    Each model keeps its own mel front end, so the two members may differ in backbone and mel config.
    """

    def __init__(self, a: nn.Module, b: nn.Module) -> None:
        super().__init__()
        self.a = a
        self.b = b

    def forward(self, wave: torch.Tensor, spec_augment=None) -> dict:
        """Args: wave (B, samples). Returns: ``{"clip", "frame", ...}`` of ``a`` and ``"peer"``: ``b``'s dict."""
        out = dict(self.a(wave, spec_augment=spec_augment))
        out["peer"] = self.b(wave, spec_augment=spec_augment)
        return out


class MutualLoss(nn.Module):
    """``base(a) + base(b) + weight x symmetric KL(p_a, p_b)`` over the clip probabilities.

    Both models get the gradient of the KL term (neither is a fixed teacher): each is pulled towards the other's
    current predictions, which is what makes two members learn together rather than one distil the other.
    """

    def __init__(self, base: nn.Module, weight: float = 1.0) -> None:
        super().__init__()
        if weight < 0:
            raise ValueError(f"train.mutual.weight must be >= 0, got {weight}")
        self.base = base
        self.weight = float(weight)

    def forward(self, out, target, mask=None, weight=None, **extra) -> torch.Tensor:
        """Args as the base loss; ``out["peer"]`` holds the second model's outputs. Returns: scalar."""
        peer = out["peer"]
        own = {k: v for k, v in out.items() if k != "peer"}
        loss = self.base(own, target, mask, weight, **extra) + self.base(peer, target, mask, weight, **extra)
        if self.weight > 0:
            loss = loss + self.weight * symmetric_binary_kl(own["clip"], torch.sigmoid(peer["clip"].float()))
        return loss
