"""Tests for birdclef.infer.teacher_spec: the ensemble.teacher params, the spec entry and the reference quantiles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from teacher_fixtures import stand_in_section

from birdclef.infer import teacher_spec as S
from birdclef.infer.teacher_member import sha256

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["sp_all", "sp_q1", "frog1"]
TAXONOMY = pd.DataFrame({"primary_label": ["frog1", "sp_q1", "sp_all"], "class_name": ["Amphibia", "Aves", "Aves"],
                         "scientific_name": ["Rana nulla", "beta  SECUNDA", "Omnia sonora"]})  # fmt: skip


def test_ensemble_teacher_params_are_strict_and_off_in_params_yaml():
    committed = yaml.safe_load((REPO / "params.yaml").read_text())["ensemble"]["teacher"]
    assert S.check_cfg(committed) == {"enabled": False, "weight": 0.2, "method": "rank", "fit": False, "grid": S.GRID,
                                      "per_class": False}  # fmt: skip
    assert S.describe(committed, None, CLASSES, TAXONOMY) is None  # off: no teacher section needed
    with pytest.raises(ValueError) as err:
        S.check_cfg({"enabled": "yes", "weight": 1.5, "method": "mean", "weights": 0.1})
    parts = ("unknown key ensemble.teacher.weights", "ensemble.teacher.enabled must be true or false",
             "ensemble.teacher.weight must be a number in [0, 1], got 1.5",
             "ensemble.teacher.method must be one of rank, percentile", "takes: enabled, weight, method")  # fmt: skip
    for part in parts:
        assert part in str(err.value)


def test_the_entry_maps_species_in_submission_order_and_records_the_files(tmp_path: Path):
    section = stand_in_section(tmp_path)
    entry = S.describe({"enabled": True, "method": "percentile", "weight": 0.3}, section, CLASSES, TAXONOMY)
    assert entry["index"] == [4, 1, -1]  # taxonomy rows in another order; names matched case/space-insensitively
    assert entry["teacher_labels"] == ["Omnia sonora_All", "Beta secunda_Beta", ""]
    assert (entry["method"], entry["weight"], entry["runtime"], entry["input_name"]) == ("percentile", 0.3, "onnx",
                                                                                         "inputs")  # fmt: skip
    assert entry["files"]["model"] == {"path": section["model_path"], "sha256": sha256(section["model_path"])}
    assert (entry["sample_rate"], entry["window_s"], entry["n_labels"], entry["pool"]) == (48_000, 3.0, 5, "max")
    assert entry["coverage"]["coverage_Aves"] == 1.0 and entry["coverage"]["coverage_Amphibia"] == 0.0


def test_a_member_that_cannot_apply_is_an_error_naming_the_param(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("TEACHER_ONNX", raising=False)
    on = {"enabled": True}
    section = stand_in_section(tmp_path)
    with pytest.raises(ValueError, match="ensemble.teacher.enabled needs the teacher's adapter: set teacher.name"):
        S.describe(on, {**section, "name": None}, CLASSES, TAXONOMY)
    with pytest.raises(FileNotFoundError, match="ensemble.teacher.enabled: .*teacher.model_path is not set .*TEACH"):
        S.describe(on, {**section, "model_path": None}, CLASSES, TAXONOMY)
    with pytest.raises(ValueError, match="unknown key\\(s\\) teacher.gain"):
        S.describe(on, {**section, "gain": 2.0}, CLASSES, TAXONOMY)
    nobody = TAXONOMY.assign(scientific_name=["Nulla una", "Nulla duo", "Nulla tres"])
    with pytest.raises(ValueError, match="covers none of the 3 species .* teacher.mapping_csv"):
        S.describe(on, section, CLASSES, nobody)


def test_reference_quantiles_per_covered_species():
    entry = {"index": [0, -1, 3]}
    students = np.column_stack([np.linspace(0, 1, 101), np.zeros(101), np.linspace(0, 2, 101)])
    teacher = students.copy()
    teacher[:50, 2] = np.nan  # rows the teacher did not score are left out of its distribution
    ref = S.reference(entry, students, teacher)
    assert ref["columns"] == [0, 2] and len(ref["students"][0]) == S.REFERENCE_POINTS
    np.testing.assert_allclose(ref["students"][0], np.linspace(0, 1, S.REFERENCE_POINTS), atol=1e-9)
    np.testing.assert_allclose(ref["teacher"][1], np.linspace(1, 2, S.REFERENCE_POINTS), atol=1e-9)


def _macro_auc(y: np.ndarray):
    from sklearn.metrics import roc_auc_score

    return lambda s: float(np.mean([roc_auc_score(y[:, c], s[:, c]) for c in range(y.shape[1])]))


def test_the_teacher_weight_is_fitted_on_val_and_the_tie_goes_to_the_hand_weight():
    """ensemble.teacher.fit: a teacher far better than the students gets a weight above the hand 0.2, one that ranks
    backwards gets 0, and among equal scores the weight nearest the hand one wins."""
    rng = np.random.default_rng(0)
    y = (rng.random((120, 2)) < 0.3).astype(int)
    students = np.clip(0.5 * y + rng.normal(0, 0.6, y.shape), 0, 1)
    entry = {"weight": 0.2, "method": "rank", "index": [0, 1]}
    good = np.clip(0.5 * y + rng.normal(0, 0.1, y.shape), 0, 1)
    found = S.fit_weight(entry, students, good, _macro_auc(y), S.GRID)
    assert found["teacher_weight_hand"] == 0.2 and found["teacher_weight"] == entry["weight"] >= 0.5
    assert found["fit_score_val_teacher"] == max(found[f"fit_val_teacher_w{w:g}"] for w in S.GRID)
    assert found["fit_score_val_teacher"] > found["fit_val_teacher_w0.2"] > found["fit_val_teacher_w0"]
    backwards = 1.0 - good
    entry = {"weight": 0.2, "method": "rank", "index": [0, 1]}
    assert S.fit_weight(entry, students, backwards, _macro_auc(y), S.GRID)["teacher_weight"] == 0.0
    flat = {"weight": 0.3, "method": "rank", "index": [0, 1]}  # every weight scores the same: the hand one stays
    assert S.fit_weight(flat, students, good, lambda s: 0.5, [0.0, 0.2, 0.4, 1.0])["teacher_weight"] == 0.2
    assert S.fit_weight(flat, students, good, lambda s: 0.5, [0.0, 0.3, 1.0])["teacher_weight"] == 0.3


def test_a_per_class_fit_gives_the_teacher_the_species_the_students_cannot_rank():
    """ensemble.teacher.per_class: species 0 the students rank well and the teacher backwards, species 1 the other way
    round: one global weight must compromise, the per-class fit takes each species' best (0 and 1), the species with
    no val positive and the one every weight ties on keep the global weight, and the val score rises."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    y = np.zeros((200, 4), int)
    y[:, :2] = rng.random((200, 2)) < 0.3
    y[:100, 3] = 1  # species 3: the students and the teacher both rank it perfectly: every weight ties
    good, bad = lambda c: y[:, c] + rng.normal(0, 0.3, 200), lambda c: -y[:, c] + rng.normal(0, 0.3, 200)
    students = np.column_stack([good(0), bad(1), rng.random(200), y[:, 3] + 0.1 * rng.random(200)])
    teacher = np.column_stack([bad(0), good(1), rng.random(200), y[:, 3] + 0.1 * rng.random(200)])
    scored = [0, 1, 3]

    def macro(s):
        return float(np.mean([roc_auc_score(y[:, c], s[:, c]) for c in scored]))

    entry = {"weight": 0.2, "method": "rank", "index": [0, 1, 2, 3]}
    found = S.fit_weight(entry, students, teacher, macro, S.GRID, labels=y, classes=["a", "b", "c", "d"])
    w = found["teacher_weight"]
    assert entry["class_weights"] == [0.0, 1.0, w, w]
    assert found["teacher_class_weights_fitted"] == 2 - (w in (0.0, 1.0))
    assert found["teacher_class_weight_mean"] == pytest.approx((1.0 + 2 * w) / 4)
    assert found["fit_score_val_teacher_per_class"] > found["fit_score_val_teacher"] + 0.1
    assert "teacher_class_weight_c" not in found and "teacher_class_weight_d" not in found
    # the per-class blend is each column's own best: species 0 as the students rank it, species 1 as the teacher
    final = S.blend_rows(entry, students, teacher)
    assert roc_auc_score(y[:, 0], final[:, 0]) == pytest.approx(roc_auc_score(y[:, 0], students[:, 0]))
    assert roc_auc_score(y[:, 1], final[:, 1]) == pytest.approx(roc_auc_score(y[:, 1], teacher[:, 1]))
    uncovered = {"weight": 0.2, "method": "rank", "index": [0, -1, 2, 3]}  # no teacher signal: the global weight
    S.fit_weight(uncovered, students, teacher, macro, S.GRID, labels=y)
    assert uncovered["class_weights"][1] == uncovered["weight"]
    refit = S.fit_weight(entry, students, teacher, macro, S.GRID)  # without labels: one weight again
    assert "class_weights" not in entry and "teacher_class_weights_fitted" not in refit


def test_the_teacher_fit_params_are_strict():
    assert S.check_cfg({"enabled": True, "fit": True, "grid": [0, 0.5, 1]})["grid"] == [0.0, 0.5, 1.0]
    with pytest.raises(ValueError, match="ensemble.teacher.fit must be true or false"):
        S.check_cfg({"fit": "auto"})
    with pytest.raises(ValueError, match="ensemble.teacher.grid must be a non-empty list of weights in"):
        S.check_cfg({"fit": True, "grid": [0.5, 2]})
    with pytest.raises(ValueError, match="grid is only read with ensemble.teacher.fit: true"):
        S.check_cfg({"grid": [0.5]})
    assert S.check_cfg({"fit": True, "per_class": True})["per_class"] is True
    with pytest.raises(ValueError, match="per_class: true fits a weight per species on val: it needs .*fit: true"):
        S.check_cfg({"per_class": True})
    with pytest.raises(ValueError, match="ensemble.teacher.per_class must be true or false"):
        S.check_cfg({"fit": True, "per_class": "yes"})
