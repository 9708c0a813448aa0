"""Noisy Student batch policies: how pseudo-labelled soundscape crops enter a labelled batch (P1, P4, P8)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from birdclef.train.augment import mix
from birdclef.train.datasets import PseudoBank

POLICIES = ("mixup", "replace", "concat")

Batch = dict[str, torch.Tensor]


class PseudoMixer:
    """A training-only batch transform that brings pseudo-labelled soundscape crops into each batch.

    Policies (``selftrain.policy``):
        - ``mixup`` (P1, rank 1): a share ``mix_share`` of the batch is mixed with a random pseudo crop
          (drawn by the P3 sampler weights) at the constant weight ``mix_weight``; labels combined by
          ``label_mode`` (``max``: the element-wise max, ``weighted``, ``sum_clip``).
        - ``replace`` (P4, rank 2): each sample is replaced, with probability ``replace_p``, by a pseudo crop whose
          argmax class is the sample's primary class and whose max probability is at least ``replace_min_prob``.
        - ``concat`` (P8, rank 7): the last ``mix_share`` of the batch is replaced by pseudo crops, so a batch is
          e.g. 50% soundscape pseudo samples and 50% focal recordings.

    ``label_sum_cap`` (T4, BirdCLEF+ 2026 rank 2; null = off): a pseudo crop's labels are scaled so that their sum
    stays at most ``cap`` times the focal labels' sum (the sample's own under mixup / replace, the batch's mean
    focal sample under concat), so a busy soundscape cannot outweigh the recording it is mixed into.

    Args:
        bank: the pseudo-labelled crops.
        cfg: the ``selftrain`` params.
    """

    def __init__(self, bank: PseudoBank, cfg: Mapping[str, Any]) -> None:
        self.bank = bank
        self.policy = cfg.get("policy", "mixup")
        if self.policy not in POLICIES:
            raise ValueError(f"selftrain.policy must be one of {POLICIES}, not {self.policy!r}")
        self.share = float(cfg.get("mix_share", 1.0))
        self.weight = float(cfg.get("mix_weight", 0.5))
        self.label_mode = cfg.get("label_mode", "max")
        self.replace_p = float(cfg.get("replace_p", 0.4))
        self.replace_min_prob = float(cfg.get("replace_min_prob", 0.5))
        cap = cfg.get("label_sum_cap")
        self.sum_cap = None if cap is None else float(cap)
        if self.sum_cap is not None and self.sum_cap <= 0:
            raise ValueError(f"selftrain.label_sum_cap must be > 0 or null, not {cap!r}")

    def _capped(self, labels: torch.Tensor, known: torch.Tensor, focal_sum: torch.Tensor) -> torch.Tensor:
        """(n, C) pseudo labels scaled down where their known sum exceeds ``sum_cap`` x ``focal_sum`` (n,)."""
        if self.sum_cap is None:
            return labels
        pseudo_sum = (labels * known).sum(dim=1)
        limit = self.sum_cap * focal_sum
        scale = torch.where(pseudo_sum > limit, limit / pseudo_sum.clamp_min(1e-12), torch.ones_like(pseudo_sum))
        return labels * scale[:, None]

    def __call__(self, batch: Batch, gen: torch.Generator, rng: np.random.Generator) -> Batch:
        """Apply the policy to a collated batch (``wave`` (B, N), ``target``/``mask`` (B, C), ``weight`` (B,)).

        A pseudo crop brings its loss weight (entropy selection, P4 rank 11) and its known-cell mask (unknown cells
        of P11 or of a teacher that does not cover a species stay out of the loss) into every sample it enters.
        """
        n = batch["wave"].shape[0]
        dev = batch["wave"].device
        batch = {k: v.clone() for k, v in batch.items()}
        if "mask" not in batch:
            batch["mask"] = torch.ones_like(batch["target"])
        if "weight" not in batch:
            batch["weight"] = torch.ones(n, device=dev)
        if self.policy == "mixup":
            chosen = np.flatnonzero(rng.random(n) < self.share)
            if len(chosen):
                waves, labels, known, lw = (t.to(dev) for t in self.bank.sample(len(chosen), rng))
                idx = torch.from_numpy(chosen).to(dev)
                y_focal, m_focal = batch["target"][idx], batch["mask"][idx]
                labels = self._capped(labels, known, (y_focal * m_focal).sum(dim=1))
                w, y = mix(batch["wave"][idx], y_focal, waves, labels, self.weight, self.label_mode)
                if self.label_mode in ("max", "sum_clip"):
                    # A focal positive stays a positive whatever the pseudo cell: the max / clipped sum is 1.
                    known = torch.maximum(known, (y_focal >= 1.0).to(known.dtype))
                batch["wave"][idx], batch["target"][idx] = w, y
                batch["mask"][idx] = m_focal * known
                batch["weight"][idx] = batch["weight"][idx] * lw
        elif self.policy == "concat":
            k = int(round(self.share * n))
            if k:
                waves, labels, known, lw = (t.to(dev) for t in self.bank.sample(k, rng))
                focal = (batch["target"] * batch["mask"]).sum(dim=1)[: max(n - k, 1)].mean()
                labels = self._capped(labels, known, focal.expand(k))
                batch["wave"][n - k :] = waves
                batch["target"][n - k :] = labels
                batch["mask"][n - k :] = known
                batch["weight"][n - k :] = lw
        else:
            chosen = np.flatnonzero(rng.random(n) < self.replace_p)
            primary = batch["target"][chosen].argmax(dim=1).tolist() if len(chosen) else []
            for i, crop in zip(chosen, self.bank.sample_class(primary, self.replace_min_prob, rng), strict=True):
                if crop is None:
                    continue
                wave, label, known, lw = crop
                label_t, known_t = torch.from_numpy(label).to(dev), torch.from_numpy(known).to(dev)
                focal = (batch["target"][i] * batch["mask"][i]).sum().reshape(1)
                batch["wave"][i] = torch.from_numpy(wave).to(dev)
                batch["target"][i] = self._capped(label_t[None], known_t[None], focal)[0]
                batch["mask"][i] = known_t
                batch["weight"][i] = lw
        return batch
