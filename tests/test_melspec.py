"""Tests for birdclef.infer.melspec: the numpy/scipy mel front end against torch, its threads, its pools."""

from __future__ import annotations

import os

import numpy as np
import pytest

from birdclef.infer import melspec
from birdclef.infer.parity import synthetic_audio


@pytest.mark.parametrize(
    "cfg",
    [
        {"n_fft": 1024, "hop_length": 320, "n_mels": 64},
        {"n_fft": 2048, "hop_length": 500, "n_mels": 96, "norm": "minmax", "absmax": True},
        {"n_fft": 512, "hop_length": 256, "n_mels": 32, "norm": "db", "deltas": True},
    ],
)
@pytest.mark.parametrize("fft", ["scipy", "numpy"])
def test_numpy_frontend_matches_torch(cfg, fft, tmp_path, monkeypatch):
    import torch

    from birdclef.features.frontend import MelConfig, MelFrontEnd
    from birdclef.infer import melspec
    from birdclef.infer.melspec import NumpyFrontEnd
    from birdclef.infer.onnx_graphs import numpy_frontend

    if fft == "numpy":  # the fallback of an image without scipy
        monkeypatch.setattr(melspec, "_scipy_fft", lambda: None)
    else:
        assert melspec._scipy_fft() is not None
    torch_fe = MelFrontEnd(MelConfig.from_dict(cfg))
    fast = numpy_frontend(torch_fe)
    fast.save(tmp_path / "fe.npz")
    loaded = NumpyFrontEnd.load(tmp_path / "fe.npz", threads=2)
    wave = synthetic_audio(2, seed=3)
    with torch.no_grad():
        ref = torch_fe(torch.from_numpy(wave)).numpy()
    got = loaded(wave)[0]
    assert got.shape == ref.shape and got.dtype == np.float32
    scale = 80.0 if cfg.get("norm") == "db" else 1.0  # raw dB vs [0, 1] images
    assert np.abs(got - ref).max() <= 1e-4 * scale


def test_numpy_frontend_rows_over_threads_equal_one_thread(tmp_path):
    from birdclef.features.frontend import MelConfig, MelFrontEnd
    from birdclef.infer.melspec import NumpyFrontEnd
    from birdclef.infer.onnx_graphs import numpy_frontend

    fe = numpy_frontend(MelFrontEnd(MelConfig.from_dict({"n_fft": 1024, "hop_length": 320, "n_mels": 64})))
    fe.save(tmp_path / "fe.npz")
    one = NumpyFrontEnd.load(tmp_path / "fe.npz", threads=1)
    wave = synthetic_audio(5, seed=4)
    ref = one(wave)[0]
    for threads in (2, 3, 8):  # fewer rows than threads too
        got = NumpyFrontEnd.load(tmp_path / "fe.npz", threads=threads)(wave)[0]
        assert got.shape == ref.shape and got.dtype == np.float32
        np.testing.assert_allclose(got, ref, atol=1e-6)
    assert NumpyFrontEnd.load(tmp_path / "fe.npz", threads=4)(wave[:1])[0].shape == ref[:1].shape


def test_process_local_pool_is_remade_in_a_forked_child(monkeypatch):
    pool = melspec.ProcessLocalPool(2, "test")
    first = pool.get()
    assert pool.get() is first and first.submit(lambda: 41 + 1).result() == 42
    monkeypatch.setattr(os, "getpid", lambda: -1)  # as a forked child sees it: another pid, the parent's pool
    assert pool.get() is not first
