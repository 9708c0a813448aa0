"""The ensemble stage's library side: run the members over labelled soundscapes, fit or take their weights, score
members and ensemble, and write the spec that export, infer, predict and the Kaggle bundle read.

Split from ``ensemble`` (numpy only, copied into the bundle) so that ``runner`` imports ``ensemble`` and this module
imports both, with no import circle between them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from birdclef.infer import ensemble, postprocess, runner, teacher_spec
from birdclef.infer.submission import evaluate, row_ids
from birdclef.models import load_checkpoint

SPEC_VERSION = 1


def describe_member(entry: Mapping[str, Any], train_dir: str | os.PathLike[str], classes: Sequence[str]) -> dict:
    """Spec entry of one member ``{iteration, model, weight[, predict]}`` of params ``ensemble.members``.

    Its checkpoint is ``<train_dir>/it<iteration>/<model>/model.pt`` (the train stage's layout); the class list,
    mel config and head come from the checkpoint. ``classes`` is ``None`` when the member scores every class.
    """
    unknown = set(entry) - {"iteration", "model", "weight", "predict"}
    if unknown or not {"iteration", "model"} <= set(entry):
        raise ValueError(f"ensemble member {dict(entry)} needs iteration and model (optional: weight, predict)")
    k, model_name = int(entry["iteration"]), str(entry["model"])
    path = Path(train_dir) / f"it{k}" / model_name / "model.pt"
    model, _ = load_checkpoint(path)
    own = [str(c) for c in (model.classes or [])]
    if not own:
        raise ValueError(f"{path}: checkpoint has no class list")
    extra = [c for c in own if c not in set(classes)]
    if extra:
        raise ValueError(f"{path}: classes not in sample_submission.csv: {extra[:10]}")
    return {
        "name": f"it{k}_{model_name}",
        "iteration": k,
        "model": model_name,
        "checkpoint": str(path),
        "weight": float(entry.get("weight", 1.0)),
        "classes": None if own == list(classes) else own,
        "mel": model.mel_cfg.to_dict(),
        "head": model.cfg.head,
        "backbone": model.cfg.backbone,
        "predict": dict(entry.get("predict") or {}),
    }


def build_spec(
    entries: Sequence[Mapping[str, Any]],
    train_dir: str | os.PathLike[str],
    files: Sequence[str | os.PathLike[str]],
    solution: Any,
    classes: Sequence[str],
    cfg: Mapping[str, Any],
    factory: Callable[[Mapping[str, Any], int], Any],
    class_of: Mapping[str, str] | None = None,
    class_counts: np.ndarray | None = None,
    segments: Any = None,
    teacher: dict[str, Any] | None = None,
) -> tuple[dict, dict, dict]:
    """Run the members over labelled soundscapes, fit or take their weights, score members and ensemble.

    Args:
        entries: params ``ensemble.members``.
        train_dir: parent of the ``it<k>`` train folders.
        files: labelled soundscape files.
        solution: labels in submission format (``row_id`` + 0/1 species columns) covering every window.
        classes: the submission class list (sample_submission.csv order).
        cfg: params ``ensemble`` (``combination``, ``fit``, ``postprocess``, ``predict``, ``workers``,
            ``threads``, ``file_seconds``).
        factory: ``runner.PredictorFactory`` (the torch one in the stage).
        class_of: species -> taxon class name, for per-taxon scores.
        class_counts: (C,) train counts per class (class-dependent smoothing).
        segments: the clean stage's segment table; needed when ``fit.source`` is ``oof``.
        teacher: the teacher member's spec entry (``teacher_spec.describe``): blended into the fitted ensemble.

    Returns:
        ``(spec, metrics, tables)``: the spec for ``runner.load_spec``; flat metrics (``score``, per taxon,
        per member, weights); {name: window prediction DataFrame} per member and ``ensemble``.
    """
    combination = cfg.get("combination", "mean")
    fit = {"method": "none", "source": "soundscapes", "grid": [0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0], "rounds": 3}
    fit.update(cfg.get("fit") or {})
    if fit["method"] not in ("none", "coordinate") or fit["source"] not in ("soundscapes", "oof"):
        raise ValueError(f"ensemble.fit: method none|coordinate, source soundscapes|oof; got {fit}")
    post = postprocess.resolve(cfg.get("postprocess"))
    predict = runner.member_predict_cfg({"name": "ensemble.predict"}, cfg.get("predict"))
    members = [describe_member(e, train_dir, classes) for e in entries]
    if not members:
        raise ValueError("params ensemble.members is empty")
    preds = runner.predict_folder(
        files, members, factory, predict, post, int(cfg.get("workers", 1)), cfg.get("threads"),
        "raise", cfg.get("file_seconds", 60.0),
    )  # fmt: skip
    ids = [rid for s, n in zip(preds.stems, preds.n_windows, strict=True) for rid in row_ids(s, n)]
    missing = sorted(set(ids) - set(solution["row_id"]))
    if missing:
        raise ValueError(f"labels lack {len(missing)} predicted window(s), e.g. {missing[:5]}")
    solution = solution.set_index("row_id").loc[ids].reset_index()
    counts = None if class_counts is None else np.asarray(class_counts, dtype=np.float64)
    member_classes = [m["classes"] for m in members]

    def table(scores: np.ndarray, cols: Sequence[str]) -> pd.DataFrame:
        frame = pd.DataFrame(scores, columns=list(cols))
        frame.insert(0, "row_id", ids)
        return frame

    def post_files(scores: np.ndarray, idx: np.ndarray | None = None) -> np.ndarray:
        out, start = np.empty_like(scores), 0
        sub_counts = None if counts is None else (counts if idx is None else counts[idx])
        for n in preds.n_windows:
            out[start : start + n] = postprocess.apply_file(scores[start : start + n], post, sub_counts)
            start += n
        return out

    def score_of(scores: np.ndarray, cols: Sequence[str]) -> dict[str, float]:
        return evaluate(solution[["row_id", *cols]], table(scores, cols), class_of)

    metrics: dict[str, Any] = {"n_members": len(members), "n_soundscapes": len(preds.stems)}
    tables: dict[str, Any] = {}
    for m, pred in zip(members, preds.members, strict=True):
        cols = m["classes"] or list(classes)
        idx = np.array([list(classes).index(c) for c in cols])
        scored = post_files(pred.astype(np.float32), idx)
        tables[m["name"]] = table(scored, cols)
        metrics.update({f"member_{m['name']}_{k}": v for k, v in score_of(scored, cols).items()})
    hand = [m["weight"] for m in members]
    weights = list(np.asarray(hand) / np.sum(hand))
    metrics["score_hand_weights"] = score_of(
        runner.finish(preds, classes, hand, member_classes, combination, post, counts), classes
    )["score"]
    fitted = fit["method"] == "coordinate" and len(members) > 1
    if fitted and fit["source"] == "soundscapes":
        fit_preds, fit_score = preds.members, lambda s: score_of(post_files(s), classes)["score"]
    elif fitted:
        if segments is None:
            raise ValueError("ensemble.fit.source: oof needs the segment table (--segments)")
        fit_preds, oof_solution = load_oof(members, segments, classes)

        def fit_score(s: np.ndarray) -> float:
            frame = pd.DataFrame(s, columns=list(classes))
            frame.insert(0, "row_id", oof_solution["row_id"].to_numpy())
            return evaluate(oof_solution, frame)["score"]

    if fitted:
        weights, best = ensemble.fit_weights(
            fit_preds, fit_score, classes, member_classes, combination, hand, fit["grid"], int(fit["rounds"])
        )
        metrics[f"fit_score_{fit['source']}"] = best
    final = runner.finish(preds, classes, weights, member_classes, combination, post, counts)
    if teacher is not None:  # T2: the foundation teacher, blended in per class over all these rows
        final, found, extra = teacher_spec.in_ensemble(
            teacher, files, preds, final, members, weights, classes, score_of, table, cfg
        )
        metrics.update(found)
        tables.update(extra)
    tables["ensemble"] = table(final, classes)
    metrics.update(score_of(final, classes))
    # Weights fitted on the soundscapes they are scored on: `score` is then an optimistic, in-sample figure.
    metrics["weights_fitted_in_sample"] = int(fitted and fit["source"] == "soundscapes")
    for m, w in zip(members, weights, strict=True):
        m["weight"] = float(w)
        metrics[f"weight_{m['name']}"] = round(float(w), 4)
    spec = {
        "format": runner.SPEC_FORMAT,
        "version": SPEC_VERSION,
        "classes": list(classes),
        "class_counts": None if counts is None else counts.tolist(),
        "combination": combination,
        "postprocess": post,
        "predict": predict,
        "file_seconds": cfg.get("file_seconds", 60.0),
        "members": members,
        "weights": {"method": fit["method"] if fitted else "hand", "fitted_on": fit["source"] if fitted else None},
        **({"teacher": teacher} if teacher is not None else {}),
    }  # fmt: skip
    return spec, metrics, tables


def load_oof(members: Sequence[Mapping[str, Any]], segments: Any, classes: Sequence[str]) -> tuple[list, Any]:
    """Out-of-fold focal predictions of every member on the held-out segments they all share.

    Reads ``val_predictions.parquet`` (``segment_id`` + class columns, written by the train stage next to
    ``model.pt``); the truth is the one-hot primary label from ``segments`` (``segment_id``, ``primary_label``).

    Returns:
        ``(per member (N, C_m) arrays, solution DataFrame: row_id = segment_id + one 0/1 column per class)``.
    """
    frames = []
    for m in members:
        path = Path(m["checkpoint"]).parent / "val_predictions.parquet"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no out-of-fold predictions for {m['name']} (train with val_fold >= 0)")
        frames.append(pd.read_parquet(path).set_index("segment_id"))
    ids = sorted(set.intersection(*(set(f.index) for f in frames)))
    if not ids:
        raise ValueError("the members share no held-out segment: train them with the same train.val_fold")
    preds = [
        f.loc[ids, list(m["classes"] or classes)].to_numpy(np.float32) for f, m in zip(frames, members, strict=True)
    ]
    labels = segments.set_index("segment_id").loc[ids, "primary_label"].astype(str).to_numpy()
    truth = (labels[:, None] == np.asarray(classes, dtype=str)[None, :]).astype(np.int64)
    solution = pd.DataFrame(truth, columns=list(classes))
    solution.insert(0, "row_id", ids)
    return preds, solution
