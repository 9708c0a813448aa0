"""The ensemble stage's library side: run the members over labelled soundscapes, fit or take their weights, score
members and ensemble, and write the spec that export, infer, predict and the Kaggle bundle read.

Labelled soundscapes come in two splits (S3): ``val`` (data/val_soundscapes + val_labels.csv) for every choice, and
``test`` (the local leaderboard), scored once. ``ensemble.fit.source`` says where ``method: coordinate`` fits the
weights: ``val`` (the honest choice: ``score`` on test is then out of sample), ``soundscapes`` (the test split
itself: ``score`` is in-sample and optimistic, flagged by ``weights_fitted_in_sample``) or ``oof`` (the members'
held-out focal predictions). The members run over the val split only when the fit or ``score_val`` needs it, so the
default stage (``method: none``) costs what it did and works on a dataset without val soundscapes.

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

from birdclef.infer import ensemble, labelled, postprocess, runner, teacher_member, teacher_spec
from birdclef.infer.labelled import Labelled, read_split  # noqa: F401 (the stage and tests import read_split here)
from birdclef.infer.members import SPEC_FORMAT, member_predict_cfg
from birdclef.infer.submission import evaluate, row_ids
from birdclef.metric import with_interval
from birdclef.models import load_checkpoint

SPEC_VERSION = 1
FIT_DEFAULTS: dict[str, Any] = {"method": "none", "source": "val", "grid": [0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0],
                                "rounds": 3}  # fmt: skip
"""``ensemble.fit``: ``method`` none | coordinate, ``source`` val | soundscapes | oof, the weight grid, the rounds."""
FIT_METHODS, FIT_SOURCES = ("none", "coordinate"), ("val", "soundscapes", "oof")
DEFAULTS: dict[str, Any] = {
    "members": [], "combination": "mean", "fit": {}, "predict": {}, "postprocess": None, "file_seconds": 60.0,
    "workers": 1, "threads": None, "teacher": None, "score_val": False, "on_bad": "skip",
}  # fmt: skip
"""The ``ensemble`` section (params.yaml documents each key; ``teacher`` is checked by ``teacher_spec``)."""


def check_cfg(section: Mapping[str, Any] | None) -> dict[str, Any]:
    """Params ``ensemble`` with defaults filled in (``fit`` too).

    Raises:
        ValueError: an unknown key of ``ensemble`` or ``ensemble.fit`` (naming the valid ones), an unknown fit
            method, source, combination or on_bad, a ``score_val`` that is not true or false.
    """
    cfg = {**DEFAULTS, **dict(section or {})}
    fit = {**FIT_DEFAULTS, **dict(cfg["fit"] or {})}
    errors = []
    if set(cfg) - set(DEFAULTS):
        keys = ", ".join(f"ensemble.{k}" for k in sorted(set(cfg) - set(DEFAULTS)))
        errors.append(f"unknown key(s) {keys} (ensemble takes: {', '.join(DEFAULTS)})")
    if set(fit) - set(FIT_DEFAULTS):
        keys = ", ".join(f"ensemble.fit.{k}" for k in sorted(set(fit) - set(FIT_DEFAULTS)))
        errors.append(f"unknown key(s) {keys} (ensemble.fit takes: {', '.join(FIT_DEFAULTS)})")
    for key, value, valid in (("fit.method", fit["method"], FIT_METHODS), ("fit.source", fit["source"], FIT_SOURCES),
                              ("combination", cfg["combination"], ensemble.COMBINATIONS)):  # fmt: skip
        if value not in valid:
            errors.append(f"ensemble.{key} must be one of {', '.join(valid)}, got {value!r}")
    if cfg["on_bad"] not in labelled.ON_BAD:
        errors.append(f"ensemble.on_bad must be one of {', '.join(labelled.ON_BAD)}, got {cfg['on_bad']!r}")
    if not isinstance(cfg["score_val"], bool):
        errors.append(f"ensemble.score_val must be true or false, got {cfg['score_val']!r}")
    if errors:
        raise ValueError("; ".join(errors))
    return {**cfg, "fit": fit}


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
    cfg: Mapping[str, Any],
    train_dir: str | os.PathLike[str],
    test: Labelled,
    classes: Sequence[str],
    factory: Callable[[Mapping[str, Any], int], Any],
    class_of: Mapping[str, str] | None = None,
    class_counts: np.ndarray | None = None,
    segments: Any = None,
    teacher: dict[str, Any] | None = None,
    val: Labelled | None = None,
) -> tuple[dict, dict, dict]:
    """Run the members over labelled soundscapes, fit or take their weights, score members and ensemble.

    Args:
        cfg: params ``ensemble`` (``check_cfg``: ``members``, ``combination``, ``fit``, ``postprocess``,
            ``predict``, ``workers``, ``threads``, ``file_seconds``, ``score_val``).
        train_dir: parent of the ``it<k>`` train folders.
        test: the test split: every score of the metrics but ``fit_score_*`` and ``val_*`` is on it.
        classes: the submission class list (sample_submission.csv order).
        factory: ``members.PredictorFactory`` (the torch one in the stage).
        class_of: species -> taxon class name, for per-taxon scores.
        class_counts: (C,) train counts per class (class-dependent smoothing).
        segments: the clean stage's segment table; needed when ``fit.source`` is ``oof``.
        teacher: the teacher member's spec entry (``teacher_spec.describe``): blended into the fitted ensemble.
        val: the val split; needed when the weights are fitted on it (``fit.source: val``) or ``score_val`` is on.
            The fit then never sees the test labels.

    Returns:
        ``(spec, metrics, tables)``: the spec for ``members.load_spec``; flat metrics (``score``, per taxon,
        per member, weights; ``val_score``, per taxon, when the members ran over val); {name: window prediction
        DataFrame on test} per member and ``ensemble``.

    Raises:
        ValueError: bad params, a val split that is needed but unusable (naming the setting), val and test sharing
            a soundscape, a file that cannot be scored with ``on_bad: fail`` (``labelled.run_split``), no file
            left to score.
    """
    cfg = check_cfg(cfg)
    fit, combination = cfg["fit"], cfg["combination"]
    post = postprocess.resolve(cfg["postprocess"])
    predict = member_predict_cfg({"name": "ensemble.predict"}, cfg["predict"])
    members = [describe_member(e, train_dir, classes) for e in cfg["members"]]
    if not members:
        raise ValueError("params ensemble.members is empty")
    problem = postprocess.peak_tta_problem(post, {m["name"]: m["mel"] for m in members})
    if problem:
        raise ValueError(f"ensemble.{problem}")
    fitted = fit["method"] == "coordinate" and len(members) > 1
    teacher_fit = teacher is not None and teacher_spec.check_cfg(cfg["teacher"])["fit"]
    needs_val = _check_val(fitted and fit["source"] == "val", cfg["score_val"], val, test, teacher_fit)
    counts = None if class_counts is None else np.asarray(class_counts, dtype=np.float64)
    member_classes = [m["classes"] for m in members]

    def run(split: Labelled) -> _SplitRun:  # the files that can be scored (ensemble.on_bad: the others)
        kept, preds = labelled.run_split(
            split, cfg["on_bad"], members=members, factory=factory, predict=predict, post=post,
            workers=int(cfg["workers"]), threads=cfg["threads"], file_seconds=cfg["file_seconds"],
        )  # fmt: skip
        return _SplitRun(kept, preds, classes, post, counts, class_of)

    on_test = run(test)
    test = on_test.split  # a teacher member runs over the scored files only
    on_val = run(val) if needs_val else None
    metrics: dict[str, Any] = {"n_members": len(members), "n_soundscapes": len(on_test.preds.stems)}
    metrics.update(labelled.left_out_metrics(test, "n_soundscapes"))
    tables: dict[str, Any] = {}
    for m, pred in zip(members, on_test.preds.members, strict=True):
        cols = m["classes"] or list(classes)
        idx = np.array([list(classes).index(c) for c in cols])
        scored = on_test.post_files(pred.astype(np.float32), idx)
        tables[m["name"]] = on_test.table(scored, cols)
        metrics.update({f"member_{m['name']}_{k}": v for k, v in on_test.score(scored, cols, ci=True).items()})
    hand = [m["weight"] for m in members]
    weights = list(np.asarray(hand) / np.sum(hand))
    by_hand = on_test.score(on_test.finish(hand, member_classes, combination), classes, ci=True)
    metrics["score_hand_weights"] = by_hand["score"]
    metrics.update({f"score_hand_weights_{k}": by_hand[f"score_{k}"] for k in ("ci_low", "ci_high")
                    if f"score_{k}" in by_hand})  # fmt: skip
    if fitted:
        fit_preds, fit_score = _fit_target(fit["source"], members, on_test, on_val, segments, classes)
        weights, best = ensemble.fit_weights(
            fit_preds, fit_score, classes, member_classes, combination, hand, fit["grid"], int(fit["rounds"])
        )
        metrics[f"fit_score_{fit['source']}"] = best
    final = on_test.finish(weights, member_classes, combination)
    val_teacher = None
    if teacher_fit:  # T2's weight chosen on val: the test labels stay out of it
        val_teacher = teacher_member.predict_files(
            teacher, on_val.split.files, on_val.preds.n_windows, workers=int(cfg["workers"]), threads=cfg["threads"]
        ).probs
        teacher_cfg = teacher_spec.check_cfg(cfg["teacher"])
        metrics.update(teacher_spec.fit_weight(
            teacher, on_val.finish(weights, member_classes, combination), val_teacher,
            lambda s: on_val.score(s, classes)["score"], teacher_cfg["grid"],
            on_val.solution[list(classes)].to_numpy() if teacher_cfg["per_class"] else None, classes,
        ))  # fmt: skip
    if teacher is not None:  # T2: the foundation teacher, blended in per class over all these rows
        final, found, extra = teacher_spec.in_ensemble(
            teacher, test.files, on_test.preds, final, members, weights, classes, on_test.scored_with_ci,
            on_test.table, cfg,
        )  # fmt: skip
        metrics.update(found)
        tables.update(extra)
    tables["ensemble"] = on_test.table(final, classes)
    metrics.update(on_test.score(final, classes, ci=True))
    # Weights fitted on the soundscapes they are scored on: `score` is then an optimistic, in-sample figure.
    metrics["weights_fitted_in_sample"] = int(fitted and fit["source"] == "soundscapes")
    if on_val is not None:
        metrics.update(_val_scores(on_val, weights, member_classes, combination, teacher, cfg, val_teacher))
    for m, w in zip(members, weights, strict=True):
        m["weight"] = float(w)
        metrics[f"weight_{m['name']}"] = round(float(w), 4)
    spec = {
        "format": SPEC_FORMAT,
        "version": SPEC_VERSION,
        "classes": list(classes),
        "class_counts": None if counts is None else counts.tolist(),
        "combination": combination,
        "postprocess": post,
        "predict": predict,
        "file_seconds": cfg["file_seconds"],
        "members": members,
        "weights": {"method": fit["method"] if fitted else "hand", "fitted_on": fit["source"] if fitted else None},
        **({"teacher": teacher} if teacher is not None else {}),
    }  # fmt: skip
    return spec, metrics, tables


class _SplitRun:
    """The members' window predictions on one labelled split, its labels aligned to them, and its scorers."""

    def __init__(
        self,
        split: Labelled,
        preds: runner.FolderPredictions,
        classes: Sequence[str],
        post: Mapping[str, Any],
        counts: np.ndarray | None,
        class_of: Mapping[str, str] | None,
    ) -> None:
        self.split, self.preds, self.classes, self.post, self.counts, self.class_of = (
            split, preds, list(classes), post, counts, class_of
        )  # fmt: skip
        self.ids = [rid for s, n in zip(preds.stems, preds.n_windows, strict=True) for rid in row_ids(s, n)]
        missing = sorted(set(self.ids) - set(split.labels["row_id"]))
        if missing:
            raise ValueError(f"the {split.split} labels lack {len(missing)} predicted window(s), e.g. {missing[:5]}")
        self.solution = split.labels.set_index("row_id").loc[self.ids].reset_index()

    def table(self, scores: np.ndarray, cols: Sequence[str]) -> pd.DataFrame:
        """(rows, len(cols)) scores as a window table: ``row_id`` + one column per class."""
        frame = pd.DataFrame(scores, columns=list(cols))
        frame.insert(0, "row_id", self.ids)
        return frame

    def post_files(self, scores: np.ndarray, idx: np.ndarray | None = None) -> np.ndarray:
        """File-level post-processing of (rows, C') scores, file by file (``idx``: their columns among the classes)."""
        out, start = np.empty_like(scores), 0
        sub_counts = None if self.counts is None else (self.counts if idx is None else self.counts[idx])
        for n in self.preds.n_windows:
            out[start : start + n] = postprocess.apply_file(scores[start : start + n], self.post, sub_counts)
            start += n
        return out

    def score(self, scores: np.ndarray, cols: Sequence[str], ci: bool = False) -> dict[str, float]:
        """``submission.evaluate`` of the scores on these labels (``score``, per taxon, ``n_scored_classes``).

        ``ci`` adds ``score_ci_low`` / ``score_ci_high``, the 95% bootstrap interval over these soundscapes (off for
        the weight fit, which scores hundreds of candidates and needs only the point score).
        """
        solution, table = self.solution[["row_id", *cols]], self.table(scores, cols)
        found = evaluate(solution, table, self.class_of)
        return with_interval(found, "score", solution, table) if ci else found

    def scored_with_ci(self, scores: np.ndarray, cols: Sequence[str]) -> dict[str, float]:
        """:meth:`score` with its interval (the teacher member's scorer: its students/teacher scores get one too)."""
        return self.score(scores, cols, ci=True)

    def finish(self, weights: Sequence[float], member_classes: Sequence[Any], combination: str) -> np.ndarray:
        """The members combined with ``weights`` and post-processed (``runner.finish``), (rows, C)."""
        return runner.finish(self.preds, self.classes, weights, member_classes, combination, self.post, self.counts)


def _check_val(
    fit_on_val: bool, score_val: bool, val: Labelled | None, test: Labelled, teacher_fit: bool = False
) -> bool:
    # Whether the members run over val; a setting that needs an unusable val split is an error naming it.
    if not (fit_on_val or score_val or teacher_fit):
        return False
    if val is None or val.missing:
        why = "none was given (--val-soundscapes, --val-labels)" if val is None else val.missing
        if teacher_fit:
            raise ValueError(f"ensemble.teacher.fit: true needs labelled validation soundscapes, but {why}: "
                             "set ensemble.teacher.fit: false (the hand weight) or give the val split")
        if fit_on_val:
            raise ValueError(
                f"ensemble.fit.source: val needs labelled validation soundscapes, but {why}: fit on another source "
                "(oof, or soundscapes: the test split, in-sample and optimistic) or set ensemble.fit.method: none"
            )
        raise ValueError(f"ensemble.score_val: true needs labelled validation soundscapes, but {why}")
    shared = sorted({Path(f).stem for f in val.files} & {Path(f).stem for f in test.files})
    if shared:
        raise ValueError(f"the val and test splits share {len(shared)} soundscape(s), e.g. {shared[:5]}")
    return True


def _fit_target(
    source: str,
    members: Sequence[Mapping[str, Any]],
    on_test: _SplitRun,
    on_val: _SplitRun | None,
    segments: Any,
    classes: Sequence[str],
) -> tuple[list[np.ndarray], Callable[[np.ndarray], float]]:
    # The member predictions and the scorer the weights are fitted on: val, the test split itself, or oof.
    if source in ("val", "soundscapes"):
        split = on_val if source == "val" else on_test
        return split.preds.members, lambda s: split.score(split.post_files(s), classes)["score"]
    if segments is None:
        raise ValueError("ensemble.fit.source: oof needs the segment table (--segments)")
    preds, solution = load_oof(members, segments, classes)

    def score(s: np.ndarray) -> float:
        frame = pd.DataFrame(s, columns=list(classes))
        frame.insert(0, "row_id", solution["row_id"].to_numpy())
        return evaluate(solution, frame)["score"]

    return preds, score


def _val_scores(
    on_val: _SplitRun,
    weights: Sequence[float],
    member_classes: Sequence[Any],
    combination: str,
    teacher: Mapping[str, Any] | None,
    cfg: Mapping[str, Any],
    teacher_probs: np.ndarray | None = None,
) -> dict[str, Any]:
    # The fitted ensemble on val: `val_score` (and per taxon). A teacher joins over the val rows as over test's
    # (its probabilities there come along when the weight fit already ran it).
    scores = on_val.finish(weights, member_classes, combination)
    if teacher is not None:
        if teacher_probs is None:
            teacher_probs = teacher_member.predict_files(
                teacher, on_val.split.files, on_val.preds.n_windows, workers=int(cfg["workers"]),
                threads=cfg["threads"],
            ).probs
        scores = teacher_member.blend_rows(teacher, scores, teacher_probs)
    found = on_val.score(scores, on_val.classes, ci=True)
    left_out = labelled.left_out_metrics(on_val.split, "n_val_soundscapes")
    return {"n_val_soundscapes": len(on_val.preds.stems), **left_out, **{f"val_{k}": v for k, v in found.items()}}


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
