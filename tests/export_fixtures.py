"""A tiny exported ensemble shared by the export, backends, bundle and predict tests (exported once per session)."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
import yaml

from birdclef.io import write_json
from birdclef.models import create_model, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
SR = 32_000
CLASSES = ["sp_a", "sp_b", "frog1", "ins1"]
GROUP = ["frog1", "ins1"]
MEL = {"n_fft": 512, "hop_length": 320, "n_mels": 32, "fmin": 40, "fmax": 15000}
# The production params shrunk: fewer timed windows and repeats; fused graphs are tested on their own.
EXPORT_PARAMS = {"fused": False, "bench_windows": 2, "bench_repeats": 1, "threads": 1}

_BUILT: dict[str, Any] = {}


def make_members(root: Path) -> list[dict[str, Any]]:
    """Two random-init members over one mel config: a SED on every class, a CNN on a taxon group."""
    members = []
    for name, head, classes in (("it0_sed_tiny", "sed", CLASSES), ("it0_cnn_group", "cnn", GROUP)):
        torch.manual_seed(len(members))
        model = create_model({"head": head, "backbone": "test_efficientnet", "mel": "mel_tiny"}, len(classes), MEL)
        path = root / "train" / name / "model.pt"
        save_checkpoint(path, model, {"classes": classes})
        members.append(
            {
                "name": name,
                "checkpoint": str(path),
                "weight": 0.6 if head == "sed" else 0.4,
                "classes": None if classes == CLASSES else classes,
                "mel": dict(MEL),
                "predict": {"chunk_s": 10} if head == "cnn" else {},
            }
        )
    return members


def ensemble_spec(members: list[dict[str, Any]]) -> dict[str, Any]:
    """An ensemble spec as the ensemble stage writes it (``members.load_spec`` accepts it)."""
    return {
        "format": "birdclef-ensemble",
        "version": 1,
        "classes": CLASSES,
        "class_counts": [20, 5, 1, 1],
        "combination": "mean",
        "postprocess": {
            "delta_shift": {"enabled": True, "frames": 1},
            "smoothing": {"enabled": True, "kernel": [0.1, 0.8, 0.1], "class_strength": {"low": 0.5, "high": 1.0}},
            "topk_boost": {"enabled": True, "k": 1},
        },
        "predict": {"chunk_s": 5, "stride_s": 5, "batch_size": 12},
        "file_seconds": 60,
        "members": members,
    }


def run_stage(name: str, *args: str | Path) -> None:
    """Run ``stages/<name>.py`` in this process with ``args`` as its command line."""
    argv = sys.argv
    sys.argv = [name, *map(str, args)]
    try:
        runpy.run_path(str(ROOT / "stages" / f"{name}.py"), run_name="__main__")
    finally:
        sys.argv = argv


def exported(tmp_path_factory) -> dict[str, Any]:
    """Checkpoints, an ensemble spec and their export by the `export` stage, built once per session.

    Returns:
        {"root", "spec" (the ensemble spec), "export" (folder), "metrics" (metrics/export.json), "timings"
        (metrics/timing/export.json)}.
    """
    if not _BUILT:
        root = tmp_path_factory.mktemp("exported")
        spec = ensemble_spec(make_members(root))
        write_json(root / "ensemble" / "spec.json", spec)
        (root / "params.yaml").write_text(yaml.safe_dump({"tracking": {"enabled": False}, "export": EXPORT_PARAMS}))
        run_stage(
            "export", "--params", root / "params.yaml", "--spec", root / "ensemble" / "spec.json",
            "--out", root / "export", "--metrics", root / "metrics" / "export.json",
            "--timings", root / "metrics" / "timing" / "export.json",
        )  # fmt: skip
        metrics = json.loads((root / "metrics" / "export.json").read_text())
        timings = json.loads((root / "metrics" / "timing" / "export.json").read_text())
        _BUILT.update(root=root, spec=spec, export=root / "export", metrics=metrics, timings=timings)
    return _BUILT


def soundscape(seconds: float, seed: int, sr: int = SR, channels: int = 1) -> np.ndarray:
    """Calls in noise, (samples,) or (samples, channels) float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    tone = 0.2 * np.sin(2 * np.pi * (1500 + 700 * seed) * t) * (np.sin(2 * np.pi * 0.3 * t) > 0.3)
    wave = (0.03 * rng.normal(size=t.size) + tone).astype(np.float32)
    return wave if channels == 1 else np.stack([wave, 0.5 * wave], axis=1)


def write_soundscapes(folder: Path, stems: list[str], seconds: float = 60.0) -> list[Path]:
    """Write one soundscape per stem (ogg for the first, wav for the rest) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, stem in enumerate(stems):
        path = folder / f"{stem}.{'ogg' if i == 0 else 'wav'}"
        sf.write(path, soundscape(seconds, i), SR)
        paths.append(path)
    return paths
