"""Optimisers, learning-rate schedules, EMA of weights and checkpoint soup (TECHNIQUES.md O1-O3)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

OPTIMIZER_KEYS: dict[str, tuple[str, ...]] = {"adamw": ("lr", "weight_decay"), "radam": ("lr", "weight_decay")}
"""The options each optimiser name takes besides ``name`` (params ``train.loop.optimizer``)."""
SCHEDULER_KEYS: dict[str, tuple[str, ...]] = {
    "cosine": ("warmup_epochs", "restart_epochs", "min_lr"),
    "constant": ("warmup_epochs",),
}
"""The options each schedule name takes besides ``name`` (params ``train.loop.scheduler``)."""
DEFAULT_LR = 1e-3  # the learning rate when none is given (fit's FitConfig default and its schedule's base rate)


def named_options(cfg: Mapping[str, Any], table: Mapping[str, Sequence[str]], what: str, default: str) -> str:
    """The ``name`` of an optimiser or schedule dict, checked with its options against ``table``.

    Raises:
        ValueError: an unknown name, or a key the named one does not take (a typo would fall back to a default).
    """
    name = str(cfg.get("name", default)).lower()
    if name not in table:
        raise ValueError(f"{what}.name must be one of {', '.join(table)}, not {name!r}")
    unknown = sorted(set(cfg) - {"name", *table[name]})
    if unknown:
        raise ValueError(f"{what} {name}: unknown key(s) {unknown}; valid: {', '.join(['name', *table[name]])}")
    return name


def build_optimizer(params: Iterable[nn.Parameter], cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    """AdamW or RAdam from ``{name, lr, weight_decay}`` (see ``OPTIMIZER_KEYS``)."""
    name = named_options(cfg, OPTIMIZER_KEYS, "optimizer", "adamw")
    lr, wd = float(cfg.get("lr", DEFAULT_LR)), float(cfg.get("weight_decay", 1e-4))
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    return torch.optim.RAdam(params, lr=lr, weight_decay=wd, decoupled_weight_decay=True)


def lr_factor(step: int, total: int, warmup: int, cycle: int, min_ratio: float) -> float:
    """Multiplier of the base learning rate at optimiser step ``step``.

    Linear warmup over ``warmup`` steps, then cosine decay to ``min_ratio``; with ``cycle`` > 0 the cosine restarts
    every ``cycle`` steps (warm restarts, rank 1 used 5 epochs).
    """
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    t = step - warmup
    span = cycle if cycle > 0 else max(1, total - warmup)
    pos = (t % span) / span if cycle > 0 else min(1.0, t / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * pos))


def build_scheduler(
    opt: torch.optim.Optimizer, cfg: Mapping[str, Any], steps_per_epoch: int, epochs: int, base_lr: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step schedule: ``{name: cosine, warmup_epochs, restart_epochs, min_lr}`` or ``{name: constant,
    warmup_epochs}`` (linear warmup, then the base rate); see ``SCHEDULER_KEYS``."""
    name = named_options(cfg, SCHEDULER_KEYS, "scheduler", "cosine")
    total = steps_per_epoch * epochs
    warmup = int(round(float(cfg.get("warmup_epochs", 0)) * steps_per_epoch))
    if name == "constant":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (s + 1) / warmup if s < warmup else 1.0)
    cycle = int(round(float(cfg.get("restart_epochs", 0)) * steps_per_epoch))
    min_ratio = float(cfg.get("min_lr", 1e-6)) / base_lr
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total, warmup, cycle, min_ratio))


class EMA:
    """Exponential moving average of a model's floating-point state (O2); buffers are copied, not averaged."""

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        self.decay = float(decay)
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Blend the current weights into the average."""
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].mul_(self.decay).add_(v.detach(), alpha=1.0 - self.decay)
            else:
                self.shadow[k].copy_(v)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged weights."""
        return self.shadow

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Restore averaged weights (resume)."""
        self.shadow = {k: v.clone() for k, v in state.items()}


def soup(states: list[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Uniform average of several state dicts (O3); integer buffers come from the last one."""
    if not states:
        raise ValueError("checkpoint soup needs at least one state")
    out: dict[str, torch.Tensor] = {}
    for k, last in states[-1].items():
        if last.dtype.is_floating_point:
            out[k] = torch.stack([s[k].float() for s in states]).mean(0).to(last.dtype)
        else:
            out[k] = last.clone()
    return out
