"""The real-audio benchmark's summaries: means over seeds, each run's test predictions kept, intervals, paired deltas.

The test split is 8 soundscape minutes: a difference between two recipes means something only when it beats the
sampling error of those 8 files. Every run keeps its test predictions (:func:`save_predictions`, a few kB), and
:func:`uncertainty` gives, per reported name and seed, the score's 95% interval over soundscape resamples
(``birdclef.metric.score_interval``) and, per pair of names that issue 14's acceptance compares, the paired bootstrap
of the difference on the same resampled files (``birdclef.metric.paired_bootstrap``). :func:`summarise` and
:func:`checks` give the table's means over seeds and issue 14's acceptance on them.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

PREDICTIONS = "predictions"
"""A run folder's sub-folder: ``test_labels.csv`` and one ``<name>.parquet`` per prediction set (row_id + species)."""

PAIRS = (
    ("teacher_alone", "teacher_recipe"),  # the recipe at least the teacher alone
    ("default", "teacher_students_only"),  # the distilled students 0.15 above the default
    ("random_backbone", "pretrained"),  # ImageNet weights beat random init
    ("default", "pretrained"),
)
"""(A, B) pairs compared as B minus A on the same seed's test files."""


def save_predictions(repo: Path, run_dir: Path, labels: Path | None = None) -> Path | None:
    """Copy a finished run's test predictions out of its build/ (removed after the run) into ``run_dir``.

    Args:
        repo: the run's clone, with its build/ still in place.
        run_dir: the run's folder; the predictions go to ``run_dir/predictions``.
        labels: the test labels (default: the clone's data/test_labels.csv).

    Returns:
        The predictions folder, or None when the run wrote no ensemble predictions.
    """
    scores = repo / "build" / "ensemble" / "member_scores"
    if not (scores / "ensemble.parquet").exists():
        return None
    out = run_dir / PREDICTIONS
    out.mkdir(parents=True, exist_ok=True)
    for name in ("ensemble", "students"):  # students: the ensemble without the T2 member, where one ran
        if (scores / f"{name}.parquet").exists():
            shutil.copyfile(scores / f"{name}.parquet", out / f"{name}.parquet")
    teacher = repo / "build" / "teacher" / "test_soundscape" / "probs.parquet"
    if teacher.exists():  # what teacher_alone is scored on
        shutil.copyfile(teacher, out / "teacher_alone.parquet")
    shutil.copyfile(labels or repo / "data" / "test_labels.csv", out / "test_labels.csv")
    return out


def per_class(ensemble: dict[str, Any]) -> dict[str, float]:
    """The ensemble stage's per-taxon-class scores of one run: the recipe (``score_<class>``) and, where the T2 member
    ran, the students alone and the teacher alone (``students_score_<class>``, ``teacher_score_<class>``)."""
    classes = ("amphibia", "aves", "insecta", "mammalia")
    keys = [f"{what}_{c}" for what in ("score", "students_score", "teacher_score") for c in classes]
    return {k: round(float(ensemble[k]), 4) for k in keys if isinstance(ensemble.get(k), int | float)}


def prediction_files(run: dict[str, Any]) -> dict[str, Path]:
    """The reported names of one run (as ``real_task.summarise`` names them) -> their saved prediction file."""
    folder = Path(run["predictions"]) if run.get("predictions") else None
    if folder is None or not folder.is_dir():
        return {}
    files = {p.stem: p for p in folder.glob("*.parquet")}
    if run["variant"] != "teacher":
        return {run["variant"]: files["ensemble"]} if "ensemble" in files else {}
    out = {"teacher_alone": files.get("teacher_alone")}
    if "students" in files:  # the T2 member ran in the ensemble stage: ensemble.parquet is the recipe
        out |= {"teacher_recipe": files["ensemble"], "teacher_students_only": files["students"]}
    else:  # no member: the stage's ensemble is the students (the recipe was blended by the benchmark)
        out["teacher_students_only"] = files.get("ensemble")
    return {k: v for k, v in out.items() if v is not None}


def _aligned(truth: pd.DataFrame, pred: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    return pred.set_index("row_id").loc[truth["row_id"], columns].reset_index()


def _scorable(truth: pd.DataFrame, *preds: pd.DataFrame) -> list[str]:
    """Species with a positive test window that every prediction set scores (the teacher: the species it covers)."""
    species = [c for c in truth.columns if c != "row_id" and truth[c].sum() > 0]
    return [c for c in species if all(c in p.columns and p[c].notna().all() for p in preds)]


def uncertainty(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Intervals per name and seed, and paired deltas per :data:`PAIRS` and seed, from the runs' saved predictions.

    Returns:
        ``{"intervals": {name: {seed: {score, low, high, half_width, n_files}}}, "paired": {"<B>_minus_<A>":
        {seed: {diff, low, high, share_b_better, verdict}}}}``; runs without saved predictions are left out.
    """
    from birdclef.metric import paired_bootstrap, score_interval

    by_seed: dict[str, dict[str, tuple[Path, Path]]] = {}
    for run in runs:
        if "score" not in run:
            continue
        for name, path in prediction_files(run).items():
            by_seed.setdefault(str(run["seed"]), {})[name] = (path, path.parent / "test_labels.csv")
    intervals: dict[str, dict[str, Any]] = {}
    paired: dict[str, dict[str, Any]] = {}
    for seed, named in sorted(by_seed.items()):
        loaded = {n: (pd.read_parquet(p), pd.read_csv(t)) for n, (p, t) in named.items()}
        for name, (pred, truth) in sorted(loaded.items()):
            cols = _scorable(truth, pred)
            iv = score_interval(truth[["row_id", *cols]], _aligned(truth, pred, cols))
            intervals.setdefault(name, {})[seed] = {
                "score": round(iv.score, 4), "low": round(iv.low, 4), "high": round(iv.high, 4),
                "half_width": round(iv.half_width, 4), "n_files": iv.n_files,
            }  # fmt: skip
        for a, b in PAIRS:
            if a not in loaded or b not in loaded:
                continue
            (pa, truth), (pb, _) = loaded[a], loaded[b]
            cols = _scorable(truth, pa, pb)
            pair = paired_bootstrap(truth[["row_id", *cols]], _aligned(truth, pa, cols), _aligned(truth, pb, cols))
            paired.setdefault(f"{b}_minus_{a}", {})[seed] = {
                "diff": round(pair.diff, 4), "low": round(pair.low, 4), "high": round(pair.high, 4),
                "share_b_better": round(pair.share_b_better, 3), "verdict": pair.verdict, "species": len(cols),
            }  # fmt: skip
    return {"intervals": intervals, "paired": paired}


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per reported variant: the score of each seed, mean and population std, mean wall time, and the mean
    test-soundscape AUC of each training iteration's member (``it<k>_mean``, the students' own runs)."""
    rows: dict[str, dict[str, Any]] = {}

    prefix = {"teacher_recipe": "score_", "teacher_students_only": "students_score_", "teacher_alone": "teacher_score_"}

    def add(name: str, run: dict[str, Any], value: float, iterations: bool) -> None:
        row = rows.setdefault(name, {"per_seed": {}, "wall_s": [], "its": {}, "classes": {}})
        row["per_seed"][str(run["seed"])] = round(float(value), 4)
        row["wall_s"].append(run["wall_s"])
        head = prefix.get(name, "score_")
        for key, auc in (run.get("per_class") or {}).items():
            if key.startswith(head) and (head != "score_" or not key.startswith(("students_", "teacher_"))):
                row["classes"].setdefault(key[len(head) :], []).append(auc)
        for key, auc in run.items():
            if iterations and key.startswith("it") and key.endswith("_soundscape_auc"):
                row["its"].setdefault(key.split("_")[0], []).append(auc)

    for r in runs:
        if "score" not in r:
            continue
        if r["variant"] == "teacher":
            for name in ("teacher_recipe", "teacher_students_only", "teacher_alone"):
                add(name, r, r[name], name == "teacher_students_only")
        else:
            add(r["variant"], r, r["score"], True)
    for row in rows.values():
        values = list(row["per_seed"].values())
        row["mean"] = round(float(np.mean(values)), 4)
        row["std"] = round(float(np.std(values)), 4)
        row["wall_s"] = round(float(np.mean(row.pop("wall_s"))), 1)
        row.update({f"{k}_mean": round(float(np.mean(v)), 4) for k, v in sorted(row.pop("its").items())})
        classes = row.pop("classes")
        if classes:  # per taxon class, mean over the seeds that report it
            row["per_class_mean"] = {c: round(float(np.mean(v)), 4) for c, v in sorted(classes.items())}
    return rows


def checks(results: dict[str, Any]) -> dict[str, Any]:
    """Issue 14's acceptance on the means, for the variants that ran."""
    mean = {k: v["mean"] for k, v in results.items()}
    out: dict[str, Any] = {}
    if {"teacher_recipe", "teacher_alone"} <= set(mean):
        out["teacher_recipe_at_least_teacher_alone"] = mean["teacher_recipe"] >= mean["teacher_alone"]
    if {"teacher_students_only", "default"} <= set(mean):
        out["students_only_minus_default"] = round(mean["teacher_students_only"] - mean["default"], 4)
        out["students_only_beat_default_by_0.15"] = out["students_only_minus_default"] >= 0.15
    if {"pretrained", "random_backbone"} <= set(mean):
        out["pretrained_minus_random_init"] = round(mean["pretrained"] - mean["random_backbone"], 4)
        out["pretrained_beats_random_init"] = mean["pretrained"] > mean["random_backbone"]
    return out
