"""Tests of birdclef.audio.rules: span arithmetic, trimming, loudness, hashing, sampling, rare classes, exclusions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from birdclef.audio import rules


def test_merge_and_subtract_spans() -> None:
    assert rules.merge_spans([(5, 6), (1, 2), (1.5, 3), (3, 4), (7, 7)]) == [(1, 4), (5, 6)]
    assert rules.subtract_spans(0, 10, [(2, 3), (2.5, 4), (9, 12)]) == [(0, 2), (4, 9)]
    assert rules.subtract_spans(0, 10, []) == [(0, 10)]
    assert rules.subtract_spans(0, 10, [(-1, 11)]) == []
    assert rules.subtract_spans(0, 10, [(0, 1)]) == [(1, 10)]


def test_trim_pieces_keeps_first_seconds_of_audio() -> None:
    pieces = [(0.0, 10.0), (15.0, 40.0), (50.0, 90.0)]
    assert rules.trim_pieces(pieces, 30) == [(0.0, 10.0), (15.0, 35.0)]
    assert rules.trim_pieces(pieces, 10) == [(0.0, 10.0)]
    assert rules.trim_pieces(pieces, None) == pieces
    assert rules.trim_pieces(pieces, 0) == pieces


def test_rms_dbfs() -> None:
    t = np.arange(32_000) / 32_000
    assert rules.rms_dbfs(np.sin(2 * np.pi * 100 * t)) == pytest.approx(-3.01, abs=0.01)
    assert rules.rms_dbfs(0.01 * np.ones(10)) == pytest.approx(-40.0)
    assert rules.rms_dbfs(np.zeros(10)) == float("-inf")
    assert rules.rms_dbfs(np.zeros(0)) == float("-inf")


def test_content_hash_sees_samples_not_containers() -> None:
    a = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    assert rules.content_hash(a) == rules.content_hash(a.astype(np.float64))
    b = a.copy()
    b[500] += 1e-3
    assert rules.content_hash(a) != rules.content_hash(b)


def test_unit_hash_draw_is_stable_and_near_the_fraction() -> None:
    keys = [f"sp/XC{i}.ogg" for i in range(4000)]
    draws = np.array([rules.unit_hash(k, 0) for k in keys])
    assert ((draws >= 0) & (draws < 1)).all()
    assert abs((draws < 0.5).mean() - 0.5) < 0.03
    assert draws[7] == rules.unit_hash(keys[7], 0)
    assert (draws != np.array([rules.unit_hash(k, 1) for k in keys])).mean() > 0.99


def test_rare_class_copies() -> None:
    labels = pd.Series(["a"] * 25 + ["b"] * 3 + ["c"])
    copies = rules.rare_class_copies(labels, min_files=20, copies=3)
    assert copies[labels == "a"].eq(1).all() and copies[labels != "a"].eq(3).all()
    with pytest.raises(ValueError, match=">= 1"):
        rules.rare_class_copies(labels, 20, 0)


def test_load_exclusions(tmp_path: Path) -> None:
    path = tmp_path / "ex.csv"
    path.write_text("filename,start_s,end_s,reason\nsp/XC1.ogg,,,noise only\nsp/XC2.ogg,1.5,3.0,\n")
    ex = rules.load_exclusions(path)
    assert list(ex.columns) == ["filename", "start_s", "end_s", "reason"]
    assert np.isnan(ex.start_s[0]) and ex.reason[0] == "noise only"
    assert ex.loc[1, ["start_s", "end_s"]].tolist() == [1.5, 3.0] and ex.reason[1] == "manual"
    (tmp_path / "names.csv").write_text("filename\nsp/XC3.ogg\n")
    assert rules.load_exclusions(tmp_path / "names.csv").filename.tolist() == ["sp/XC3.ogg"]


@pytest.mark.parametrize("body, message", [
    ("file\nx.ogg\n", "needs a 'filename' column"),
    ("filename,start_s,end_s\nx.ogg,1.0,\n", r"row 2 \(x.ogg\): give both"),
    ("filename,start_s,end_s\nx.ogg,3.0,1.0\n", "end_s 1.0 <= start_s 3.0"),
])
def test_load_exclusions_rejects_bad_rows(tmp_path: Path, body: str, message: str) -> None:
    (tmp_path / "ex.csv").write_text(body)
    with pytest.raises(ValueError, match=message):
        rules.load_exclusions(tmp_path / "ex.csv")


def test_overlap_and_precision_recall() -> None:
    assert rules.overlap_s([(0, 2), (3, 5)], [(1, 4)]) == pytest.approx(2.0)
    det = {"a": [(0.0, 2.0)], "b": [(0.0, 1.0)]}
    truth = {"a": [(1.0, 3.0)], "c": [(0.0, 1.0)]}
    precision, recall = rules.span_precision_recall(det, truth)
    assert precision == pytest.approx(1 / 3) and recall == pytest.approx(1 / 3)
    assert np.isnan(rules.span_precision_recall({}, truth)[0])
