"""ONNX export of ensemble members (mel front ends, member bodies, fused graphs) with torch parity checks."""

from __future__ import annotations

import copy
import logging
import math
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from birdclef import SAMPLE_RATE, WINDOW_SECONDS
from birdclef.features.frontend import MelConfig, MelFrontEnd
from birdclef.infer.backends import (
    SPEC_FILE,
    SPEC_FORMAT,
    ExportedEnsemble,
    TorchPredictor,
    available_backends,
    load_graph,
    make_predictor,
)
from birdclef.infer.melspec import NumpyFrontEnd
from birdclef.io import atomic_path, write_json
from birdclef.models import InferenceWrapper, load_checkpoint

log = logging.getLogger(__name__)

DEFAULTS: dict[str, Any] = {
    "opset": 18,  # the dynamo exporter's lowest well-supported opset
    "fused": True,  # also write wave -> probs graphs (birdclef predict, single-model use)
    "tolerance": 1e-4,  # max |p_torch - p_onnx| allowed, probabilities
    "threads": 2,  # intra-op threads for parity and speed runs
    "bench_windows": 12,  # 5-s windows per timed call (one soundscape)
    "bench_repeats": 3,
    "backend": "auto",  # auto (AUTO_PREFERENCE: the first backend whose parity holds) | onnxruntime | openvino
}
# `auto` takes the first of these whose parity holds. A fixed order, not this run's timing: two backends a few
# per cent apart would flip between two runs of one commit (and the submission's last digits with them).
# OpenVINO first: faster in the figures (efficientnet_b0, tf_efficientnetv2_s, mobilenetv3). For
# sed_mnv3s here the two are within noise since the threaded numpy front end (`benchmarks/inference.py`, median
# of 3 runs: mel + model 52 ms OpenVINO vs 53 ms onnxruntime per soundscape minute). onnxruntime is the reference.
AUTO_PREFERENCE = ("openvino", "onnxruntime")
_SPEC_VERSION = 1


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
    opset: int = DEFAULTS["opset"],
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
    return Path(path)


def export_frontend(cfg: MelConfig, path: str | os.PathLike[str], opset: int = DEFAULTS["opset"]) -> Path:
    """Export the mel front end of ``cfg``: ``wave (B, samples) -> mel (B, ch, n_mels, frames)``."""
    example = torch.from_numpy(synthetic_audio(2, seed=1))
    return export_graph(exportable_frontend(MelFrontEnd(cfg)), example, path, "wave", ["mel"], (0, 1), opset)


def export_body(model: nn.Module, path: str | os.PathLike[str], opset: int = DEFAULTS["opset"]) -> Path:
    """Export a member body: ``mel (B, ch, n_mels, frames) -> clip (B, C), frame (B, T, C)`` probabilities."""
    with torch.no_grad():
        example = model.frontend(torch.from_numpy(synthetic_audio(2, seed=1)))
    return export_graph(body_wrapper(model), example, path, "mel", ["clip", "frame"], (0, 3), opset)


def export_fused(model: nn.Module, path: str | os.PathLike[str], opset: int = DEFAULTS["opset"]) -> Path:
    """Export a whole member: ``wave (B, samples) -> clip (B, C), frame (B, T, C)`` probabilities."""
    example = torch.from_numpy(synthetic_audio(2, seed=1))
    return export_graph(fused_wrapper(model), example, path, "wave", ["clip", "frame"], (0, 1), opset)


def synthetic_audio(n_windows: int = 12, seed: int = 0, window_s: float = WINDOW_SECONDS) -> np.ndarray:
    """Real-looking test audio: FM whistles and chirp trains over coloured noise, (n_windows, samples) float32.

    Stands in for a field recording in parity checks: a spectrum with both loud tonal calls and a noise floor
    exercises the dB clamp and normalisation, where a random-normal wave would not.
    """
    rng = np.random.default_rng(seed)
    n = int(round(n_windows * window_s * SAMPLE_RATE))
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    noise = np.fft.irfft(spectrum / np.maximum(freqs, 50.0) ** 0.7, n)  # pinkish, like wind and distant chorus
    wave = 0.02 * noise / noise.std()
    t = np.arange(n) / SAMPLE_RATE
    for start in rng.uniform(0, n / SAMPLE_RATE - 1.0, size=3 * n_windows):
        dur = rng.uniform(0.1, 0.8)
        f0, depth, rate = rng.uniform(1500, 7000), rng.uniform(100, 1500), rng.uniform(2, 30)
        span = (t >= start) & (t < start + dur)
        tt = t[span] - start
        phase = 2 * np.pi * (f0 * tt - depth / (2 * np.pi * rate) * np.cos(2 * np.pi * rate * tt))
        envelope = np.sin(np.pi * tt / dur) ** 2 * rng.uniform(0.02, 0.3)
        wave[span] += envelope * (np.sin(phase) + 0.3 * np.sin(2 * phase))
    return wave.astype(np.float32).reshape(n_windows, -1)


def audio_windows(path: str | os.PathLike[str], n_windows: int, window_s: float = WINDOW_SECONDS) -> np.ndarray:
    """``n_windows`` consecutive windows of a real recording (repeated if it is short), (n_windows, samples)."""
    from birdclef.audio.decode import load_audio

    wave = load_audio(path)
    window = int(round(window_s * SAMPLE_RATE))
    need = n_windows * window
    wave = np.tile(wave, math.ceil(need / len(wave)))[:need]
    return wave.reshape(n_windows, window).astype(np.float32)


def max_abs_diff(reference: Mapping[str, np.ndarray], other: Mapping[str, np.ndarray]) -> float:
    """Largest |difference| over the clip and frame probabilities of two predictor outputs."""
    out = 0.0
    for key in ("clip", "frame"):
        a, b = np.asarray(reference[key]), np.asarray(other[key])
        if a.shape != b.shape:
            raise ValueError(f"{key} shapes differ: {a.shape} vs {b.shape}")
        out = max(out, float(np.abs(a - b).max()))
    return out


def time_call(fn: Callable[[], Any], repeats: int = 3) -> float:
    """Median wall time (s) of ``fn()`` over ``repeats`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def safe_name(name: str) -> str:
    """A file-name-safe form of a member or mel config name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name)).strip("._") or "unnamed"


def load_members(members: Sequence[Mapping[str, Any]]) -> list[tuple[dict[str, Any], nn.Module]]:
    """Load each member's checkpoint; return (entry, model) with name, mel, weight and classes filled in.

    Each entry (an ensemble spec member) needs ``checkpoint``; ``name`` defaults to the checkpoint stem,
    ``weight`` to 1, ``classes`` to the checkpoint's list (``None`` in the spec means every ensemble class).
    The mel config always comes from the checkpoint; it is named by the model config's ``mel`` (or by its
    values), and a string ``mel`` in the entry overrides that name.
    """
    out, names = [], set()
    for i, raw in enumerate(members):
        if "checkpoint" not in raw:
            raise ValueError(f"ensemble member {i} has no 'checkpoint': {dict(raw)}")
        model, _ = load_checkpoint(raw["checkpoint"])
        name = str(raw.get("name") or Path(raw["checkpoint"]).stem)
        if name in names:
            raise ValueError(f"two ensemble members are named {name!r}")
        names.add(name)
        mel = raw["mel"] if isinstance(raw.get("mel"), str) else model.cfg.mel or mel_key(model.mel_cfg)
        classes = raw.get("classes", model.classes)
        if classes is not None and len(classes) != model.num_classes:
            raise ValueError(f"member {name}: {len(classes)} classes listed for a model with {model.num_classes}")
        entry = {"name": name, "checkpoint": str(raw["checkpoint"]), "mel": safe_name(mel)}
        entry |= {"weight": float(raw.get("weight", 1.0)), "classes": list(classes) if classes else None}
        out.append((entry, model))
    return out


def mel_key(cfg: MelConfig) -> str:
    """A readable name for an unnamed mel config, e.g. ``mel128_1024_320``."""
    return f"mel{cfg.n_mels}_{cfg.n_fft}_{cfg.hop_length}"


def export_ensemble(
    members: Sequence[Mapping[str, Any]],
    out_dir: str | os.PathLike[str],
    params: Mapping[str, Any] | None = None,
    ensemble: Mapping[str, Any] | None = None,
    parity_audio: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Export every member (front end once per mel config, body per member), check parity, pick a backend.

    Args:
        members: member entries (see ``load_members``).
        out_dir: export folder to (re)create atomically: the graphs and ``export_spec.json``.
        params: the ``export`` params section (keys of ``DEFAULTS``).
        ensemble: the ensemble spec (classes, combination, post-processing, ...), copied into the export spec.
        parity_audio: a recording for the parity and speed checks; ``None`` uses ``synthetic_audio``.

    Returns:
        Flat metrics: ``parity_<backend>_<member>`` (max abs probability diff vs torch), ``parity_frontend_<mel>``,
        ``size_mb_<file stem>``, ``seconds_<backend>`` (whole ensemble on ``bench_windows`` 5-s windows),
        ``backend``.

    Raises:
        ValueError: onnxruntime (the reference backend) disagrees with torch beyond the tolerance, or the
            requested backend fails its parity.
    """
    cfg = {**DEFAULTS, **(params or {})}
    unknown = set(cfg) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"export params: unknown key(s) {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    loaded = load_members(members)
    if not loaded:
        raise ValueError("the ensemble has no members to export")
    wave = audio_windows(parity_audio, cfg["bench_windows"]) if parity_audio else synthetic_audio(cfg["bench_windows"])
    torch.set_num_threads(int(cfg["threads"]))
    metrics: dict[str, Any] = {}
    with atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True)
        mels = _export_frontends(loaded, tmp, cfg["opset"], wave, int(cfg["threads"]), metrics, cfg["tolerance"])
        for entry, model in loaded:
            stem = safe_name(entry["name"])
            entry["body"] = export_body(model, tmp / f"member_{stem}.onnx", cfg["opset"]).name
            if cfg["fused"]:
                entry["fused"] = export_fused(model, tmp / f"fused_{stem}.onnx", cfg["opset"]).name
        spec = {
            "format": SPEC_FORMAT,
            "version": _SPEC_VERSION,
            "sample_rate": SAMPLE_RATE,
            "opset": int(cfg["opset"]),
            "classes": _ensemble_classes(loaded, ensemble),
            "mels": mels,
            "members": [entry for entry, _ in loaded],
            "ensemble": dict(ensemble or {}),
        }
        write_json(tmp / SPEC_FILE, spec)
        parity, speeds = _check_backends(loaded, tmp, wave, cfg)
        for backend, diffs in parity.items():
            metrics |= {f"parity_{backend}_{name}": diff for name, diff in diffs.items()}
            metrics[f"seconds_{backend}"] = round(speeds[backend], 4)
        spec["backend"] = metrics["backend"] = choose_backend(parity, cfg["tolerance"], cfg["backend"])
        write_json(tmp / SPEC_FILE, spec)
        for f in sorted(tmp.glob("*.onnx")):
            metrics[f"size_mb_{f.stem}"] = round(f.stat().st_size / 2**20, 3)
    return metrics


def _export_frontends(
    loaded: list[tuple[dict[str, Any], nn.Module]],
    out: Path,
    opset: int,
    wave: np.ndarray,
    threads: int,
    metrics: dict[str, Any],
    tolerance: float = DEFAULTS["tolerance"],
) -> dict[str, Any]:
    # One graph per distinct mel config; a name shared by two different configs is an error.
    mels: dict[str, Any] = {}
    for entry, model in loaded:
        cfg = model.mel_cfg.to_dict()
        if entry["mel"] in mels:
            if mels[entry["mel"]]["config"] != cfg:
                raise ValueError(f"mel config name {entry['mel']!r} stands for two different configs ({entry['name']})")
            continue
        path = export_frontend(model.mel_cfg, out / f"frontend_{entry['mel']}.onnx", opset)
        mels[entry["mel"]] = {"config": cfg, "frontend": path.name}
        with torch.no_grad():
            reference = MelFrontEnd(model.mel_cfg)(torch.from_numpy(wave)).numpy()
        got = load_graph("onnxruntime", path, threads)(wave)[0]
        metrics[f"parity_frontend_{entry['mel']}"] = float(np.abs(reference - got).max())
        fast = numpy_frontend(MelFrontEnd(model.mel_cfg), threads)
        diff = float(np.abs(reference - fast(wave)[0]).max())
        metrics[f"parity_numpy_frontend_{entry['mel']}"] = diff
        if diff <= tolerance:  # else the ONNX front end serves (slower, but within tolerance)
            fast.save(out / f"frontend_{entry['mel']}.npz")
            mels[entry["mel"]]["numpy"] = f"frontend_{entry['mel']}.npz"
    return mels


def numpy_frontend(frontend: MelFrontEnd, threads: int = 1) -> NumpyFrontEnd:
    """The numpy FFT twin of a torch front end: its window (centred in n_fft samples) and mel filterbank."""
    spec = frontend.mel.spectrogram
    n_fft = int(spec.n_fft)
    window = np.zeros(n_fft, dtype=np.float32)
    left = (n_fft - spec.window.numel()) // 2  # torch.stft centres a shorter window in the frame
    window[left : left + spec.window.numel()] = spec.window.float().numpy()
    fb = frontend.mel.mel_scale.fb.float().numpy()  # (n_fft // 2 + 1, n_mels)
    return NumpyFrontEnd(frontend.cfg.to_dict(), window, fb, threads)


def _check_backends(
    loaded: list[tuple[dict[str, Any], nn.Module]], root: Path, wave: np.ndarray, cfg: Mapping[str, Any]
) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    # Parity of every member on every installed backend (chain and fused graphs), then the ensemble's speed.
    threads = int(cfg["threads"])
    references = {entry["name"]: TorchPredictor(model)(wave) for entry, model in loaded}
    parity: dict[str, dict[str, float]] = {}
    speeds: dict[str, float] = {}
    for backend in available_backends():
        try:
            ensemble = ExportedEnsemble(root, backend=backend, threads=threads)
        except Exception as err:  # a runtime that cannot load the graphs is reported, not fatal
            log.warning("%s cannot load the exported graphs: %s", backend, err)
            continue
        outputs = ensemble.member_outputs(wave)
        parity[backend] = {}
        for entry, _ in loaded:
            name = entry["name"]
            diff = max_abs_diff(references[name], outputs[name])
            if "fused" in entry:
                fused = make_predictor(backend, onnx_paths=root / entry["fused"], threads=threads)(wave)
                diff = max(diff, max_abs_diff(references[name], fused))
            parity[backend][name] = diff
        speeds[backend] = time_call(lambda e=ensemble: e.member_outputs(wave), int(cfg["bench_repeats"]))
    return parity, speeds


def choose_backend(parity: Mapping[str, Mapping[str, float]], tolerance: float, requested: str = "auto") -> str:
    """The default backend of an export: the first of ``AUTO_PREFERENCE`` whose parity with torch holds.

    Args:
        parity: {backend: {member: max abs probability diff vs torch}}.
        tolerance: the largest diff allowed.
        requested: ``auto``, or a backend that must pass.

    Raises:
        ValueError: onnxruntime (the reference backend) is missing or fails parity, or ``requested`` fails.
    """
    ok = [b for b, diffs in parity.items() if all(d <= tolerance for d in diffs.values())]
    if "onnxruntime" not in ok:
        raise ValueError(
            f"onnxruntime (the reference backend) does not match torch within {tolerance:.0e}: "
            f"{dict(parity.get('onnxruntime', {'(not loaded)': math.inf}))}"
        )
    if requested != "auto":
        if requested not in ok:
            raise ValueError(f"export.backend {requested!r} is not installed or fails parity: {dict(parity)}")
        return requested
    return next(b for b in AUTO_PREFERENCE if b in ok)


def _ensemble_classes(loaded: list[tuple[dict[str, Any], nn.Module]], ensemble: Mapping[str, Any] | None) -> list[str]:
    # The ensemble's own class list, else the union of the members' lists in first-seen order.
    if ensemble and ensemble.get("classes"):
        return list(ensemble["classes"])
    classes: list[str] = []
    for entry, model in loaded:
        names = entry["classes"] or [str(i) for i in range(model.num_classes)]
        classes += [c for c in names if c not in classes]
    return classes
