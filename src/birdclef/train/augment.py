"""Training-only waveform augmentation (TECHNIQUES.md A1-A4, A6-A11) driven by the params ``augment.wave``.

Only the training step calls these (the fit loop's batch transforms and ``spec_augment`` hook); evaluation and
inference never see them. Every random draw comes from the generator passed in, so seeded runs repeat exactly.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch

from birdclef.train.augment_ops import (
    LABEL_MODES,
    NoiseBank,
    add_at_snr,
    beta,
    coin,
    mix,
    mix_labels,
    mix_masks,
    partners,
    random_filter,
    resolve_options,
    section,
    time_cutmix,
    uniform,
)
from birdclef.train.augment_spec import SPEC_DEFAULTS, SpecAugment

__all__ = ["SPEC_DEFAULTS", "WAVE_DEFAULTS", "NoiseBank", "SpecAugment", "WaveAugment", "mix"]

log = logging.getLogger(__name__)

WAVE_DEFAULTS: dict[str, dict[str, Any]] = {
    "time_flip": {"p": 0.5},  # A11
    "filter": {"p": 0.3, "min_bands": 2, "max_bands": 6, "max_db": 20.0},  # A6
    "gain": {"p": 0.5, "min_db": -6.0, "max_db": 6.0},  # A7
    "mixup": {"p": 0.5, "alpha": 1.0, "label": "max"},  # A1
    "hard_mixup": {"p": 0.5, "alpha": 1.0},  # A2
    "sumix": {"p": 0.5, "min_weight": 0.3, "max_weight": 1.0},  # A3
    "cutmix": {"p": 0.5, "min_frac": 0.2, "max_frac": 0.5, "label": "weighted"},  # A4
    "background": {"p": 0.5, "min_snr_db": 0.0, "max_snr_db": 20.0},  # A9
    "voice": {"p": 0.2, "min_snr_db": 5.0, "max_snr_db": 20.0},  # A10
    "noise": {"p": 0.3, "min_snr_db": 10.0, "max_snr_db": 40.0},  # A8
}
"""Options of each waveform technique; the dict order is the order they are applied in."""

_MIXING = ("mixup", "hard_mixup", "sumix", "cutmix")

Batch = dict[str, torch.Tensor]


class WaveAugment:
    """Batch waveform augmentation, each technique applied to each sample with its own probability ``p``.

    Order: time_flip, filter, gain (per sample); mixup, hard_mixup, sumix, cutmix (with a random other sample of
    the batch); background, voice, noise (added at a random SNR). Labels follow the mixing; loss masks too.

    Args:
        cfg: the ``augment`` params section (its ``wave`` part is used) or the ``wave`` part itself. A technique
            missing from it is off; see ``WAVE_DEFAULTS`` for the options of each.
        noise_bank: quiet train-soundscape segments for ``background`` (A9).
        voice_bank: human voice segments for ``voice`` (A10).

    A technique that needs a bank it was not given is switched off with a warning.
    """

    is_augmentation = True

    def __init__(
        self, cfg: Mapping[str, Any] | None, noise_bank: NoiseBank | None = None, voice_bank: NoiseBank | None = None
    ) -> None:
        self.options = resolve_options(section(cfg, "wave"), WAVE_DEFAULTS, "augment.wave")
        self.banks = {"background": noise_bank, "voice": voice_bank}
        for name, bank in self.banks.items():
            if name in self.options and bank is None:
                log.warning("augment.wave.%s is on but no clips were given for it: switched off", name)
                del self.options[name]
        for name, opts in self.options.items():
            _check(name, opts)

    def __call__(self, *args: Any) -> Any:
        """``(wave (B, N), target (B, C), gen) -> (wave, target)``, or, as a fit-loop batch transform,
        ``(batch, gen, rng) -> batch`` (``wave``, ``target`` and ``mask`` replaced; ``rng`` unused)."""
        if isinstance(args[0], Mapping):
            return self.transform_batch(*args)
        wave, target, gen = args
        wave, target, _ = self.apply(wave, target, gen)
        return wave, target

    def transform_batch(self, batch: Mapping[str, torch.Tensor], gen: torch.Generator, rng: Any = None) -> Batch:
        """Augment a collated batch dict; returns a new dict (the input is not modified)."""
        out = dict(batch)
        out["wave"], out["target"], mask = self.apply(batch["wave"], batch["target"], gen, batch.get("mask"))
        if mask is not None:
            out["mask"] = mask
        return out

    def apply(
        self, wave: torch.Tensor, target: torch.Tensor, gen: torch.Generator, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Args: wave (B, N) float, target (B, C) in [0, 1], gen, mask (B, C) or None.

        Returns: new (wave, target, mask) tensors; the inputs are never modified.
        """
        if wave.dim() != 2 or target.dim() != 2 or wave.shape[0] != target.shape[0]:
            raise ValueError(f"expected wave (B, N) and target (B, C), got {tuple(wave.shape)}, {tuple(target.shape)}")
        for name, opts in self.options.items():
            chosen = coin(gen, wave.shape[0], float(opts["p"]), wave.device).nonzero().squeeze(1)
            if chosen.numel() == 0:
                continue
            if name in _MIXING:
                if wave.shape[0] < 2:
                    continue
                wave, target, mask = self._mix(name, opts, wave, target, mask, chosen, gen)
            else:
                wave = wave.clone()
                wave[chosen] = self._single(name, opts, wave[chosen], gen)
        return wave, target, mask

    def _single(self, name: str, opts: dict[str, Any], wave: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """One per-sample technique on the chosen rows (k, N)."""
        k, n, dev = wave.shape[0], wave.shape[1], wave.device
        if name == "time_flip":
            return wave.flip(1)
        if name == "filter":
            return random_filter(wave, gen, int(opts["min_bands"]), int(opts["max_bands"]), float(opts["max_db"]))
        if name == "gain":
            return wave * 10 ** (uniform(gen, k, opts["min_db"], opts["max_db"], dev)[:, None] / 20)
        snr = uniform(gen, k, opts["min_snr_db"], opts["max_snr_db"], dev)
        if name == "noise":
            noise = torch.randn(k, n, generator=gen, device=gen.device).to(dev)
        else:
            noise = self.banks[name].sample(k, n, gen).to(dev)
        return add_at_snr(wave, noise, snr)

    def _mix(
        self,
        name: str,
        opts: dict[str, Any],
        wave: torch.Tensor,
        target: torch.Tensor,
        mask: torch.Tensor | None,
        chosen: torch.Tensor,
        gen: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Mix the chosen rows with a random other row of the (current) batch."""
        other = partners(gen, wave.shape[0], wave.device)[chosen]
        k, dev = chosen.numel(), wave.device
        wa, wb, ya, yb = wave[chosen], wave[other], target[chosen], target[other]
        if name == "mixup":
            new_w, new_y = mix(wa, ya, wb, yb, beta(gen, k, float(opts["alpha"]), dev), opts["label"])
        elif name == "hard_mixup":
            new_w, new_y = mix(wa, ya, wb, yb, beta(gen, k, float(opts["alpha"]), dev), "sum_clip")
        elif name == "sumix":
            c1 = uniform(gen, k, opts["min_weight"], opts["max_weight"], dev)
            c2 = uniform(gen, k, opts["min_weight"], opts["max_weight"], dev)
            new_w, new_y = mix(wa, ya, wb, yb, c1, "sum_clip", weight_b=c2)
        else:  # cutmix
            n = wave.shape[1]
            frac = uniform(gen, k, opts["min_frac"], opts["max_frac"], dev)
            length = (frac * n).round().long()
            start = (uniform(gen, k, 0.0, 1.0, dev) * (n - length + 1)).floor().long().clamp_max(n - 1)
            new_w = time_cutmix(wa, wb, start, length)
            new_y = mix_labels(ya, yb, 1 - length.float() / n, opts["label"])
        wave, target = wave.clone(), target.clone()
        wave[chosen], target[chosen] = new_w.to(wave.dtype), new_y.to(target.dtype)
        if mask is not None:
            mask = mask.clone()
            mask[chosen] = mix_masks(mask[chosen], ya, mask[other], yb)
        return wave, target, mask


def _check(name: str, opts: dict[str, Any]) -> None:
    """Reject option values that cannot work, naming the params key."""
    where = f"augment.wave.{name}"
    for lo, hi in (
        ("min_db", "max_db"),
        ("min_snr_db", "max_snr_db"),
        ("min_weight", "max_weight"),
        ("min_frac", "max_frac"),
        ("min_bands", "max_bands"),
    ):
        if lo in opts and float(opts[lo]) > float(opts[hi]):
            raise ValueError(f"{where}: {lo} {opts[lo]} > {hi} {opts[hi]}")
    if "label" in opts and opts["label"] not in LABEL_MODES:
        raise ValueError(f"{where}.label must be one of {LABEL_MODES}, not {opts['label']!r}")
    if "alpha" in opts and float(opts["alpha"]) <= 0:
        raise ValueError(f"{where}.alpha must be > 0")
    if "min_bands" in opts and int(opts["min_bands"]) < 1:
        raise ValueError(f"{where}.min_bands must be >= 1")
    if "max_frac" in opts and not 0 <= float(opts["min_frac"]) <= float(opts["max_frac"]) <= 1:
        raise ValueError(f"{where}: fractions must lie in [0, 1]")
    if "min_weight" in opts and float(opts["min_weight"]) <= 0:
        raise ValueError(f"{where}.min_weight must be > 0")
