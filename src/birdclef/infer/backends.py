"""Inference backends: torch, onnxruntime and OpenVINO predictors, and the ensemble of an export folder.

Only numpy and the standard library are imported at module level; onnxruntime, OpenVINO and torch are imported
by the classes that use them. The Kaggle bundle therefore copies this file next to its standalone script,
where neither torch nor birdclef exists.

A *Predictor* is any callable ``(wave (B, samples) float32 at 32 kHz) -> {"clip": (B, C), "frame": (B, T, C)}``
of probabilities (T = 1 for CNN members).

An export folder (``export_spec.json``, written by ``birdclef.infer.export``) holds one front-end graph per
distinct mel config (``wave (B, samples) -> mel (B, ch, n_mels, frames)``), one body graph per member
(``mel -> clip, frame``) and optionally one fused graph per member (``wave -> clip, frame``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

Predictor = Callable[[np.ndarray], dict[str, np.ndarray]]
PathLike = str | os.PathLike[str]

BACKENDS = ("onnxruntime", "openvino", "torch")
SPEC_FILE = "export_spec.json"
SPEC_FORMAT = "birdclef-export"


def ort_session(path: PathLike, threads: int = 1) -> Any:
    """An onnxruntime CPU session with all graph optimisations and exactly ``threads`` intra-op threads."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Explicit counts: onnxruntime's default takes every core, which oversubscribes a shared CPU.
    opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Idle intra-op threads would busy-wait after each run and steal the cores the FFT front end and the decoder
    # use between runs; with few cores that costs more than the wake-up latency it saves.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


class _OrtGraph:
    """One ONNX graph on onnxruntime: ``graph(x) -> list of outputs`` for its single input."""

    def __init__(self, path: PathLike, threads: int = 1) -> None:
        self.path = Path(path)
        self.session = ort_session(path, threads)
        self.input = self.session.get_inputs()[0].name
        self.outputs = [o.name for o in self.session.get_outputs()]

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        return self.session.run(self.outputs, {self.input: np.ascontiguousarray(x, dtype=np.float32)})


class _OvGraph:
    """One ONNX graph compiled by OpenVINO for the CPU in fp32 with ``threads`` inference threads."""

    def __init__(self, path: PathLike, threads: int = 1) -> None:
        import openvino as ov

        self.path = Path(path)
        config = {
            "INFERENCE_NUM_THREADS": int(threads),
            # OpenVINO silently picks bf16 on CPUs that have it; parity with torch needs fp32.
            "INFERENCE_PRECISION_HINT": "f32",
            "PERFORMANCE_HINT": "LATENCY",
        }
        self.compiled = ov.Core().compile_model(str(path), "CPU", config)
        self.request = self.compiled.create_infer_request()

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        result = self.request.infer([np.ascontiguousarray(x, dtype=np.float32)])
        return [np.array(result[out]) for out in self.compiled.outputs]


_GRAPHS: dict[str, type] = {"onnxruntime": _OrtGraph, "openvino": _OvGraph}


def load_graph(backend: str, path: PathLike, threads: int = 1) -> Callable[[np.ndarray], list[np.ndarray]]:
    """One ONNX graph on ``backend``: a callable ``(input array) -> list of output arrays``."""
    if backend not in _GRAPHS:
        raise ValueError(f"backend {backend!r} cannot run ONNX graphs; choose one of {sorted(_GRAPHS)}")
    if not Path(path).is_file():
        raise FileNotFoundError(f"ONNX graph {path} does not exist")
    return _GRAPHS[backend](path, threads)


class NumpyFrontEnd:
    """The mel front end in numpy (FFT-based): waveform (B, samples) -> (B, channels, n_mels, frames) float32.

    The same numbers as ``birdclef.features.frontend.MelFrontEnd`` (centred reflect-padded STFT, power 2, Slaney
    mel filterbank, dB, per-clip normalisation, optional deltas) up to float rounding, from the window and
    filterbank the export stage saved (``frontend_<mel>.npz``), so neither torch nor torchaudio is needed. An FFT
    costs O(n_fft log n_fft) per frame where the ONNX graph's Conv-DFT costs O(n_fft^2): on CPU this is the
    faster front end, and the export stage checks its parity against torch before recording it.
    """

    def __init__(self, config: dict[str, Any], window: np.ndarray, fb: np.ndarray, threads: int = 1) -> None:
        self.cfg = dict(config)
        self.n_fft, self.hop = int(config["n_fft"]), int(config["hop_length"])
        self.window = np.asarray(window, dtype=np.float32)  # (n_fft,)
        self.fb = np.asarray(fb, dtype=np.float32)  # (n_fft // 2 + 1, n_mels)
        self.threads = max(1, int(threads))

    @classmethod
    def load(cls, path: PathLike, threads: int = 1) -> NumpyFrontEnd:
        """The front end saved by ``save``; ``threads``: FFT worker threads (with scipy installed)."""
        with np.load(path) as z:
            return cls(json.loads(str(z["config"])), z["window"], z["fb"], threads)

    def _power(self, frames: np.ndarray) -> np.ndarray:
        # |rfft|^2 in float32: (B, frames, n_fft) -> (B, frames, bins). The FFT dominates the front end's time.
        scipy_fft = _scipy_fft()
        if scipy_fft is not None:
            spec = scipy_fft.rfft(frames, axis=-1, workers=self.threads, overwrite_x=True)
        else:
            spec = np.fft.rfft(frames, axis=-1).astype(np.complex64, copy=False)
        power = np.abs(spec)
        return np.square(power, out=power)

    def save(self, path: PathLike) -> None:
        with open(path, "wb") as f:
            np.savez(f, config=np.array(json.dumps(self.cfg)), window=self.window, fb=self.fb)

    def __call__(self, wave: np.ndarray) -> list[np.ndarray]:
        """``[mel]`` for a (B, samples) batch (a list, like an ONNX graph's outputs)."""
        c = self.cfg
        x = np.asarray(wave, dtype=np.float32)
        if x.ndim != 2:
            raise ValueError(f"front end expects (batch, samples), got shape {x.shape}")
        if c.get("absmax"):
            x = x / np.maximum(np.abs(x).max(axis=1, keepdims=True), 1e-8)
        half = self.n_fft // 2
        padded = np.pad(x, ((0, 0), (half, half)), mode="reflect")
        frames = np.lib.stride_tricks.sliding_window_view(padded, self.n_fft, axis=1)[:, :: self.hop]
        power = self._power(frames * self.window)  # (B, frames, bins)
        db = 10.0 * np.log10(np.maximum(np.swapaxes(power @ self.fb, 1, 2), 1e-10))  # (B, n_mels, frames)
        top = float(c.get("top_db", 80.0))
        peak = db.max(axis=(1, 2), keepdims=True)
        norm = c.get("norm", "ref_max")
        if norm == "ref_max":
            out = (np.maximum(db - peak, -top) + top) / top
        elif norm == "minmax":
            db = np.maximum(db, peak - top)
            low = db.min(axis=(1, 2), keepdims=True)
            out = (db - low) / np.maximum(peak - low, 1e-6)
        else:
            out = np.maximum(db, peak - top)
        out = out[:, None].astype(np.float32)
        if c.get("deltas"):
            d1 = _deltas(out)
            out = np.concatenate([out, d1, _deltas(d1)], axis=1)
        return [out]


@functools.cache
def _scipy_fft() -> Any:
    """``scipy.fft`` when installed, else None (imported on first use, so the bundle needs only numpy).

    scipy's pocketfft runs single-precision transforms over several threads: about 5x numpy.fft on a 60-s
    soundscape here; an image without scipy still runs, on numpy.fft.
    """
    try:
        import scipy.fft
    except ImportError:
        return None
    return scipy.fft


def _deltas(x: np.ndarray) -> np.ndarray:
    # torchaudio.functional.compute_deltas with win_length 5: replicate-padded, (sum_n n (x[t+n] - x[t-n])) / 10.
    p = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(2, 2)], mode="edge")
    t = x.shape[-1]
    return ((p[..., 3 : 3 + t] - p[..., 1 : 1 + t]) + 2 * (p[..., 4 : 4 + t] - p[..., 0:t])) / 10.0


class _ChainPredictor:
    """Runs ONNX graphs in a chain: each graph's first output feeds the next; the last gives clip and frame."""

    backend = ""

    def __init__(self, onnx_paths: PathLike | Sequence[PathLike], threads: int = 1) -> None:
        paths = [onnx_paths] if isinstance(onnx_paths, str | os.PathLike) else list(onnx_paths)
        if not paths:
            raise ValueError("need at least one ONNX graph")
        self.graphs = [load_graph(self.backend, p, threads) for p in paths]

    def __call__(self, wave: np.ndarray) -> dict[str, np.ndarray]:
        x = wave
        for graph in self.graphs[:-1]:
            x = graph(x)[0]
        clip, frame = self.graphs[-1](x)[:2]
        return {"clip": clip, "frame": frame}


class OrtPredictor(_ChainPredictor):
    """Predictor on onnxruntime over a fused graph (``wave -> clip, frame``) or a chain (front end, body).

    Args:
        onnx_paths: one fused graph, or ``[frontend.onnx, body.onnx]``.
        threads: intra-op threads (set explicitly; 1 suits one process per core).
    """

    backend = "onnxruntime"


class OpenVinoPredictor(_ChainPredictor):
    """Predictor on OpenVINO (CPU, fp32), reading the same ONNX graphs as ``OrtPredictor``."""

    backend = "openvino"


class TorchPredictor:
    """Predictor on a torch model (``birdclef.models.BirdModel``): sigmoid of its clip and frame logits.

    Args:
        model: the model (put in eval mode), or a checkpoint path for ``birdclef.models.load_checkpoint``.
        threads: torch intra-op threads; ``None`` leaves torch's setting alone.
    """

    def __init__(self, model: Any, threads: int | None = None) -> None:
        import torch

        from birdclef.models import InferenceWrapper, load_checkpoint

        if isinstance(model, str | os.PathLike):
            model, _ = load_checkpoint(model)
        if threads is not None:
            torch.set_num_threads(int(threads))
        self.wrapper = InferenceWrapper(model)

    def __call__(self, wave: np.ndarray) -> dict[str, np.ndarray]:
        import torch

        with torch.inference_mode():
            clip, frame = self.wrapper(torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)))
        return {"clip": clip.numpy(), "frame": frame.numpy()}


def available_backends() -> list[str]:
    """The ONNX backends whose runtime imports here (onnxruntime first: it is the reference)."""
    out = []
    for name, module in (("onnxruntime", "onnxruntime"), ("openvino", "openvino")):
        try:
            __import__(module)
        except ImportError:
            continue
        out.append(name)
    return out


def make_predictor(
    backend: str, *, model: Any = None, onnx_paths: PathLike | Sequence[PathLike] | None = None, threads: int = 1
) -> Predictor:
    """Build a predictor by backend name.

    Args:
        backend: ``onnxruntime``, ``openvino`` or ``torch``.
        model: the torch model or checkpoint path (``torch`` only).
        onnx_paths: a fused graph or ``[frontend, body]`` (ONNX backends).
        threads: intra-op threads.
    """
    if backend == "torch":
        if model is None:
            raise ValueError("the torch backend needs a model or checkpoint")
        return TorchPredictor(model, threads)
    if backend not in _GRAPHS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {list(BACKENDS)}")
    if onnx_paths is None:
        raise ValueError(f"the {backend} backend needs ONNX graph path(s)")
    return (OrtPredictor if backend == "onnxruntime" else OpenVinoPredictor)(onnx_paths, threads)


def read_spec(export_dir: PathLike) -> dict[str, Any]:
    """Read and check ``export_spec.json`` of an export folder or bundle."""
    path = Path(export_dir) / SPEC_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{export_dir}: no {SPEC_FILE} (not an export folder or bundle)")
    spec = json.loads(path.read_text())
    if spec.get("format") != SPEC_FORMAT:
        raise ValueError(f"{path}: not a birdclef export spec (format tag {spec.get('format')!r})")
    for key in ("classes", "mels", "members"):
        if key not in spec:
            raise ValueError(f"{path}: missing key {key!r}")
    for member in spec["members"]:
        if member.get("mel") not in spec["mels"]:
            raise ValueError(f"{path}: member {member.get('name')!r} uses unknown mel config {member.get('mel')!r}")
    return spec


def ensemble_spec(export_spec: dict[str, Any]) -> dict[str, Any]:
    """The ensemble spec embedded at export (members, combination, postprocess, predict, file_seconds), with
    defaults for an export made without one: every member, weighted mean, default chunking, 60-s files."""
    spec = dict(export_spec.get("ensemble") or {})
    spec.setdefault("members", export_spec["members"])
    spec.setdefault("classes", export_spec["classes"])
    spec.setdefault("combination", "mean")
    spec.setdefault("predict", {})
    spec.setdefault("file_seconds", 60.0)
    return spec


class ExportedEnsemble:
    """The members of an export folder on one ONNX backend; each mel config's front end runs once per batch.

    Args:
        export_dir: folder with ``export_spec.json`` and the graphs it names.
        backend: ``onnxruntime``, ``openvino`` or ``None`` (the spec's default, falling back to onnxruntime
            when that runtime is not installed).
        threads: intra-op threads of every graph.
        cache_batches: front-end outputs kept per mel config for ``predictors()`` (a content-keyed cache).
        frontend: ``auto`` (the numpy FFT front end when the export has one, else the ONNX graph) | ``onnx``.

    Attributes:
        spec: the export spec; ``classes`` the ensemble class list; ``members`` the member entries (name, mel,
        weight, classes, graph files).
    """

    def __init__(
        self,
        export_dir: PathLike,
        backend: str | None = None,
        threads: int = 1,
        cache_batches: int = 16,
        frontend: str = "auto",
    ) -> None:
        self.root = Path(export_dir)
        self.frontend = frontend
        self.spec = read_spec(self.root)
        if backend is None:
            default = self.spec.get("backend", "onnxruntime")
            backend = default if default in available_backends() else "onnxruntime"
        self.backend = backend
        self.classes: list[str] = list(self.spec["classes"])
        self.members: list[dict[str, Any]] = list(self.spec["members"])
        self._frontends = {name: self._frontend(mel, threads) for name, mel in self.spec["mels"].items()}
        self._bodies = {m["name"]: load_graph(backend, self.root / m["body"], threads) for m in self.members}
        self._cache: dict[str, OrderedDict[tuple, np.ndarray]] = {name: OrderedDict() for name in self._frontends}
        self._cache_batches = int(cache_batches)
        self._mel_users = {name: sum(m["mel"] == name for m in self.members) for name in self._frontends}

    def _frontend(self, mel: dict[str, Any], threads: int) -> Callable[[np.ndarray], list[np.ndarray]]:
        # The numpy FFT front end when the export recorded one (its parity held), else the ONNX graph.
        if mel.get("numpy") and self.frontend != "onnx":
            return NumpyFrontEnd.load(self.root / mel["numpy"], threads)
        return load_graph(self.backend, self.root / mel["frontend"], threads)

    @property
    def ensemble_spec(self) -> dict[str, Any]:
        """See ``ensemble_spec``."""
        return ensemble_spec(self.spec)

    def mels(self, wave: np.ndarray) -> dict[str, np.ndarray]:
        """Every front end on one batch: {mel name: (B, ch, n_mels, frames)}."""
        return {name: frontend(wave)[0] for name, frontend in self._frontends.items()}

    def member_outputs(self, wave: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
        """All members on one batch (each mel computed once): {member name: {"clip", "frame"}}."""
        mels = self.mels(wave)
        return {m["name"]: self._body(m, mels[m["mel"]]) for m in self.members}

    def predictors(self) -> dict[str, Predictor]:
        """One Predictor per member; members of one mel config share its front end through a small cache.

        Feeding the same chunks to every member (e.g. ``windows.predict_file`` per member with the same
        chunking) computes each mel config once per batch, as ``member_outputs`` does.
        """
        return {m["name"]: self._member_predictor(m) for m in self.members}

    def _member_predictor(self, member: dict[str, Any]) -> Predictor:
        def predict(wave: np.ndarray) -> dict[str, np.ndarray]:
            return self._body(member, self._cached_mel(member["mel"], wave))

        return predict

    def _body(self, member: dict[str, Any], mel: np.ndarray) -> dict[str, np.ndarray]:
        clip, frame = self._bodies[member["name"]](mel)[:2]
        return {"clip": clip, "frame": frame}

    def _cached_mel(self, name: str, wave: np.ndarray) -> np.ndarray:
        wave = np.ascontiguousarray(wave, dtype=np.float32)
        if self._mel_users[name] == 1:  # nothing to share: skip hashing (~5 ms per soundscape minute)
            return self._frontends[name](wave)[0]
        # A content key, since each member's predict_file stacks its own copy of the chunks. SHA-1 of the buffer
        # in place: half the time of blake2b over a copy; a hash of the signal, not a security boundary.
        digest = hashlib.sha1(memoryview(wave).cast("B"), usedforsecurity=False).digest()
        key = (wave.shape, digest)
        cache = self._cache[name]
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
        mel = self._frontends[name](wave)[0]
        cache[key] = mel
        while len(cache) > self._cache_batches:
            cache.popitem(last=False)
        return mel
