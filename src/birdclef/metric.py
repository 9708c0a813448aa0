"""The competition metric (TECHNIQUES.md M1): macro ROC-AUC over species with at least one positive window."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

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


# ---------------------------------------------------------------- uncertainty: a bootstrap over soundscapes
#
# The windows of one soundscape share its site, noise and species, so they are not independent draws: resampling
# windows would pretend there are ~12x as many independent observations as there are and give intervals far too
# narrow. The unit resampled is the file. Each resample gives every file a multiplicity m_f (how often it was
# drawn); the resampled set is every window of file f repeated m_f times, and the metric on it is exactly
#
#     AUC_c = (m^T M_c m) / ((m . p_c) (m . n_c)),
#
# with p_c, n_c the positive and negative windows per file and M_c[f, g] the number of (positive in f, negative in g)
# window pairs the submission orders correctly (ties 1/2): the Mann-Whitney form of sklearn's ROC-AUC. M_c is built
# once per class, so 1000 resamples cost 1000 small matrix products, not 1000 sklearn calls.

BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
CI_LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """The competition score with its bootstrap percentile interval.

    Attributes:
        score: the metric on all files (the point estimate, equal to :func:`score`).
        low, high: the ``level`` percentile interval of the metric over file resamples.
        n_files: soundscapes resampled.
        n_resamples: resamples drawn (those where no class is scorable are left out of the percentiles).
    """

    score: float
    low: float
    high: float
    n_files: int
    n_resamples: int

    @property
    def half_width(self) -> float:
        """Half the interval's width (score units): the sampling error a difference has to beat."""
        return (self.high - self.low) / 2

    def as_metrics(self, key: str = "score") -> dict[str, float]:
        """``{<key>_ci_low, <key>_ci_high}`` for a stage's metrics JSON (the point estimate stays under ``key``)."""
        return {f"{key}_ci_low": self.low, f"{key}_ci_high": self.high}


@dataclass(frozen=True)
class Paired:
    """A paired bootstrap comparison of two prediction sets on the same labelled files (B minus A).

    Attributes:
        score_a, score_b: the metric of each on all files.
        diff: ``score_b - score_a`` on all files.
        mean: the mean of the difference over resamples.
        low, high: the difference's percentile interval (both scored on the same resampled files each time).
        share_b_better: fraction of resamples where B scores strictly higher than A.
        n_files, n_resamples: as for :class:`Interval`.
    """

    score_a: float
    score_b: float
    diff: float
    mean: float
    low: float
    high: float
    share_b_better: float
    n_files: int
    n_resamples: int

    @property
    def real(self) -> bool:
        """Whether the interval excludes 0: the change is larger than the files' sampling error."""
        return bool(self.low > 0 or self.high < 0)

    @property
    def verdict(self) -> str:
        """``"real"`` when the interval excludes 0, else ``"within noise"``."""
        return "real" if self.real else "within noise"


def file_ids(row_ids: Sequence[str]) -> np.ndarray:
    """The soundscape of each row id ``<soundscape>_<end s>`` (everything before the last ``_``; no ``_``: itself)."""
    return np.asarray([str(r).rsplit("_", 1)[0] for r in row_ids], dtype=object)


def resample_counts(n_files: int, n_resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """How often each file is drawn in each resample: ``n_files`` draws with replacement per resample.

    Returns:
        (n_resamples, n_files) int64 counts; every row sums to ``n_files``. The same seed gives the same counts, so
        two scores bootstrapped with one seed are resampled on the same files (what a paired comparison needs).
    """
    if n_files < 1 or n_resamples < 1:
        raise ValueError(f"need at least one file and one resample, got {n_files} files, {n_resamples} resamples")
    draws = np.random.default_rng(seed).integers(0, n_files, size=(n_resamples, n_files))
    flat = (np.arange(n_resamples)[:, None] * n_files + draws).ravel()
    return np.bincount(flat, minlength=n_resamples * n_files).reshape(n_resamples, n_files)


def bootstrap_scores(
    solution: pd.DataFrame,
    submission: pd.DataFrame,
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    groups: Sequence[str] | None = None,
) -> np.ndarray:
    """The competition metric on each file resample (see the comment above for the exact form).

    Args:
        solution, submission: as for :func:`score` (``row_id`` + species columns).
        n_resamples: resamples to draw.
        seed: fixes the resampled files.
        groups: the unit resampled, one per solution row in its order; default the soundscape of each row id.

    Returns:
        (n_resamples,) macro AUC per resample; nan where no drawn species has both a positive and a negative window.
        A species is averaged in a resample only when a drawn file has a positive of it, as :func:`score` would.
    """
    return _macro(_auc_matrix(solution, [submission], n_resamples, seed, groups)[0])


def score_interval(
    solution: pd.DataFrame,
    submission: pd.DataFrame,
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    level: float = CI_LEVEL,
    groups: Sequence[str] | None = None,
) -> Interval:
    """The competition score and its ``level`` percentile interval over soundscape resamples.

    Raises:
        ScoringError: as :func:`score` (misaligned frames, nothing to score).
    """
    point = score(solution, submission)
    boot = bootstrap_scores(solution, submission, n_resamples, seed, groups)
    low, high = _percentiles(boot, level)
    return Interval(point, low, high, _n_groups(solution, groups), n_resamples)


def paired_bootstrap(
    solution: pd.DataFrame,
    a: pd.DataFrame,
    b: pd.DataFrame,
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    level: float = CI_LEVEL,
    groups: Sequence[str] | None = None,
) -> Paired:
    """Whether B's score differs from A's by more than the files' sampling error.

    Each resample scores both on the same drawn files, so what the two share (hard files, easy files) cancels in
    the difference: its interval is much narrower than either score's.

    Args:
        solution: the labels both are scored on.
        a, b: two submissions of the same rows and columns (e.g. baseline and change).
        n_resamples, seed, level, groups: as for :func:`score_interval`.

    Raises:
        ScoringError: either submission does not line up with the solution, or nothing to score.
    """
    score_a, score_b = score(solution, a), score(solution, b)
    auc = _auc_matrix(solution, [a, b], n_resamples, seed, groups)
    diff = _macro(auc[1]) - _macro(auc[0])
    diff = diff[np.isfinite(diff)]
    low, high = _percentiles(diff, level)
    return Paired(score_a, score_b, score_b - score_a, float(np.mean(diff)) if len(diff) else float("nan"), low,
                  high, float(np.mean(diff > 0)) if len(diff) else float("nan"), _n_groups(solution, groups),
                  n_resamples)  # fmt: skip


def with_interval(
    metrics: dict[str, float], key: str, solution: pd.DataFrame, submission: pd.DataFrame, **kwargs
) -> dict[str, float]:
    """Add ``<key>_ci_low`` / ``<key>_ci_high`` to a stage's ``metrics`` (in place, returned too).

    Nothing is added when the pair cannot be scored (the stage's point score is then nan or absent as well).
    ``kwargs`` go to :func:`score_interval`.
    """
    # ValueError: sklearn's "only one class present" (a species positive in every window) has no point score either.
    with contextlib.suppress(ScoringError, ValueError):
        metrics.update(score_interval(solution, submission, **kwargs).as_metrics(key))
    return metrics


def _n_groups(solution: pd.DataFrame, groups: Sequence[str] | None, row_id: str = ROW_ID) -> int:
    return len(set(groups if groups is not None else file_ids(solution[row_id])))


def _percentiles(values: np.ndarray, level: float) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if not len(values):
        return float("nan"), float("nan")
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def _macro(auc: np.ndarray) -> np.ndarray:
    # (R, C) per-class AUC with nan for a class not scored in that resample -> (R,) mean over the scored ones.
    scored = np.isfinite(auc)
    n = scored.sum(axis=1)
    total = np.where(scored, auc, 0.0).sum(axis=1)
    return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def _auc_matrix(
    solution: pd.DataFrame,
    submissions: Sequence[pd.DataFrame],
    n_resamples: int,
    seed: int,
    groups: Sequence[str] | None,
) -> np.ndarray:
    """(len(submissions), n_resamples, C) ROC-AUC per submission, resample and solution column with a positive."""
    sol = solution.reset_index(drop=True)
    aligned = [_aligned(sol, sub, ROW_ID) for sub in submissions]
    truth = aligned[0][0]  # the solution in its own row order, every submission reindexed to it
    unit = np.asarray(groups if groups is not None else file_ids(sol[ROW_ID]), dtype=object)
    if len(unit) != len(truth):
        raise ValueError(f"groups has {len(unit)} entries for {len(truth)} solution rows")
    _, file_of = np.unique(unit, return_inverse=True)
    n_files = int(file_of.max()) + 1
    counts = resample_counts(n_files, n_resamples, seed).astype(np.float64)
    cols = [c for c in truth.columns if truth[c].sum() > 0]
    out = np.full((len(submissions), n_resamples, len(cols)), np.nan)
    for k, (_, sub) in enumerate(aligned):
        for j, c in enumerate(cols):
            y = truth[c].to_numpy() > 0
            rows, pairs = _pair_counts(y, sub[c].to_numpy(), file_of, n_files)
            num = np.einsum("rf,rf->r", counts[:, rows] @ pairs, counts)
            pos = counts @ np.bincount(file_of[y], minlength=n_files)
            neg = counts @ np.bincount(file_of[~y], minlength=n_files)
            # A class with no positive (or no negative) among the drawn files is not scored in that resample.
            ok = (pos > 0) & (neg > 0)
            out[k, ok, j] = num[ok] / (pos[ok] * neg[ok])
    return out


def _pair_counts(y: np.ndarray, s: np.ndarray, file_of: np.ndarray, n_files: int) -> tuple[np.ndarray, np.ndarray]:
    """The files with a positive window, and M[f, g]: pairs (positive in f, negative in g) ordered right, ties 1/2.

    Args:
        y: (N,) bool, the class present in each window.
        s: (N,) the submission's scores.
        file_of: (N,) file index of each window, in [0, n_files).

    Returns:
        ``(rows, M)``: (F_pos,) indices of the files with a positive, (F_pos, n_files) float64 pair counts.
    """
    _, rank = np.unique(s, return_inverse=True)  # dense ranks: equal scores tie, whatever their float value
    span = int(rank.max()) + 1
    # Negatives sorted by (file, rank) as one int key: per file, a searchsorted counts those below a positive.
    neg_key = np.sort(file_of[~y].astype(np.int64) * span + rank[~y])
    start = np.searchsorted(neg_key, np.arange(n_files, dtype=np.int64) * span)
    query = np.arange(n_files, dtype=np.int64)[None, :] * span + rank[y][:, None]  # (n_pos, n_files)
    below = np.searchsorted(neg_key, query, "left") - start  # negatives of file g scored strictly lower
    tied = np.searchsorted(neg_key, query, "right") - start - below
    rows, which = np.unique(file_of[y], return_inverse=True)
    pairs = np.zeros((len(rows), n_files))
    np.add.at(pairs, which, below + 0.5 * tied)
    return rows, pairs
