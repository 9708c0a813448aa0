"""ONNX export of ensemble members (mel front ends, member bodies, fused graphs) with torch parity checks.

The graphs themselves are built in ``onnx_graphs``, their parity and speed measured in ``parity``; this module
loads the members, exports each mel config once and each member's body, writes ``export_spec.json`` and picks the
backend.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from birdclef import SAMPLE_RATE
from birdclef.features.frontend import MelConfig, MelFrontEnd
from birdclef.infer.backends import SPEC_FILE, SPEC_FORMAT, load_graph
from birdclef.infer.onnx_graphs import (  # body_wrapper: benchmarks/inference.py imports it from here
    OPSET,
    body_wrapper,
    export_body,
    export_frontend,
    export_fused,
    numpy_frontend,
)
from birdclef.infer.parity import audio_windows, check_backends, choose_backend, member_seconds, synthetic_audio
from birdclef.infer.precision import (
    CALIBRATED,
    calibration_windows,
    check_precision_params,
    choose_reduced_backend,
    reduce_members,
    reduced_parity,
)
from birdclef.io import atomic_path, write_json
from birdclef.models import load_checkpoint

__all__ = ["DEFAULTS", "body_wrapper", "export_ensemble", "load_members", "mel_key", "safe_name"]

DEFAULTS: dict[str, Any] = {
    "opset": OPSET,  # the dynamo exporter's lowest well-supported opset
    "fused": True,  # also write wave -> probs graphs (birdclef predict, single-model use)
    "tolerance": 1e-4,  # max |p_torch - p_onnx| allowed, probabilities
    "threads": 2,  # intra-op threads for parity and speed runs
    "bench_windows": 12,  # 5-s windows per timed call (one soundscape)
    "bench_repeats": 3,
    "backend": "auto",  # auto (parity.AUTO_PREFERENCE: the first backend whose parity holds) | onnxruntime | openvino
    # Kaggle budget (precision.py): fp32 | fp16 (OpenVINO IR, FP16 weights) | int8 (static QDQ, onnxruntime) |
    # int8_nncf (NNCF, OpenVINO IR)
    "precision": "fp32",
    "calibration_audio": None,  # int8, int8_nncf: a recording or folder of them to calibrate on
    "calibration_windows": 300,  # int8, int8_nncf: 5-s calibration windows (precision.WINDOWS_PER_FILE per recording)
    "precision_tolerance": 0.1,  # reduced precisions: max |p_reduced - p_fp32| over clip and frame probabilities
}
_SPEC_VERSION = 1


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
        ``backend``; ``member_seconds_per_soundscape_minute_<member>`` (its front end + body, alone, on the
        served backend with ``threads`` threads: ``bench_cores``) and ``frontend_seconds_per_soundscape_minute_<mel>``
        for the bundle planner. With ``precision`` fp16 / int8 also ``precision``, ``parity_<precision>_<backend>_
        <member>`` (max abs probability diff vs the fp32 ONNX graphs), ``seconds_<precision>_<backend>`` and
        ``int8_nodes_<member>``.

    Raises:
        ValueError: onnxruntime (the reference backend) disagrees with torch beyond the tolerance, the requested
            backend fails its parity, a precision setting cannot apply, or the reduced bodies drift past
            ``precision_tolerance``.
    """
    cfg = {**DEFAULTS, **(params or {})}
    unknown = set(cfg) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"export params: unknown key(s) {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    check_precision_params(cfg)
    calibration = None
    if cfg["precision"] in CALIBRATED:
        calibration = calibration_windows(cfg["calibration_audio"], int(cfg["calibration_windows"]))
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
        parity, speeds = check_backends(loaded, tmp, wave, cfg)
        for backend, diffs in parity.items():
            metrics |= {f"parity_{backend}_{name}": diff for name, diff in diffs.items()}
            metrics[f"seconds_{backend}"] = round(speeds[backend], 4)
        fp32_request = cfg["backend"] if cfg["precision"] == "fp32" else "auto"
        spec["backend"] = metrics["backend"] = choose_backend(parity, cfg["tolerance"], fp32_request)
        if cfg["precision"] != "fp32":
            metrics |= _reduce(loaded, tmp, spec, wave, cfg, calibration)
        write_json(tmp / SPEC_FILE, spec)
        seconds = member_seconds(tmp, spec["backend"], wave, int(cfg["threads"]), int(cfg["bench_repeats"]))
        metrics |= seconds | {"bench_cores": int(cfg["threads"])}
        for f in sorted([*tmp.glob("*.onnx"), *tmp.glob("*.bin")]):
            metrics[f"size_mb_{f.stem}"] = round(f.stat().st_size / 2**20, 3)
    return metrics


def _reduce(
    loaded: list[tuple[dict[str, Any], nn.Module]],
    root: Path,
    spec: dict[str, Any],
    wave: np.ndarray,
    cfg: Mapping[str, Any],
    calibration: np.ndarray | None,
) -> dict[str, Any]:
    # The fp32 export is checked and written; now the reduced bodies, their parity with it and the backend.
    metrics = reduce_members(loaded, root, cfg, calibration)
    spec["precision"] = metrics["precision"] = cfg["precision"]
    write_json(root / SPEC_FILE, spec)
    parity, speeds = reduced_parity(root, [entry["name"] for entry, _ in loaded], wave, cfg)
    for backend, diffs in parity.items():
        metrics |= {f"parity_{cfg['precision']}_{backend}_{name}": diff for name, diff in diffs.items()}
        metrics[f"seconds_{cfg['precision']}_{backend}"] = round(speeds[backend], 4)
    spec["backend"] = metrics["backend"] = choose_reduced_backend(parity, cfg)
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


def _ensemble_classes(loaded: list[tuple[dict[str, Any], nn.Module]], ensemble: Mapping[str, Any] | None) -> list[str]:
    # The ensemble's own class list, else the union of the members' lists in first-seen order.
    if ensemble and ensemble.get("classes"):
        return list(ensemble["classes"])
    classes: list[str] = []
    for entry, model in loaded:
        names = entry["classes"] or [str(i) for i in range(model.num_classes)]
        classes += [c for c in names if c not in classes]
    return classes
