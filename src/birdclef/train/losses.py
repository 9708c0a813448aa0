"""Training losses (TECHNIQUES.md L1-L7) as tiny modules, combined by ``build_loss`` from the params ``loss:``."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

# Pairs per chunk in the soft AUC, so a batch with many soft positives never builds a huge (P, N) matrix.
_AUC_CHUNK_PAIRS = 1 << 22


def _cells(target: torch.Tensor, mask: torch.Tensor | None, weight: torch.Tensor | None) -> torch.Tensor:
    """Per-cell factor (B, C): the mask times the per-sample weight."""
    factor = torch.ones_like(target) if mask is None else mask.to(target.dtype)
    if weight is not None:
        factor = factor * weight.to(target.dtype).reshape(-1, 1)
    return factor


def _cell_mean(
    loss: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None, weight: torch.Tensor | None
) -> torch.Tensor:
    """Mean over unmasked cells of weight[b] * loss[b, c] (weights scale, they are not renormalised)."""
    count = torch.ones_like(target).sum() if mask is None else mask.to(target.dtype).sum()
    return (loss * _cells(target, mask, weight)).sum() / count.clamp_min(1.0)


class BCELoss(nn.Module):
    """L1: binary cross-entropy on logits, mean over cells."""

    def forward(self, logits, target, mask=None, weight=None) -> torch.Tensor:
        """Args: logits (B, C), target (B, C) in [0, 1], mask (B, C), weight (B,). Returns: scalar."""
        loss = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        return _cell_mean(loss, target, mask, weight)


class FocalLoss(nn.Module):
    """L2: focal BCE, alpha_t * (1 - p_t) ** gamma * BCE, with p_t the probability given to the target."""

    def __init__(self, alpha: float = 0.25, gamma: float = 2.0) -> None:
        super().__init__()
        self.alpha = alpha
        self.gamma = gamma

    def forward(self, logits, target, mask=None, weight=None) -> torch.Tensor:
        """Args as ``BCELoss``; ``alpha < 0`` turns the class-balance factor off."""
        bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        p = torch.sigmoid(logits)
        p_t = p * target + (1 - p) * (1 - target)
        loss = bce * (1 - p_t) ** self.gamma
        if self.alpha >= 0:
            loss = loss * (self.alpha * target + (1 - self.alpha) * (1 - target))
        return _cell_mean(loss, target, mask, weight)


class BCEFocalLoss(nn.Module):
    """L2 (rank 2): BCE + focal BCE, 1:1."""

    def __init__(self, alpha: float = 0.25, gamma: float = 2.0) -> None:
        super().__init__()
        self.bce = BCELoss()
        self.focal = FocalLoss(alpha, gamma)

    def forward(self, logits, target, mask=None, weight=None) -> torch.Tensor:
        """Args as ``BCELoss``."""
        return self.bce(logits, target, mask, weight) + self.focal(logits, target, mask, weight)


class CELoss(nn.Module):
    """L3: cross-entropy over species (softmax) with multi-hot targets normalised to sum 1 per row.

    Masked cells are left out of the softmax. A row without any positive target contributes 0; the mean is
    over all rows, each scaled by its weight.
    """

    def forward(self, logits, target, mask=None, weight=None) -> torch.Tensor:
        """Args as ``BCELoss``."""
        if mask is not None:
            # Half the dtype's minimum: exp() underflows to 0 yet x - logsumexp stays finite (0 * -inf = nan).
            logits = logits.masked_fill(mask <= 0, torch.finfo(logits.dtype).min / 2)
            target = target * (mask > 0)
        dist = target / target.sum(dim=1, keepdim=True).clamp_min(1e-12)
        per_row = -(dist * torch.log_softmax(logits, dim=1)).sum(dim=1)
        if weight is not None:
            per_row = per_row * weight.to(per_row.dtype)
        return per_row.mean()


class SoftAUCLoss(nn.Module):
    """L5 (rank 4): pairwise soft AUC over all (sample, species) cells of the batch.

    With positives P = {y > 0.5} and negatives N = {y < 0.5} among the unmasked cells, the loss is the mean over
    all (i in P, j in N) of (y_i - 0.5)(0.5 - y_j) log(1 + exp(-(s_i - s_j))), each pair also scaled by the two
    cells' sample weights; it is 0 when P or N is empty.
    """

    def forward(self, logits, target, mask=None, weight=None) -> torch.Tensor:
        """Args as ``BCELoss``."""
        scores, y = logits.reshape(-1), target.reshape(-1)
        factor = _cells(target, None, weight).reshape(-1)
        valid = torch.ones_like(y, dtype=torch.bool) if mask is None else mask.reshape(-1) > 0
        pos, neg = valid & (y > 0.5), valid & (y < 0.5)
        n_pos, n_neg = int(pos.sum()), int(neg.sum())
        if n_pos == 0 or n_neg == 0:
            return logits.sum() * 0.0  # keeps the graph (and the device) of a normal loss
        s_pos, s_neg = scores[pos], scores[neg]
        a_pos = (y[pos] - 0.5) * factor[pos]
        a_neg = (0.5 - y[neg]) * factor[neg]
        step = max(1, _AUC_CHUNK_PAIRS // n_neg)
        total = scores.new_zeros(())
        for start in range(0, n_pos, step):
            sp, ap = s_pos[start : start + step], a_pos[start : start + step]
            pair = F.softplus(-(sp[:, None] - s_neg[None, :]))  # log(1 + exp(-(s_i - s_j)))
            total = total + (ap[:, None] * a_neg[None, :] * pair).sum()
        return total / (n_pos * n_neg)


class NegativePenalty(nn.Module):
    """L6 (rank 10): hinge on negative cells' logits above ``margin``: mean over negatives of relu(s - margin)."""

    def __init__(self, margin: float = 0.0) -> None:
        super().__init__()
        self.margin = margin

    def forward(self, logits, target, mask=None, weight=None) -> torch.Tensor:
        """Args as ``BCELoss``; negatives are the unmasked cells with y < 0.5."""
        neg = (target < 0.5).to(logits.dtype)
        if mask is not None:
            neg = neg * (mask > 0)
        return (F.relu(logits - self.margin) * neg * _cells(target, None, weight)).sum() / neg.sum().clamp_min(1.0)


def smooth_labels(target: torch.Tensor, eps: float) -> torch.Tensor:
    """L7: y (1 - eps) + eps * sum_c(y) / C, per row."""
    if eps == 0:
        return target
    return target * (1 - eps) + eps * target.sum(dim=1, keepdim=True) / target.shape[1]


class BirdLoss(nn.Module):
    """The configured training loss on a model's output dict.

    For each scored output (the clip logits, and with ``sed_dual`` also the max over time of the frame logits,
    0.5 each: L4), the loss is main(smoothed target) + soft_auc_weight * soft AUC + neg_weight * negative penalty;
    the extra terms see the unsmoothed target.
    """

    def __init__(
        self,
        main: nn.Module,
        sed_dual: bool = False,
        label_smoothing: float = 0.0,
        soft_auc_weight: float = 0.0,
        neg_weight: float = 0.0,
        neg_margin: float = 0.0,
    ) -> None:
        super().__init__()
        self.main = main
        self.sed_dual = sed_dual
        self.label_smoothing = label_smoothing
        self.soft_auc_weight = soft_auc_weight
        self.soft_auc = SoftAUCLoss()
        self.neg_weight = neg_weight
        self.neg_penalty = NegativePenalty(neg_margin)

    def forward(
        self,
        out: dict[str, torch.Tensor],
        target: torch.Tensor,
        mask: torch.Tensor | None = None,
        weight: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Args:
            out: model output with ``clip`` (B, C) logits and, for ``sed_dual``, ``frame`` (B, T, C) logits.
            target: (B, C) in [0, 1].
            mask: (B, C), 0 leaves a cell out of the loss.
            weight: (B,) per-sample loss weights.

        Returns: scalar loss.
        """
        if out["clip"].shape != target.shape:
            raise ValueError(f"clip logits {tuple(out['clip'].shape)} vs target {tuple(target.shape)}")
        target = target.to(out["clip"].dtype)
        scored = [(1.0, out["clip"])]
        if self.sed_dual:
            scored = [(0.5, out["clip"]), (0.5, out["frame"].amax(dim=1))]
        smoothed = smooth_labels(target, self.label_smoothing)
        total = out["clip"].new_zeros(())
        for share, logits in scored:
            part = self.main(logits, smoothed, mask, weight)
            if self.soft_auc_weight:
                part = part + self.soft_auc_weight * self.soft_auc(logits, target, mask, weight)
            if self.neg_weight:
                part = part + self.neg_weight * self.neg_penalty(logits, target, mask, weight)
            total = total + share * part
        return total


LOSS_NAMES = ("bce", "focal", "bce_focal", "ce", "soft_auc")
"""Main loss names of ``loss.name``."""
LOSS_OPTIONS: dict[str, dict[str, float]] = {
    "focal": {"alpha": 0.25, "gamma": 2.0},
    "neg_penalty": {"weight": 0.0, "margin": 0.0},
}
"""The ``loss`` sub-dicts with their keys and defaults."""
LOSS_KEYS = ("name", "focal", "sed_dual", "label_smoothing", "neg_penalty", "soft_auc_weight")
"""Every key of the params ``loss:`` section."""


def _options(cfg: dict[str, Any], key: str) -> dict[str, float]:
    """A ``loss`` sub-dict over its defaults; an unknown key raises (a typo must not fall back to the default)."""
    given = dict(cfg.get(key) or {})
    unknown = sorted(set(given) - set(LOSS_OPTIONS[key]))
    if unknown:
        raise ValueError(f"unknown loss {key} key(s) {unknown}; known: {sorted(LOSS_OPTIONS[key])}")
    return {**LOSS_OPTIONS[key], **given}


def build_loss(cfg: dict[str, Any]) -> BirdLoss:
    """Build the loss from the params ``loss:`` section.

    Keys: name (bce | focal | bce_focal | ce | soft_auc), focal {alpha, gamma}, sed_dual (bool),
    label_smoothing (eps), neg_penalty {weight, margin (logits)}, soft_auc_weight.
    """
    unknown = set(cfg) - set(LOSS_KEYS)
    if unknown:
        raise ValueError(f"unknown loss config key(s) {sorted(unknown)}; known: {sorted(LOSS_KEYS)}")
    focal = _options(cfg, "focal")
    name = cfg.get("name", "bce")
    mains = {
        "bce": BCELoss,
        "focal": lambda: FocalLoss(float(focal["alpha"]), float(focal["gamma"])),
        "bce_focal": lambda: BCEFocalLoss(float(focal["alpha"]), float(focal["gamma"])),
        "ce": CELoss,
        "soft_auc": SoftAUCLoss,
    }
    if name not in mains:
        raise ValueError(f"unknown loss name {name!r}; choose one of {sorted(mains)}")
    eps = float(cfg.get("label_smoothing", 0.0))
    if not 0.0 <= eps < 1.0:
        raise ValueError(f"loss label_smoothing must be in [0, 1), not {eps}")
    neg = _options(cfg, "neg_penalty")
    return BirdLoss(
        mains[name](),
        sed_dual=bool(cfg.get("sed_dual", False)),
        label_smoothing=eps,
        soft_auc_weight=float(cfg.get("soft_auc_weight", 0.0)),
        neg_weight=float(neg["weight"]),
        neg_margin=float(neg["margin"]),
    )
