"""Tests for birdclef.infer.onnx_graphs: the exportable DFT front end against torchaudio's STFT."""

from __future__ import annotations

import pytest
import torch

from birdclef.features.frontend import MelConfig, MelFrontEnd
from birdclef.infer.onnx_graphs import exportable_frontend
from birdclef.infer.parity import synthetic_audio


@pytest.mark.parametrize(
    "cfg",
    [
        {},
        {"n_fft": 2048, "hop_length": 500, "n_mels": 96, "norm": "minmax", "deltas": True},
        {"n_fft": 512, "n_mels": 32, "fmin": 0, "fmax": 16000, "norm": "db", "absmax": True},
    ],
)
def test_exportable_frontend_matches_the_torchaudio_stft(cfg):
    reference = MelFrontEnd(MelConfig.from_dict(cfg)).eval()
    wave = torch.from_numpy(synthetic_audio(3, seed=2))
    with torch.no_grad():
        want, got = reference(wave), exportable_frontend(reference)(wave)
    assert got.shape == want.shape
    scale = 80.0 if cfg.get("norm") == "db" else 1.0  # raw dB spans ~80 units, the others [0, 1]
    assert (got - want).abs().max().item() / scale < 1e-4  # observed ~2e-5: float32 DFT sums vs FFT


def test_exportable_frontend_rejects_a_magnitude_spectrogram():
    frontend = MelFrontEnd(MelConfig())
    frontend.mel.spectrogram.power = 1.0
    with pytest.raises(ValueError, match="power"):
        exportable_frontend(frontend)


def test_exports_carry_no_stack_traces_so_two_checkouts_export_the_same_bytes(tmp_path):
    """The dynamo exporter writes each node's Python stack trace (absolute checkout paths) into the graph; export
    strips them, so the file no longer holds the path it was made from and two exports are byte-identical."""
    import onnx

    from birdclef.infer.onnx_graphs import STACK_TRACE_KEY, export_graph

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU())
    a = export_graph(net, torch.randn(2, 4), tmp_path / "a.onnx", "x", ["y"], (0,), 18)
    b = export_graph(net, torch.randn(2, 4), tmp_path / "b.onnx", "x", ["y"], (0,), 18)
    model = onnx.load(str(a))
    assert model.graph.node and not any(m.key == STACK_TRACE_KEY for n in model.graph.node for m in n.metadata_props)
    assert any(m.key == "namespace" for n in model.graph.node for m in n.metadata_props)  # the rest stays
    assert b"site-packages" not in a.read_bytes() and a.read_bytes() == b.read_bytes()
