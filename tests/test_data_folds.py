"""Tests of birdclef.data.folds: stratified seeded folds and the per-species cap."""

import numpy as np
import pandas as pd
import pytest

from birdclef.data.folds import assign_folds, cap_per_label


def test_no_fold_holds_all_files_of_a_class():
    rng = np.random.default_rng(0)
    counts = {f"sp{i}": int(n) for i, n in enumerate(rng.integers(1, 23, size=40))}
    labels = [lb for lb, n in counts.items() for _ in range(n)]
    labels = list(np.array(labels)[rng.permutation(len(labels))])
    folds = assign_folds(labels, n_folds=5, seed=3)
    assert folds.dtype == np.int64 and set(folds) - {-1} == set(range(5))
    for label, n in counts.items():
        used = set(folds[np.array(labels) == label])
        assert len(used) == min(n, 5) if n > 1 else used == {-1}, label  # every fold keeps training files
    sizes = np.bincount(folds[folds >= 0], minlength=5)
    assert sizes.max() - sizes.min() <= 1


def test_single_file_classes_never_land_in_a_validation_fold():
    labels = ["a"] * 3 + ["solo"] + ["b"] * 4 + ["lone"]
    folds = assign_folds(labels, n_folds=5, seed=0)
    assert folds[3] == -1 and folds[8] == -1
    for val_fold in range(5):
        trained = {lb for lb, f in zip(labels, folds, strict=True) if f != val_fold}
        assert trained == set(labels)  # every class, single-file ones included, keeps a training file


def test_folds_are_deterministic_for_the_seed():
    labels = ["a"] * 7 + ["b"] * 4 + ["c"] * 2
    assert np.array_equal(assign_folds(labels, 3, 1), assign_folds(labels, 3, 1))
    assert any(not np.array_equal(assign_folds(labels, 3, 1), assign_folds(labels, 3, s)) for s in range(2, 6))
    with pytest.raises(ValueError, match="n_folds must be >= 2"):
        assign_folds(labels, 1, 0)


def test_cap_keeps_highest_ratings_and_unrated_last():
    df = pd.DataFrame({"primary_label": ["a"] * 5 + ["b"] * 2,
                       "rating": [0.0, 2.0, 5.0, 4.0, 2.0, 0.0, 1.0]})
    kept = cap_per_label(df, 2, seed=0)
    assert kept.index.tolist() == [2, 3, 5, 6]  # original order kept; b has only two
    tie = cap_per_label(df, 3, seed=0).loc[lambda d: d.primary_label == "a"]
    assert set(tie["rating"]) == {5.0, 4.0, 2.0}  # one of the two 2.0 files, never the unrated one
    picks = {tuple(cap_per_label(df, 3, seed=s).index) for s in range(8)}
    assert picks == {(1, 2, 3, 5, 6), (2, 3, 4, 5, 6)}  # the seed breaks the tie
    assert cap_per_label(df, 0, seed=0) is df
