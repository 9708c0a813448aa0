"""The one training loop: every model, fold, iteration and pseudo-label policy goes through fit()."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from birdclef.io import atomic_path
from birdclef.track import NullRun
from birdclef.train.optim import EMA, build_optimizer, build_scheduler, soup
from birdclef.train.sampling import EpochSampler, class_balance_weights, item_seed

Batch = dict[str, torch.Tensor]
BatchTransform = Callable[[Batch, torch.Generator, np.random.Generator], Batch]
"""A training-only batch transform: pseudo-label mixing, waveform augmentation. Never called at evaluation."""


@dataclass
class FitConfig:
    """Settings of :func:`fit` (the ``train.loop`` params)."""

    epochs: int = 10
    batch_size: int = 32
    samples_per_epoch: int = 0  # 0: one pass over the segments, rare-class copies included
    min_samples_per_epoch: int = 0  # floor of that pass: a task of 24 recordings still gets real epochs
    balance: str = "none"  # none | sqrt | equal (S2)
    optimizer: dict[str, Any] = field(default_factory=lambda: {"name": "adamw", "lr": 1e-3, "weight_decay": 1e-4})
    scheduler: dict[str, Any] = field(default_factory=lambda: {"name": "cosine", "warmup_epochs": 1})
    ema: dict[str, Any] = field(default_factory=lambda: {"enabled": False, "decay": 0.999})
    soup: dict[str, Any] = field(default_factory=lambda: {"enabled": False, "last_k": 3})
    grad_accum: int = 1
    amp: bool = True  # mixed precision: on CUDA always, on CPU only with an explicit amp_dtype
    amp_dtype: str = "auto"  # auto (CUDA: bfloat16 where supported, else float16 + GradScaler) | bfloat16 | float16
    seed: int = 0
    num_workers: int = 0
    checkpoint_every: int = 20  # optimiser steps between resume checkpoints
    progress: bool = True

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any]) -> FitConfig:
        """Build from params, rejecting unknown keys."""
        known = {f.name for f in fields(cls)}
        unknown = set(cfg) - known
        if unknown:
            raise ValueError(f"unknown train loop key(s) {sorted(unknown)}; known: {sorted(known)}")
        out = cls(**dict(cfg))
        if out.amp_dtype not in AMP_DTYPES:
            raise ValueError(f"train.loop.amp_dtype must be one of {sorted(AMP_DTYPES)}, not {out.amp_dtype!r}")
        return out


def epoch_samples(cfg: FitConfig, one_pass: int) -> int:
    """Samples drawn per epoch: ``samples_per_epoch`` when set, else one pass with ``min_samples_per_epoch`` as floor.

    One pass over 24 focal recordings is 2 batches of 16: 24 optimiser steps in 12 epochs, far too few for a model
    from random weights (a small real task scored 0.73 that way and 0.84 with 480 samples an epoch). The floor
    leaves larger tasks alone: the demo's pass (384 samples) and the competition's (~28,000) are above it.
    """
    if cfg.samples_per_epoch < 0 or cfg.min_samples_per_epoch < 0:
        raise ValueError("train.loop.samples_per_epoch and min_samples_per_epoch must be >= 0")
    if cfg.samples_per_epoch:
        return cfg.samples_per_epoch
    return max(one_pass, cfg.min_samples_per_epoch)


AMP_DTYPES = {"auto": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


def autocast_dtype(cfg: FitConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of a run, or None for full float32 (O4).

    CUDA: ``auto`` takes bfloat16 where the GPU has it (no overflow, no loss scaling) and float16 with a
    GradScaler elsewhere. CPU: AMP only when ``amp_dtype`` names a dtype (CPU autocast is rarely faster, so
    ``auto`` keeps float32 there). The mel front end always runs in float32 (features/frontend.py).
    """
    if not cfg.amp:
        return None
    named = AMP_DTYPES[cfg.amp_dtype]
    if device.type == "cuda":
        return named or (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    return named


@dataclass
class FitResult:
    """What :func:`fit` returns: final weights (soup > EMA > raw) and the per-epoch history."""

    state_dict: dict[str, torch.Tensor]
    history: list[dict[str, float]]
    seconds: float
    samples_seen: int


def _collate_items(items: Sequence[dict[str, torch.Tensor]]) -> Batch:
    return {k: torch.stack([i[k] for i in items]) for k in items[0]}


def _fingerprint_ok(state: Mapping[str, Any], fingerprint: str) -> bool:
    return state.get("fingerprint") == fingerprint


def fit(
    model: nn.Module,
    train_set: Any,
    cfg: FitConfig,
    loss_fn: nn.Module,
    *,
    transforms: Sequence[BatchTransform] = (),
    spec_augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    evaluate: Callable[[nn.Module, int], dict[str, float]] | None = None,
    resume_dir: Path | None = None,
    fingerprint: str = "",
    run: NullRun | None = None,
    on_step: Callable[[int], None] | None = None,
    device: str | torch.device = "cpu",
) -> FitResult:
    """Train ``model`` on ``train_set`` and return its final weights.

    Args:
        model: a :class:`birdclef.models.BirdModel` (``forward(wave, spec_augment)`` -> ``{"clip", "frame"}``).
        train_set: a dataset addressed by ``(row, item_seed)`` with ``df`` (``primary_label``, ``copies``).
        cfg: loop settings.
        loss_fn: ``loss_fn(out, target, mask, weight)`` -> scalar.
        transforms: training-only batch transforms applied in order (pseudo-label mixing, waveform augmentation).
        spec_augment: training-only spectrogram augmentation ``(mel, generator) -> mel``.
        evaluate: called after each epoch with the evaluation weights (EMA when on) and the epoch; returns metrics.
        resume_dir: where resume checkpoints live; a matching checkpoint there is resumed from.
        fingerprint: identifies the run's settings and data; a checkpoint with another fingerprint is ignored.
        run: experiment recorder (per-epoch metrics).
        on_step: called after every optimiser step with the global step (tests use it to simulate a kill).
        device: torch device.

    Returns:
        The final weights and per-epoch history. Resuming after a kill gives the same weights as an uninterrupted
        run on CPU: every random draw depends only on (seed, epoch, batch).
    """
    run = run or NullRun()
    device = torch.device(device)
    model.to(device)
    distributed = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    t0 = time.perf_counter()
    weights = class_balance_weights(train_set.df["primary_label"], train_set.df["copies"], cfg.balance)
    n_samples = epoch_samples(cfg, int(train_set.df["copies"].sum()))
    batches = max(1, n_samples // cfg.batch_size)
    sampler = EpochSampler(weights, batches * cfg.batch_size, cfg.seed, cfg.batch_size, rank, world)
    accum = max(1, int(cfg.grad_accum))
    steps_per_epoch = max(1, batches // accum)
    opt = build_optimizer(model.parameters(), cfg.optimizer)
    sched = build_scheduler(opt, cfg.scheduler, steps_per_epoch, cfg.epochs, float(cfg.optimizer.get("lr", 1e-3)))
    ema = EMA(model, cfg.ema.get("decay", 0.999)) if cfg.ema.get("enabled") else None
    amp_dtype = autocast_dtype(cfg, device)
    # Loss scaling only for float16 (bfloat16 has float32's exponent range).
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    soup_states: list[dict[str, torch.Tensor]] = []
    history: list[dict[str, float]] = []
    epoch, done_batches, global_step = 0, 0, 0
    losses: list[float] = []  # the current epoch's batch losses: a mid-epoch checkpoint keeps them

    ckpt = resume_dir / "state.pt" if resume_dir else None
    if ckpt and ckpt.exists():
        state = torch.load(ckpt, map_location=device, weights_only=False)
        if _fingerprint_ok(state, fingerprint):
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            scaler.load_state_dict(state["scaler"])
            if ema is not None:
                ema.load_state_dict(state["ema"])
            soup_states, history = state["soup"], state["history"]
            epoch, done_batches, global_step = state["epoch"], state["batches"], state["step"]
            losses = list(state.get("losses", []))  # older checkpoints lack them: the mean of the rest, as before

    # Gradients are averaged over ranks; every rank keeps identical weights, EMA and soup, rank 0 writes them.
    net = nn.parallel.DistributedDataParallel(model) if distributed else model

    def save_resume() -> None:
        if ckpt is None or rank != 0:
            return
        state = {
            "fingerprint": fingerprint,
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "scaler": scaler.state_dict(),
            "ema": ema.state_dict() if ema is not None else None,
            "soup": soup_states,
            "history": history,
            "epoch": epoch,
            "batches": done_batches,
            "step": global_step,
            "losses": losses if done_batches else [],
        }
        with atomic_path(ckpt) as tmp:
            torch.save(state, tmp)

    amp_ctx = (
        (lambda: torch.autocast(device.type, dtype=amp_dtype))
        if amp_dtype is not None
        else (lambda: contextlib.nullcontext())
    )
    while epoch < cfg.epochs:
        model.train()
        sampler.set_epoch(epoch, done_batches)
        loader = DataLoader(
            train_set,
            batch_size=cfg.batch_size // world,
            sampler=sampler,
            num_workers=cfg.num_workers,
            collate_fn=_collate_items,
            drop_last=True,
        )
        bar = tqdm(
            loader,
            total=batches,
            initial=done_batches,
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            disable=not cfg.progress or rank != 0,
            leave=False,
        )
        if not done_batches:
            losses = []
        for batch in bar:
            b = done_batches
            seed = item_seed(cfg.seed, epoch, 1_000_000 + b * world + rank)
            torch.manual_seed(seed)  # dropout / drop_path draws
            gen = torch.Generator().manual_seed(seed)
            rng = np.random.default_rng(seed)
            # Batch transforms (pseudo-label mixing, waveform augmentation, the online teacher) run where the model
            # does: their random draws come from the CPU generators above (the same numbers on every device), the
            # arithmetic on the batch's device (a GPU run no longer filters and mixes audio on one CPU thread).
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            for transform in transforms:
                batch = transform(batch, gen, rng)
            spec = (lambda mel, g=gen: spec_augment(mel, g)) if spec_augment is not None else None
            with amp_ctx():
                out = net(batch["wave"], spec_augment=spec)
                extra = {"teacher": batch["teacher"]} if "teacher" in batch else {}  # P7's KL term (distill.py)
                loss = loss_fn(out, batch["target"], batch.get("mask"), batch.get("weight"), **extra)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite loss at epoch {epoch + 1}, batch {b + 1}")
            scaler.scale(loss / accum).backward()
            losses.append(float(loss.detach()))
            done_batches += 1
            if done_batches % accum == 0 or done_batches == batches:
                scaler.step(opt)
                scaler.update()
                opt.zero_grad(set_to_none=True)
                sched.step()
                if ema is not None:
                    ema.update(model)
                global_step += 1
                if cfg.checkpoint_every and global_step % cfg.checkpoint_every == 0 and done_batches < batches:
                    save_resume()
                if on_step is not None:
                    on_step(global_step)
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}", lr=f"{sched.get_last_lr()[0]:.2e}")
        bar.close()

        eval_state = ema.state_dict() if ema is not None else model.state_dict()
        row: dict[str, float] = {
            "epoch": epoch + 1,
            "train_loss": _mean_over_ranks(float(np.mean(losses)) if losses else float("nan"), distributed),
            "lr": float(sched.get_last_lr()[0]),
        }
        if evaluate is not None and rank == 0:
            row.update(_evaluate_with(model, eval_state, evaluate, epoch + 1))
        history.append(row)
        run.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=epoch + 1)
        if cfg.soup.get("enabled"):
            soup_states.append({k: v.detach().cpu().clone() for k, v in eval_state.items()})
            soup_states = soup_states[-int(cfg.soup.get("last_k", 3)) :]
        epoch += 1
        done_batches = 0
        save_resume()
        if distributed:
            dist.barrier()

    if cfg.soup.get("enabled") and soup_states:
        final = soup(soup_states)
    else:
        final = {k: v.detach().cpu().clone() for k, v in (ema.state_dict() if ema else model.state_dict()).items()}
    model.load_state_dict(final)
    return FitResult(final, history, time.perf_counter() - t0, cfg.epochs * batches * cfg.batch_size)


def _mean_over_ranks(value: float, distributed: bool) -> float:
    if not distributed:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item()) / dist.get_world_size()


def _evaluate_with(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    evaluate: Callable[[nn.Module, int], dict[str, float]],
    epoch: int,
) -> dict[str, float]:
    """Run ``evaluate`` on ``state`` without disturbing the training weights or mode."""
    live = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    model.eval()
    try:
        with torch.no_grad():
            return evaluate(model, epoch)
    finally:
        model.load_state_dict(live)
        model.train()


def clear_resume(resume_dir: Path | None) -> None:
    """Remove the resume checkpoint once the final outputs are written."""
    if resume_dir is not None:
        (resume_dir / "state.pt").unlink(missing_ok=True)
