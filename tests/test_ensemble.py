"""Tests for birdclef.infer.ensemble: combinations, taxon-group merging and weight fitting."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from birdclef.infer import ensemble as E

CLASSES = ["a", "b", "c"]


def macro_auc(labels: np.ndarray):
    def score(pred: np.ndarray) -> float:
        return float(np.mean([roc_auc_score(labels[:, c], pred[:, c]) for c in range(labels.shape[1])]))

    return score


def test_weighted_mean_of_probabilities():
    a = np.full((4, 3), 0.2)
    b = np.full((4, 3), 0.8)
    out = E.combine([a, b], [1.0, 3.0], CLASSES)
    np.testing.assert_allclose(out, 0.65, rtol=1e-6)
    assert out.dtype == np.float32


def test_taxon_group_member_only_votes_on_its_classes():
    full = np.full((2, 3), 0.2)
    group = np.array([[0.9], [0.7]])
    out = E.combine([full, group], [1.0, 1.0], CLASSES, member_classes=[None, ["c"]])
    np.testing.assert_allclose(out[:, :2], 0.2, rtol=1e-6)
    np.testing.assert_allclose(out[:, 2], [0.55, 0.45], rtol=1e-6)


def test_a_class_without_members_is_an_error_naming_it():
    with pytest.raises(ValueError, match=r"\['b'\]"):
        E.combine([np.ones((2, 2))], [1.0], CLASSES, member_classes=[["a", "c"]])
    with pytest.raises(ValueError, match="not in the ensemble class list"):
        E.combine([np.ones((2, 1))], [1.0], CLASSES, member_classes=[["zzz"]])


def test_rank_combination_averages_ties_and_scales_to_unit_interval():
    p = np.array([[0.1], [0.5], [0.5], [0.9]])
    np.testing.assert_allclose(E.scale(p, "rank")[:, 0], [0.0, 0.5, 0.5, 1.0])
    out = E.combine([p, p[::-1]], [1, 1], ["a"], combination="rank")
    np.testing.assert_allclose(out[:, 0], 0.5)


def test_minmax_logits_keep_order_within_each_column():
    rng = np.random.default_rng(0)
    p = rng.uniform(0.001, 0.999, size=(50, 3))
    s = E.scale(p, "minmax")
    assert s.min() == 0.0 and s.max() == 1.0
    for c in range(3):
        assert np.array_equal(np.argsort(s[:, c]), np.argsort(p[:, c]))
    np.testing.assert_allclose(E.scale(np.full((4, 1), 0.3), "minmax"), 0.5)
    with pytest.raises(ValueError, match="combination"):
        E.scale(p, "median")


def test_fit_weights_prefers_the_informative_member():
    rng = np.random.default_rng(0)
    labels = (rng.uniform(size=(200, 3)) < 0.3).astype(int)
    good = np.clip(labels * 0.6 + rng.uniform(0, 0.5, size=labels.shape), 0, 1)
    noise = rng.uniform(size=labels.shape)
    score = macro_auc(labels)
    weights, best = E.fit_weights([noise, good], score, CLASSES)
    assert weights[1] > weights[0]
    assert sum(weights) == pytest.approx(1.0)
    assert best >= score(E.combine([noise, good], [1, 1], CLASSES)) + 1e-4
    assert best == pytest.approx(score(E.combine([noise, good], weights, CLASSES)))


def test_fit_weights_never_drops_the_only_member_of_a_class():
    rng = np.random.default_rng(1)
    labels = (rng.uniform(size=(100, 3)) < 0.3).astype(int)
    full = rng.uniform(size=labels.shape)
    group = np.clip(labels[:, [2]] + rng.uniform(0, 0.2, size=(100, 1)), 0, 1)
    weights, _ = E.fit_weights([full, group], macro_auc(labels), CLASSES, [None, ["c"]])
    assert weights[0] > 0 and weights[1] > 0


def test_module_runs_without_torch_or_birdclef(tmp_path: Path):
    code = (
        "import sys, importlib.util\n"
        "for m in ('torch', 'birdclef', 'pandas', 'sklearn'): sys.modules[m] = None\n"
        f"spec = importlib.util.spec_from_file_location('ensemble', {str(E.__file__)!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "import numpy as np\n"
        "print(m.combine([np.ones((12, 3))], [1.0], list('abc'), combination='rank').shape)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=True)
    assert out.stdout.strip() == "(12, 3)"
