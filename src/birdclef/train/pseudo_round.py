"""One pseudo-labelling round (the ``pseudo@k`` stage's work): teachers -> window predictions -> soft labels."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from birdclef import WINDOW_SECONDS, dist
from birdclef.io import merged
from birdclef.train.pseudo import PseudoLabels, label_stats, teacher_predictions, transform

SOURCES = ("frame", "clip")


@dataclass
class RoundOutput:
    """What a round writes: the kept windows' labels, per-soundscape sampler weights and flat metrics."""

    table: pd.DataFrame
    sampler: pd.DataFrame
    metrics: dict[str, float]
    labels: PseudoLabels
    raw: np.ndarray


def round_entry(cfg: Mapping[str, Any], k: int) -> dict[str, Any]:
    """The ``pseudo.rounds`` entry of teacher iteration ``k``, its ``transforms`` merged over ``pseudo.transforms``.

    A round may override any transform (``{k: 1, tau: 0.65, transforms: {low_threshold: 0.1}}``), so rank 1's tau
    schedule and a per-round threshold recipe are one params.yaml.
    """
    entry = next((dict(r) for r in cfg["rounds"] if int(r["k"]) == k), None)
    if entry is None:
        raise ValueError(f"params pseudo.rounds has no entry with k = {k}")
    entry["transforms"] = merged(cfg.get("transforms") or {}, entry.get("transforms") or {})
    return entry


def clip_source(predictor: Callable[[np.ndarray], dict[str, np.ndarray]]):
    """A predictor whose frame output is its clip output (``pseudo.source: clip``: label from clip scores)."""

    def predict(wave: np.ndarray) -> dict[str, np.ndarray]:
        out = predictor(wave)
        return {"clip": out["clip"], "frame": out["clip"][:, None, :]}

    return predict


def label_soundscapes(
    predictors: list[Any],
    cache: Any,
    ids: list[str],
    cfg: Mapping[str, Any],
    shards: Path,
    salt: Mapping[str, Any],
) -> tuple[np.ndarray, np.ndarray | None, str] | None:
    """Teacher window predictions of every soundscape, in resumable blocks (``dist.sharded_map``).

    Args:
        predictors: windows.Predictor callables of the teacher members (one class order).
        cache: waveform cache with the soundscapes.
        ids: soundscape keys.
        cfg: the ``pseudo`` params (chunk_s, stride_s, pool, source, block, transforms.file_blend_stride_s).
        shards: folder of finished blocks (kept across a kill).
        salt: what else decides the predictions (teacher checkpoint digests).

    Returns:
        ``(windows (files, windows, C), file_mean (files, C) or None, block key)`` on rank 0, None on other ranks.
        ``file_mean`` is P5's file average over chunks at ``file_blend_stride_s`` (rank 14: 1 s) when set; the
        caller clears the blocks of ``key`` (``dist.clear``) once its outputs are written.
    """
    source = cfg.get("source", "frame")
    if source not in SOURCES:
        raise ValueError(f"pseudo.source must be one of {SOURCES}, not {source!r}")
    if source == "clip":
        predictors = [clip_source(p) for p in predictors]
    fine = float((cfg.get("transforms") or {}).get("file_blend_stride_s") or 0.0)
    chunking = {k: cfg.get(k) for k in ("chunk_s", "stride_s", "pool", "source")}
    key = dist.fingerprint(ids, {**salt, **chunking, "file_stride": fine})

    def block(keys: list[str]) -> list[dict[str, np.ndarray]]:
        w, _ = teacher_predictions(predictors, cache, keys, float(cfg["chunk_s"]), float(cfg["stride_s"]),
                                   cfg.get("pool", "mean"), progress=False)
        out = [{"windows": w[i]} for i in range(len(keys))]
        if fine > 0:
            fw, _ = teacher_predictions(predictors, cache, keys, float(cfg["chunk_s"]), fine, cfg.get("pool", "mean"),
                                        progress=False)
            for i, o in enumerate(out):
                o["file_mean"] = fw[i].mean(axis=0)
        return out

    results = dist.sharded_map(ids, block, shards, key, int(cfg.get("block", 16)), desc="pseudo-labelling")
    if results is None:
        return None
    windows = np.stack([r["windows"] for r in results])
    file_mean = np.stack([r["file_mean"] for r in results]) if fine > 0 else None
    return windows, file_mean, key


def build_round(
    windows: np.ndarray,
    ids: list[str],
    classes: list[str],
    entry: Mapping[str, Any],
    file_mean: np.ndarray | None = None,
    truth: pd.DataFrame | None = None,
) -> RoundOutput:
    """Transform a round's raw teacher windows into the stage outputs.

    Args:
        windows: (files, windows, C) teacher probabilities (NaN: a species no teacher covers).
        ids: soundscape keys, one per file.
        classes: species order.
        entry: the round (``tau`` and merged ``transforms``, see :func:`round_entry`).
        file_mean: (files, C) P5 file averages, or None.
        truth: labelled windows of these soundscapes (submission format), scored against when given.

    Returns:
        The kept windows as a table (``soundscape_id``, ``start_s``, ``end_s``, ``weight``, one column per class,
        NaN for unknown cells), the per-soundscape P3 sampler weights and metrics.
    """
    from birdclef.metric import macro_auc, with_interval

    labels = transform(windows, entry["transforms"], float(entry["tau"]), file_mean)
    n_files, n_win, n_cls = labels.probs.shape
    table = pd.DataFrame(labels.probs.reshape(-1, n_cls), columns=classes)
    table.insert(0, "soundscape_id", np.repeat(ids, n_win))
    table.insert(1, "start_s", np.tile(np.arange(n_win) * WINDOW_SECONDS, n_files).astype(float))
    table.insert(2, "end_s", table["start_s"] + WINDOW_SECONDS)
    table.insert(3, "weight", labels.weight.reshape(-1))
    table = table[labels.keep.reshape(-1)].reset_index(drop=True)
    sampler = pd.DataFrame({"soundscape_id": ids, "sampler_weight": labels.sampler_weights()})
    metrics: dict[str, float] = {"tau": float(entry["tau"]), **label_stats(labels)}
    if truth is not None and len(truth):
        row_ids = [f"{s}_{WINDOW_SECONDS * (i + 1)}" for s in ids for i in range(n_win)]
        for tag, probs in (("raw", windows), ("labels", labels.probs)):
            # Unknown cells rank in the middle: the score says how well the known cells order the windows.
            sub = pd.DataFrame(np.nan_to_num(probs.reshape(-1, n_cls), nan=0.5), columns=classes)
            sub.insert(0, "row_id", row_ids)
            sub = sub[sub["row_id"].isin(set(truth["row_id"]))]
            metrics[f"auc_{tag}"] = macro_auc(truth[["row_id", *classes]], sub)["auc"]
            with_interval(metrics, f"auc_{tag}", truth[["row_id", *classes]], sub)  # 95%, soundscapes resampled
    return RoundOutput(table, sampler, metrics, labels, windows)


def load_teachers(folder: Path, classes: list[str], device: str = "cpu") -> tuple[list[Any], dict[str, Any]]:
    """Predictors of every member checkpoint in a train iteration's folder, on ``device``.

    Returns:
        The predictors (sorted by member name) and the salt that identifies them (checkpoint digests), so a
        retrained teacher never reuses the blocks of an old one.

    Raises:
        SystemExit: no checkpoint in ``folder``, or a member without every species.
    """
    from birdclef.models import load_checkpoint
    from birdclef.train.evaluate import model_predictor

    members = sorted(p.parent.name for p in Path(folder).glob("*/model.pt"))
    if not members:
        raise SystemExit(f"{folder}: no member checkpoints (*/model.pt)")
    predictors = []
    for name in members:
        model, _ = load_checkpoint(Path(folder) / name / "model.pt")
        if list(model.classes or []) != classes:
            raise SystemExit(f"{name}: teachers must cover every species (taxon-group members merge at ensembling)")
        predictors.append(model_predictor(model.to(device).eval(), device))
    return predictors, {"teachers": {m: dist.file_digest(Path(folder) / m / "model.pt") for m in members}}


def with_foundation(
    windows: np.ndarray, ids: list[str], folder: Path | None, weight: float, method: str = "linear"
) -> np.ndarray:
    """T3: blend the foundation-model teacher's window probabilities into the students' on the species it covers.

    A foundation teacher's scores are not on the students' scale: BirdNET's sigmoid outputs on a soundscape sit far
    below a student's (mean window maximum 0.2 against 0.5 on the real-audio benchmark), so a linear mean shrinks
    the targets where the teacher is most sure and the students' spread decides the ranking. ``percentile`` reads
    each window's teacher percentile off the students' own distribution of that species over every window of the
    round (quantile mapping, :func:`birdclef.teachers.blend`): the targets keep the students' scale and take the
    teacher's ranking with weight ``w``.

    Args:
        windows: (files, windows, C) student-ensemble probabilities of ``ids``.
        ids: soundscape keys.
        folder: the teacher stage's output folder (``build/teacher``).
        weight: the round's ``teacher_weight``; 0 returns ``windows`` unchanged (the teacher stage may be off).
        method: the round's ``teacher_blend``: ``linear`` (probabilities) | ``percentile`` (quantile mapping).

    Returns:
        (files, windows, C): ``(1 - w) s + w t`` (linear) or ``(1 - w) s + w Q_s(F_t(t))`` (percentile) where the
        teacher covers a species, the students' probability elsewhere (an uncovered species never gets a diluted
        label).

    Raises:
        SystemExit: ``weight > 0`` but the teacher stage ran off or without the train soundscapes.
    """
    if weight <= 0:
        return windows
    from birdclef.teachers import blend, load_outputs, mean_with_teacher

    if folder is None:
        raise SystemExit("pseudo.rounds teacher_weight > 0 needs the teacher stage's folder (--foundation)")
    try:
        teacher = load_outputs(folder, "train_soundscape").window_probs(ids)
    except (FileNotFoundError, KeyError, ValueError) as err:
        raise SystemExit(f"pseudo.rounds teacher_weight = {weight}: {err}") from None
    if teacher.shape != windows.shape:
        raise SystemExit(f"teacher windows {teacher.shape} do not match the students' {windows.shape}")
    if method == "linear":
        return mean_with_teacher(windows, teacher, weight)
    if method != "percentile":
        raise ValueError(f"pseudo.rounds teacher_blend must be linear or percentile, not {method!r}")
    flat = np.asarray(windows, dtype=np.float32).reshape(-1, windows.shape[-1])
    mixed = blend(flat, teacher.reshape(flat.shape), weight, "percentile")
    return np.clip(mixed, 0.0, 1.0).astype(np.float32).reshape(windows.shape)
