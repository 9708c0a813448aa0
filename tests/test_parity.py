"""Tests for birdclef.infer.parity: the test audio and the backend an export serves on."""

from __future__ import annotations

import numpy as np
import pytest

from birdclef.infer.parity import choose_backend, synthetic_audio


def test_synthetic_audio_is_deterministic_and_loud_enough_to_matter():
    a, b = synthetic_audio(2, seed=3), synthetic_audio(2, seed=3)
    assert a.shape == (2, 160_000) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert 0.01 < np.abs(a).max() < 1.0 and not np.array_equal(a, synthetic_audio(2, seed=4))


def test_choose_backend_takes_the_preferred_backend_whose_parity_holds():
    good = {"onnxruntime": {"a": 1e-6}, "openvino": {"a": 2e-6}}
    assert choose_backend(good, 1e-4) == "openvino"  # a fixed preference: no timing, no flip between runs
    assert choose_backend({"onnxruntime": {"a": 1e-6}}, 1e-4) == "onnxruntime"  # openvino not installed
    drifting = {"onnxruntime": {"a": 1e-6}, "openvino": {"a": 3e-3}}
    assert choose_backend(drifting, 1e-4) == "onnxruntime"
    with pytest.raises(ValueError, match="openvino"):
        choose_backend(drifting, 1e-4, requested="openvino")
    assert choose_backend(good, 1e-4, requested="onnxruntime") == "onnxruntime"


def test_choose_backend_fails_when_the_reference_backend_drifts_from_torch():
    with pytest.raises(ValueError, match="reference"):
        choose_backend({"onnxruntime": {"a": 5e-3}, "openvino": {"a": 1e-6}}, 1e-4)
    with pytest.raises(ValueError, match="reference"):
        choose_backend({"openvino": {"a": 1e-6}}, 1e-4)
