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
    assert S.check_cfg(committed) == {"enabled": False, "weight": 0.2, "method": "rank", "fit": False, "grid": S.GRID}
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


def test_the_teacher_fit_params_are_strict():
    assert S.check_cfg({"enabled": True, "fit": True, "grid": [0, 0.5, 1]})["grid"] == [0.0, 0.5, 1.0]
    with pytest.raises(ValueError, match="ensemble.teacher.fit must be true or false"):
        S.check_cfg({"fit": "auto"})
    with pytest.raises(ValueError, match="ensemble.teacher.grid must be a non-empty list of weights in"):
        S.check_cfg({"fit": True, "grid": [0.5, 2]})
    with pytest.raises(ValueError, match="grid is only read with ensemble.teacher.fit: true"):
        S.check_cfg({"grid": [0.5]})
