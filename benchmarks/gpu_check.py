"""The GPU check in one short command: fit() under bf16 / fp16 AMP, teachers labelling soundscapes, DDP when it can.

Prints one JSON object. Self-contained (synthetic tone "species" and noise soundscapes, no data/ needed), so it runs on
a freshly lent machine in a few minutes:

    python benchmarks/gpu_check.py                       # cuda: the gpu preset's first member, 300 steps per dtype
    python benchmarks/gpu_check.py --device cpu --steps 4 --model sed_tiny   # the same code paths on a CPU

Checks: no non-finite loss in ``--steps`` optimiser steps of ``fit()`` per AMP dtype (the mel front end stays in
float32 under autocast), samples per second and peak GPU memory; the pseudo-labelling path (``teacher_predictions``
on the device) in soundscapes per second; with 2+ GPUs, a 2-process DDP ``fit()`` through torchrun.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the tests' in-memory cache and tone segments

from birdclef import SAMPLE_RATE  # noqa: E402
from birdclef.models import create_model  # noqa: E402
from birdclef.train.datasets import FocalDataset  # noqa: E402
from birdclef.train.evaluate import model_predictor  # noqa: E402
from birdclef.train.fit import FitConfig, fit  # noqa: E402
from birdclef.train.losses import build_loss  # noqa: E402
from birdclef.train.pseudo import teacher_predictions  # noqa: E402

from train_fixtures import MemoryCache, tone  # noqa: E402


def _task(n_classes: int, per_class: int, crop_s: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    rows, waves = [], {}
    classes = [f"sp{i}" for i in range(n_classes)]
    for ci, label in enumerate(classes):
        for j in range(per_class):
            key = f"{label}/f{j}"
            # Loud calls (up to full scale) on purpose: the front end's float16 overflow showed on loud input.
            waves[key] = (1.8 * tone(300.0 * (ci + 1), crop_s + 1.0, rng)).clip(-1, 1).astype(np.float32)
            rows.append({"segment_id": key, "primary_label": label, "secondary_labels": [], "weight": 1.0,
                         "copies": 1})
    return pd.DataFrame(rows), MemoryCache(waves), classes


def _params(model_name: str) -> tuple[dict, dict, float, int]:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    preset = yaml.safe_load((REPO / "presets" / "gpu.yaml").read_text())
    models = {**params["models"], **{k.split(".", 1)[1]: v for k, v in preset.items() if k.startswith("models.")}}
    cfg = dict(models[model_name])
    cfg["pretrained"] = False  # random weights: the check is about numerics and speed, not accuracy
    mel = params["mels"][cfg.pop("mel")]
    return cfg, mel, float(preset.get("train.crop_s", 20)), int(preset.get("train.loop.batch_size", 64))


def fit_check(model_name: str, device: str, dtype: str, steps: int, batch: int | None) -> dict:
    cfg, mel, crop_s, preset_batch = _params(model_name)
    batch = batch or preset_batch
    segs, cache, classes = _task(8, max(2, batch // 8), crop_s)
    torch.manual_seed(0)
    model = create_model(cfg, len(classes), mel)
    ds = FocalDataset(segs, cache, classes, crop_s, "random", 0.5)
    loop = FitConfig.from_dict({"epochs": 1, "batch_size": batch, "samples_per_epoch": steps * batch,
                                "amp": True, "amp_dtype": dtype, "progress": False, "checkpoint_every": 0,
                                "optimizer": {"name": "adamw", "lr": 5e-4, "weight_decay": 1e-4}})
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    try:
        result = fit(model, ds, loop, build_loss({"name": "bce_focal"}), device=device)
        ok, error = True, None
    except FloatingPointError as err:  # the non-finite loss check of fit()
        ok, error, result = False, str(err), None
    seconds = time.perf_counter() - t0
    out = {"model": model_name, "dtype": dtype, "steps": steps, "batch": batch, "finite": ok,
           "samples_per_second": round(steps * batch / seconds, 1) if ok else None, "seconds": round(seconds, 1)}
    if error:
        out["error"] = error
    if result is not None:
        out["final_train_loss"] = round(float(result.history[-1]["train_loss"]), 4)
    if device.startswith("cuda"):
        out["peak_gpu_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return out


def pseudo_check(model_name: str, device: str, soundscapes: int) -> dict:
    cfg, mel, crop_s, _ = _params(model_name)
    model = create_model(cfg, 8, mel).to(device).eval()
    rng = np.random.default_rng(1)
    waves = {f"ss{i}": (0.05 * rng.standard_normal(60 * SAMPLE_RATE)).astype(np.float32) for i in range(soundscapes)}
    cache = MemoryCache(waves)
    t0 = time.perf_counter()
    windows, _ = teacher_predictions([model_predictor(model, device)], cache, sorted(waves), crop_s, 5.0,
                                     batch_size=16, progress=False)
    seconds = time.perf_counter() - t0
    return {"model": model_name, "soundscapes": soundscapes, "chunk_s": crop_s,
            "finite": bool(np.isfinite(windows).all()), "soundscapes_per_second": round(soundscapes / seconds, 2)}


def ddp_check(model_name: str, steps: int) -> dict:
    """2-process DDP through torchrun on this node (loopback rendezvous)."""
    code = "\n".join([
        "import sys, torch, torch.distributed as dist",
        f"sys.path.insert(0, {str(REPO / 'benchmarks')!r})",
        "import gpu_check as g",
        "dist.init_process_group('nccl'); r = dist.get_rank(); torch.cuda.set_device(r)",
        f"out = g.fit_check({model_name!r}, f'cuda:{{r}}', 'auto', {steps}, 32)",
        "print('RESULT', out) if r == 0 else None",
        "dist.destroy_process_group()",
    ])  # fmt: skip
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(code)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           f.name], capture_output=True, text=True, timeout=900)  # noqa: S603
    os.unlink(f.name)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT")), None)
    return {"returncode": proc.returncode, "seconds": round(time.perf_counter() - t0, 1),
            "rank0": line[len("RESULT "):] if line else proc.stderr[-2000:]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--model", default="sed_b0", help="a key of params models or of the gpu preset's models.*")
    ap.add_argument("--steps", type=int, default=300, help="optimiser steps per AMP dtype")
    ap.add_argument("--batch", type=int, default=None, help="batch size (default: the gpu preset's)")
    ap.add_argument("--soundscapes", type=int, default=16, help="soundscapes for the pseudo-labelling check")
    args = ap.parse_args()
    torch.set_num_threads(min(4, os.cpu_count() or 1))
    report: dict = {"device": args.device, "torch": torch.__version__}
    if args.device.startswith("cuda"):
        report["gpu"] = torch.cuda.get_device_name(0)
        report["bf16_supported"] = torch.cuda.is_bf16_supported()
    report["fit"] = [fit_check(args.model, args.device, d, args.steps, args.batch) for d in ("bfloat16", "float16")]
    report["pseudo"] = pseudo_check(args.model, args.device, args.soundscapes)
    if args.device.startswith("cuda") and torch.cuda.device_count() >= 2:
        report["ddp"] = ddp_check(args.model, max(20, args.steps // 10))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
