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


# ---------------------------------------------------------------- macro_auc: the one scoring summary


TAXA = {"sp0": "Aves", "sp1": "Aves", "sp2": "Aves", "sp3": "Amphibia", "sp4": "Amphibia", "sp5": "Insecta",
        "sp6": "Insecta"}  # fmt: skip


@pytest.mark.parametrize("seed", range(3))
def test_macro_auc_is_the_score_with_per_taxon_means(seed):
    from birdclef.metric import macro_auc

    sol, sub = _frames(seed)
    per = per_class_auc(sol, sub)
    out = macro_auc(sol, sub, TAXA, count=True)
    assert out["auc"] == pytest.approx(score(sol, sub), abs=1e-12)
    assert out["n_scored_classes"] == len(per) == 6  # sp0 has no positive
    assert out["auc_Aves"] == pytest.approx(np.mean([per["sp1"], per["sp2"]]), abs=1e-12)
    assert out["auc_Amphibia"] == pytest.approx(np.mean([per["sp3"], per["sp4"]]), abs=1e-12)
    assert set(macro_auc(sol, sub)) == {"auc"}


def test_macro_auc_nothing_to_score_is_nan_and_strict_raises_on_misaligned_rows():
    from birdclef.metric import macro_auc

    sol, sub = _frames(0)
    sol.iloc[:, 1:] = 0
    none = macro_auc(sol, sub, TAXA, strict=True, count=True)
    assert np.isnan(none["auc"]) and none["n_scored_classes"] == 0 and set(none) == {"auc", "n_scored_classes"}
    sol, sub = _frames(0)
    assert np.isnan(macro_auc(sol, sub.iloc[1:])["auc"])  # a row missing: per-epoch scores say nan
    with pytest.raises(ScoringError, match="row_id mismatch"):
        macro_auc(sol, sub.iloc[1:], strict=True)


def test_the_submission_score_is_macro_auc():
    from birdclef.infer.submission import SubmissionError, evaluate
    from birdclef.metric import macro_auc

    sol, sub = _frames(4)
    ours = macro_auc(sol, sub, TAXA, count=True)
    out = evaluate(sol, sub, TAXA)
    assert out == {"score": ours["auc"], "n_scored_classes": 6, "score_aves": ours["auc_Aves"],
                   "score_amphibia": ours["auc_Amphibia"], "score_insecta": ours["auc_Insecta"]}  # fmt: skip
    with pytest.raises(ScoringError):
        evaluate(sol, sub.iloc[1:])
    sol.iloc[:, 1:] = 0
    with pytest.raises(SubmissionError, match="nothing to score"):
        evaluate(sol, sub)
