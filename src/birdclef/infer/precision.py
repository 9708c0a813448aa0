"""Reduced-precision member bodies for the Kaggle CPU budget: OpenVINO FP16 IR (2025 rank 2) and INT8 post-training
quantisation, calibrated on real windows (``int8``: onnxruntime static QDQ; ``int8_nncf``: NNCF, OpenVINO's own
quantiser, into an OpenVINO IR), with their parity against the fp32 ONNX graphs.

NNCF is the faster INT8 on a CPU: OpenVINO runs its IR with int8 kernels end to end (AVX-512 VNNI, or AVX2 where
that is all there is), where onnxruntime's QDQ graph of an EfficientNet spends much of its time converting around
the fp32 SiLU and squeeze-excite ops; and unlike the FP16 IR its gain does not need a CPU with BF16/FP16 arithmetic.

Only the member bodies change precision: the mel front ends stay fp32 (the numpy FFT front end or its ONNX graph),
since the dB clamp and normalisation are where low precision would hurt and the body is where the time goes. The
fp32 body stays in the export folder (``body_fp32`` in the spec) as the reference and the fallback for a runtime
that cannot load the reduced graph.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import math
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from birdclef import SAMPLE_RATE, WINDOW_SECONDS
from birdclef.infer.backends import ExportedEnsemble, available_backends
from birdclef.infer.parity import max_abs_diff, time_call

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8", "int8_nncf")
SERVES: dict[str, tuple[str, ...]] = {
    "fp32": ("openvino", "onnxruntime"),
    # The FP16 IR is OpenVINO's own format: onnxruntime cannot load it.
    "fp16": ("openvino",),
    # QDQ is onnxruntime's native quantised format (and the Kaggle image has onnxruntime); OpenVINO reads it too.
    "int8": ("onnxruntime", "openvino"),
    # NNCF writes an OpenVINO IR with FakeQuantize ops: OpenVINO only.
    "int8_nncf": ("openvino",),
}
"""The backends that can serve each precision, in the fixed order ``backend: auto`` tries them."""
CALIBRATED = ("int8", "int8_nncf")
"""Precisions that need calibration windows (``export.calibration_audio``)."""
AUDIO_SUFFIXES = (".ogg", ".wav", ".flac", ".mp3")
WINDOWS_PER_FILE = 4
"""Calibration windows taken from each recording, evenly spread over it (many files beat many windows of one)."""


def check_precision_params(cfg: Mapping[str, Any], installed: Sequence[str] | None = None) -> None:
    """Refuse an ``export`` params section whose precision settings cannot apply.

    Args:
        cfg: the export params (``precision``, ``backend``, ``calibration_audio``, ``calibration_windows``,
            ``precision_tolerance``).
        installed: the ONNX backends that import here (default: ``backends.available_backends()``).

    Raises:
        ValueError: an unknown precision, a backend that cannot serve it (``fp16`` or ``int8_nncf`` on
            onnxruntime), fp16 or int8_nncf without OpenVINO installed, int8_nncf without NNCF, int8 or int8_nncf
            without calibration audio, or a non-positive window count or tolerance.
    """
    precision = cfg.get("precision", "fp32")
    if precision not in PRECISIONS:
        raise ValueError(f"export.precision must be one of {list(PRECISIONS)}, not {precision!r}")
    backend = cfg.get("backend", "auto")
    if backend != "auto" and backend not in SERVES[precision]:
        serves = list(SERVES[precision])
        raise ValueError(f"export.backend {backend!r} cannot serve export.precision {precision!r}: it runs on {serves}")
    installed = list(available_backends() if installed is None else installed)
    if precision in ("fp16", "int8_nncf") and "openvino" not in installed:
        raise ValueError(f"export.precision {precision!r} writes an OpenVINO IR: install it (pip install openvino)")
    if precision == "int8_nncf" and importlib.util.find_spec("nncf") is None:
        raise ValueError("export.precision 'int8_nncf' quantises with NNCF: install it (pip install nncf)")
    if precision in CALIBRATED and not cfg.get("calibration_audio"):
        raise ValueError(f"export.precision {precision!r} needs export.calibration_audio: recordings to calibrate on")
    if int(cfg.get("calibration_windows", 1)) < 1:
        raise ValueError(f"export.calibration_windows must be >= 1, got {cfg.get('calibration_windows')}")
    tol = cfg.get("precision_tolerance", 1.0)
    if not isinstance(tol, int | float) or isinstance(tol, bool) or not 0 < tol <= 1:
        raise ValueError(f"export.precision_tolerance must be a probability difference in (0, 1], got {tol!r}")


def calibration_windows(source: str | os.PathLike[str], n_windows: int) -> np.ndarray:
    """Real 5-s windows to calibrate INT8 on: up to ``WINDOWS_PER_FILE`` evenly spread windows per recording.

    Args:
        source: a recording, or a folder whose recordings (sorted by name) are read in turn until enough windows.
        n_windows: windows wanted.

    Returns:
        (n_windows, 5 s x 32 kHz) float32 (fewer when the recordings run out).

    Raises:
        FileNotFoundError: ``source`` does not exist or holds no recording.
    """
    from birdclef.audio.decode import load_audio

    source = Path(source)
    files = [source] if source.is_file() else sorted(p for p in source.glob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    if not source.exists() or not files:
        raise FileNotFoundError(f"export.calibration_audio {source}: no recording there ({', '.join(AUDIO_SUFFIXES)})")
    window = int(round(WINDOW_SECONDS * SAMPLE_RATE))
    out: list[np.ndarray] = []
    for path in files:
        wave = load_audio(path)
        count = len(wave) // window
        if count == 0:
            continue
        take = min(WINDOWS_PER_FILE, count, n_windows - len(out))
        starts = np.linspace(0, count - 1, take).round().astype(int) * window
        out += [wave[s : s + window] for s in starts]
        if len(out) >= n_windows:
            break
    if not out:
        raise FileNotFoundError(f"export.calibration_audio {source}: every recording is shorter than one window")
    return np.stack(out).astype(np.float32)


def convert_fp16(onnx_path: str | os.PathLike[str], xml_path: str | os.PathLike[str]) -> Path:
    """An OpenVINO IR of an ONNX graph with FP16 weights (``.xml`` + ``.bin`` beside it); returns the ``.xml``.

    The weights are stored in FP16 (half the file); at run time OpenVINO computes in the lowest precision the
    CPU supports for it under the ``f16`` hint (``backends.OV_REDUCED_HINT``): f16 on AVX512-FP16/AMX-FP16, bf16 on
    AVX512-BF16/AMX, f32 (no speed-up) on an AVX2-only CPU.
    """
    import openvino as ov

    xml_path = Path(xml_path)
    ov.save_model(ov.convert_model(str(onnx_path)), str(xml_path), compress_to_fp16=True)
    return xml_path


def quantize_int8(onnx_path: str | os.PathLike[str], out_path: str | os.PathLike[str], calibration: np.ndarray) -> Path:
    """Static INT8 post-training quantisation of a body graph (QDQ format, per-channel int8 weights, uint8
    activations, MinMax ranges from ``calibration``); returns ``out_path``.

    Args:
        onnx_path: the fp32 body graph (``mel -> clip, frame``).
        out_path: the quantised graph to write.
        calibration: (N, channels, n_mels, frames) float32 mel inputs (the front end's outputs on real windows).
    """
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    name = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).get_inputs()[0].name
    batches = [{name: np.ascontiguousarray(calibration[i : i + 1], dtype=np.float32)} for i in range(len(calibration))]

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    out_path = Path(out_path)
    pre = out_path.with_name(f".{out_path.stem}.pre.onnx")
    # Graph cleanup (constant folding, BatchNorm fusion) before quantising, so no Conv is left unquantised between
    # two fused ops. The symbolic shape pass fails on the dynamo export's dynamic time axis; ONNX's own suffices.
    quant_pre_process(str(onnx_path), str(pre), skip_symbolic_shape=True)
    try:
        quantize_static(
            str(pre), str(out_path), _Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        )  # fmt: skip
    finally:
        pre.unlink(missing_ok=True)
    return out_path


def quantize_nncf(onnx_path: str | os.PathLike[str], xml_path: str | os.PathLike[str], calibration: np.ndarray) -> Path:
    """INT8 post-training quantisation of a body graph by NNCF into an OpenVINO IR (``.xml`` + ``.bin``); returns
    the ``.xml``.

    NNCF's default scheme for CPUs: symmetric per-channel int8 weights, int8/uint8 activations with ranges from
    ``calibration`` (min-max over every window given), then fast bias correction; the quantisers are FakeQuantize
    ops that OpenVINO's CPU plugin fuses into int8 kernels.

    Args:
        onnx_path: the fp32 body graph (``mel -> clip, frame``).
        xml_path: the IR to write.
        calibration: (N, channels, n_mels, frames) float32 mel inputs (the front end's outputs on real windows).
    """
    import nncf
    import openvino as ov

    xml_path = Path(xml_path)
    windows = [np.ascontiguousarray(calibration[i : i + 1], dtype=np.float32) for i in range(len(calibration))]
    model = ov.convert_model(str(onnx_path))
    # NNCF draws its progress bars on stdout, which belongs to the caller (a stage's log, a benchmark's JSON).
    with contextlib.redirect_stdout(sys.stderr):
        quantised = nncf.quantize(model, nncf.Dataset(windows), subset_size=len(windows))
    ov.save_model(quantised, str(xml_path), compress_to_fp16=False)
    return xml_path


def quantized_nodes(path: str | os.PathLike[str]) -> int:
    """How many quantisers a graph has: QuantizeLinear / DequantizeLinear nodes of an ONNX graph, FakeQuantize ops
    of an OpenVINO IR (0 for an fp32 graph)."""
    if Path(path).suffix == ".xml":
        import openvino as ov

        return sum(op.get_type_name() == "FakeQuantize" for op in ov.Core().read_model(str(path)).get_ops())
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return sum(node.op_type in ("QuantizeLinear", "DequantizeLinear") for node in graph.node)


def reduce_members(
    loaded: list[tuple[dict[str, Any], nn.Module]],
    root: Path,
    cfg: Mapping[str, Any],
    calibration: np.ndarray | None = None,
) -> dict[str, Any]:
    """Write each member's reduced-precision body next to its fp32 one and point the spec entries at it.

    Args:
        loaded: (spec entry with ``body`` and ``mel``, model) per member; entries get ``body_fp32`` and a new
            ``body``.
        root: the export folder.
        cfg: the export params (``precision``).
        calibration: (N, samples) waveform windows for INT8 (each member calibrates on its own mel of them).

    Returns:
        ``int8_nodes_<member>`` (the quantised graph's quantisers: QDQ nodes or FakeQuantize ops) for INT8, else
        ``{}``.
    """
    import torch

    from birdclef.features.frontend import MelFrontEnd

    precision, out = cfg["precision"], {}
    for entry, model in loaded:
        fp32 = root / entry["body"]
        if precision == "fp16":
            reduced = convert_fp16(fp32, fp32.with_name(f"{fp32.stem}_fp16.xml"))
        else:
            if calibration is None:
                raise ValueError("INT8 quantisation needs calibration windows")
            with torch.no_grad():
                mel = MelFrontEnd(model.mel_cfg)(torch.from_numpy(calibration)).numpy()
            if precision == "int8_nncf":
                reduced = quantize_nncf(fp32, fp32.with_name(f"{fp32.stem}_int8_nncf.xml"), mel)
            else:
                reduced = quantize_int8(fp32, fp32.with_name(f"{fp32.stem}_int8.onnx"), mel)
            out[f"int8_nodes_{entry['name']}"] = quantized_nodes(reduced)
        entry["body_fp32"], entry["body"] = entry["body"], reduced.name
    return out


def reduced_parity(
    root: Path, names: Sequence[str], wave: np.ndarray, cfg: Mapping[str, Any]
) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Parity of the reduced bodies with the fp32 ONNX chain (onnxruntime) on ``wave``, and their speed.

    Returns:
        ``({backend: {member: max abs probability diff vs fp32}}, {backend: median seconds of the ensemble})``
        for each installed backend of ``SERVES[precision]``.
    """
    threads, precision = int(cfg["threads"]), cfg["precision"]
    reference = ExportedEnsemble(root, "onnxruntime", threads, precision="fp32").member_outputs(wave)
    parity: dict[str, dict[str, float]] = {}
    speeds: dict[str, float] = {}
    for backend in (b for b in SERVES[precision] if b in available_backends()):
        ensemble = ExportedEnsemble(root, backend, threads)
        outputs = ensemble.member_outputs(wave)
        parity[backend] = {n: max_abs_diff(reference[n], outputs[n]) for n in names}
        speeds[backend] = time_call(lambda e=ensemble: e.member_outputs(wave), int(cfg["bench_repeats"]))
    return parity, speeds


def choose_reduced_backend(parity: Mapping[str, Mapping[str, float]], cfg: Mapping[str, Any]) -> str:
    """The backend a reduced-precision export serves on: the requested one, or the first of ``SERVES`` whose
    parity with fp32 holds within ``precision_tolerance``.

    Raises:
        ValueError: no backend (or not the requested one) keeps within the tolerance.
    """
    tol, precision = float(cfg["precision_tolerance"]), cfg["precision"]
    ok = [b for b in SERVES[precision] if b in parity and all(d <= tol for d in parity[b].values())]
    wanted = ok if cfg["backend"] == "auto" else [b for b in ok if b == cfg["backend"]]
    if not wanted:
        worst = {b: max(d.values(), default=math.nan) for b, d in parity.items()}
        raise ValueError(
            f"export.precision {precision!r}: no backend keeps within export.precision_tolerance {tol} of the fp32 "
            f"graphs (max abs probability diff per backend: {worst}; backend requested: {cfg['backend']})"
        )
    return wanted[0]
