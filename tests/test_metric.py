"""Tests for the competition metric."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from birdclef.metric import ScoringError, per_class_auc, score


def _frames(seed: int, n_rows: int = 48, n_cls: int = 7) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    ids = [f"s{i // 12}_{5 * (i % 12 + 1)}" for i in range(n_rows)]
    cols = [f"sp{c}" for c in range(n_cls)]
    truth = (rng.random((n_rows, n_cls)) < 0.2).astype(int)
    truth[:, 0] = 0  # a species with no positive window is skipped
    sol = pd.DataFrame(truth, columns=cols)
    sol.insert(0, "row_id", ids)
    sub = pd.DataFrame(rng.random((n_rows, n_cls)), columns=cols)
    sub.insert(0, "row_id", ids)
    return sol, sub


@pytest.mark.parametrize("seed", range(5))
def test_score_equals_sklearn_macro_auc_over_scored_columns(seed):
    sol, sub = _frames(seed)
    cols = [c for c in sol.columns[1:] if sol[c].sum() > 0]
    expected = np.mean([roc_auc_score(sol[c], sub[c]) for c in cols])
    assert abs(score(sol, sub) - expected) < 1e-12
    assert "sp0" not in per_class_auc(sol, sub)


def test_score_ignores_row_order():
    sol, sub = _frames(1)
    assert score(sol, sub.sample(frac=1.0, random_state=0)) == pytest.approx(score(sol, sub), abs=1e-12)


def test_perfect_and_inverted_predictions():
    sol, _ = _frames(2)
    perfect = sol.copy()
    assert score(sol, perfect) == 1.0
    inverted = sol.copy()
    inverted.iloc[:, 1:] = 1 - inverted.iloc[:, 1:]
    assert score(sol, inverted) == 0.0


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda s: s.drop(columns=["sp3"]), "missing column"),
        (lambda s: s.assign(extra=0.5), "extra column"),
        (lambda s: s.iloc[:-1], "row_id mismatch"),
        (lambda s: s.assign(row_id=s.row_id.str.replace("s0_", "x0_")), "row_id mismatch"),
        (lambda s: s.assign(sp2="high"), "non-numeric"),
        (lambda s: s.assign(sp4=np.nan), "NaN"),
        (lambda s: pd.concat([s, s.iloc[:1]]), "duplicate row ids"),
    ],
)
def test_malformed_submission_is_a_clear_error(mutate, message):
    sol, sub = _frames(3)
    with pytest.raises(ScoringError, match=message):
        score(sol, mutate(sub))


def test_no_positive_anywhere_is_an_error():
    sol, sub = _frames(4)
    sol.iloc[:, 1:] = 0
    with pytest.raises(ScoringError, match="nothing to score"):
        score(sol, sub)
