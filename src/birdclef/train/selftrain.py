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

    def __call__(self, batch: Batch, gen: torch.Generator, rng: np.random.Generator) -> Batch:
        """Apply the policy to a collated batch (``wave`` (B, N), ``target``/``mask`` (B, C), ``weight`` (B,))."""
        n = batch["wave"].shape[0]
        batch = {k: v.clone() for k, v in batch.items()}
        if self.policy == "mixup":
            chosen = np.flatnonzero(rng.random(n) < self.share)
            if len(chosen):
                waves, labels, _ = self.bank.sample(len(chosen), rng)
                idx = torch.from_numpy(chosen)
                w, y = mix(batch["wave"][idx], batch["target"][idx], waves, labels, self.weight, self.label_mode)
                batch["wave"][idx], batch["target"][idx] = w, y
        elif self.policy == "concat":
            k = int(round(self.share * n))
            if k:
                waves, labels, lw = self.bank.sample(k, rng)
                batch["wave"][n - k :] = waves
                batch["target"][n - k :] = labels
                batch["mask"][n - k :] = 1.0
                batch["weight"][n - k :] = lw
        else:
            chosen = np.flatnonzero(rng.random(n) < self.replace_p)
            primary = batch["target"][chosen].argmax(dim=1).tolist() if len(chosen) else []
            for i, crop in zip(chosen, self.bank.sample_class(primary, self.replace_min_prob, rng), strict=True):
                if crop is None:
                    continue
                wave, label, lw = crop
                batch["wave"][i] = torch.from_numpy(wave)
                batch["target"][i] = torch.from_numpy(label)
                batch["mask"][i] = 1.0
                batch["weight"][i] = lw
        return batch
