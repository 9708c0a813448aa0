"""Tests for birdclef.infer.submission: Kaggle format, row/column checks, scoring per taxon."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from birdclef.infer import submission as S

CLASSES = ["sp_b", "sp_a", "frog1"]  # model order differs from the sample's column order


def sample_for(stems: list[str], columns=("sp_a", "sp_b", "frog1")) -> pd.DataFrame:
    ids = [rid for s in stems for rid in S.row_ids(s, 12)]
    frame = pd.DataFrame(0.0, index=range(len(ids)), columns=list(columns))
    frame.insert(0, "row_id", ids)
    return frame


def test_row_ids_follow_end_seconds():
    assert S.row_ids("H02_20230420_074000", 3) == [
        "H02_20230420_074000_5",
        "H02_20230420_074000_10",
        "H02_20230420_074000_15",
    ]
    assert S.stem_of("H02_20230420_074000_60") == "H02_20230420_074000"
    with pytest.raises(S.SubmissionError, match="not '<soundscape>_<end second>'"):
        S.stem_of("noseconds")


def test_build_submission_orders_columns_like_the_sample(tmp_path):
    scores = np.random.default_rng(0).uniform(size=(24, 3)).astype(np.float32)
    sample = sample_for(["s1", "s2"])
    sub = S.build_submission(["s1", "s2"], [12, 12], scores, CLASSES, sample)
    assert list(sub.columns) == list(sample.columns)
    assert sub["row_id"].tolist() == sample["row_id"].tolist()
    np.testing.assert_array_equal(sub["sp_a"].to_numpy(), scores[:, 1])
    path = tmp_path / "submission.csv"
    S.write_submission(sub, path)
    back = pd.read_csv(path)
    assert back.shape == (24, 4) and list(back.columns) == list(sample.columns)
    np.testing.assert_allclose(back["frog1"], scores[:, 2], rtol=1e-5)


def test_missing_or_extra_column_is_an_error_naming_it():
    scores = np.zeros((12, 3), dtype=np.float32)
    with pytest.raises(S.SubmissionError, match="frog1"):
        S.build_submission(["s1"], [12], scores, CLASSES, sample_for(["s1"], ("sp_a", "sp_b")))
    with pytest.raises(S.SubmissionError, match="newsp"):
        S.build_submission(["s1"], [12], scores, CLASSES, sample_for(["s1"], ("sp_a", "sp_b", "frog1", "newsp")))


def test_row_mismatch_is_an_error_naming_the_soundscape():
    sample = sample_for(["s1"])
    with pytest.raises(S.SubmissionError, match="'s1'.*s1_60"):
        S.build_submission(["s1"], [11], np.zeros((11, 3), dtype=np.float32), CLASSES, sample)


def test_unpredicted_sample_soundscapes_warn_or_fail(caplog):
    sample = sample_for(["s1", "hidden"])
    scores = np.zeros((12, 3), dtype=np.float32)
    with caplog.at_level(logging.WARNING):
        sub = S.build_submission(["s1"], [12], scores, CLASSES, sample)
    assert len(sub) == 12 and "hidden" in caplog.text
    with pytest.raises(S.SubmissionError, match="'hidden'"):
        S.build_submission(["s1"], [12], scores, CLASSES, sample, require_sample_rows=True)


def test_values_must_be_probabilities():
    scores = np.zeros((12, 3), dtype=np.float32)
    scores[4, 2] = np.nan
    with pytest.raises(S.SubmissionError, match="s1_25 column frog1"):
        S.build_submission(["s1"], [12], scores, CLASSES, sample_for(["s1"]))
    scores[4, 2] = 1.5
    with pytest.raises(S.SubmissionError, match="not a probability"):
        S.build_submission(["s1"], [12], scores, CLASSES, sample_for(["s1"]))


def test_evaluate_scores_overall_and_per_taxon():
    rng = np.random.default_rng(0)
    sample = sample_for(["s1", "s2"])
    labels = sample.copy()
    labels[["sp_a", "sp_b", "frog1"]] = (rng.uniform(size=(24, 3)) < 0.4).astype(int)
    perfect = labels.copy()
    perfect["frog1"] = 1 - labels["frog1"]  # perfectly wrong for the only amphibian
    out = S.evaluate(labels, perfect, {"sp_a": "Aves", "sp_b": "Aves", "frog1": "Amphibia"})
    assert out["score_aves"] == pytest.approx(1.0)
    assert out["score_amphibia"] == pytest.approx(0.0)
    assert out["score"] == pytest.approx(2 / 3)
    assert out["n_scored_classes"] == 3


def test_score_labelled_scores_only_labelled_rows_with_a_per_species_table():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    cols = ["sp_a", "sp_b", "frog1"]
    sub = sample_for(["A", "B"])  # B has no labels: not scored
    sub[cols] = rng.uniform(size=(24, 3))
    labels = sample_for(["A", "Z"])  # Z's labelled rows were never predicted: ignored
    labels[cols] = (rng.uniform(size=(24, 3)) < 0.4).astype(int)
    taxa = {"sp_a": "Aves", "sp_b": "Aves", "frog1": "Amphibia"}
    metrics, table = S.score_labelled(sub, labels, taxa)
    want = {c: roc_auc_score(labels[c][:12], sub[c][:12]) for c in cols}  # the 12 rows of A
    assert metrics["n_scored_rows"] == 12 and metrics["n_scored_classes"] == 3
    assert metrics["score"] == pytest.approx(np.mean(list(want.values())))
    assert metrics["score_aves"] == pytest.approx((want["sp_a"] + want["sp_b"]) / 2)
    assert metrics["score_amphibia"] == pytest.approx(want["frog1"])
    # One labelled soundscape (A): every resample draws A again, the interval is the point score.
    assert metrics["score_ci_low"] == pytest.approx(metrics["score"]) == metrics["score_ci_high"]
    assert table.columns.tolist() == ["primary_label", "class_name", "auc"]
    assert table.to_dict("list") == {"primary_label": cols, "class_name": [taxa[c] for c in cols],
                                     "auc": [round(want[c], 6) for c in cols]}  # fmt: skip
    metrics, table = S.score_labelled(sub, sample_for(["Z"]))
    assert metrics == {"n_scored_rows": 0} and table is None
