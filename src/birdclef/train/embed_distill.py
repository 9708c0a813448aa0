"""T1 embedding distillation: a student backbone + projection head learns a foundation teacher's window embeddings.

BirdCLEF+ 2026 (3rd place: 13 of 14 models; 5th: about half its single-model gain) first trained each student
backbone to match Perch v2's 1536-d embeddings with a cosine loss on focal and soundscape crops, then fine-tuned it
on labels. Here the teacher stage writes one embedding per 5-s window (``birdclef.teachers.outputs``);
:func:`distill_member` trains a member's backbone on them through the one ``fit()`` loop and saves it as a
checkpoint without classes, which an iteration's ``init_from: build/distill/{model}/model.pt`` fine-tunes with a
fresh head (``member._initialise``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from birdclef import SAMPLE_RATE, WINDOW_SECONDS
from birdclef.models import BirdModel
from birdclef.train.datasets import WaveSource, tile_to


@dataclass(frozen=True)
class EmbeddingRows:
    """Where each target embedding's audio is: ``keys`` (cache keys), ``starts_s`` (seconds into the entry)."""

    keys: np.ndarray
    starts_s: np.ndarray
    embeddings: np.ndarray  # (rows, D) float32

    def __post_init__(self) -> None:
        if not (len(self.keys) == len(self.starts_s) == len(self.embeddings)):
            raise ValueError("embedding rows: keys, starts and embeddings differ in length")

    def split(self, holdout: float, seed: int) -> tuple[EmbeddingRows, EmbeddingRows | None]:
        """Rows split by cache key (a file's windows stay together): (train, held out or None)."""
        if holdout <= 0:
            return self, None
        files = np.unique(self.keys)
        rng = np.random.default_rng(seed)
        n_out = max(1, int(round(holdout * len(files)))) if len(files) > 1 else 0
        out = set(rng.permutation(files)[:n_out].tolist())
        held = np.isin(self.keys, list(out))
        if not held.any():
            return self, None
        return self._take(~held), self._take(held)

    def _take(self, m: np.ndarray) -> EmbeddingRows:
        return EmbeddingRows(self.keys[m], self.starts_s[m], self.embeddings[m])

    def minus(self, mean: np.ndarray) -> EmbeddingRows:
        """The same rows with ``mean`` (D,) subtracted from every embedding."""
        return EmbeddingRows(self.keys, self.starts_s, (self.embeddings - mean[None, :]).astype(np.float32))


TARGETS = ("raw", "centered")
"""``distill.target``: the teacher's embeddings as they are, or minus their mean over the training rows."""


def centre_targets(
    train: EmbeddingRows, held: EmbeddingRows | None
) -> tuple[EmbeddingRows, EmbeddingRows | None, np.ndarray]:
    """Subtract the training rows' mean embedding from the training and the held-out targets.

    BirdNET's embeddings are non-negative pooled activations: on the real-audio benchmark every window sits at
    cosine 0.86 to the mean embedding, so a student that outputs the mean already scores ``1 - cos`` = 0.14 and the
    loss barely asks for what tells windows apart. Centred, the mean predictor scores cosine 0 and the loss is about
    the differences between windows (the held-out rows use the training mean: nothing of them leaks).

    Returns:
        ``(train, held, mean (D,) float32)``.
    """
    mean = train.embeddings.astype(np.float64).mean(axis=0).astype(np.float32)
    return train.minus(mean), held.minus(mean) if held is not None else None, mean


def embedding_rows(tables: Sequence[pd.DataFrame], embeddings: Sequence[np.ndarray], id_columns: Sequence[str]):
    """Stack the teacher stage's splits into one :class:`EmbeddingRows` (rows with a non-finite embedding dropped)."""
    keys = np.concatenate([t[c].astype(str).to_numpy() for t, c in zip(tables, id_columns, strict=True)])
    starts = np.concatenate([t["start_s"].to_numpy(dtype=np.float64) for t in tables])
    emb = np.concatenate([np.asarray(e, dtype=np.float32) for e in embeddings])
    ok = np.isfinite(emb).all(axis=1) & (np.abs(emb).sum(axis=1) > 0)
    return EmbeddingRows(keys[ok], starts[ok], emb[ok])


class EmbeddingDataset(Dataset):
    """5-s windows of the waveform cache with their teacher embedding as target.

    Items are ``(row, item_seed)`` pairs as for :class:`~birdclef.train.datasets.FocalDataset`; the crop is the
    teacher's own window (the embedding describes exactly it), so the seed does not move it.

    Returns (per item): ``wave`` (samples,) float32, ``target`` (D,), ``mask`` (D,) ones, ``weight`` () 1.
    """

    def __init__(self, rows: EmbeddingRows, cache: WaveSource) -> None:
        self.rows = rows
        self.cache = cache
        self.crop = WINDOW_SECONDS * SAMPLE_RATE
        # fit() draws rows through the class-balance sampler: one pseudo-class, one copy each.
        self.df = pd.DataFrame({"primary_label": "_embedding", "copies": np.ones(len(rows.keys), dtype=int)})

    def __len__(self) -> int:
        return len(self.rows.keys)

    def __getitem__(self, item: tuple[int, int] | int) -> dict[str, Any]:
        row = item[0] if isinstance(item, tuple) else item
        key = str(self.rows.keys[row])
        start = int(round(float(self.rows.starts_s[row]) * SAMPLE_RATE))
        wave = tile_to(self.cache.read(key, start, self.crop), self.crop)
        target = torch.from_numpy(self.rows.embeddings[row])
        return {"wave": torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)), "target": target,
                "mask": torch.ones_like(target), "weight": torch.tensor(1.0)}


class EmbeddingStudent(nn.Module):
    """A member's backbone + a linear projection head onto the teacher's embedding space.

    ``forward`` returns ``{"clip": (B, D) projected embeddings, "frame": (B, 1, D)}`` so ``fit()`` treats it as any
    model; the backbone is average-pooled over frequency and time first.
    """

    def __init__(self, model: BirdModel, dim: int) -> None:
        super().__init__()
        self.model = model
        self.proj = nn.Linear(int(model.backbone.num_features), int(dim))

    def forward(self, wave: torch.Tensor, spec_augment=None) -> dict[str, torch.Tensor]:
        """Args: wave (B, samples) at 32 kHz. Returns: clip (B, D), frame (B, 1, D)."""
        mel = self.model.frontend(wave)
        if spec_augment is not None:
            mel = spec_augment(mel)
        pooled = self.model.forward_features(mel).mean(dim=(2, 3))
        emb = self.proj(pooled)
        return {"clip": emb, "frame": emb[:, None, :]}


class CosineLoss(nn.Module):
    """Weighted mean over samples of 1 - cos(student embedding, teacher embedding)."""

    def forward(self, out, target, mask=None, weight=None) -> torch.Tensor:
        """Args: out ``{"clip": (B, D)}``, target (B, D), mask unused (every dimension counts), weight (B,)."""
        loss = 1.0 - F.cosine_similarity(out["clip"].float(), target.float(), dim=1, eps=1e-8)
        if weight is not None:
            return (loss * weight.to(loss.dtype)).sum() / weight.sum().clamp_min(1e-8)
        return loss.mean()


def mean_cosine(student: EmbeddingStudent, dataset: EmbeddingDataset, device: str = "cpu", batch: int = 32) -> float:
    """Mean cosine similarity between the student's and the teacher's embeddings over ``dataset`` (eval mode)."""
    was = student.training
    student.eval()
    sims = []
    with torch.no_grad():
        for lo in range(0, len(dataset), batch):
            items = [dataset[i] for i in range(lo, min(lo + batch, len(dataset)))]
            wave = torch.stack([i["wave"] for i in items]).to(device)
            target = torch.stack([i["target"] for i in items]).to(device)
            sims.append(F.cosine_similarity(student(wave)["clip"].float(), target, dim=1).cpu())
    student.train(was)
    return float(torch.cat(sims).mean()) if sims else float("nan")


def distill_member(
    model: BirdModel,
    rows: EmbeddingRows,
    cache: WaveSource,
    loop: Mapping[str, Any],
    *,
    holdout: float = 0.1,
    seed: int = 0,
    target: str = "raw",
    resume_dir=None,
    fingerprint: str = "",
    run=None,
    device: str = "cpu",
) -> tuple[BirdModel, dict[str, float]]:
    """Train ``model``'s backbone to predict the teacher's embeddings; returns the model and metrics.

    Args:
        model: a freshly created member (its class head is not trained here).
        rows: target embeddings and where their audio is.
        cache: waveform cache holding ``rows.keys``.
        loop: ``train.loop`` settings (``FitConfig``).
        holdout: share of files held out for ``val_cosine``.
        seed: holdout draw.
        target: ``raw`` | ``centered`` (:func:`centre_targets`; ``val_cosine`` is then on centred targets too).
        resume_dir, fingerprint, run, device: as for ``fit``.

    Returns:
        The model with distilled backbone weights (``classes`` None: the fine-tuning iteration makes its head), and
        ``{"val_cosine", "train_cosine_first_epoch"..., "rows"}`` metrics.
    """
    from birdclef.train.fit import FitConfig, fit

    if target not in TARGETS:
        raise ValueError(f"distill.target must be one of {', '.join(TARGETS)}, not {target!r}")
    train_rows, held_rows = rows.split(holdout, seed)
    if target == "centered":
        train_rows, held_rows, _ = centre_targets(train_rows, held_rows)
    train_set = EmbeddingDataset(train_rows, cache)
    held = EmbeddingDataset(held_rows, cache) if held_rows is not None else None
    student = EmbeddingStudent(model, rows.embeddings.shape[1])
    cfg = FitConfig.from_dict({**dict(loop), "balance": "none"})

    def evaluate(net: nn.Module, epoch: int) -> dict[str, float]:
        return {"val_cosine": mean_cosine(net, held, device)} if held is not None else {}

    result = fit(student, train_set, cfg, CosineLoss(), evaluate=evaluate, resume_dir=resume_dir,
                 fingerprint=fingerprint, run=run, device=device)
    model.classes = None
    metrics = {"rows": int(len(rows.keys)), "train_rows": int(len(train_rows.keys)),
               "train_loss_last": float(result.history[-1]["train_loss"]) if result.history else float("nan")}
    if held is not None:
        metrics["val_cosine"] = mean_cosine(student, held, device)
    return model.cpu(), metrics


@dataclass(frozen=True)
class DistillParams:
    """The ``distill:`` params section (T1).

    Attributes:
        enabled: off writes a fixed marker (the train stages depend on the folder either way).
        members: model names (keys of ``models``) to distil, one checkpoint each.
        splits: teacher-stage splits whose window embeddings are targets (``segment``: focal crops,
            ``train_soundscape``: soundscape crops); each must be in ``teacher.splits``.
        holdout: share of files held out for ``val_cosine``.
        seed: holdout draw.
        target: ``raw`` (the teacher's embeddings) | ``centered`` (minus their training mean, :func:`centre_targets`).
        train: ``train.*`` overrides for the distillation (e.g. ``{loop: {epochs: 20}}``).
    """

    enabled: bool = False
    members: tuple[str, ...] = ()
    splits: tuple[str, ...] = ("segment", "train_soundscape")
    holdout: float = 0.1
    seed: int = 0
    target: str = "raw"
    train: Mapping[str, Any] | None = None

    @classmethod
    def from_dict(cls, section: Mapping[str, Any] | None) -> DistillParams:
        """Build from params, naming every unknown key and bad value."""
        section = dict(section or {})
        known = ("enabled", "members", "splits", "holdout", "seed", "target", "train")
        errors = [f"unknown key distill.{k}; valid: {', '.join(known)}" for k in sorted(set(section) - set(known))]
        for key in ("members", "splits"):
            value = section.get(key, [])
            if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
                errors.append(f"distill.{key} must be a list of names, got {value!r}")
        if not 0.0 <= float(section.get("holdout", 0.1)) < 1.0:
            errors.append(f"distill.holdout must be in [0, 1), got {section['holdout']}")
        if section.get("target", "raw") not in TARGETS:
            errors.append(f"distill.target must be one of {', '.join(TARGETS)}, got {section['target']!r}")
        if not isinstance(section.get("train", {}) or {}, Mapping):
            errors.append("distill.train must be a mapping of train.* overrides")
        if section.get("enabled") and not section.get("members"):
            errors.append("distill.enabled needs distill.members")
        if errors:
            raise ValueError("; ".join(errors))
        return cls(
            enabled=bool(section.get("enabled", False)),
            members=tuple(section.get("members", ())),
            splits=tuple(section.get("splits", cls.splits)),
            holdout=float(section.get("holdout", 0.1)),
            seed=int(section.get("seed", 0)),
            target=str(section.get("target", "raw")),
            train=dict(section.get("train") or {}),
        )


def run_distill(params: Mapping[str, Any], teacher_dir, cache: WaveSource, out, resume, run=None, device="cpu"):
    """Distil every ``distill.members`` model from the teacher stage's embeddings into ``out/<model>/model.pt``.

    Returns:
        ``{<model>: metrics}``.

    Raises:
        FileNotFoundError: the teacher stage ran off or without one of ``distill.splits``.
    """
    from pathlib import Path

    from birdclef.dist import fingerprint
    from birdclef.io import merged
    from birdclef.models import create_model, save_checkpoint
    from birdclef.teachers import load_outputs

    cfg = DistillParams.from_dict(params.get("distill"))
    outputs = [load_outputs(teacher_dir, split) for split in cfg.splits]
    rows = embedding_rows([o.table for o in outputs], [o.embeddings for o in outputs],
                          [o.id_column for o in outputs])
    if len(rows.keys) == 0:
        raise ValueError(f"{teacher_dir}: no usable teacher embeddings in {list(cfg.splits)}")
    tcfg = merged(params["train"], cfg.train or {})
    # A resume checkpoint must match the targets as well as the settings.
    digest = hashlib.sha256(rows.embeddings.tobytes() + "|".join(map(str, rows.keys)).encode()).hexdigest()
    results = {}
    for name in cfg.members:
        model_cfg = dict(params["models"][name])
        mel_cfg = dict(params["mels"][model_cfg.pop("mel")])
        model_cfg.pop("classes", None)
        torch.manual_seed(int(tcfg["loop"].get("seed", 0)))
        model = create_model(model_cfg, 1, mel_cfg)  # the class head is re-made by the fine-tuning iteration
        model, metrics = distill_member(
            model, rows, cache, tcfg["loop"], holdout=cfg.holdout, seed=cfg.seed, target=cfg.target,
            resume_dir=Path(resume) / name,
            fingerprint=fingerprint(name, model_cfg, mel_cfg, tcfg, digest, cfg.target),
            run=run, device=device,
        )
        save_checkpoint(Path(out) / name / "model.pt", model, {"distilled_from": str(teacher_dir), **metrics})
        results[name] = metrics
    return results
