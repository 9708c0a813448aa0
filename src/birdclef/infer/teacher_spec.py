"""The ensemble stage's side of the teacher member (T2): ``ensemble.teacher`` params, the spec entry, its scores.

The spec entry (``spec["teacher"]``) holds everything :class:`birdclef.infer.teacher_member.TeacherMember` needs
to rebuild the teacher without birdclef (runtime, files with their sha256, rate, window, tiling, pooling,
activation, the species -> teacher class index), the blend (weight, method) and the reference distribution that
``birdclef predict`` blends against.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from birdclef.infer import ensemble
from birdclef.infer.teacher_member import blend_rows, predict_files, sha256
from birdclef.teachers import TeacherParams, create_teacher, map_labels, runtime

GRID = [round(0.1 * i, 1) for i in range(11)]
DEFAULTS: dict[str, Any] = {
    "enabled": False, "weight": 0.2, "method": "rank", "fit": False, "grid": GRID, "per_class": False,
}  # fmt: skip
"""``ensemble.teacher`` in params.yaml (2026 winner: 0.8 students + 0.2 Perch, rank blend; ``fit``: the weight
chosen on the labelled validation soundscapes from ``grid`` instead; ``per_class``: then one weight per species)."""
REFERENCE_POINTS = 51
"""Quantiles per covered species stored for ``birdclef predict`` (every 2nd percentile)."""


def check_cfg(section: Mapping[str, Any] | None) -> dict[str, Any]:
    """``ensemble.teacher`` with defaults filled in.

    Raises:
        ValueError: an unknown key (naming the valid ones), a weight outside [0, 1], an unknown method.
    """
    cfg = {**DEFAULTS, **dict(section or {})}
    errors = [f"unknown key ensemble.teacher.{k}" for k in sorted(set(cfg) - set(DEFAULTS))]
    if not isinstance(cfg["enabled"], bool):
        errors.append(f"ensemble.teacher.enabled must be true or false, got {cfg['enabled']!r}")
    w = cfg["weight"]
    if isinstance(w, bool) or not isinstance(w, int | float) or not 0.0 <= w <= 1.0:
        errors.append(f"ensemble.teacher.weight must be a number in [0, 1], got {w!r}")
    if cfg["method"] not in runtime.METHODS:
        errors.append(f"ensemble.teacher.method must be one of {', '.join(runtime.METHODS)}, got {cfg['method']!r}")
    if not isinstance(cfg["fit"], bool):
        errors.append(f"ensemble.teacher.fit must be true or false, got {cfg['fit']!r}")
    grid = cfg["grid"]
    if not (isinstance(grid, list) and grid and all(
            not isinstance(g, bool) and isinstance(g, int | float) and 0.0 <= g <= 1.0 for g in grid)):
        errors.append(f"ensemble.teacher.grid must be a non-empty list of weights in [0, 1], got {grid!r}")
    elif cfg["grid"] != DEFAULTS["grid"] and not cfg["fit"]:
        errors.append("ensemble.teacher.grid is only read with ensemble.teacher.fit: true")
    if not isinstance(cfg["per_class"], bool):
        errors.append(f"ensemble.teacher.per_class must be true or false, got {cfg['per_class']!r}")
    elif cfg["per_class"] and not cfg["fit"]:
        errors.append("ensemble.teacher.per_class: true fits a weight per species on val: it needs "
                      "ensemble.teacher.fit: true")
    if errors:
        raise ValueError("; ".join(errors) + f" (ensemble.teacher takes: {', '.join(DEFAULTS)})")
    return {**cfg, "weight": float(w), "grid": [float(g) for g in grid] if isinstance(grid, list) else grid}


def describe(
    section: Mapping[str, Any] | None, teacher_section: Mapping[str, Any] | None, classes: Sequence[str], taxonomy: Any
) -> dict[str, Any] | None:
    """The spec entry of the teacher member (``spec["teacher"]``), or ``None`` when ``ensemble.teacher`` is off.

    The adapter comes from the ``teacher`` section (name, model and label files, mapping CSV, tiling, pooling,
    activation, batch size: :class:`birdclef.teachers.TeacherParams`); its species are mapped onto ``classes``
    by scientific name (+ ``teacher.mapping_csv``) once here, so infer and the bundle need no taxonomy.

    Args:
        section: params ``ensemble.teacher``.
        teacher_section: params ``teacher``.
        classes: the submission classes, in order.
        taxonomy: DataFrame with ``primary_label`` (+ ``scientific_name``, ``class_name``).

    Raises:
        ValueError: bad params, no ``teacher.name``, or a teacher that covers none of the classes.
        FileNotFoundError: the model or label file is missing (naming ``teacher.model_path`` and its variable).
    """
    cfg = check_cfg(section)
    if not cfg["enabled"]:
        return None
    if not teacher_section or teacher_section.get("name") in (None, ""):
        raise ValueError(
            "ensemble.teacher.enabled needs the teacher's adapter: set teacher.name (birdnet | perch_v2 | onnx) "
            "and teacher.model_path (or its environment variable, e.g. BIRDNET_TFLITE)"
        )
    try:
        params = TeacherParams.from_dict(dict(teacher_section))
        teacher = create_teacher(params.name, params.adapter_config())
    except (ValueError, FileNotFoundError, ImportError) as err:
        raise type(err)(f"ensemble.teacher.enabled: the teacher member cannot be built: {err}") from err
    tax = taxonomy.set_index("primary_label").reindex(list(classes)).reset_index()
    lmap = map_labels(tax, teacher.labels, params.mapping_csv)
    if not lmap.covered.any():
        raise ValueError(
            f"ensemble.teacher.enabled: the {teacher.name} teacher covers none of the {len(classes)} species "
            "(SynthCLEF's are invented): turn ensemble.teacher off or map species in teacher.mapping_csv"
        )
    return {
        "name": teacher.name,
        "weight": cfg["weight"],
        "method": cfg["method"],
        **teacher.runtime_options(),
        "files": {k: {"path": str(Path(p).resolve()), "sha256": sha256(p)} for k, p in teacher.files.items()},
        "label_column": params.label_column,
        "n_labels": len(teacher.labels),
        "sample_rate": teacher.sample_rate,
        "window_s": teacher.window_s,
        **{k: getattr(params, k) for k in ("stride_s", "pool", "activation", "peak_normalize", "batch_size")},
        "index": lmap.index.tolist(),
        "teacher_labels": list(lmap.teacher_labels),
        "coverage": lmap.coverage(),
    }


def reference(entry: Mapping[str, Any], students: np.ndarray, teacher: np.ndarray) -> dict[str, Any]:
    """Quantiles (``REFERENCE_POINTS``, 6 significant digits) per covered species of the students' and the
    teacher's scores over a labelled run, for :func:`birdclef.infer.teacher_member.blend_file`."""
    levels = np.linspace(0.0, 1.0, REFERENCE_POINTS)
    columns = np.flatnonzero(np.asarray(entry["index"]) >= 0)

    def q(x: np.ndarray) -> list[float]:
        x = x[np.isfinite(x)]
        return [float(f"{v:.6g}") for v in np.quantile(x, levels)] if x.size else []

    return {"columns": columns.tolist(), "students": [q(students[:, c]) for c in columns],
            "teacher": [q(np.asarray(teacher[:, c], np.float64)) for c in columns]}  # fmt: skip


def fit_weight(
    entry: dict[str, Any],
    students: np.ndarray,
    teacher: np.ndarray,
    score_of: Callable[[np.ndarray], float],
    grid: Sequence[float],
    labels: np.ndarray | None = None,
    classes: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The teacher's blend weight chosen on labelled rows the test score never sees (``ensemble.teacher.fit``).

    The 2026 winner's 0.2 was chosen on its leaderboard for Perch v2 over its own students; the right share
    depends on how good the students are next to the teacher on the task, so with a labelled validation split
    the weight is the grid value whose blend scores best there (ties: the one nearest the hand ``weight``).
    ``entry["weight"]`` is set to it.

    Args:
        entry: the teacher's spec entry (:func:`describe`), with the hand ``weight`` and ``method``.
        students: (rows, C) the students' final scores on the validation rows.
        teacher: (rows, C) the teacher's probabilities on the same rows.
        score_of: the competition score of (rows, C) final scores on those rows.
        grid: candidate weights in [0, 1].
        labels: (rows, C) 0/1 validation labels: given, a weight per species follows the global one
            (:func:`fit_class_weights`, ``ensemble.teacher.per_class``).
        classes: the C species labels, with ``labels``.

    Returns:
        ``{"teacher_weight_hand", "teacher_weight", "fit_score_val_teacher"}`` and the score per grid value
        (``fit_val_teacher_w<w>``); with ``labels``, :func:`fit_class_weights`'s figures too.
    """
    hand = float(entry["weight"])
    entry.pop("class_weights", None)
    found = {float(w): float(score_of(blend_rows({**entry, "weight": float(w)}, students, teacher))) for w in grid}
    best = max(found.values())
    weight = _best_nearest(found, hand)
    entry["weight"] = weight
    out = {"teacher_weight_hand": hand, "teacher_weight": weight, "fit_score_val_teacher": best,
           **{f"fit_val_teacher_w{w:g}": v for w, v in found.items()}}  # fmt: skip
    if labels is not None:
        names = list(classes) if classes is not None else [str(i) for i in range(labels.shape[1])]
        out |= fit_class_weights(entry, students, teacher, labels, grid, names)
        out["fit_score_val_teacher_per_class"] = float(score_of(blend_rows(entry, students, teacher)))
    return out


def _best_nearest(scores: Mapping[float, float], anchor: float) -> float:
    """The weight with the best score; among ties (to 1e-12) the one nearest ``anchor``, then the smaller."""
    best = max(scores.values())
    return min((w for w, v in scores.items() if v >= best - 1e-12), key=lambda w: (abs(w - anchor), w))


def fit_class_weights(
    entry: dict[str, Any],
    students: np.ndarray,
    teacher: np.ndarray,
    labels: np.ndarray,
    grid: Sequence[float],
    classes: Sequence[str],
) -> dict[str, Any]:
    """A teacher weight per species, each the grid value with the best validation AUC of its own column.

    A student set is not equally good on every species next to the teacher: with few focal recordings of a
    species (or calls unlike its focal ones) the students rank it near chance where the teacher knows it, and a
    share that suits the other species wastes the teacher there. The rank blend and the metric are both per
    column, so each covered species' weight is fitted on its own AUC; ties, and species with no positive (or no
    negative) validation window, keep the global ``entry["weight"]``, so a species is moved off it only by
    evidence. ``entry["class_weights"]`` (C,) is set.

    Args:
        entry: the spec entry, its ``weight`` already the global fit.
        students, teacher: (rows, C) the validation rows' student scores and teacher probabilities.
        labels: (rows, C) their 0/1 labels.
        grid: candidate weights in [0, 1].
        classes: the C species labels (metric names).

    Returns:
        ``teacher_class_weights_fitted`` (species moved off the global weight), ``teacher_class_weight_mean`` (over
        the covered species) and ``teacher_class_weight_<species>`` for each species moved.
    """
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels)
    if labels.shape != np.shape(students):
        raise ValueError(f"fit_class_weights: labels {labels.shape} and scores {np.shape(students)} differ")
    base = float(entry["weight"])
    weights = np.full(len(entry["index"]), base)
    covered = np.flatnonzero(np.asarray(entry["index"]) >= 0)
    for c in covered:
        y, t = labels[:, c], np.asarray(teacher[:, c], dtype=np.float64)
        have = np.isfinite(t)
        if not have.any() or y[have].min() == y[have].max():
            continue  # nothing on val to choose by: the global weight
        col = {float(w): runtime.blend(students[:, [c]], t[:, None], float(w), entry["method"])[:, 0] for w in grid}
        weights[c] = _best_nearest({w: float(roc_auc_score(y, v)) for w, v in col.items()}, base)
    entry["class_weights"] = [float(w) for w in weights]
    moved = [int(c) for c in covered if weights[c] != base]
    return {"teacher_class_weights_fitted": len(moved),
            "teacher_class_weight_mean": float(weights[covered].mean()) if covered.size else base,
            **{f"teacher_class_weight_{classes[c]}": float(weights[c]) for c in moved}}  # fmt: skip


def in_ensemble(
    entry: dict[str, Any],
    files: Sequence[str | os.PathLike[str]],
    preds: Any,
    final: np.ndarray,
    members: Sequence[Mapping[str, Any]],
    weights: Sequence[float],
    classes: Sequence[str],
    score_of: Callable[[np.ndarray, Sequence[str]], dict[str, float]],
    table: Callable[[np.ndarray, Sequence[str]], Any],
    cfg: Mapping[str, Any],
) -> tuple[np.ndarray, dict[str, Any], dict[str, Any]]:
    """The ensemble stage's side: the teacher over the labelled soundscapes, blended into the students' ``final``.

    Scores the students alone (``students_score``), the teacher alone and the students on the covered species
    (``teacher_score``, ``students_covered_score``), with per-class weights the blend with the one fitted weight
    (``score_teacher_one_weight``), and stores the reference distribution in ``entry``.

    Args:
        entry: from :func:`describe`; gets its ``reference``.
        files, preds, final: the labelled soundscapes, the members' predictions on them, the students' final
            (combined, post-processed) scores.
        members, weights, classes: the ensemble (the reference students combine by ``mean``, as predict does).
        score_of, table: ``ensemble_spec.build_spec``'s scorer and window-table maker for (scores, columns).
        cfg: params ``ensemble`` (``workers``, ``threads``).

    Returns:
        ``(blended final scores, metrics, {"teacher": its window table on the species it covers, "students": the
        students' final window table})``.
    """
    run = predict_files(entry, files, preds.n_windows, workers=int(cfg.get("workers", 1)), threads=cfg.get("threads"))
    names = [c for c, i in zip(classes, entry["index"], strict=True) if i >= 0]
    cov = np.asarray(entry["index"]) >= 0
    metrics = {f"students_{k}": v for k, v in score_of(final, classes).items()}
    metrics |= {f"teacher_{k}": v for k, v in score_of(run.probs[:, cov], names).items()}
    metrics |= {f"students_covered_{k}": v for k, v in score_of(final[:, cov], names).items()}
    metrics |= {"teacher_weight": entry["weight"], "teacher_n_covered": int(cov.sum()), **run.speed()}
    plain = ensemble.combine(preds.members, weights, classes, [m["classes"] for m in members], "mean")
    entry["reference"] = reference(entry, plain, run.probs)  # what `birdclef predict` blends against
    tables = {"teacher": table(run.probs[:, cov], names), "students": table(final, classes)}
    if entry.get("class_weights") is not None:  # per_class: the one fitted weight's score beside it, paired
        one = blend_rows({**entry, "class_weights": None}, final, run.probs)
        metrics["score_teacher_one_weight"] = score_of(one, classes)["score"]
    return blend_rows(entry, final, run.probs), metrics, tables
