"""Teacher-in-the-loop targets: self-distillation on train_audio (P6) and the online teacher with KL (P7).

Both run a frozen teacher (the same model of the previous iteration) on every training batch, on exactly the
waveform the student sees (after pseudo mixing and augmentation), and rewrite the targets:

- ``blend`` (P6, rank 5): classes that are not already positive get ``blend * p_teacher(clip)``, so species the
  recordist did not list as secondary labels are filled in softly; the given labels stay as they are.
- ``online`` (P7, rank 8): hard targets where the teacher is confident in both views,
  ``(p_clip + max_t p_frame) / 2 > threshold`` and ``max_t p_frame > threshold``, plus a symmetric binary KL term
  between the student's and the teacher's clip probabilities (``DistillLoss``, weight ``kl_weight``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

Batch = dict[str, torch.Tensor]
MODES = ("off", "blend", "online")


class TeacherTargets:
    """A training-only batch transform: teacher probabilities rewrite the targets (and ride along for P7's KL).

    Args:
        teacher: the teacher model (eval mode, no gradients); same class list as the student.
        cfg: ``selftrain.distill`` params: ``mode`` (off | blend | online), ``blend``, ``threshold``.
        device: where the teacher runs (``fit`` hands it batches already on the training device).
    """

    def __init__(self, teacher: nn.Module, cfg: Mapping[str, Any], device: str | torch.device = "cpu") -> None:
        self.mode = str(cfg.get("mode", "off"))
        if self.mode not in MODES:
            raise ValueError(f"selftrain.distill.mode must be one of {MODES}, not {self.mode!r}")
        self.blend = float(cfg.get("blend", 0.5))
        self.threshold = float(cfg.get("threshold", 0.4))
        self.device = torch.device(device)
        self.teacher = teacher.eval().to(self.device)
        for p in self.teacher.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def probabilities(self, wave: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher ``(clip (B, C), max over time of frame (B, C))`` probabilities of a (B, samples) batch."""
        out = self.teacher(wave.to(self.device))
        clip = torch.sigmoid(out["clip"].float())
        frame = torch.sigmoid(out["frame"].float()).amax(dim=1) if "frame" in out else clip
        return clip.to(wave.device), frame.to(wave.device)  # back where the batch is

    def __call__(self, batch: Batch, gen: torch.Generator, rng: np.random.Generator) -> Batch:
        """Rewrite ``target`` of a collated batch; ``online`` also adds ``teacher`` (B, C) clip probabilities."""
        if self.mode == "off":
            return batch
        batch = dict(batch)
        clip, frame = self.probabilities(batch["wave"])
        target = batch["target"].float()
        if self.mode == "blend":
            filled = torch.where(target > 0, target, self.blend * clip)
        else:
            confident = ((clip + frame) / 2 > self.threshold) & (frame > self.threshold)
            filled = torch.maximum(target, confident.float())
            batch["teacher"] = clip
        batch["target"] = filled.to(batch["target"].dtype)
        return batch


def symmetric_binary_kl(logits: torch.Tensor, teacher: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Mean over cells of KL(t || s) + KL(s || t) between Bernoulli distributions (P7).

    Args:
        logits: (B, C) student logits.
        teacher: (B, C) teacher probabilities.

    Returns:
        Scalar, 0 when the student's probabilities equal the teacher's.
    """
    s = torch.sigmoid(logits.float()).clamp(eps, 1 - eps)
    t = teacher.float().clamp(eps, 1 - eps)
    kl_ts = t * (t / s).log() + (1 - t) * ((1 - t) / (1 - s)).log()
    kl_st = s * (s / t).log() + (1 - s) * ((1 - s) / (1 - t)).log()
    return (kl_ts + kl_st).mean()


class DistillLoss(nn.Module):
    """``base`` loss plus ``kl_weight`` x symmetric binary KL to the teacher when the batch carries one (P7)."""

    def __init__(self, base: nn.Module, kl_weight: float = 1.0) -> None:
        super().__init__()
        self.base = base
        self.kl_weight = float(kl_weight)

    def forward(
        self,
        out: dict[str, torch.Tensor],
        target: torch.Tensor,
        mask: torch.Tensor | None = None,
        weight: torch.Tensor | None = None,
        teacher: torch.Tensor | None = None,
    ) -> torch.Tensor:
        loss = self.base(out, target, mask, weight)
        if teacher is not None and self.kl_weight > 0:
            loss = loss + self.kl_weight * symmetric_binary_kl(out["clip"], teacher.to(out["clip"].device))
        return loss
