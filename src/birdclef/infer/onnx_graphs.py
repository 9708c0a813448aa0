"""Exportable torch modules and their ONNX graphs: the DFT spectrogram, the front-end / body / fused wrappers, the
dynamo export, and the numpy twin of a front end (``melspec.NumpyFrontEnd``)."""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from birdclef.features.frontend import MelConfig, MelFrontEnd
from birdclef.infer.melspec import NumpyFrontEnd
from birdclef.infer.parity import synthetic_audio
from birdclef.io import atomic_path
from birdclef.models import InferenceWrapper

OPSET = 18
"""The dynamo exporter's lowest well-supported opset (``export.opset``'s default)."""


class _DftSpectrogram(nn.Module):
    """Power spectrogram as a strided Conv1d against windowed cosine and sine bases.

    Same numbers as torchaudio's ``Spectrogram`` (centred, reflect-padded, one-sided, power 2) up to float
    rounding, but built from Pad + Conv + Mul only: OpenVINO cannot load the ONNX ``STFT`` op with a dynamic
    signal length, while Conv runs everywhere with dynamic batch and length.
    """

    def __init__(self, spec: nn.Module, keep: torch.Tensor) -> None:
        super().__init__()
        got = (spec.power, bool(spec.normalized), spec.center, spec.pad, spec.onesided)
        if got != (2.0, False, True, 0, True):
            raise ValueError(f"cannot export (power, normalized, center, pad, onesided) = {got}; need (2, 0, 1, 0, 1)")
        self.n_fft, self.hop, self.pad_mode = int(spec.n_fft), int(spec.hop_length), spec.pad_mode
        window = torch.zeros(self.n_fft, dtype=torch.float64)
        left = (self.n_fft - spec.window.numel()) // 2  # torch.stft centres a shorter window in the frame
        window[left : left + spec.window.numel()] = spec.window.double()
        bins = torch.arange(self.n_fft // 2 + 1, dtype=torch.float64)[keep]
        phase = 2 * math.pi * bins[:, None] * torch.arange(self.n_fft, dtype=torch.float64)[None, :] / self.n_fft
        basis = torch.cat([torch.cos(phase) * window, torch.sin(phase) * window]).float()
        self.register_buffer("basis", basis.unsqueeze(1))  # (2 * bins, 1, n_fft)
        self.bins = int(bins.numel())

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """Args: wave (B, samples). Returns: power (B, kept bins, frames)."""
        half = self.n_fft // 2
        x = F.pad(wave.unsqueeze(1), (half, half), mode=self.pad_mode)
        y = F.conv1d(x, self.basis, stride=self.hop)
        return y[:, : self.bins] ** 2 + y[:, self.bins :] ** 2


def exportable_frontend(frontend: MelFrontEnd) -> MelFrontEnd:
    """A copy of ``frontend`` whose STFT exports to ONNX graphs that onnxruntime and OpenVINO both load.

    Frequency bins the mel filterbank ignores (above fmax, below fmin) are dropped from the DFT, saving work.
    """
    out = copy.deepcopy(frontend).eval()
    fb = out.mel.mel_scale.fb  # (freq bins, n_mels)
    keep = fb.abs().sum(dim=1) > 0
    out.mel.spectrogram = _DftSpectrogram(frontend.mel.spectrogram, keep)
    out.mel.mel_scale.fb = fb[keep].contiguous()
    return out


def body_wrapper(model: nn.Module) -> InferenceWrapper:
    """``mel -> (clip probs, frame probs)``: the model's InferenceWrapper with its front end removed."""
    body = copy.deepcopy(model)
    body.frontend = nn.Identity()
    return InferenceWrapper(body)


def fused_wrapper(model: nn.Module) -> InferenceWrapper:
    """``wave -> (clip probs, frame probs)`` with the exportable front end inside."""
    fused = copy.deepcopy(model)
    fused.frontend = exportable_frontend(model.frontend)
    return InferenceWrapper(fused)


def export_graph(
    module: nn.Module,
    example: torch.Tensor,
    path: str | os.PathLike[str],
    input_name: str,
    output_names: Sequence[str],
    dynamic_axes: Sequence[int],
    opset: int = OPSET,
) -> Path:
    """Export ``module`` with the dynamo exporter to one self-contained ONNX file, atomically.

    Args:
        module: an eval-mode module taking one tensor.
        example: an example input (batch >= 2, so the batch axis is not specialised to 1).
        path: output ``.onnx`` file.
        input_name, output_names: graph input/output names.
        dynamic_axes: input axes left dynamic (batch, samples or frames). ``Dim.DYNAMIC`` lets torch.export
            infer their valid range (e.g. at least 33 frames for a 32x-downsampling encoder) and fails loudly
            rather than silently fixing a length.
        opset: ONNX opset (>= 18).
    """
    dims = {axis: torch.export.Dim.DYNAMIC for axis in dynamic_axes}
    with torch.no_grad():
        program = torch.onnx.export(
            module.eval(),
            (example,),
            input_names=[input_name],
            output_names=list(output_names),
            dynamic_shapes=(dims,),
            opset_version=opset,
            dynamo=True,
            verbose=False,
        )
    with atomic_path(path) as tmp:
        program.save(tmp, external_data=False)
        strip_stack_traces(tmp)
    return Path(path)


STACK_TRACE_KEY = "pkg.torch.onnx.stack_trace"


def strip_stack_traces(path: str | os.PathLike[str]) -> int:
    """Drop the exporter's per-node Python stack traces from an ONNX file, in place; returns how many went.

    The dynamo exporter records each node's stack trace, and with it the absolute paths of the checkout and its
    virtual environment: two clones at different paths exported byte-different graphs (834 traces per member),
    so a fresh clone's ``dvc repro`` rewrote the export's hashes in dvc.lock. Nothing reads them at run time.
    """
    import onnx

    model = onnx.load(str(path))
    nodes = [*model.graph.node, *(n for f in model.functions for n in f.node)]
    removed = 0
    while nodes:
        node = nodes.pop()
        keep = [m for m in node.metadata_props if m.key != STACK_TRACE_KEY]
        removed += len(node.metadata_props) - len(keep)
        del node.metadata_props[:]
        node.metadata_props.extend(keep)
        for attr in node.attribute:  # control-flow subgraphs (If, Loop, Scan) hold nodes too
            nodes += [*(attr.g.node if attr.HasField("g") else ()), *(n for g in attr.graphs for n in g.node)]
    onnx.save(model, str(path))
    return removed


def export_frontend(cfg: MelConfig, path: str | os.PathLike[str], opset: int = OPSET) -> Path:
    """Export the mel front end of ``cfg``: ``wave (B, samples) -> mel (B, ch, n_mels, frames)``."""
    example = torch.from_numpy(synthetic_audio(2, seed=1))
    return export_graph(exportable_frontend(MelFrontEnd(cfg)), example, path, "wave", ["mel"], (0, 1), opset)


def export_body(model: nn.Module, path: str | os.PathLike[str], opset: int = OPSET) -> Path:
    """Export a member body: ``mel (B, ch, n_mels, frames) -> clip (B, C), frame (B, T, C)`` probabilities."""
    with torch.no_grad():
        example = model.frontend(torch.from_numpy(synthetic_audio(2, seed=1)))
    return export_graph(body_wrapper(model), example, path, "mel", ["clip", "frame"], (0, 3), opset)


def export_fused(model: nn.Module, path: str | os.PathLike[str], opset: int = OPSET) -> Path:
    """Export a whole member: ``wave (B, samples) -> clip (B, C), frame (B, T, C)`` probabilities."""
    example = torch.from_numpy(synthetic_audio(2, seed=1))
    return export_graph(fused_wrapper(model), example, path, "wave", ["clip", "frame"], (0, 1), opset)


def numpy_frontend(frontend: MelFrontEnd, threads: int = 1) -> NumpyFrontEnd:
    """The numpy FFT twin of a torch front end: its window (centred in n_fft samples) and mel filterbank."""
    spec = frontend.mel.spectrogram
    n_fft = int(spec.n_fft)
    window = np.zeros(n_fft, dtype=np.float32)
    left = (n_fft - spec.window.numel()) // 2  # torch.stft centres a shorter window in the frame
    window[left : left + spec.window.numel()] = spec.window.float().numpy()
    fb = frontend.mel.mel_scale.fb.float().numpy()  # (n_fft // 2 + 1, n_mels)
    return NumpyFrontEnd(frontend.cfg.to_dict(), window, fb, threads)
