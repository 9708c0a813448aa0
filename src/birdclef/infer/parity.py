"""Parity and speed of exported graphs against torch: test audio, the largest probability difference per member and
backend, timing, and the backend an export serves on."""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from birdclef import SAMPLE_RATE, WINDOW_SECONDS
from birdclef.infer.backends import ExportedEnsemble, available_backends, make_predictor
from birdclef.infer.torch_backend import TorchPredictor

log = logging.getLogger(__name__)

# `auto` takes the first of these whose parity holds. A fixed order, not this run's timing: two backends a few
# per cent apart would flip between two runs of one commit (and the submission's last digits with them).
# OpenVINO first: faster in the figures (efficientnet_b0, tf_efficientnetv2_s, mobilenetv3). For
# sed_mnv3s here the two are within noise since the threaded numpy front end (`benchmarks/inference.py`, median
# of 3 runs: mel + model 52 ms OpenVINO vs 53 ms onnxruntime per soundscape minute). onnxruntime is the reference.
AUTO_PREFERENCE = ("openvino", "onnxruntime")


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


def check_backends(
    loaded: list[tuple[dict[str, Any], nn.Module]], root: Path, wave: np.ndarray, cfg: Mapping[str, Any]
) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Parity with torch of every member on every installed backend, and each backend's speed.

    Args:
        loaded: (spec entry with ``name`` and ``fused`` when written, eval-mode model) per member.
        root: the export folder (``export_spec.json`` and the graphs).
        wave: (windows, samples) test audio.
        cfg: the ``export`` params (``threads``, ``bench_repeats``).

    Returns:
        ``({backend: {member: max abs probability diff vs torch over the chain and fused graphs}},
        {backend: median seconds of the whole ensemble on ``wave``})``; a backend that cannot load the graphs is
        left out with a warning.
    """
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


def member_seconds(root: Path, backend: str, wave: np.ndarray, threads: int, repeats: int = 3) -> dict[str, float]:
    """Each member alone (its front end + body) and each front end alone, per soundscape minute: what the bundle
    planner adds up.

    Args:
        root: the export folder.
        backend: the backend to time on (the one the export serves on).
        wave: (windows, samples) test audio; times are scaled to 12 windows (one 60-s soundscape).
        threads: intra-op threads.
        repeats: timed calls per median.

    Returns:
        ``member_seconds_per_soundscape_minute_<member>`` and ``frontend_seconds_per_soundscape_minute_<mel>``
        (median seconds).
    """
    ensemble = ExportedEnsemble(root, backend=backend, threads=threads)
    per_minute = 60.0 / (len(wave) * WINDOW_SECONDS)
    out = {}
    for name, frontend in ensemble.frontends.items():
        seconds = per_minute * time_call(lambda f=frontend: f(wave), repeats)
        out[f"frontend_seconds_per_soundscape_minute_{name}"] = seconds
    for member in ensemble.members:
        predict = ensemble.group_predictor([member["name"]])
        seconds = per_minute * time_call(lambda p=predict: p(wave), repeats)
        out[f"member_seconds_per_soundscape_minute_{member['name']}"] = seconds
    return {k: round(v, 4) for k, v in out.items()}
