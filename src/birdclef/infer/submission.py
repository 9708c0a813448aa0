"""Kaggle submission tables: row ids, column order from sample_submission.csv, checks, and scoring with labels."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from birdclef import WINDOW_SECONDS
from birdclef.io import write_csv
from birdclef.metric import ScoringError, macro_auc, per_class_auc, with_interval

ROW_ID = "row_id"
log = logging.getLogger(__name__)


class SubmissionError(ValueError):
    """A submission that does not fit the competition format; the message names the row or column."""


def row_ids(stem: str, n_windows: int, window_s: int = WINDOW_SECONDS) -> list[str]:
    """Row ids ``<stem>_<end second>`` of one soundscape: ``stem_5, stem_10, ...`` for ``n_windows`` windows."""
    return [f"{stem}_{window_s * (i + 1)}" for i in range(n_windows)]


def stem_of(row_id: str) -> str:
    """The soundscape stem of a row id (everything before the last ``_``)."""
    stem, _, end = row_id.rpartition("_")
    if not stem or not end.isdigit():
        raise SubmissionError(f"row id {row_id!r} is not '<soundscape>_<end second>'")
    return stem


def read_sample(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read sample_submission.csv (row ids kept as strings), checking its first column is ``row_id``."""
    sample = pd.read_csv(path, dtype={ROW_ID: str})
    if sample.columns[0] != ROW_ID:
        raise SubmissionError(f"{path}: first column must be {ROW_ID!r}, found {sample.columns[0]!r}")
    return sample


def species_columns(sample: pd.DataFrame, classes: Sequence[str]) -> list[str]:
    """The sample's species columns, checked against the model's ``classes`` (any missing/extra is an error)."""
    columns = [c for c in sample.columns if c != ROW_ID]
    missing = [c for c in columns if c not in set(classes)]
    extra = [c for c in classes if c not in set(columns)]
    if missing:
        raise SubmissionError(f"sample_submission.csv column(s) the ensemble does not predict: {missing[:10]}")
    if extra:
        raise SubmissionError(f"ensemble class(es) missing from sample_submission.csv columns: {extra[:10]}")
    return columns


def build_submission(
    stems: Sequence[str],
    n_windows: Sequence[int],
    scores: np.ndarray,
    classes: Sequence[str],
    sample: pd.DataFrame,
    require_sample_rows: bool = False,
) -> pd.DataFrame:
    """Assemble the submission table in Kaggle format.

    Rows come from the soundscapes predicted (``n_windows[i]`` rows per file, in file order). For every
    soundscape that sample_submission.csv lists, its row ids must equal the generated ones. Soundscapes the
    sample lists but that were not predicted are an error with ``require_sample_rows`` (a local labelled test
    set) and a warning otherwise (Kaggle's hidden test set replaces the sample's files).

    Args:
        stems: soundscape file stems, in output order.
        n_windows: windows per soundscape.
        scores: (sum(n_windows), C) probabilities, columns in ``classes`` order.
        classes: the ensemble class list.
        sample: sample_submission.csv as read by ``read_sample``.
        require_sample_rows: see above.

    Returns:
        DataFrame: ``row_id`` + species columns in sample_submission order, float32 in [0, 1].
    """
    ids = [rid for stem, n in zip(stems, n_windows, strict=True) for rid in row_ids(stem, n)]
    if scores.shape != (len(ids), len(classes)):
        raise SubmissionError(f"scores have shape {scores.shape}, expected ({len(ids)}, {len(classes)})")
    columns = species_columns(sample, classes)
    _check_rows(ids, set(stems), sample[ROW_ID].astype(str).tolist(), require_sample_rows)
    values = np.asarray(scores, dtype=np.float32)
    bad = ~np.isfinite(values) | (values < 0) | (values > 1)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise SubmissionError(f"row {ids[r]} column {classes[c]}: value {values[r, c]} is not a probability")
    index = {c: i for i, c in enumerate(classes)}
    frame = pd.DataFrame(values[:, [index[c] for c in columns]], columns=columns)
    frame.insert(0, ROW_ID, ids)
    return frame


def write_submission(frame: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    """Write submission.csv atomically (6 significant digits: AUC needs ranks, not more precision)."""
    write_csv(frame, path, float_format="%.6g")


def evaluate(
    solution: pd.DataFrame, submission: pd.DataFrame, class_of: Mapping[str, str] | None = None
) -> dict[str, float]:
    """Competition score and per-taxon scores of a submission against 0/1 labels in submission format.

    Rows of ``submission`` absent from ``solution`` are an error (the metric demands the same rows).

    Returns:
        ``{"score": ..., "score_<taxon>": ..., "n_scored_classes": ...}``; a taxon with no scored class is absent.
        Per-taxon score = mean AUC over that taxon's scored classes.
    """
    scores = macro_auc(solution, submission, class_of, strict=True, count=True)
    if not scores["n_scored_classes"]:
        raise SubmissionError("labels have no species column with a positive window: nothing to score")
    taxa = {f"score_{k[len('auc_'):].lower()}": v for k, v in scores.items() if k.startswith("auc_")}
    return {"score": scores["auc"], "n_scored_classes": scores["n_scored_classes"], **taxa}


def score_labelled(
    submission: pd.DataFrame, labels: pd.DataFrame, class_of: Mapping[str, str] | None = None
) -> tuple[dict[str, float], pd.DataFrame | None]:
    """Score the rows of a submission that have labels (the infer stage on the test split).

    Args:
        submission: ``row_id`` + one score column per class.
        labels: 0/1 labels in submission format; rows absent from ``submission`` are ignored.
        class_of: species -> taxon class name, for per-taxon scores.

    Returns:
        ``(metrics, per_class)``: ``n_scored_rows`` and, when it is not 0, ``evaluate``'s scores with
        ``score_ci_low`` / ``score_ci_high`` (95% bootstrap over the labelled soundscapes); the AUC per scored
        species (``primary_label``, ``class_name``, ``auc`` to 6 decimals), ``None`` when no row has a label.
    """
    scored = submission[submission[ROW_ID].isin(set(labels[ROW_ID]))]
    metrics: dict[str, float] = {"n_scored_rows": len(scored)}
    if not len(scored):
        return metrics, None
    truth = labels[labels[ROW_ID].isin(set(scored[ROW_ID]))]
    metrics.update(evaluate(truth, scored, class_of))
    with_interval(metrics, "score", truth, scored)
    return metrics, per_class_table(truth, scored, class_of)


def per_class_table(
    labels: pd.DataFrame, predictions: pd.DataFrame, class_of: Mapping[str, str] | None = None
) -> pd.DataFrame:
    """AUC per scored species (``primary_label``, ``class_name``, ``auc`` to 6 decimals) on the predicted rows.

    ``labels`` may cover more rows than ``predictions`` (files a stage left out) and species columns the
    predictions lack are left out; an unscorable pair gives an empty table.
    """
    truth = labels[labels[ROW_ID].isin(set(predictions[ROW_ID]))]
    cols = [c for c in truth.columns if c == ROW_ID or c in predictions.columns]
    try:
        per = per_class_auc(truth[cols], predictions[cols])
    except ScoringError:
        per = {}
    table = pd.DataFrame({"primary_label": list(per), "auc": [round(v, 6) for v in per.values()]})
    table.insert(1, "class_name", [(class_of or {}).get(c, "") for c in table["primary_label"]])
    return table


def _check_rows(ids: list[str], stems: set[str], sample_ids: list[str], require_sample_rows: bool) -> None:
    by_stem: dict[str, list[str]] = {}
    for rid in sample_ids:
        by_stem.setdefault(stem_of(rid), []).append(rid)
    produced: dict[str, list[str]] = {}
    for rid in ids:
        produced.setdefault(stem_of(rid), []).append(rid)
    for stem, expected in by_stem.items():
        if stem not in stems:
            msg = f"sample_submission.csv lists soundscape {stem!r} ({len(expected)} rows) but it was not predicted"
            if require_sample_rows:
                raise SubmissionError(msg)
            log.warning(msg)
            continue
        got = produced[stem]
        if sorted(got) != sorted(expected):
            only_sample = sorted(set(expected) - set(got))[:5]
            only_ours = sorted(set(got) - set(expected))[:5]
            raise SubmissionError(
                f"soundscape {stem!r}: row ids differ from sample_submission.csv: "
                f"missing {only_sample}, unexpected {only_ours}"
            )
