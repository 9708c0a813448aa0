"""Tests for the mel front end: finite under float16 / bfloat16 autocast, identical to float32 there."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from birdclef import SAMPLE_RATE
from birdclef.features.frontend import MelConfig, MelFrontEnd
from birdclef.train.fit import FitConfig, autocast_dtype

MEL96 = {"n_fft": 2048, "hop_length": 500, "n_mels": 96, "fmin": 40, "fmax": 15000, "top_db": 80, "norm": "ref_max"}
MEL128 = {"n_fft": 1024, "hop_length": 320, "n_mels": 128, "fmin": 40, "fmax": 15000, "top_db": 80, "norm": "ref_max"}


def _loud_tone(amplitude: float = 0.9, freq: float = 3000.0, seconds: float = 5.0) -> torch.Tensor:
    t = torch.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (amplitude * torch.sin(2 * np.pi * freq * t)).unsqueeze(0)


@pytest.mark.parametrize("cfg", [MEL96, MEL128], ids=["mel96", "mel128"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_front_end_is_finite_and_float32_under_autocast(cfg, dtype):
    """A full-scale 3 kHz tone: the mel power (~1e5) overflows float16 if the projection runs in it."""
    front = MelFrontEnd(cfg)
    wave = torch.cat([_loud_tone(), _loud_tone(1.0, 8000.0), 0.01 * torch.randn(1, 5 * SAMPLE_RATE)])
    reference = front(wave)
    with torch.autocast("cpu", dtype=dtype):
        out = front(wave)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, reference)


def test_the_overflow_is_real_without_the_guard():
    """The guard is needed: the same mel projection in float16 overflows for this input."""
    front = MelFrontEnd(MelConfig.from_dict(MEL96))
    with torch.autocast("cpu", dtype=torch.float16):
        power = front.mel(_loud_tone())  # what forward() ran before the guard
    assert power.dtype == torch.float16
    assert not torch.isfinite(power).all()


def test_autocast_dtype_choice():
    cpu = torch.device("cpu")
    assert autocast_dtype(FitConfig(amp=True), cpu) is None  # auto keeps CPU in float32
    assert autocast_dtype(FitConfig(amp=True, amp_dtype="bfloat16"), cpu) == torch.bfloat16
    assert autocast_dtype(FitConfig(amp=False, amp_dtype="bfloat16"), cpu) is None
    with pytest.raises(ValueError, match="amp_dtype"):
        FitConfig.from_dict({"amp_dtype": "fp8"})


@pytest.mark.parametrize(
    ("mel", "invariant"),
    [({"norm": "ref_max"}, True), ({"norm": "minmax"}, True), ({"norm": "db", "absmax": True}, True),
     ({"norm": "db"}, False)],
)  # fmt: skip
def test_which_front_ends_ignore_the_input_gain(mel, invariant):
    # Why postprocess.peak_tta_problem refuses peak TTA on ref_max / minmax / absmax members: the image of a
    # tenfold quieter copy of the same audio is the same (to float rounding), so the TTA's second pass is the first.
    from birdclef.infer.postprocess import peak_tta_problem

    torch.manual_seed(0)
    front = MelFrontEnd(MelConfig.from_dict({"n_fft": 512, "hop_length": 320, "n_mels": 32, **mel}))
    wave = 0.5 * torch.randn(2, SAMPLE_RATE)
    diff = (front(wave) - front(0.1 * wave)).abs().max().item()
    assert (diff < 1e-4) is invariant, diff
    problem = peak_tta_problem({"peak_tta": {"enabled": True}}, {"m": front.cfg.to_dict()})
    assert (problem is not None) is invariant
