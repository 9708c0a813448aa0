"""Seeded fold assignment stratified by primary label, and the per-species file cap."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

TRAIN_ONLY = -1
"""The fold of a label's only recording: in no validation fold, so a single-file class is always trained on."""


def assign_folds(labels: Sequence[str], n_folds: int, seed: int) -> np.ndarray:
    """Assign each recording to a fold, stratified by label.

    Each label's recordings are shuffled (seeded) and dealt round-robin over the folds, starting where the previous
    label stopped so fold sizes stay within one of each other. A label with k >= 2 recordings therefore lands in
    min(k, n_folds) different folds: no fold holds all of its files, so every fold keeps some for training. A label
    with one recording gets ``TRAIN_ONLY`` (-1): were it dealt to the validation fold, its class would be held out
    entirely and never trained on (it takes no turn in the deal, so fold sizes stay within one of each other).

    Args:
        labels: primary label per recording, length N.
        n_folds: number of folds, >= 2.
        seed: RNG seed; the same labels and seed give the same folds.

    Returns:
        int64 array of shape (N,), values in [0, n_folds), or -1 for single-file labels.
    """
    if n_folds < 2:
        raise ValueError(f"n_folds must be >= 2, got {n_folds}")
    labels = np.asarray(labels, dtype=object)
    folds = np.empty(len(labels), dtype=np.int64)
    rng = np.random.default_rng(seed)
    start = 0
    for label in sorted(set(labels.tolist())):
        idx = np.flatnonzero(labels == label)
        idx = idx[rng.permutation(len(idx))]
        if len(idx) == 1:
            folds[idx] = TRAIN_ONLY
            continue
        folds[idx] = (start + np.arange(len(idx))) % n_folds
        start = (start + len(idx)) % n_folds
    return folds


def cap_per_label(df: pd.DataFrame, max_files: int, seed: int, label_col: str = "primary_label") -> pd.DataFrame:
    """Keep at most ``max_files`` rows per label: highest ``rating`` first, ties broken by a seeded shuffle.

    A rating of 0 means "not rated" in the competition, so unrated files rank after every rated one.

    Args:
        df: rows with ``label_col`` and ``rating`` columns.
        max_files: cap per label; 0 keeps everything.
        seed: RNG seed for the tie-break.

    Returns:
        The kept rows, in their original order.
    """
    if max_files < 0:
        raise ValueError(f"max_files_per_class must be >= 0, got {max_files}")
    if max_files == 0 or df.empty:
        return df
    rng = np.random.default_rng(seed)
    key = df["rating"].to_numpy(dtype=float).copy()
    key[key == 0] = -1.0
    order = pd.DataFrame({"label": df[label_col].to_numpy(), "key": key, "tie": rng.permutation(len(df))})
    order = order.sort_values(["label", "key", "tie"], ascending=[True, False, True], kind="stable")
    keep = order.groupby("label", sort=False).head(max_files).index
    return df.iloc[np.sort(keep.to_numpy())]
