"""The competition metric (TECHNIQUES.md M1): macro ROC-AUC over species with at least one positive window."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

ROW_ID = "row_id"


class ScoringError(ValueError):
    """A solution or submission that cannot be scored; the message names the offending rows or columns."""


def score(solution: pd.DataFrame, submission: pd.DataFrame, row_id_column_name: str = ROW_ID) -> float:
    """Macro ROC-AUC over the species columns whose ground truth has at least one positive.

    Args:
        solution: ``row_id`` + one 0/1 column per species (one row per 5-s window).
        submission: ``row_id`` + the same species columns with probabilities (or any scores: only the ranking
            within a species across rows matters).
        row_id_column_name: name of the row-id column.

    Returns:
        The mean of sklearn's ROC-AUC over the scored columns, each with equal weight.

    Raises:
        ScoringError: missing or extra rows or columns, row-id mismatch, non-numeric or NaN values, or no
            column with a positive.
    """
    per_class = per_class_auc(solution, submission, row_id_column_name)
    if not per_class:
        raise ScoringError("solution has no species column with a positive window: nothing to score")
    return float(np.mean(list(per_class.values())))


def macro_auc(
    solution: pd.DataFrame,
    submission: pd.DataFrame,
    taxa: Mapping[str, str] | None = None,
    strict: bool = False,
    count: bool = False,
) -> dict[str, float]:
    """The competition score plus, with a label -> taxon class map, the mean AUC per taxon class.

    The one scoring summary of the project: per-epoch validation, member and ensemble scores, pseudo labels and
    teacher outputs against labels, the submission score.

    Args:
        solution, submission: as for :func:`score`.
        taxa: species column -> taxon class name (``Aves``); a class with no scored species is left out.
        strict: raise ``ScoringError`` on a solution and submission that do not line up (rows, columns, NaN);
            otherwise such a pair scores nan, as a pair with no positive window does.
        count: add ``n_scored_classes``, the number of species columns averaged.

    Returns:
        ``{"auc": float (nan: nothing to score), "auc_<Class>": ...}`` (+ ``n_scored_classes``).
    """
    try:
        per = per_class_auc(solution, submission)
    except ScoringError:
        if strict:
            raise
        per = {}
    out: dict[str, float] = {"auc": float(np.mean(list(per.values()))) if per else float("nan")}
    if count:
        out["n_scored_classes"] = len(per)
    if taxa:
        groups: dict[str, list[float]] = {}
        for label, auc in per.items():
            groups.setdefault(taxa.get(label, "unknown"), []).append(auc)
        out.update({f"auc_{name}": float(np.mean(v)) for name, v in sorted(groups.items())})
    return out


def per_class_auc(
    solution: pd.DataFrame, submission: pd.DataFrame, row_id_column_name: str = ROW_ID
) -> dict[str, float]:
    """ROC-AUC per scored species column (the terms that :func:`score` averages), in solution column order."""
    sol, sub = _aligned(solution, submission, row_id_column_name)
    scored = [c for c in sol.columns if sol[c].sum() > 0]
    return {c: float(roc_auc_score(sol[c].to_numpy(), sub[c].to_numpy())) for c in scored}


def _aligned(
    solution: pd.DataFrame, submission: pd.DataFrame, row_id: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    for name, df in (("solution", solution), ("submission", submission)):
        if row_id not in df.columns:
            raise ScoringError(f"{name} has no {row_id!r} column")
        dup = df[row_id][df[row_id].duplicated()]
        if len(dup):
            raise ScoringError(f"{name} has duplicate row ids: {', '.join(map(str, dup.head(5)))}")
    missing_cols = [c for c in solution.columns if c not in submission.columns]
    extra_cols = [c for c in submission.columns if c not in solution.columns]
    if missing_cols:
        raise ScoringError(f"submission is missing column(s): {', '.join(missing_cols[:10])}")
    if extra_cols:
        raise ScoringError(f"submission has extra column(s): {', '.join(extra_cols[:10])}")
    sol_ids, sub_ids = set(solution[row_id]), set(submission[row_id])
    if sol_ids != sub_ids:
        missing = sorted(sol_ids - sub_ids)[:5]
        extra = sorted(sub_ids - sol_ids)[:5]
        raise ScoringError(f"row_id mismatch: missing from submission {missing}, not in solution {extra}")
    sol = solution.set_index(row_id)
    sub = submission.set_index(row_id).loc[sol.index, sol.columns]
    for name, df in (("solution", sol), ("submission", sub)):
        bad = [c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c])]
        if bad:
            raise ScoringError(f"{name} has non-numeric column(s): {', '.join(map(str, bad[:10]))}")
        nan = df.columns[df.isna().any()].tolist()
        if nan:
            rows = df.index[df[nan[0]].isna()][:3].tolist()
            raise ScoringError(f"{name} has NaN in column(s) {', '.join(map(str, nan[:10]))} (e.g. rows {rows})")
    return sol.astype(float), sub.astype(float)
