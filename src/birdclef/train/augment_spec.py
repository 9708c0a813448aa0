"""Training-only mel augmentation: SpecAugment frequency/time masks (A5) and random erasing (A11)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from birdclef.train.augment_ops import coin, integers, resolve_options, section, uniform

SPEC_DEFAULTS: dict[str, dict[str, Any]] = {
    "freq_mask": {"p": 0.3, "count": 3, "max_width": 10},  # A5: up to `count` masks of 1..max_width mel bins
    "time_mask": {"p": 0.3, "count": 3, "max_width": 20},  # A5: up to `count` masks of 1..max_width frames
    "erasing": {"p": 0.25, "min_area": 0.02, "max_area": 0.2, "max_aspect": 3.0},  # A11: one noise rectangle
}
"""Options of each mel technique; the dict order is the order they are applied in."""


class SpecAugment:
    """Mel image augmentation, each technique applied to each sample with its own probability ``p``.

    Masked cells take the clip's own minimum (silence in any mel normalisation); an erased rectangle is filled
    with uniform noise between the clip's minimum and maximum. Masks cover every channel alike.

    Args:
        cfg: the ``augment`` params section (its ``spec`` part is used) or the ``spec`` part itself; a technique
            missing from it is off. See ``SPEC_DEFAULTS``.
    """

    is_augmentation = True

    def __init__(self, cfg: Mapping[str, Any] | None) -> None:
        self.options = resolve_options(section(cfg, "spec"), SPEC_DEFAULTS, "augment.spec")
        for name, opts in self.options.items():
            for key in ("count", "max_width"):
                if key in opts and int(opts[key]) < 1:
                    raise ValueError(f"augment.spec.{name}.{key} must be >= 1, not {opts[key]!r}")
            if name == "erasing" and not (
                0 < float(opts["min_area"]) <= float(opts["max_area"]) <= 1 and float(opts["max_aspect"]) >= 1
            ):
                raise ValueError("augment.spec.erasing: need 0 < min_area <= max_area <= 1 and max_aspect >= 1")

    def __call__(self, mel: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Args: mel (B, channels, n_mels, frames), gen. Returns: a new tensor of the same shape."""
        if mel.dim() != 4:
            raise ValueError(f"SpecAugment expects (B, channels, n_mels, frames), got {tuple(mel.shape)}")
        b, _, n_mels, frames = mel.shape
        dev = mel.device
        for name, opts in self.options.items():
            chosen = coin(gen, b, float(opts["p"]), dev)
            if not bool(chosen.any()):
                continue
            if name == "erasing":
                mel = self._erase(mel, chosen, opts, gen)
                continue
            size = n_mels if name == "freq_mask" else frames
            band = _bands(gen, b, int(opts["count"]), int(opts["max_width"]), size, dev) & chosen[:, None]
            band = band[:, None, :, None] if name == "freq_mask" else band[:, None, None, :]
            mel = torch.where(band, mel.amin(dim=(1, 2, 3), keepdim=True), mel)
        return mel

    @staticmethod
    def _erase(mel: torch.Tensor, chosen: torch.Tensor, opts: dict[str, Any], gen: torch.Generator) -> torch.Tensor:
        """One rectangle of random area and aspect ratio per chosen sample, filled with noise."""
        b, _, n_mels, frames = mel.shape
        dev = mel.device
        area = uniform(gen, b, opts["min_area"], opts["max_area"], dev) * n_mels * frames
        aspect = torch.exp(uniform(gen, b, -math.log(opts["max_aspect"]), math.log(opts["max_aspect"]), dev))
        height = (area * aspect).sqrt().round().clamp(1, n_mels)
        width = (area / aspect).sqrt().round().clamp(1, frames)
        top = (uniform(gen, b, 0.0, 1.0, dev) * (n_mels - height + 1)).floor()
        left = (uniform(gen, b, 0.0, 1.0, dev) * (frames - width + 1)).floor()
        rows = torch.arange(n_mels, device=dev)[None, :]
        cols = torch.arange(frames, device=dev)[None, :]
        in_rows = (rows >= top[:, None]) & (rows < (top + height)[:, None])
        in_cols = (cols >= left[:, None]) & (cols < (left + width)[:, None])
        box = (in_rows[:, :, None] & in_cols[:, None, :] & chosen[:, None, None])[:, None]  # (B, 1, F, T)
        low = mel.amin(dim=(1, 2, 3), keepdim=True)
        high = mel.amax(dim=(1, 2, 3), keepdim=True)
        noise = torch.rand(mel.shape, generator=gen, device=gen.device).to(dev, mel.dtype)
        return torch.where(box, low + noise * (high - low), mel)


def _bands(gen: torch.Generator, b: int, count: int, max_width: int, size: int, dev: torch.device) -> torch.Tensor:
    """(B, size) bool: the union of ``count`` random spans of 1..max_width positions per row."""
    width = integers(gen, b * count, 1, max_width, dev).clamp_max(size).reshape(b, count)
    start = (uniform(gen, b * count, 0.0, 1.0, dev).reshape(b, count) * (size - width + 1)).floor()
    pos = torch.arange(size, device=dev)[None, None, :]
    return ((pos >= start[..., None]) & (pos < (start + width)[..., None])).any(dim=1)
