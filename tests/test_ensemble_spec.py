"""Tests for birdclef.infer.ensemble_spec: the ensemble stage's member runs, weight fitting splits and spec."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from birdclef.infer import ensemble_spec as S

CLASSES = ["a", "b", "c"]
INFER = Path(S.__file__).parent


def _infer_imports(path: Path) -> set[str]:
    """birdclef.infer modules that one module imports anywhere in its body (function-level imports too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: inside birdclef.infer
                base = ".".join(["birdclef.infer", *([base] if base else [])])
            names |= {base, *(f"{base}.{a.name}" for a in node.names)}
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
    return {
        n.split(".")[2]
        for n in names
        if n.startswith("birdclef.infer.") and (INFER / f"{n.split('.')[2]}.py").is_file()
    }


def test_no_import_circle_among_the_infer_modules():
    """runner -> ensemble and ensemble_spec -> runner, never back (ensemble and runner used to import each other)."""
    graph = {p.stem: _infer_imports(p) - {p.stem} for p in INFER.glob("*.py")}
    assert "ensemble" in graph["runner"] and {"runner", "ensemble"} <= graph["ensemble_spec"]
    assert graph["ensemble"] == set()  # numpy only: the bundle copies it

    def reaches(start, goal, seen=()):
        return any(n == goal or (n not in seen and reaches(n, goal, (*seen, n))) for n in graph.get(start, ()))

    assert [m for m in graph if reaches(m, m)] == []


def test_load_oof_aligns_shared_segments_and_one_hot_truth(tmp_path: Path):
    members = []
    for name, cols, ids in (("m1", CLASSES, ["s1", "s2", "s3"]), ("m2", ["c"], ["s3", "s2", "s9"])):
        (tmp_path / name).mkdir()
        frame = pd.DataFrame(np.arange(len(ids) * len(cols)).reshape(len(ids), len(cols)) / 10, columns=cols)
        frame.insert(0, "segment_id", ids)
        frame.to_parquet(tmp_path / name / "val_predictions.parquet")
        members.append({"name": name, "checkpoint": str(tmp_path / name / "model.pt"), "classes": None})
    members[1]["classes"] = ["c"]
    segments = pd.DataFrame({"segment_id": ["s1", "s2", "s3", "s9"], "primary_label": ["a", "c", "b", "a"]})
    preds, solution = S.load_oof(members, segments, CLASSES)
    assert solution["row_id"].tolist() == ["s2", "s3"]
    assert solution[CLASSES].to_numpy().tolist() == [[0, 0, 1], [0, 1, 0]]
    np.testing.assert_allclose(preds[0], [[0.3, 0.4, 0.5], [0.6, 0.7, 0.8]])
    np.testing.assert_allclose(preds[1], [[0.1], [0.0]])
    (tmp_path / "m2" / "val_predictions.parquet").unlink()
    with pytest.raises(FileNotFoundError, match="m2"):
        S.load_oof(members, segments, CLASSES)
