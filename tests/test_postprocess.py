"""Tests for birdclef.infer.postprocess: TTA, smoothing, boosts and their params switches."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from birdclef.infer import postprocess as P


@pytest.fixture
def scores() -> np.ndarray:
    return np.random.default_rng(0).uniform(0.01, 0.99, size=(12, 4)).astype(np.float32)


def test_delta_shift_formula_and_edges():
    frames = np.arange(10, dtype=np.float32)[:, None] ** 2
    out = P.delta_shift(frames, 2)
    t = 5
    assert out[t, 0] == pytest.approx(0.25 * 3**2 + 0.5 * 5**2 + 0.25 * 7**2)
    assert out[0, 0] == pytest.approx(0.25 * 0 + 0.5 * 0 + 0.25 * 4)  # t - d clamps to the first frame
    np.testing.assert_array_equal(P.delta_shift(np.ones((6, 3)), 2), np.ones((6, 3)))
    np.testing.assert_array_equal(P.delta_shift(frames, 0), frames)


def test_smooth_three_tap_kernel_and_renormalised_edges():
    x = np.zeros((5, 1), dtype=np.float32)
    x[2] = 1.0
    out = P.smooth(x, [0.1, 0.8, 0.1])
    np.testing.assert_allclose(out[:, 0], [0, 0.1, 0.8, 0.1, 0], atol=1e-7)
    edge = P.smooth(np.eye(5, 1, dtype=np.float32), [0.1, 0.8, 0.1])
    assert edge[0, 0] == pytest.approx(0.8 / 0.9)
    np.testing.assert_allclose(P.smooth(np.full((12, 3), 0.3), [0.1, 0.2, 0.4, 0.2, 0.1]), 0.3)


def test_five_tap_kernel_spreads_two_windows():
    x = np.zeros((9, 1))
    x[4] = 1
    np.testing.assert_allclose(P.smooth(x, [0.1, 0.2, 0.4, 0.2, 0.1])[2:7, 0], [0.1, 0.2, 0.4, 0.2, 0.1])


def test_class_strength_rare_classes_smoothed_more():
    s = P.class_strength(np.array([1, 10, 100, 1000]), low=0.2, high=1.0)
    assert s[0] == pytest.approx(1.0) and s[-1] == pytest.approx(0.2)
    assert np.all(np.diff(s) < 0)
    np.testing.assert_allclose(P.class_strength(np.array([5, 5]), 0.2, 0.7), 0.7)


def test_class_dependent_smoothing_blends_raw_and_smoothed(scores):
    counts = np.array([1, 1000, 1, 1000])
    cfg = {"smoothing": {"class_strength": {"low": 0.0, "high": 1.0}}}
    out = P.apply_file(scores, cfg, counts)
    full = P.smooth(scores, [0.1, 0.8, 0.1])
    np.testing.assert_allclose(out[:, [0, 2]], full[:, [0, 2]], rtol=1e-6)
    np.testing.assert_allclose(out[:, [1, 3]], scores[:, [1, 3]], rtol=1e-6)
    with pytest.raises(ValueError, match="train counts"):
        P.apply_file(scores, cfg)


def test_topk_boost_multiplies_by_file_topk_mean(scores):
    out = P.topk_boost(scores, k=2)
    top2 = np.sort(scores, axis=0)[-2:].mean(axis=0)
    np.testing.assert_allclose(out, scores * top2, rtol=1e-6)
    np.testing.assert_allclose(P.topk_boost(scores, 1), scores * scores.max(axis=0), rtol=1e-6)


def test_max_boost_lifts_files_with_a_confident_window():
    quiet = np.full((12, 1), 0.2, dtype=np.float32)
    loud = quiet.copy()
    loud[3] = 0.95
    assert P.max_boost(loud, 0.5)[0, 0] > P.max_boost(quiet, 0.5)[0, 0]
    np.testing.assert_allclose(P.max_boost(quiet, 0.0), quiet, rtol=1e-5)


def test_file_mean_blend(scores):
    out = P.file_mean(scores, 0.3)
    np.testing.assert_allclose(out, 0.7 * scores + 0.3 * scores.mean(axis=0), rtol=1e-6)


def test_apply_file_switches_compose_in_documented_order(scores):
    assert np.array_equal(P.apply_file(scores, {"smoothing": {"enabled": False}}), scores)
    cfg = {
        "smoothing": {"kernel": [0.1, 0.2, 0.4, 0.2, 0.1]},
        "file_mean": {"enabled": True, "weight": 0.2},
        "topk_boost": {"enabled": True, "k": 1},
        "max_boost": {"enabled": True, "weight": 0.3},
    }
    expected = P.max_boost(P.topk_boost(P.file_mean(P.smooth(scores, cfg["smoothing"]["kernel"]), 0.2), 1), 0.3)
    out = P.apply_file(scores, cfg)
    np.testing.assert_allclose(out, expected, rtol=1e-5)
    assert out.min() >= 0 and out.max() <= 1


def test_resolve_rejects_typos():
    with pytest.raises(ValueError, match="unknown post-processing step"):
        P.resolve({"smothing": {}})
    with pytest.raises(ValueError, match="unknown key"):
        P.resolve({"topk_boost": {"kk": 2}})
    with pytest.raises(ValueError, match="odd-length"):
        P.resolve({"smoothing": {"kernel": [0.5, 0.5]}})


def test_peak_tta_averages_raw_and_normalised_passes():
    calls = []

    def loudness(wave):
        calls.append(np.abs(wave).max(axis=1))
        clip = np.abs(wave).max(axis=1, keepdims=True)
        return {"clip": clip, "frame": clip[:, None, :]}

    wave = np.stack([np.full(100, 0.5, np.float32), np.zeros(100, np.float32)])
    wrapped = P.wrap_predictor(loudness, {"peak_tta": {"enabled": True, "peak": 0.1, "weight": 0.5}})
    out = wrapped(wave)
    np.testing.assert_allclose(calls[1], [0.1, 0.0])  # second pass at peak 0.1, silence left alone
    np.testing.assert_allclose(out["clip"][:, 0], [0.3, 0.0], rtol=1e-6)
    assert out["frame"].shape == (2, 1, 1)
    assert P.wrap_predictor(loudness, None) is loudness

    group = P.wrap_predictor(lambda w: [loudness(w), loudness(2 * w)], {"peak_tta": {"enabled": True, "weight": 0.5}})
    first, second = group(wave)  # a group predictor: the TTA applies to each member's output
    np.testing.assert_allclose(first["clip"], out["clip"], rtol=1e-6)
    np.testing.assert_allclose(second["clip"][:, 0], [0.6, 0.0], rtol=1e-6)  # (1.0 + 2 * 0.1) / 2


def test_frame_transform_switch():
    assert P.frame_transform({}) is None
    f = P.frame_transform({"delta_shift": {"enabled": True, "frames": 1}})
    x = np.arange(5, dtype=np.float32)[:, None]
    np.testing.assert_allclose(f(x), P.delta_shift(x, 1))


def test_module_runs_without_torch_or_birdclef(tmp_path: Path):
    code = (
        "import sys, importlib.util\n"
        "sys.modules['torch'] = None; sys.modules['birdclef'] = None; sys.modules['pandas'] = None\n"
        f"spec = importlib.util.spec_from_file_location('postprocess', {str(P.__file__)!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "import numpy as np\n"
        "print(m.apply_file(np.full((12, 3), 0.5), {'topk_boost': {'enabled': True}}).shape)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=True)
    assert out.stdout.strip() == "(12, 3)"


def test_peak_tta_is_refused_only_where_every_member_ignores_the_gain():
    on = {"peak_tta": {"enabled": True}}
    ref_max, db = {"norm": "ref_max", "absmax": False}, {"norm": "db", "absmax": False}
    problem = P.peak_tta_problem(on, {"it1_a": ref_max, "it2_b": {"norm": "db", "absmax": True}})
    assert problem is not None and "it1_a (norm ref_max)" in problem and "it2_b (absmax)" in problem
    assert P.peak_tta_problem(on, {"it1_a": {"norm": "minmax"}}) is not None
    assert P.peak_tta_problem(on, {"it1_a": ref_max, "it2_b": db}) is None  # one member hears the gain
    assert P.peak_tta_problem({"peak_tta": {"enabled": False}}, {"it1_a": ref_max}) is None
    assert P.peak_tta_problem(None, {"it1_a": ref_max}) is None
