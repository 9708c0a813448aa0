"""Inference backends: onnxruntime and OpenVINO predictors (torch's are in ``torch_backend``), ``make_predictor``
for all three, and the ensemble of an export folder.

Only numpy and the standard library are imported at module level; onnxruntime, OpenVINO and torch are imported
where they are used. The Kaggle bundle therefore copies this file next to its standalone script,
where neither torch nor birdclef exists.

A *Predictor* is any callable ``(wave (B, samples) float32 at 32 kHz) -> {"clip": (B, C), "frame": (B, T, C)}``
of probabilities (T = 1 for CNN members).

An export folder (``export_spec.json``, written by ``birdclef.infer.export``) holds one front-end graph per
distinct mel config (``wave (B, samples) -> mel (B, ch, n_mels, frames)``), one body graph per member
(``mel -> clip, frame``) and optionally one fused graph per member (``wave -> clip, frame``).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .melspec import NumpyFrontEnd, ProcessLocalPool

log = logging.getLogger(__name__)

Predictor = Callable[[np.ndarray], dict[str, np.ndarray]]
PathLike = str | os.PathLike[str]

BACKENDS = ("onnxruntime", "openvino", "torch")
SPEC_FILE = "export_spec.json"
SPEC_FORMAT = "birdclef-export"
OV_REDUCED_HINT = "f16"
"""OpenVINO's inference precision for an FP16 IR (``export.precision: fp16``): the CPU plugin runs it in f16 where
the CPU has FP16 arithmetic, bf16 where it has BF16 (it reports which), f32 elsewhere."""


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
    """One ONNX graph (or OpenVINO IR ``.xml``) compiled by OpenVINO for the CPU with ``threads`` inference threads,
    in fp32 unless ``hint`` says otherwise (``OV_REDUCED_HINT`` for an FP16 IR)."""

    def __init__(self, path: PathLike, threads: int = 1, hint: str = "f32") -> None:
        import openvino as ov

        self.path = Path(path)
        config = {
            "INFERENCE_NUM_THREADS": int(threads),
            # OpenVINO silently picks bf16 on CPUs that have it; parity with torch needs fp32 unless asked otherwise.
            "INFERENCE_PRECISION_HINT": hint,
            "PERFORMANCE_HINT": "LATENCY",
            # OpenVINO pins its threads to cores counted from the first one, so every worker process of the runner
            # (one thread each) would be pinned to the same core: four Kaggle workers would share one core. The OS
            # scheduler spreads unpinned workers over the cores.
            "ENABLE_CPU_PINNING": False,
        }
        self.compiled = ov.Core().compile_model(str(path), "CPU", config)
        self.request = self.compiled.create_infer_request()
        hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        self.precision = str(getattr(hint, "get_type_name", lambda: hint)())  # what this CPU runs it in: bf16, f32

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        result = self.request.infer([np.ascontiguousarray(x, dtype=np.float32)])
        return [np.array(result[out]) for out in self.compiled.outputs]


_GRAPHS: dict[str, type] = {"onnxruntime": _OrtGraph, "openvino": _OvGraph}


def load_graph(
    backend: str, path: PathLike, threads: int = 1, hint: str = "f32"
) -> Callable[[np.ndarray], list[np.ndarray]]:
    """One ONNX graph (OpenVINO: or IR ``.xml``) on ``backend``: a callable ``(input array) -> list of outputs``.

    ``hint`` is OpenVINO's inference precision (onnxruntime runs a graph in the types it holds).
    """
    if backend not in _GRAPHS:
        raise ValueError(f"backend {backend!r} cannot run ONNX graphs; choose one of {sorted(_GRAPHS)}")
    if not Path(path).is_file():
        raise FileNotFoundError(f"ONNX graph {path} does not exist")
    if backend == "onnxruntime" and Path(path).suffix == ".xml":
        raise ValueError(
            f"{path} is an OpenVINO IR (export.precision fp16 or int8_nncf): only the openvino backend runs it"
        )
    return _OvGraph(path, threads, hint) if backend == "openvino" else _OrtGraph(path, threads)


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
        from birdclef.infer.torch_backend import TorchPredictor  # torch only on use: the bundle has none

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
        frontend: ``auto`` (the numpy FFT front end when the export has one, else the ONNX graph) | ``onnx``.
        precision: ``None`` (the bodies the export serves: its ``precision``) | ``fp32`` (the fp32 bodies of a
            reduced-precision export, its reference). A backend that cannot load a reduced body (an FP16 IR on
            onnxruntime) runs the fp32 one, with a warning.

    Attributes:
        spec: the export spec; ``classes`` the ensemble class list; ``members`` the member entries (name, mel,
        weight, classes, graph files).
    """

    def __init__(
        self,
        export_dir: PathLike,
        backend: str | None = None,
        threads: int = 1,
        frontend: str = "auto",
        precision: str | None = None,
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
        # Several members on onnxruntime with several threads: the bodies of a batch run side by side, one
        # intra-op thread each (about 20% faster than one after another with every thread each: a small network
        # on a 12-chunk batch does not keep two threads busy). OpenVINO's requests were slower side by side.
        self._parallel = backend == "onnxruntime" and threads > 1 and len(self.members) > 1
        body_threads = 1 if self._parallel else threads
        self.precision = precision or self.spec.get("precision", "fp32")
        self._bodies = {m["name"]: self._load_body(m, body_threads) for m in self.members}
        self._body_pool = ProcessLocalPool(threads, "body")

    def _load_body(self, member: dict[str, Any], threads: int) -> Callable[[np.ndarray], list[np.ndarray]]:
        # The served body, or the fp32 one when asked for (or when this backend cannot load the served one).
        name, fp32 = member["body"], member.get("body_fp32")
        unloadable = self.backend != "openvino" and name.endswith(".xml")
        if fp32 and (self.precision == "fp32" or unloadable):
            if self.precision != "fp32":
                log.warning("%s cannot run %s (an OpenVINO IR): running the fp32 %s", self.backend, name, fp32)
            name = fp32
        # An FP16 IR runs in the CPU's reduced float type; an NNCF IR's int8 kernels need no hint (its few float
        # ops stay fp32, the closest to the reference).
        hint = OV_REDUCED_HINT if name.endswith(".xml") and self.spec.get("precision") == "fp16" else "f32"
        return load_graph(self.backend, self.root / name, threads, hint)

    def _frontend(self, mel: dict[str, Any], threads: int) -> Callable[[np.ndarray], list[np.ndarray]]:
        # The numpy FFT front end when the export recorded one (its parity held), else the ONNX graph.
        if mel.get("numpy") and self.frontend != "onnx":
            return NumpyFrontEnd.load(self.root / mel["numpy"], threads)
        return load_graph(self.backend, self.root / mel["frontend"], threads)

    @property
    def frontends(self) -> dict[str, Callable[[np.ndarray], list[np.ndarray]]]:
        """{mel config name: its front end}, ``wave (B, samples) -> [mel (B, ch, n_mels, frames)]``."""
        return dict(self._frontends)

    @property
    def ensemble_spec(self) -> dict[str, Any]:
        """See ``ensemble_spec``."""
        return ensemble_spec(self.spec)

    def member_outputs(self, wave: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
        """All members on one batch (each mel computed once): {member name: {"clip", "frame"}}."""
        return dict(zip([m["name"] for m in self.members], self.group_predictor()(wave), strict=True))

    def group_predictor(
        self, names: Sequence[str] | None = None
    ) -> Callable[[np.ndarray], list[dict[str, np.ndarray]]]:
        """The members ``names`` (default: all) as one ``windows.GroupPredictor``: per batch, each mel config
        they use runs once, then each member's body; outputs in the order of ``names``."""
        members = {m["name"]: m for m in self.members}
        unknown = [n for n in (names or []) if n not in members]
        if unknown:
            raise ValueError(f"{self.root}: no exported member(s) {unknown} (has {sorted(members)})")
        chosen = [members[n] for n in names] if names is not None else list(self.members)
        mel_names = list(dict.fromkeys(m["mel"] for m in chosen))

        def predict(wave: np.ndarray) -> list[dict[str, np.ndarray]]:
            wave = np.ascontiguousarray(wave, dtype=np.float32)
            mels = {name: self._frontends[name](wave)[0] for name in mel_names}
            return self._run_bodies(chosen, mels)

        return predict

    def predictors(self) -> dict[str, Predictor]:
        """One Predictor per member, each running its own front end: members that share a chunking should go
        through ``group_predictor`` instead, which computes each mel config once for all of them."""
        return {m["name"]: _first_output(self.group_predictor([m["name"]])) for m in self.members}

    def _run_bodies(
        self, members: Sequence[dict[str, Any]], mels: dict[str, np.ndarray]
    ) -> list[dict[str, np.ndarray]]:
        # Each member's body on its mel config's output, in member order.
        if self._parallel and len(members) > 1:
            return list(self._body_pool.get().map(lambda m: self._body(m, mels[m["mel"]]), members))
        return [self._body(m, mels[m["mel"]]) for m in members]

    def _body(self, member: dict[str, Any], mel: np.ndarray) -> dict[str, np.ndarray]:
        clip, frame = self._bodies[member["name"]](mel)[:2]
        return {"clip": clip, "frame": frame}


def _first_output(group: Callable[[np.ndarray], list[dict[str, np.ndarray]]]) -> Predictor:
    # A one-member group predictor as a plain Predictor.
    return lambda wave: group(wave)[0]
